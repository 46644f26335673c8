"""Evaluate a checkpoint on the val set: single scale, or multi-scale + flip; per-class scores,
palette PNG predictions and the bases' attention maps.

    python eval.py [CHECKPOINT] [KEY=VALUE ...]        # CHECKPOINT: MODEL_DIR/final.pth
    python eval.py EVAL_SCALES='(0.5,0.75,1.0,1.25,1.5,1.75)' EVAL_FLIP=True
    torchrun --nproc_per_node=4 eval.py ...            # val set split, confusion summed

Read top-down: main, checkpoint, inference, scores, pictures. train.py calls `validate`.
"""
import contextlib
import math
import os
import sys

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from tensorboardX import SummaryWriter
from tqdm import tqdm

import config
import dataset
import network
import settings
import transforms

MODEL_KEYS = ('N_CLASSES', 'N_LAYERS', 'STRIDE', 'STEM', 'EMA_CHANNELS', 'N_BASES', 'BN_MOM',
              'EM_MOM', 'STAGE_NUM')

# ---------------------------------------------------------------------------- main


@config.main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    rest = config.apply_overrides(argv)
    given = {a.partition('=')[0] for a in argv if a not in rest}
    if len(rest) > 1:
        raise config.UserError(f'eval.py takes one checkpoint, not {len(rest)} ({" ".join(rest)});'
                               f' settings go as KEY=VALUE.')
    target = rest[0] if rest else os.path.join(config.path(settings.MODEL_DIR), 'final.pth')
    rank, world, device = config.init_distributed()
    if device.type == 'cpu':
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    net, step = load_net(target, device, keep=given)
    val = dataset.ValDataset(settings.VAL_SPLIT)
    log_dir = config.path(settings.LOG_DIR)
    pred_dir = os.path.join(log_dir, 'pred') if settings.SAVE_PRED else None
    result = validate(net, val, device, pred_dir, progress=True)
    if rank == 0:
        print(table(result))
        name = f'eval_{os.path.splitext(os.path.basename(target))[0]}_{tag()}'
        out = config.write_record(finite(result), log_dir, f'{name}.json')
        record = config.run_record(checkpoint=os.path.abspath(target), step=step,
                                   scores=finite({k: result[k] for k in HEADLINE}))
        config.write_record(record, log_dir, f'{name}_record.json')
        print(f'scores: {out}', flush=True)
        if pred_dir:
            print(f'predictions: {pred_dir}', flush=True)
        with SummaryWriter(log_dir) as writer:
            for key in HEADLINE:
                writer.add_scalar(f'eval_{tag()}/{key}', result[key], step or 0)
            if settings.ATTN_IMAGES > 0:
                attn_dir = os.path.join(log_dir, 'attention')
                draw_attention(net, val, device, attn_dir, writer, step or 0)
                print(f'attention maps: {attn_dir}', flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


def tag():
    """'ss' for single scale, else the scales and flip, e.g. 'ms0.5-1-1.5_flip'; '_T<n>' added
    for STAGE_NUM_EVAL=n (n > 0)."""
    scales, flip = tuple(settings.EVAL_SCALES), settings.EVAL_FLIP
    name = 'ss' if scales == (1.0,) and not flip else (
        'ms' + '-'.join(f'{s:g}' for s in scales) + ('_flip' if flip else ''))
    return name + (f'_T{settings.STAGE_NUM_EVAL}' if settings.STAGE_NUM_EVAL else '')

# ---------------------------------------------------------------------------- checkpoint


def load_net(target, device, keep=()):
    """EMANet with the weights of checkpoint `target`, in eval mode on `device`, and its step.
    The model settings and MEAN/STD come from the checkpoint's 'settings' (when it has them)
    unless named in `keep` (given on the command line), and so does DATA_ROOT when settings.py's
    is not a folder; the original's {'net', 'step'} form uses settings as they are."""
    ckpt = config.load_checkpoint(target)
    saved = ckpt.get('settings') or {}
    taken = {k: saved[k] for k in MODEL_KEYS + ('MEAN', 'STD')
             if k in saved and k not in keep and saved[k] != getattr(settings, k)}
    if ('DATA_ROOT' in saved and 'DATA_ROOT' not in keep
            and not os.path.isdir(config.path(settings.DATA_ROOT))):
        taken['DATA_ROOT'] = saved['DATA_ROOT']  # settings.py's is no folder: the training's
    for key, value in taken.items():
        setattr(settings, key, value)
    if taken and (not dist.is_initialized() or dist.get_rank() == 0):
        print(f'from the checkpoint: {describe(taken)}', flush=True)
    state = ckpt['net']
    if not isinstance(state, dict):
        raise config.UserError(f'checkpoint {target} has no state dict under "net"; give a '
                               f'file written by train.py or by the original code.')
    for prefix in ('module.', '_orig_mod.'):  # DataParallel / DDP / torch.compile wrappers
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    net = network.EMANet(settings.N_CLASSES, settings.N_LAYERS)
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(v.shape)}' for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise config.UserError(
            f'checkpoint {target} does not fit the network built with '
            f'{describe(settings_of(own))}: {describe(settings_of(state))} by its weights'
            + ''.join(f'; {what} {len(keys)} key(s) like {", ".join(keys[:3])}' for what, keys in
                      (('missing', missing), ('unexpected', unexpected), ('shape', shapes))
                      if keys)
            + '; pass the settings it was trained with as KEY=VALUE.')
    # files of older PyTorch versions lack num_batches_tracked: keep the network's own
    net.load_state_dict({**{k: v for k, v in own.items() if k.endswith('num_batches_tracked')},
                         **state}, strict=True)
    return net.to(device).eval(), ckpt.get('step')


