"""Evaluate a checkpoint on a labelled split: mIoU, pixel and class accuracy, per-class IoU, the
confusion matrix, palette PNG predictions and the bases' attention maps.

    python eval.py [CHECKPOINT] [KEY=VALUE ...]        # CHECKPOINT: MODEL_DIR/final.pth
    python eval.py EVAL_SCALES='(0.5,0.75,1.0,1.25,1.5,1.75)' EVAL_FLIP=True
    python eval.py 'STAGE_NUM_EVAL=(1,2,3,4,6,8)'      # one pass, scores per EM stage count
    python eval.py EVAL_MODE=slide SLIDE_CROP=769 SLIDE_STEP=513   # large images, in windows
    torchrun --nproc_per_node=4 eval.py ...            # the split over 4 processes, same numbers

Results go to LOG_DIR/eval_<checkpoint>-<id>_<mode>_T<stages>.json (and _confusion.png, _pred/,
_attention/): <id> tells checkpoints of the same name apart, so no other checkpoint or mode
overwrites them. Read top-down: main, checkpoint, inference (shared by train.py's validation
and predict.py), scores.
"""
import contextlib
import hashlib
import math
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

import config
import dataset
import network
import pictures
import runs
import settings
import transforms

MODEL_KEYS = ('N_CLASSES', 'N_LAYERS', 'STRIDE', 'STEM', 'EMA_CHANNELS', 'N_BASES', 'BN_MOM',
              'EM_MOM', 'STAGE_NUM')
HEADLINE = ('mIoU', 'pAcc', 'mAcc', 'fIoU')

# ---------------------------------------------------------------------------- main


