"""Segment your own images with a trained checkpoint: for each image an index PNG <name>.png in
the dataset's palette (decoding it gives the predicted classes) and <name>_overlay.jpg to look
at (the prediction blended over the image, with a legend of the classes present).

    python predict.py CHECKPOINT INPUT... [KEY=VALUE ...] [--out DIR]
    python predict.py models/final.pth photos/ more.txt cat.jpg EVAL_FLIP=True
    python predict.py models/final.pth --voc-test 'EVAL_SCALES=(0.5,0.75,1.0,1.25,1.5,1.75)'
    torchrun --nproc_per_node=4 predict.py ...          # the inputs split over 4 processes

INPUT: an image (JPEG, PNG, BMP, WebP, TIFF or GIF of any size, turned as its EXIF orientation
says; grayscale, 16-bit, CMYK and RGBA become RGB, and what is not used, like an alpha channel
or more frames, is said), a folder of images, or a text file listing image paths, one per line
as written (relative to the file). The model, MEAN/STD, the class names and the palette come
from the checkpoint alone; EVAL_SCALES, EVAL_FLIP, EVAL_MODE (slide windows for large images)
and the first STAGE_NUM_EVAL apply, and inference is eval.py's own (inference.py).
Outputs go to --out, by default a new folder LOG_DIR/predict_<checkpoint>-<id>_<mode>; the last
line printed names it. An image that cannot
be read is reported and skipped, and the exit status is 1 at the end.

--voc-test writes the VOC 2012 test images' predictions (the ids of DATA_ROOT's test split, from
VOC2012test.tar) in the evaluation server's layout, results/VOC2012/Segmentation/comp6_test_cls/
<id>.png, checks that every id has its PNG and packs results.tar.gz to upload.
"""
import argparse
import os
import sys
import tarfile

import torch
import torch.distributed as dist
from tqdm import tqdm

from plumbing import (checkpoints, config, files, images,  # first: settings.py checked
                      layout, outputs, pictures, processes, scripts)
import inference
import network

VOC_SERVER = os.path.join('results', 'VOC2012', 'Segmentation', 'comp6_test_cls')


@scripts.command
def main(argv):
    rest = config.apply_overrides(argv, __doc__)
    given = config.given(argv)
    parser = argparse.ArgumentParser(prog='predict.py', add_help=False)
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('inputs', nargs='*')
    parser.add_argument('--out')
    parser.add_argument('--voc-test', action='store_true')
    args, unknown = parser.parse_known_args(rest)
    if unknown:
        raise config.UserError(f'unknown option {config.short(unknown[0])}; predict.py takes '
                               f'--out DIR and --voc-test besides its inputs (see --help).')
    if not args.checkpoint or bool(args.inputs) == args.voc_test:
        raise config.UserError('predict.py takes a checkpoint and images, folders or lists (or '
                               '--voc-test instead of them), like `python predict.py '
                               'models/final.pth photos/`; see --help.')
    rank, world, device = processes.init_distributed()
    net, info = inference.load_net(args.checkpoint, device, keep=given)
    if not {'classes', 'palette'} <= set(info):  # the original's checkpoints name neither
        info = {**layout.meta(), **info}
    t = network.stage_counts()
    checkpoints.say_unused(given, 'prediction', 'predict.py', device.type == 'cuda', {
        **{k: 'predict.py writes a PNG and an overlay per image' for k in (
            'SAVE_PRED', 'ATTN_IMAGES', 'VAL_SPLIT')},
        'STAGE_NUM_EVAL': len(t) > 1 and f'predict.py takes its first count, {t[0]}'})
    if args.voc_test:
        test = layout.split_files(layout.data_root(), 'test', labelled=False)
        ids, paths = [i for i, _, _ in test], [image for _, image, _ in test]
        names = ids
    else:
        paths = images_of(args.inputs)
        names = output_names(paths)
    images = [os.path.abspath(p) for p in paths]
    wanted = ({os.path.join(VOC_SERVER, f'{i}.png'): p for i, p in zip(ids, images)} |
               {'results.tar.gz': None} if args.voc_test else
               {f'{name}{end}': p for name, p in zip(names, images)
                for end in ('.png', '_overlay.jpg')})
    out = claim_out(args.out, wanted, args.checkpoint, info) if rank == 0 else None
    out = processes.gather(out, world)[0] if world > 1 else out  # rank 0's, once it is claimed
    pred_dir = os.path.join(out, VOC_SERVER) if args.voc_test else out
    with files.writing(pred_dir, '--out'):
        os.makedirs(pred_dir, exist_ok=True)
    failed = predict_all(net, paths, names, pred_dir, info, device, rank, world,
                         overlays=not args.voc_test)
    if world > 1:
        failed = sum(processes.gather(failed, world), [])
        dist.barrier()
    if rank == 0:
        for path, why in failed:
            print(f'skipped {path}: {why}', file=sys.stderr)
        if args.voc_test and not failed:
            print(f'archive to upload: {pack(out, ids)}')
        if failed:
            print(f'{len(failed)} of {len(paths)} images could not be read (above).',
                  file=sys.stderr)
        print(f'predictions: {out}', flush=True)
    processes.end_distributed()
    if failed:
        sys.exit(1)


