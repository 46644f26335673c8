"""The test-time recipe, shared by eval.py, validation in train.py, predict.py and bench.py: an
image into the network's input (normalised on the device, padded to 1 modulo STRIDE as the
original evaluates), each image inferred at EVAL_SCALES with EVAL_FLIP, whole or in windows, the
EM-stage sweep on one backbone pass, and the scores of a confusion matrix. Change how a
prediction is made here (and its knob in settings.py). Not here: restoring a checkpoint's
settings and naming results (plumbing/checkpoints.py), reports (eval.py), pictures."""
import contextlib
import functools
import math
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from plumbing import checkpoints, config, files, pictures, processes
import network
import settings

# ---------------------------------------------------------------------------- the network


def load_net(target, device, keep=()):
    """The network of checkpoint `target` in eval mode on `device` (channels_last on CUDA),
    every setting it was trained with restored but evaluation's and those in `keep` (given on
    the command line; see checkpoints.restore), and its info {'step', 'trained', 'classes',
    'palette'} (the last two where it holds them)."""
    ckpt, info = checkpoints.restore(target, keep)
    with config.as_user_error(network.WeightsError, prefix=f'checkpoint {target} ',
                              fix=checkpoints.fit_fix(info['trained'], keep)):
        net = network.build(ckpt['net'])
    net = net.to(device).eval()
    if device.type == 'cuda':
        net = net.to(memory_format=torch.channels_last)
    return net, info

# ---------------------------------------------------------------------------- the input


def to_input(image, channels_last=None):
    """uint8 images (B, 3, H, W) on the device -> the network's input: (x / 255 - MEAN) / STD
    in float32, channels_last where the network's weights are (on CUDA, unless told)."""
    m, s = _mean_std(tuple(settings.MEAN), tuple(settings.STD), image.device)
    return _memory_format((image.float() - m) / s, channels_last)


@functools.lru_cache(maxsize=8)
def _mean_std(mean, std, device):
    """255 * mean and 255 * std as (3, 1, 1) tensors on `device`, made once: building them
    from Python numbers at every batch would copy them to the GPU and wait for it each time."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255
    return m.to(device), s.to(device)


def _memory_format(x, channels_last=None):
    channels_last = x.is_cuda if channels_last is None else channels_last
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def pad_to_stride(x):
    """A normalised batch (B, 3, h, w) padded bottom and right with 0 (the mean colour) so that
    h and w are 1 modulo STRIDE, as the original evaluates; crop [..., :h, :w] after."""
    h, w = x.shape[-2:]
    s = settings.STRIDE
    return _memory_format(F.pad(x, (0, (1 - w) % s, 0, (1 - h) % s)))


@contextlib.contextmanager
def eval_mode(net):
    """net.eval() inside, with cuDNN's benchmark off (each image size would start a new search
    over its convolution algorithms); the net's mode and the flag as they were after."""
    was_training, benchmark = net.training, torch.backends.cudnn.benchmark
    net.eval()
    torch.backends.cudnn.benchmark = False
    try:
        yield net
    finally:
        net.train(was_training)
        torch.backends.cudnn.benchmark = benchmark

# ---------------------------------------------------------------------------- inference