@config.main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    rest = config.apply_overrides(argv, __doc__)
    given = {a.partition('=')[0] for a in argv if a not in rest}
    if len(rest) > 1:
        raise config.UserError(f'eval.py takes one checkpoint, not {len(rest)} '
                               f'({config.short(" ".join(rest))}); settings go as KEY=VALUE.')
    target = rest[0] if rest else os.path.join(config.path(settings.MODEL_DIR), 'final.pth')
    rank, world, device = config.init_distributed()
    if device.type == 'cpu' and world > 1:  # the cores shared by the processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    net, info = load_net(target, device, keep=given)
    data = dataset.ValDataset(settings.VAL_SPLIT)
    log_dir = runs.folder('LOG_DIR') if rank == 0 else None
    name = f'eval_{checkpoint_id(target)}_{settings.VAL_SPLIT}_{mode()}'
    stages = config.stage_counts()
    pred_dirs = {t: os.path.join(config.path(settings.LOG_DIR), f'{name}_T{t}_pred')
                 for t in stages} if settings.SAVE_PRED else {}
    results = validate(net, data, device, pred_dirs, info['palette'], progress=True)
    if rank == 0:
        report(results, data, net, device, info, target, os.path.join(log_dir, name))
        for t, folder in pred_dirs.items():
            print(f'predictions (T={t}): {folder}', flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return results[stages[0]] if len(stages) == 1 else results


def report(results, data, net, device, info, target, base):
    """Print each stage count's table, write its scores (with the run record) as JSON, its
    confusion matrix as a PNG, both into TensorBoard too; then the attention maps."""
    from tensorboardX import SummaryWriter
    log_dir, step = os.path.dirname(base), info['step'] or 0
    with SummaryWriter(log_dir, filename_suffix=f'.{os.getpid()}') as writer:
        for t, result in results.items():
            print(table(result, f'{mode()}, T={t}'))
            picture = pictures.confusion_matrix(
                result['confusion'], data.classes, f'{os.path.basename(base)}_T{t}: % of each '
                f'true class')
            pictures.save_rgb(picture, f'{base}_T{t}_confusion.png')
            result['confused_most'] = pictures.confused_most(result['confusion'], data.classes)
            record = runs.run_record(checkpoint=os.path.abspath(target), step=info['step'],
                                       split=settings.VAL_SPLIT, mode=mode(), stages=t)
            out = runs.write_record(finite({**result, 'record': record}), log_dir,
                                      f'{os.path.basename(base)}_T{t}.json')
            print(f'scores: {out}', flush=True)
            for key in HEADLINE:
                writer.add_scalar(f'eval_{mode()}_T{t}/{key}', result[key], step)
            writer.add_image(f'eval_{mode()}_T{t}/confusion', picture, step, dataformats='HWC')
        if len(results) > 1:
            print('EM stages  ' + '  '.join(f'{t:>6}' for t in results))
            print('mIoU (%)   ' + '  '.join(f'{100 * r["mIoU"]:6.2f}' for r in results.values()))
        if settings.ATTN_IMAGES > 0:
            attn_dir = f'{base}_T{next(iter(results))}_attention'
            draw_attention(net, data, device, attn_dir, info['palette'], writer, step)
            print(f'attention maps: {attn_dir}', flush=True)


def mode():
    """The inference mode as a name: 'ss' or the scales ('ms0.5-1-1.5'), '_flip', '_slide<crop>-
    <step>' and '_bf16' when they apply, e.g. 'ms0.5-0.75-1-1.25-1.5-1.75_flip'."""
    scales = tuple(settings.EVAL_SCALES)
    name = 'ss' if scales == (1.0,) else 'ms' + '-'.join(f'{s:g}' for s in scales)
    name += '_flip' if settings.EVAL_FLIP else ''
    if settings.EVAL_MODE == 'slide':
        name += f'_slide{settings.SLIDE_CROP}-{settings.SLIDE_STEP}'
    return name + ('_bf16' if torch.cuda.is_available() and settings.AMP else '')

# ---------------------------------------------------------------------------- checkpoint


def checkpoint_id(target):
    """<file stem>-<8 hex digits of its absolute path, size and time>: the same for one file,
    different for another file of the same name (a/final.pth, b/final.pth) or a rewritten one."""
    st = os.stat(target)
    key = f'{os.path.abspath(target)}:{st.st_size}:{st.st_mtime_ns}'
    stem = os.path.splitext(os.path.basename(target))[0]
    return f'{stem}-{hashlib.sha256(key.encode()).hexdigest()[:8]}'


def load_net(target, device, keep=()):
    """EMANet with the weights of checkpoint `target`, in eval mode on `device`, and what the
    checkpoint says of itself: {'step', 'classes', 'palette'} (from DATA_ROOT when it does not
    say). The model settings and MEAN/STD come from the checkpoint's 'settings' (when it has
    them) unless named in `keep` (given on the command line), and so does DATA_ROOT when
    settings.py's is not a folder; the original's {'net', 'step'} form uses settings as they are."""
    ckpt = runs.load_checkpoint(target)
    saved = ckpt.get('settings') or {}
    taken = {k: saved[k] for k in MODEL_KEYS + ('MEAN', 'STD')
             if k in saved and k not in keep and saved[k] != getattr(settings, k)}
    if ('DATA_ROOT' in saved and 'DATA_ROOT' not in keep
            and not os.path.isdir(config.path(settings.DATA_ROOT))):
        taken['DATA_ROOT'] = saved['DATA_ROOT']  # settings.py's is no folder: the training's
    for key, value in taken.items():
        setattr(settings, key, value)
    config.check()
    if taken and (not dist.is_initialized() or dist.get_rank() == 0):
        print(f'from the checkpoint: {network.describe(taken)}', flush=True)
    net = network.EMANet(settings.N_CLASSES, settings.N_LAYERS)
    network.load_weights(net, ckpt['net'], target, 'pass the settings it was trained with as '
                                                   'KEY=VALUE')
    net = net.to(device).eval()
    if device.type == 'cuda':
        net = net.to(memory_format=torch.channels_last)
    info = {'step': ckpt.get('step'), **{k: ckpt[k] for k in ('classes', 'palette') if k in ckpt}}
    if 'classes' not in info or 'palette' not in info:
        root = config.path(settings.DATA_ROOT)
        found = dataset.meta(root) if os.path.isdir(root) else \
            {'classes': dataset.class_names(root), 'palette': dataset.palette()}
        info = {**found, **info}
    return net, info


# ---------------------------------------------------------------------------- inference


def validate(net, data, device, pred_dirs=None, colours=None, progress=False):
    """{T: scores (see `scores`)} of `net` on a ValDataset for each EM stage count T of
    STAGE_NUM_EVAL, inferred as `infer` does. Under torch.distributed every process takes every
    world-th image and the confusion matrices are summed, so all processes must call it and all
    get the same scores. With pred_dirs {T: folder} each prediction is written there as <id>.png
    in `colours`. The net's train/eval mode and cuDNN's benchmark flag are restored after."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    # DDP may broadcast buffers at a forward: a collective that uneven shares would hang on
    net = net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net
    n, stages, pred_dirs = settings.N_CLASSES, config.stage_counts(), pred_dirs or {}
    conf = torch.zeros(len(stages), n, n, dtype=torch.int64, device=device)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(data, range(rank, len(data), world)), batch_size=None,
        num_workers=min(settings.NUM_WORKERS // world, 4), pin_memory=device.type == 'cuda')
    for folder in pred_dirs.values():
        with runs.writing(folder, 'LOG_DIR'):
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
                    pictures.save_png(pred[k].cpu().numpy(), os.path.join(pred_dirs[t],
                                                                          f'{id_}.png'), colours)
    if world > 1:
        dist.all_reduce(conf)
    return {t: scores(conf[k], data.classes) for k, t in enumerate(stages)}


def infer(net, image, stages=None, name='an image'):
    """Class probabilities (len(stages), n_classes, H, W) float32 of one uint8 image (3, H, W)
    on the net's device, for each EM stage count of `stages` (STAGE_NUM_EVAL by default; the
    backbone runs once for all): the softmax averaged over EVAL_SCALES and, with EVAL_FLIP, the
    mirrored image, each inferred whole or in windows (EVAL_MODE, see `padded` and `windows`).
    A scale s resizes a side n to STRIDE * round((n - 1) * s / STRIDE) + 1 (corners aligned)."""
    stages = stages or config.stage_counts()
    x = transforms.normalize_batch(image[None], settings.MEAN, settings.STD)
    size, total, count = x.shape[-2:], 0., 0
    whole = settings.EVAL_MODE == 'whole'
    with torch.inference_mode():
        for scale in settings.EVAL_SCALES:
            xs = x if scale == 1 else resize(x, [settings.STRIDE * max(
                1, round((n - 1) * scale / settings.STRIDE)) + 1 for n in size])
            for flip in (False, True) if settings.EVAL_FLIP else (False,):
                xf = xs.flip(-1) if flip else xs
                try:
                    p = padded(net, xf, stages) if whole else windows(net, xf, stages)
                except (torch.OutOfMemoryError, RuntimeError) as e:
                    raise out_of_memory(e, name, xf.shape[-2:], scale) from None
                p = p.flip(-1) if flip else p
                total = total + (p if scale == 1 else resize(p, size))
                count += 1
    return total / count


def padded(net, x, stages):
    """Softmax (T, n_classes, h, w) of a normalised image (1, 3, h, w) padded bottom and right
    with 0 (the mean colour) so that h and w are 1 modulo STRIDE, as in the original."""
    h, w = x.shape[-2:]
    s = settings.STRIDE
    x = F.pad(x, (0, (1 - w) % s, 0, (1 - h) % s))
    if x.is_cuda:  # as the network's weights (see load_net)
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device):
        features = net.features(x)
        return torch.cat([F.softmax(net.head(features, x.shape[-2:], stages=t), dim=1)
                          for t in stages])[:, :, :h, :w]                  # (T, n, h, w)


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


def out_of_memory(error, name, size, scale):
    """The sentence for an image too large for memory, or `error` itself when it is another."""
    if not isinstance(error, torch.OutOfMemoryError) and 'allocate' not in str(error):
        return error
    fix = ('pass EVAL_MODE=slide (windows of SLIDE_CROP pixels)' if settings.EVAL_MODE == 'whole'
           else 'pass a smaller SLIDE_CROP')
    return config.UserError(f'{name} at scale {scale} ({size[1]}x{size[0]} pixels) does not fit '
                            f'in memory; {fix}, or fewer or smaller EVAL_SCALES.')


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


def to_input(image):
    """uint8 images (B, 3, H, W) on the device -> the network's input: normalised float32,
    channels_last on CUDA (as the network's weights are there)."""
    x = transforms.normalize_batch(image, settings.MEAN, settings.STD)
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


def resize(x, size):
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=True)