def claim_out(given, wanted, checkpoint, info):
    """The folder to write `wanted` {file below it: its input image} into, listed there as
    predict.py's before anything is written (see outputs.claim): --out as `given`, or a new folder
    LOG_DIR/predict_<checkpoint>-<id>_<mode>[-2, -3, ...]. One sentence, and nothing written,
    when it would write over a file predict.py did not write (an input image, a file of yours)
    or over the prediction of another image."""
    if given:
        out = os.path.abspath(given)
    else:
        log_dir = files.folder('LOG_DIR')
        mode = checkpoints.mode_name(info['trained'], 'prediction')
        out = os.path.join(log_dir, files.unique_name(
            log_dir, f'predict_{checkpoints.checkpoint_id(checkpoint)}_{mode}'))
    if os.path.exists(out) and not os.path.isdir(out):
        raise config.UserError(f'--out {out} is a file; give a folder (a new one, or one of '
                               f'predict.py\'s earlier outputs).')
    inputs = {os.path.realpath(p) for p in wanted.values() if p}
    for name in wanted:
        if os.path.realpath(os.path.join(out, name)) in inputs:
            raise config.UserError(f'--out {out} would write {name} over an input image; give '
                                   f'another --out.')
    listed = outputs.claimed(out)
    ours = set(listed) | {outputs.OUTPUTS}
    for top, _, names in os.walk(out):
        for file in sorted(names):
            name = os.path.relpath(os.path.join(top, file), out)
            if name not in ours and not files.is_leftover(file):
                raise config.UserError(f'--out {out} holds {name}, which predict.py did not '
                                       f'write; give a new or empty folder (or one of '
                                       f'predict.py\'s earlier outputs).')
    for name, image in wanted.items():
        if listed.get(name) not in (None, image):
            raise config.UserError(f'--out {out} holds {name}, the prediction of another image '
                                   f'({listed[name]}), which this run would replace; give '
                                   f'another --out.')
    outputs.claim(out, wanted, '--out')
    return out


# ---------------------------------------------------------------------------- inputs

