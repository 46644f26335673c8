"""An evaluation's report: the names of its files in LOG_DIR (after the checkpoint, the split and
the mode: no other checkpoint or mode writes over them), claimed before anything is written; the
table of scores printed, the scores with the run record as JSON, the confusion matrix as a PNG,
both in TensorBoard; the folders of its predictions and attention maps. Not here: the scores
themselves (inference.py), the pictures (pictures.py)."""
import math
import os

import settings
from plumbing import checkpoints, config, files, outputs, pictures, records

HEADLINE = ('mIoU', 'pAcc', 'mAcc', 'fIoU')


class Report:
    """The files of one evaluation of checkpoint `target` ({'step', 'trained'} in `info`) on
    ValDataset `data` at EM stage counts `stages`, by process `rank` (rank 0 writes)."""

    def __init__(self, target, info, data, stages, rank):
        self.target, self.info, self.data, self.stages = target, info, data, stages
        self.mode = checkpoints.mode_name(info['trained'], 'evaluation')
        name = f'eval_{checkpoints.checkpoint_id(target)}_{settings.VAL_SPLIT}_{self.mode}'
        self.log_dir = config.path(settings.LOG_DIR)
        self.base = os.path.join(self.log_dir, name)
        self.pred_dirs = {t: f'{self.base}_T{t}_pred' for t in stages} if settings.SAVE_PRED \
            else {}  # where validate writes each stage count's predictions
        if rank == 0:  # what this evaluation writes into LOG_DIR, before it does (see clean.py)
            files.folder('LOG_DIR')
            attention = data.ids[:settings.ATTN_IMAGES]
            outputs.claim(self.log_dir, {f'{name}_T{t}{end}': None for t in stages for end in (
                '.json', '_confusion.png',
                *(f'_pred/{i}.png' for i in data.ids if t in self.pred_dirs),
                *(f'_attention/{i}.png' for i in attention if t == stages[0]))})

    def write(self, results, draw_attention):
        """Print each stage count's table, write its scores (with the run record) as JSON, its
        confusion matrix as a PNG, both into TensorBoard too; then the attention maps of the
        first ATTN_IMAGES images: draw_attention(folder, TensorBoard writer, step)."""
        from tensorboardX import SummaryWriter
        step, classes = self.info['step'] or 0, self.data.classes
        with SummaryWriter(self.log_dir, filename_suffix=f'{outputs.EVENTS}{os.getpid()}') as \
                writer:
            for t, result in results.items():
                print(table(result, f'{self.mode}, T={t}'))
                picture = pictures.confusion_matrix(result['confusion'], classes, (
                    f'{os.path.basename(self.base)}_T{t}: % of each true class'))
                pictures.save_rgb(picture, f'{self.base}_T{t}_confusion.png')
                result['confused_most'] = pictures.confused_most(result['confusion'], classes)
                record = records.run_record(
                    checkpoint=os.path.abspath(self.target), step=self.info['step'],
                    checkpoint_id=checkpoints.checkpoint_id(self.target),
                    split=settings.VAL_SPLIT, mode=self.mode, stages=t)
                out = records.write_record(without_nan({**result, 'record': record}),
                                           self.log_dir, f'{os.path.basename(self.base)}_T{t}.json')
                print(f'scores: {out}', flush=True)
                tag = f'eval_{self.mode}_T{t}'
                for key in HEADLINE:
                    writer.add_scalar(f'{tag}/{key}', result[key], step)
                writer.add_image(f'{tag}/confusion', picture, step, dataformats='HWC')
            if len(results) > 1:
                print('EM stages  ' + '  '.join(f'{t:>6}' for t in results))
                print('mIoU (%)   ' + '  '.join(f'{100 * r["mIoU"]:6.2f}'
                                                for r in results.values()))
            if settings.ATTN_IMAGES > 0:
                folder = f'{self.base}_T{next(iter(results))}_attention'
                with files.writing(folder, 'LOG_DIR'):
                    os.makedirs(folder, exist_ok=True)
                draw_attention(folder, writer, step)
                print(f'attention maps: {folder}', flush=True)
        for t, folder in self.pred_dirs.items():
            print(f'predictions (T={t}): {folder}', flush=True)


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