def autocast(device):
    """bf16 autocast on CUDA when AMP (the network keeps its EM loop in float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=device.type == 'cuda' and settings.AMP)

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
    labels and the predictions) and the confusion matrix itself, as plain Python values."""
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
            'confusion': conf.astype(np.int64).tolist()}


def nanmean(v):
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan


def finite(result):
    """`result` with nan as None, so the JSON written is valid JSON."""
    if isinstance(result, dict):
        return {k: finite(v) for k, v in result.items()}
    return None if isinstance(result, float) and math.isnan(result) else result


def table(result, title=''):
    """The scores as a readable table, in percent."""
    pct = lambda v: '     -' if math.isnan(v) else f'{100 * v:6.2f}'  # noqa: E731
    width = max(9, *(len(n) for n in result['per_class'])) + 2
    lines = [f'{"class (%)":<{width}}   IoU    acc']
    lines += [f'{name:<{width}}{pct(iou)} {pct(result["per_class_acc"][name])}'
              for name, iou in result['per_class'].items()]
    lines.append('  '.join(f'{k} {pct(result[k]).strip()}' for k in HEADLINE)
                 + f'  ({title + ", " if title else ""}{len(result["per_class"])} classes)')
    return '\n'.join(lines)

# ---------------------------------------------------------------------------- attention