def validate(net, data, device, stages, pred_dirs=None, colours=None, progress=False):
    """{T: scores (see `scores`)} of `net` on a ValDataset for each EM stage count T of
    `stages` (network.stage_counts()), inferred as `infer` does. Under torch.distributed every
    process takes every world-th image and the confusion matrices are summed, so all processes
    must call it and all get the same scores. With pred_dirs {T: folder} each prediction is
    written there as <id>.png in `colours`. The net's train/eval mode and cuDNN's benchmark
    flag are restored after."""
    rank, world = processes.rank_world()
    # DDP may broadcast buffers at a forward: a collective that uneven shares would hang on
    net = net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net
    n, pred_dirs = settings.N_CLASSES, pred_dirs or {}
    conf = torch.zeros(len(stages), n, n, dtype=torch.int64, device=device)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(data, range(rank, len(data), world)), batch_size=None,
        num_workers=min(settings.NUM_WORKERS // world, 4), pin_memory=device.type == 'cuda')
    for folder in pred_dirs.values():
        with files.writing(folder, 'LOG_DIR'):
            os.makedirs(folder, exist_ok=True)
    bar = tqdm(loader, desc='eval', unit='img', dynamic_ncols=True,
               disable=not progress or rank != 0)
    with eval_mode(net):
        for image, label, id_ in bar:
            prob = infer(net, image.to(device, non_blocking=True), stages, id_)
            pred = prob.argmax(1)                                     # (T, H, W)
            label = label.to(device, non_blocking=True)
            for k, t in enumerate(stages):
                conf[k] += confusion(pred[k], label, n, settings.IGNORE_LABEL)
                if t in pred_dirs:
                    pictures.write_label(pred[k].cpu().numpy(),
                                         os.path.join(pred_dirs[t], f'{id_}.png'), colours)
    if world > 1:
        dist.all_reduce(conf)
    return {t: scores(conf[k], data.classes) for k, t in enumerate(stages)}


def infer(net, image, stages=(None,), name='an image'):
    """Class probabilities (len(stages), n_classes, H, W) float32 of one uint8 image (3, H, W)
    on the net's device, for each EM stage count of `stages` (the backbone runs once for all;
    None: the net's own count for evaluation):
    the softmax averaged over EVAL_SCALES and, with EVAL_FLIP, the mirrored image (each flip
    undone on its softmax), each inferred whole or in windows (EVAL_MODE, see `padded` and
    `windows`).
    A scale s resizes a side n to STRIDE * round((n - 1) * s / STRIDE) + 1 (corners aligned).
    The net must be in eval mode (see `eval_mode`)."""
    x = to_input(image[None], channels_last=False)
    size, total, count = x.shape[-2:], 0., 0
    whole = settings.EVAL_MODE == 'whole'
    flips = [()] + [(-1,)] * settings.EVAL_FLIP  # the dimensions flipped: none, W (mirrored)
    with torch.inference_mode():
        for scale in settings.EVAL_SCALES:
            xs = x if scale == 1 else resize(x, [settings.STRIDE * max(
                1, round((n - 1) * scale / settings.STRIDE)) + 1 for n in size])
            for dims in flips:
                xf = xs.flip(dims) if dims else xs
                with processes.fits(name, xf.shape[-2:], scale):  # else one sentence
                    p = padded(net, xf, stages) if whole else windows(net, xf, stages)
                p = p.flip(dims) if dims else p
                total = total + (p if scale == 1 else resize(p, size))
                count += 1
    return total / count


def padded(net, x, stages):
    """Softmax (T, n_classes, h, w) of a normalised image (1, 3, h, w), inferred padded (see
    `pad_to_stride`) and cropped back."""
    h, w = x.shape[-2:]
    x = pad_to_stride(x)
    features = net.features(x)
    return torch.cat([F.softmax(net.head(features, x.shape[-2:], stages=t), dim=1)
                      for t in stages])[:, :, :h, :w]                      # (T, n, h, w)


def windows(net, x, stages):
    """Softmax (T, n_classes, h, w) from SLIDE_CROP windows every SLIDE_STEP pixels (the last
    flush with the edge), each inferred by `padded` and averaged where they overlap; one window
    when the image fits in it, so that 'slide' equals 'whole' then."""
    h, w = x.shape[-2:]
    crop, step = settings.SLIDE_CROP, settings.SLIDE_STEP

    def starts(n):
        return sorted({min(i * step, n - crop) for i in range(math.ceil((n - crop) / step) + 1)}
                      ) if n > crop else [0]
    total = count = 0
    for y in starts(h):
        for x0 in starts(w):
            win = (..., slice(y, y + crop), slice(x0, x0 + crop))
            p = padded(net, x[win], stages)
            if not torch.is_tensor(total):
                total = p.new_zeros(len(stages), p.shape[1], h, w)
                count = p.new_zeros(h, w)
            total[win] += p
            count[win] += 1
    return total / count


def resize(x, size):
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=True)

# ---------------------------------------------------------------------------- scores


def confusion(pred, label, n_classes, ignore):
    """conf[i, j]: pixels of true class i predicted as j (int64 tensor on pred's device);
    labels equal to `ignore` or outside [0, n_classes) are not counted."""
    pred, label = torch.as_tensor(pred).long(), torch.as_tensor(label).long()
    keep = (label != ignore) & (label >= 0) & (label < n_classes)
    index = label[keep] * n_classes + pred[keep]
    return torch.bincount(index, minlength=n_classes ** 2).reshape(n_classes, n_classes)


def scores(conf, names=None):
    """Pixel accuracy, mean class accuracy, mIoU (nan-mean over classes), frequency-weighted
    IoU, per-class IoU and accuracy by class name (nan for a class absent from both the
    labels and the predictions), the classes without labelled pixels, and the confusion matrix
    itself, as plain Python values."""
    conf = np.asarray(conf.cpu() if torch.is_tensor(conf) else conf, dtype=np.float64)
    if not names or len(names) != len(conf):
        names = [f'class_{i}' for i in range(len(conf))]
    tp, gt, pred = np.diag(conf), conf.sum(1), conf.sum(0)
    with np.errstate(divide='ignore', invalid='ignore'):
        iou, acc = tp / (gt + pred - tp), tp / gt
    seen = gt > 0
    return {'mIoU': nanmean(iou), 'pAcc': float(tp.sum() / conf.sum()) if conf.sum() else math.nan,
            'mAcc': nanmean(acc),
            'fIoU': float((gt[seen] * iou[seen]).sum() / gt.sum()) if seen.any() else math.nan,
            'per_class': dict(zip(names, iou.tolist())),
            'per_class_acc': dict(zip(names, acc.tolist())),
            'unlabelled_classes': [n for n, g in zip(names, gt) if g == 0],
            'confusion': conf.astype(np.int64).tolist()}


def nanmean(v):
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan
