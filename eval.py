"""Evaluate a checkpoint on a labelled split: mIoU, pixel and class accuracy, per-class IoU, the
confusion matrix, palette PNG predictions and the bases' attention maps.

    python eval.py [CHECKPOINT] [KEY=VALUE ...]        # CHECKPOINT: MODEL_DIR/final.pth
    python eval.py EVAL_SCALES='(0.5,0.75,1.0,1.25,1.5,1.75)' EVAL_FLIP=True
    python eval.py 'STAGE_NUM_EVAL=(1,2,3,4,6,8)'      # one pass, scores per EM stage count
    python eval.py EVAL_MODE=slide SLIDE_CROP=769 SLIDE_STEP=513   # large images, in windows
    torchrun --nproc_per_node=4 eval.py ...            # the split over 4 processes, same numbers

Results go to LOG_DIR/eval_<checkpoint>-<id>_<split>_<mode>_T<stages>.json (and _confusion.png,
_pred/, _attention/): <id> tells checkpoints of the same name apart, so no other checkpoint or
mode overwrites them. The model and MEAN/STD (every setting but evaluation's) come from the
checkpoint. The inference itself is inference.py's, shared with training and predict.py.
"""
import math
import os
import sys

import torch

from plumbing import (checkpoints, config, files, layout,  # first: settings.py checked
                      outputs, pictures, processes, records)
import dataset
import inference
import network
import settings

HEADLINE = ('mIoU', 'pAcc', 'mAcc', 'fIoU')

# ---------------------------------------------------------------------------- main


@config.command
def main(argv):
    rest = config.apply_overrides(argv, __doc__)
    given = config.given(argv)
    options = [a for a in rest if a.startswith('-')]
    if options:
        raise config.UserError(f'unknown option {config.short(options[0])}; eval.py takes the '
                               f'checkpoint as its one argument and settings as KEY=VALUE.')
    if len(rest) > 1:
        raise config.UserError(f'eval.py takes one checkpoint, not {len(rest)} '
                               f'({config.short(" ".join(rest))}); settings go as KEY=VALUE.')
    target = rest[0] if rest else os.path.join(config.path(settings.MODEL_DIR), 'final.pth')
    rank, world, device = processes.init_distributed()
    if device.type == 'cpu' and world > 1:  # the cores shared by the processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    net, info = inference.load_net(target, device, keep=given)
    if not {'classes', 'palette'} <= set(info):  # the original's checkpoints name neither
        info = {**layout.meta(), **info}
    checkpoints.say_unused(given, 'evaluation', 'eval.py', device.type == 'cuda')
    data = dataset.ValDataset(settings.VAL_SPLIT)
    log_dir = files.folder('LOG_DIR') if rank == 0 else None
    mode = checkpoints.mode_name(info['trained'], 'evaluation')
    name = f'eval_{checkpoints.checkpoint_id(target)}_{settings.VAL_SPLIT}_{mode}'
    stages = network.stage_counts()
    pred_dirs = {t: os.path.join(config.path(settings.LOG_DIR), f'{name}_T{t}_pred')
                 for t in stages} if settings.SAVE_PRED else {}
    if rank == 0:  # what this evaluation writes into LOG_DIR, before it does (see clean.py)
        attention = data.ids[:settings.ATTN_IMAGES]
        outputs.claim(log_dir, {f'{name}_T{t}{end}': None for t in stages for end in (
            '.json', '_confusion.png', *(f'_pred/{i}.png' for i in data.ids if t in pred_dirs),
            *(f'_attention/{i}.png' for i in attention if t == stages[0]))})
    results = inference.validate(net, data, device, stages, pred_dirs, info['palette'],
                                 progress=True)
    if rank == 0:
        write_results(results, data, net, device, info, target, os.path.join(log_dir, name),
                      mode)
        for t, folder in pred_dirs.items():
            print(f'predictions (T={t}): {folder}', flush=True)
    processes.end_distributed()
    return results[stages[0]] if len(stages) == 1 else results


def write_results(results, data, net, device, info, target, base, mode):
    """Print each stage count's table, write its scores (with the run record) as JSON, its
    confusion matrix as a PNG, both into TensorBoard too; then the attention maps."""
    from tensorboardX import SummaryWriter
    log_dir, step = os.path.dirname(base), info['step'] or 0
    with SummaryWriter(log_dir, filename_suffix=f'{outputs.EVENTS}{os.getpid()}') as writer:
        for t, result in results.items():
            print(table(result, f'{mode}, T={t}'))
            picture = pictures.confusion_matrix(
                result['confusion'], data.classes, f'{os.path.basename(base)}_T{t}: % of each '
                f'true class')
            pictures.save_rgb(picture, f'{base}_T{t}_confusion.png')
            result['confused_most'] = pictures.confused_most(result['confusion'], data.classes)
            record = records.run_record(checkpoint=os.path.abspath(target), step=info['step'],
                                        checkpoint_id=checkpoints.checkpoint_id(target),
                                        split=settings.VAL_SPLIT, mode=mode, stages=t)
            out = records.write_record(without_nan({**result, 'record': record}), log_dir,
                                    f'{os.path.basename(base)}_T{t}.json')
            print(f'scores: {out}', flush=True)
            tag = f'eval_{mode}_T{t}'
            for key in HEADLINE:
                writer.add_scalar(f'{tag}/{key}', result[key], step)
            writer.add_image(f'{tag}/confusion', picture, step, dataformats='HWC')
        if len(results) > 1:
            print('EM stages  ' + '  '.join(f'{t:>6}' for t in results))
            print('mIoU (%)   ' + '  '.join(f'{100 * r["mIoU"]:6.2f}' for r in results.values()))
        if settings.ATTN_IMAGES > 0:
            attn_dir = f'{base}_T{next(iter(results))}_attention'
            draw_attention(net, data, device, attn_dir, info['palette'], writer, step)
            print(f'attention maps: {attn_dir}', flush=True)


# ---------------------------------------------------------------------------- the report


def without_nan(result):
    """`result` with nan as None, so the JSON written is valid JSON."""
    if isinstance(result, dict):
        return {k: without_nan(v) for k, v in result.items()}
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
    absent = result.get('unlabelled_classes') or []
    if absent:  # why the mean may be lower than the classes present suggest
        lines.append(f'no labelled pixels in this split: {", ".join(absent)} (IoU 0 where '
                     f'predicted, counted in mIoU; - where not, left out)')
    return '\n'.join(lines)

# ---------------------------------------------------------------------------- attention


def draw_attention(net, data, device, out_dir, colours=None, writer=None, step=0):
    """For the first ATTN_IMAGES images: the input, the single-scale prediction and the K
    responsibility maps of the last E-step, as out_dir/<id>.png (full size) and TensorBoard
    images (at most 2048 pixels wide). Returns the PNG paths."""
    import cv2
    with files.writing(out_dir, 'LOG_DIR'):
        os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i in range(min(settings.ATTN_IMAGES, len(data))):
        image, _, id_ = data[i]
        h, w = image.shape[-2:]
        x = inference.pad_to_stride(inference.to_input(image[None].to(device)))
        with inference.eval_mode(net), torch.inference_mode():
            logits, z = net(x, return_attention=True)
        z = inference.resize(z.float(), x.shape[-2:])[0, :, :h, :w].clamp(min=0).cpu().numpy()
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
    main(sys.argv[1:])
