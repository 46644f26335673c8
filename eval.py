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
import os
import sys

import torch

from plumbing import (checkpoints, config, layout,  # first: settings.py checked
                      pictures, processes, reports, scripts)
import dataset
import inference
import network
import settings

# ---------------------------------------------------------------------------- main


@scripts.command
def main(argv):
    checkpoint = config.one_argument(config.apply_overrides(argv, __doc__), 'eval.py',
                                     'the checkpoint')
    target = checkpoint or os.path.join(config.path(settings.MODEL_DIR), 'final.pth')
    given = config.given(argv)
    rank, world, device = processes.init_distributed()
    if device.type == 'cpu' and world > 1:  # the cores shared by the processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    net, info = inference.load_net(target, device, keep=given)
    if not {'classes', 'palette'} <= set(info):  # the original's checkpoints name neither
        info = {**layout.meta(), **info}
    checkpoints.say_unused(given, 'evaluation', 'eval.py', device.type == 'cuda')
    data = dataset.ValDataset(settings.VAL_SPLIT)
    stages = network.stage_counts()
    report = reports.Report(target, info, data, stages, rank)  # its files, claimed in LOG_DIR
    results = inference.validate(net, data, device, stages, report.pred_dirs, info['palette'],
                                 progress=True)
    if rank == 0:
        report.write(results, lambda folder, writer, step: draw_attention(
            net, data, device, folder, info['palette'], writer, step))
    processes.end_distributed()
    return results[stages[0]] if len(stages) == 1 else results

# ---------------------------------------------------------------------------- attention


def draw_attention(net, data, device, out_dir, colours=None, writer=None, step=0):
    """For the first ATTN_IMAGES images: the input, the single-scale prediction and the K
    responsibility maps of the last E-step, as out_dir/<id>.png (full size; the folder exists)
    and TensorBoard images (at most 2048 pixels wide). Returns the PNG paths."""
    import cv2
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