def settings_of(state):
    """The model settings a state dict's key names and shapes show (those it can show)."""
    found = {}
    if 'fc2.weight' in state:
        found['N_CLASSES'] = state['fc2.weight'].shape[0]
    if 'emau.mu' in state and state['emau.mu'].dim() == 3:
        found['EMA_CHANNELS'], found['N_BASES'] = state['emau.mu'].shape[1:]
    if 'extractor.0.0.weight' in state or 'extractor.0.weight' in state:
        found['STEM'] = 'deep' if 'extractor.0.0.weight' in state else 'torchvision'
    bottleneck = any(k.startswith('extractor.4.0.conv3.') for k in state)
    counts = tuple(len({k.split('.')[2] for k in state if k.startswith(f'extractor.{i}.')})
                   for i in range(4, 7))  # layer1..3 tell the depth apart
    for depth, (block, blocks) in network.DEPTHS.items():
        if blocks[:3] == counts and (block is network.Bottleneck) == bottleneck:
            found['N_LAYERS'] = depth
    return found


def describe(values):
    return ' '.join(f'{k}={v!r}' for k, v in values.items()) or 'unknown settings'

# ---------------------------------------------------------------------------- inference


def validate(net, dataset, device, pred_dir=None, progress=False):
    """Scores (see `scores`) of `net` on a ValDataset, with EVAL_SCALES and EVAL_FLIP. Under
    torch.distributed every process takes every world-th image and the confusion matrices are
    summed, so all processes must call it and all get the same scores. With `pred_dir` each
    prediction is written there as <id>.png. The net's train/eval mode is restored after."""
    if not settings.EVAL_SCALES or min(settings.EVAL_SCALES) <= 0:
        raise config.UserError(f'EVAL_SCALES={settings.EVAL_SCALES!r} needs one or more '
                               f'positive scales, like EVAL_SCALES=(1.0,).')
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    # DDP may broadcast buffers at a forward: a collective that uneven shares would hang on
    net = net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net
    n = settings.N_CLASSES
    conf = torch.zeros(n, n, dtype=torch.int64, device=device)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, range(rank, len(dataset), world)), batch_size=None,
        num_workers=min(settings.NUM_WORKERS // world, 4), pin_memory=device.type == 'cuda')
    if pred_dir:
        os.makedirs(pred_dir, exist_ok=True)
    bar = tqdm(loader, desc='eval', unit='img', dynamic_ncols=True,
               disable=not progress or rank != 0)
    with eval_mode(net):
        for image, label, id_, h, w in bar:
            prob = predict(net, image[None].to(device, non_blocking=True))
            pred = prob[0, :, :h, :w].argmax(0)
            conf += confusion(pred, label[:h, :w].to(device), n, settings.IGNORE_LABEL)
            if pred_dir:
                save_png(pred.cpu().numpy(), os.path.join(pred_dir, f'{id_}.png'))
    if world > 1:
        dist.all_reduce(conf)
    return scores(conf)


def predict(net, image):
    """Class probabilities (B, n_classes, H, W) float32 of a uint8 batch (B, 3, H, W) on the
    net's device: the softmax averaged over EVAL_SCALES and, with EVAL_FLIP, over the mirrored
    image too. A scale s resizes H to 8 * round((H - 1) * s / 8) + 1 (the corners stay aligned
    with align_corners=True); 1.0 leaves the image as it is."""
    x = transforms.normalize_batch(image, settings.MEAN, settings.STD)
    size = x.shape[-2:]
    total, count = 0., 0
    with torch.no_grad():
        for scale in settings.EVAL_SCALES:
            xs = x if scale == 1 else resize(x, [8 * max(1, round((n - 1) * scale / 8)) + 1
                                                 for n in size])
            for flip in (False, True) if settings.EVAL_FLIP else (False,):
                with autocast(x.device):
                    logits = net(xs.flip(-1) if flip else xs)
                p = F.softmax(logits.float(), dim=1)
                p = p.flip(-1) if flip else p
                total = total + (p if scale == 1 else resize(p, size))
                count += 1
    return total / count


@contextlib.contextmanager
def eval_mode(net):
    """net.eval() inside, its train/eval mode as it was after."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def resize(x, size):
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=True)


def autocast(device):
    """bf16 autocast on CUDA when AMP (the network keeps its EM loop in float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=device.type == 'cuda' and settings.AMP)

# ---------------------------------------------------------------------------- scores


HEADLINE = ('mIoU', 'pAcc', 'mAcc', 'fIoU')


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
    names = names or dataset.class_names()
    if len(names) != len(conf):
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


def table(result):
    """The scores as a readable table, in percent."""
    pct = lambda v: '     -' if math.isnan(v) else f'{100 * v:6.2f}'  # noqa: E731
    width = max(9, *(len(n) for n in result['per_class'])) + 2
    lines = [f'{"class (%)":<{width}}   IoU    acc']
    lines += [f'{name:<{width}}{pct(iou)} {pct(result["per_class_acc"][name])}'
              for name, iou in result['per_class'].items()]
    lines.append('  '.join(f'{k} {pct(result[k]).strip()}' for k in HEADLINE)
                 + f'  ({tag()}, {len(result["per_class"])} classes)')
    return '\n'.join(lines)

# ---------------------------------------------------------------------------- pictures


def save_png(pred, target):
    """An index PNG in the VOC palette: decoding it gives `pred` (H, W) back exactly."""
    image = Image.fromarray(pred.astype(np.uint8), mode='P')
    image.putpalette(dataset.palette())
    image.save(target)


def draw_attention(net, data, device, out_dir, writer=None, step=0):
    """For the first ATTN_IMAGES images: the input, the single-scale prediction and the K
    responsibility maps of the last E-step, as out_dir/<id>.png (full size) and TensorBoard
    images (at most 2048 pixels wide). Returns the PNG paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(min(settings.ATTN_IMAGES, len(data))):
        image, _, id_, h, w = data[i]
        x = transforms.normalize_batch(image[None].to(device), settings.MEAN, settings.STD)
        with eval_mode(net), torch.no_grad(), autocast(device):
            logits, z = net(x, return_attention=True)
        z = resize(z.float(), x.shape[-2:])[0, :, :h, :w].clamp(min=0).cpu().numpy()
        pred = logits[0, :, :h, :w].argmax(0).cpu().numpy()
        picture = grid(attention_tiles(image[:, :h, :w].permute(1, 2, 0).numpy(), z, pred))
        paths.append(os.path.join(out_dir, f'{id_}.png'))
        Image.fromarray(picture).save(paths[-1])
        if writer is not None:
            f = min(1, 2048 / max(picture.shape))
            small = cv2.resize(picture, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            writer.add_image(f'attention/{id_}', small, step, dataformats='HWC')
    return paths


def attention_tiles(image, z, pred):
    """RGB uint8 tiles (h, w, 3): the image (h, w, 3), the coloured prediction (h, w), then
    one per map of z (K, h, w), each stretched from its minimum (blue) to its maximum (red)."""
    maps = [(m - m.min()) / max(float(m.max() - m.min()), 1e-12) for m in z]
    maps = [np.round(255 * m).astype(np.uint8) for m in maps]
    maps = [cv2.applyColorMap(m, cv2.COLORMAP_JET)[..., ::-1] for m in maps]
    return [np.ascontiguousarray(image), dataset.colorize(pred)] + maps


def grid(tiles, gap=4):
    """Equal-sized tiles in a near-square grid on white, row by row."""
    h, w = tiles[0].shape[:2]
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return out


if __name__ == '__main__':
    main()