def images_of(inputs):
    """The image paths that the INPUT arguments name, in order: files as they are, the images
    of a folder (sorted), the lines of a .txt list (relative to the list's folder)."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(f for f in os.listdir(item)
                           if f.lower().endswith(layout.IMAGE_EXTS) and not f.startswith('.'))
            if not found:
                raise config.UserError(f'folder {item} holds no images '
                                       f'({", ".join(layout.IMAGE_EXTS)}); give a folder of '
                                       f'images, a list or files.')
            paths += [os.path.join(item, f) for f in found]
        elif os.path.isfile(item) and item.lower().endswith('.txt'):
            lines = files.read_lines(item, 'image list')
            if not lines:
                raise config.UserError(f'image list {item} is empty; give one image path per '
                                       f'line.')
            for number, line in lines:
                path = os.path.join(os.path.dirname(item), line)
                if not os.path.isfile(path):
                    raise config.UserError(layout.not_there('image', path, item, number, (
                        lambda near: os.path.relpath(near, os.path.dirname(item)))))
                paths.append(path)
        elif os.path.exists(item):
            paths.append(item)
        else:
            raise config.UserError(f'input {item} does not exist; give image files, folders of '
                                   f'images or .txt lists of image paths.')
    return paths


def output_names(paths):
    """A file name (without extension) per path: its stem, or with its folder in front when
    another stem is the same (a/x.jpg, b/x.jpg -> a_x, b_x), then its extension and more
    folders (a/x.jpg, a/x.png -> a_x_jpg, a_x_png); a file given twice gets -2. No output
    overwrites another."""
    def candidates(path):
        *folders, name = os.path.normpath(os.path.abspath(path)).split(os.sep)[1:]
        stem, ext = os.path.splitext(name)
        yield stem
        yield '_'.join(folders[-1:] + [stem])
        for k in range(1, len(folders) + 1):
            yield '_'.join(folders[-k:] + [stem] + ([ext[1:]] if ext else []))
    unique = list(dict.fromkeys(os.path.abspath(p) for p in paths))
    options = [list(candidates(p)) for p in unique]
    level = [0] * len(unique)
    while True:
        names = [o[min(k, len(o) - 1)] for o, k in zip(options, level)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1 and
                 level[i] < len(options[i]) - 1]
        if not clash:
            break
        for i in clash:
            level[i] += 1
    name_of, seen, out = dict(zip(unique, names)), {}, []
    for p in paths:
        name = name_of[os.path.abspath(p)]
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f'{name}-{seen[name]}')
    return out


# ---------------------------------------------------------------------------- prediction

def predict_all(net, paths, names, out, info, device, rank, world, overlays=True):
    """Write every world-th image's PNG (and overlay) from `rank` on; returns [(path, why)] of
    the images that could not be read."""
    failed, t = [], network.stage_counts()[0]
    bar = tqdm(list(zip(paths, names))[rank::world], desc='predict', unit='img',
               dynamic_ncols=True, disable=rank != 0)
    for path, name in bar:
        try:
            image = images.read_image(path)
        except config.UserError as e:
            failed.append((path, str(e)))
            continue
        x = torch.from_numpy(image).permute(2, 0, 1).to(device)
        with inference.eval_mode(net):  # validate's inference, one image at a time
            pred = inference.infer(net, x, (t,), path)[0].argmax(0).cpu().numpy()
        with files.writing(os.path.join(out, name), '--out'):
            pictures.write_label(pred, os.path.join(out, f'{name}.png'), info['palette'])
            if overlays:
                picture = pictures.overlay(image, pred, info['classes'], info['palette'])
                pictures.save_rgb(picture, os.path.join(out, f'{name}_overlay.jpg'))
    return failed


def pack(out, ids):
    """results.tar.gz of out/results for the VOC server, after checking that every id has its
    PNG; returns its path."""
    folder = os.path.join(out, VOC_SERVER)
    missing = [i for i in ids if not os.path.isfile(os.path.join(folder, f'{i}.png'))]
    if missing:
        raise config.UserError(f'{len(missing)} of the {len(ids)} test ids have no PNG in '
                               f'{folder} (first: {missing[0]}); run the command again.')
    target = os.path.join(out, 'results.tar.gz')
    with files.writing(target, '--out'), files.atomic(target) as tmp:
        with tarfile.open(tmp, 'w:gz') as tar:
            tar.add(os.path.join(out, 'results'), arcname='results')
    return target


if __name__ == '__main__':
    main(sys.argv[1:])