def draw_attention(net, data, device, out_dir, colours=None, writer=None, step=0):
    """For the first ATTN_IMAGES images: the input, the single-scale prediction and the K
    responsibility maps of the last E-step, as out_dir/<id>.png (full size) and TensorBoard
    images (at most 2048 pixels wide). Returns the PNG paths."""
    import cv2
    with runs.writing(out_dir, 'LOG_DIR'):
        os.makedirs(out_dir, exist_ok=True)
    paths, s = [], settings.STRIDE
    for i in range(min(settings.ATTN_IMAGES, len(data))):
        image, _, id_ = data[i]
        h, w = image.shape[-2:]
        x = transforms.normalize_batch(image[None].to(device), settings.MEAN, settings.STD)
        x = F.pad(x, (0, (1 - w) % s, 0, (1 - h) % s))
        with eval_mode(net), torch.inference_mode(), autocast(device):
            logits, z = net(x, return_attention=True)
        z = resize(z.float(), x.shape[-2:])[0, :, :h, :w].clamp(min=0).cpu().numpy()
        pred = logits[0, :, :h, :w].argmax(0).cpu().numpy()
        picture = pictures.grid(pictures.attention_tiles(image.permute(1, 2, 0).numpy(), z, pred,
                                                         colours))
        paths.append(os.path.join(out_dir, f'{id_}.png'))
        pictures.save_rgb(picture, paths[-1])
        if writer is not None:
            f = min(1, 2048 / max(picture.shape))
            small = cv2.resize(picture, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            writer.add_image(f'attention/{id_}', small, step, dataformats='HWC')
    return paths


if __name__ == '__main__':
    main()
