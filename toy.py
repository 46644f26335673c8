"""Make the toy dataset: shapes on textured colour fields, where only the shape tells the class,
in the layout of dataset.py. Small enough that a CPU trains an EMANet on it in minutes (the
demo, the tests), made deterministically from a seed.

    python toy.py DIR [--seed S] [--train N] [--val M] [--size MIN MAX]

It prints the settings that train on it. DIR must be new or empty, or hold toy data made with
the same arguments (recorded in DIR/toy.json): other arguments would replace its images.
"""
import argparse
import json
import os
import sys

import cv2
import numpy as np

from plumbing import config, files, pictures, scripts

TOY_CLASSES = ('background', 'disk', 'bar', 'triangle', 'cross')
TOY_LAYOUT = {'JPEGImages', 'SegmentationClassAug', 'ImageSets', 'classes.txt', 'toy.json'}
TOY_SIZE = (48, 56)  # sides in pixels: small, for a network trained on a CPU in minutes
TOY_TRAIN, TOY_VAL = 3000, 80  # many small images: the demo's mIoU then holds across seeds


def make_toy(root, seed=0, n_train=TOY_TRAIN, n_val=TOY_VAL, size=TOY_SIZE):
    """A synthetic dataset in the VOC layout (see toy_sample), 255 on object borders, and
    classes.txt; deterministic from seed. Returns the settings that train on it."""
    root = os.path.abspath(root)
    if n_train < 1 or n_val < 1:
        raise config.UserError(f'the toy data needs at least 1 train and 1 val image, not '
                               f'{n_train} and {n_val}; pass e.g. --train 3000 --val 80.')
    if os.path.exists(root) and not os.path.isdir(root):
        raise config.UserError(f'{root} is a file; give a new or empty folder for the toy data.')
    extra = sorted(set(os.listdir(root)) - TOY_LAYOUT) if os.path.isdir(root) else []
    if extra:
        raise config.UserError(f'{root} already holds other files ({extra[0]}); give a new or '
                               f'empty folder for the toy data.')
    made = {'seed': seed, 'train': n_train, 'val': n_val, 'size': list(size)}
    before = _made_with(root)
    if before not in (None, made):
        raise config.UserError(f'{root} holds toy data made with {_arguments(before)}, which '
                               f'other arguments would replace; give those arguments, or a new '
                               f'folder for {_arguments(made)}.')
    lists = os.path.join(root, 'ImageSets', 'Segmentation')
    ids = [f'toy_{i:05d}' for i in range(n_train + n_val)]
    with files.writing(root, '<dir>'):
        for sub in ('JPEGImages', 'SegmentationClassAug', lists):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        files.write_text(os.path.join(root, 'toy.json'), [json.dumps(made)])
        for i, name in enumerate(ids):
            image, label = toy_sample(np.random.default_rng([seed, i]), size)
            path = os.path.join(root, 'JPEGImages', f'{name}.jpg')
            if not cv2.imwrite(path, image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise OSError(0, 'the image could not be written', path)
            pictures.write_label(label, os.path.join(root, 'SegmentationClassAug',
                                                     f'{name}.png'))
        files.write_text(os.path.join(lists, 'trainaug.txt'), ids[:n_train])
        files.write_text(os.path.join(lists, 'val.txt'), ids[n_train:])
        files.write_text(os.path.join(root, 'classes.txt'), TOY_CLASSES)
    # The smallest 1-mod-8 side that holds every image whole: a crop smaller than the images
    # would leave the outer taps of layer4's dilated convolutions untrained, yet used at eval.
    crop = (max(size) + 6) // 8 * 8 + 1
    return {'DATA_ROOT': root, 'N_CLASSES': len(TOY_CLASSES), 'CROP_SIZE': crop,
            'SCALES': (0.75, 1.0, 1.25)}  # halving would leave objects of ~3 output pixels


def _made_with(root):
    """The arguments toy data in `root` was made with ({'seed', 'train', 'val', 'size'}), None
    for a folder without toy data, or {'unknown': True} when it holds some but not the record."""
    try:
        with open(os.path.join(root, 'toy.json')) as f:
            made = json.load(f)
        return made if isinstance(made, dict) else {'unknown': True}
    except (OSError, ValueError):
        pass
    held = set(os.listdir(root)) & TOY_LAYOUT if os.path.isdir(root) else set()
    return {'unknown': True} if held else None


def _arguments(made):
    if made.get('unknown'):
        return 'arguments it does not record'
    return (f'--seed {made["seed"]} --train {made["train"]} --val {made["val"]} --size '
            f'{" ".join(map(str, made["size"]))}')


def toy_sample(rng, size=TOY_SIZE):
    """One (RGB uint8 image, uint8 label) of the toy data, sides drawn from [size[0], size[1]]:
    1-2 flat objects of a random colour (only the shape tells the class) on a striped,
    grainy colour field, at least 100 apart in RGB from the background around them."""
    h, w = (int(v) for v in rng.integers(size[0], size[1] + 1, 2))
    image = _texture(rng, h, w, stripes=rng.uniform(15, 35), grain=8)
    label = np.zeros((h, w), np.uint8)
    placed, kernel = [], np.ones((3, 3), np.uint8)
    for cls in rng.integers(1, len(TOY_CLASSES), rng.integers(1, 3)):
        r = rng.uniform(0.25, 0.35) * min(h, w)
        for _ in range(30):
            c = rng.uniform(0.7 * r, (w - 0.7 * r, h - 0.7 * r))
            if all(np.hypot(*(c - c2)) > 1.1 * (r + r2) for c2, r2 in placed):
                break
        else:
            continue
        placed.append((c, r))
        mask = _shape(cls, h, w, c, r, rng.uniform(-0.3, 0.3))
        ring = cv2.dilate(mask, kernel, iterations=3) > mask
        around = image[ring].mean(0)
        for _ in range(20):  # a colour that stands out from what surrounds the object
            colour = rng.uniform(0, 255, 3)
            if np.linalg.norm(colour - around) >= 100:
                break
        obj = colour + _texture(rng, h, w, stripes=0, grain=4) - 127.5
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 0.7)[..., None]
        image = alpha * obj + (1 - alpha) * image
        label[mask > 0] = cls
    label[cv2.dilate(label, kernel) != cv2.erode(label, kernel)] = 255
    return np.clip(image, 0, 255).astype(np.uint8), label


def _texture(rng, h, w, stripes, grain):
    """A colour field around 127.5 (+-90, smooth blobs), stripes at a random angle and
    period of amplitude `stripes`, and grain of deviation `grain`."""
    spread = 90 if stripes else 15  # objects: a gentle shading only
    blobs = rng.uniform(127.5 - spread, 127.5 + spread, (rng.integers(2, 5),
                                                         rng.integers(2, 5), 3))
    field = cv2.resize(blobs.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    theta, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
    field += (stripes * np.sin((xx * np.cos(theta) + yy * np.sin(theta))
                               * (2 * np.pi / period)))[..., None]
    return field + rng.normal(0, grain, (h, w, 3)).astype(np.float32)


def _ring(n, radius, start=0.0):
    a = np.radians(start) + np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(a), np.sin(a)], 1) * radius


_T = 0.36  # half the width of a cross's arm
TOY_SHAPES = {1: _ring(48, 1.0), 3: _ring(3, 1.3, -90),  # about the same areas
              2: np.array([(-1.3, -.45), (1.3, -.45), (1.3, .45), (-1.3, .45)]),
              4: np.array([(-_T, -1), (_T, -1), (_T, -_T), (1, -_T), (1, _T), (_T, _T),
                           (_T, 1), (-_T, 1), (-_T, _T), (-1, _T), (-1, -_T), (-_T, -_T)])}


def _shape(cls, h, w, centre, r, angle):
    """uint8 mask of a disk (1), bar (2), triangle (3) or cross (4) of size ~r."""
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = (TOY_SHAPES[int(cls)] @ rot.T * r + centre) * 16
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask


# ---------------------------------------------------------------------------- command line

@scripts.command
def main(argv):
    parser = argparse.ArgumentParser(prog='toy.py', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('dir', help='the folder to write')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--train', type=int, default=TOY_TRAIN, help='images in trainaug')
    parser.add_argument('--val', type=int, default=TOY_VAL, help='images in val')
    parser.add_argument('--size', type=int, nargs=2, default=TOY_SIZE, metavar=('MIN', 'MAX'),
                        help='range of image sides in pixels')
    args = parser.parse_args(argv)
    if args.seed < 0:
        raise config.UserError(f'--seed {args.seed} must be 0 or more.')
    if not 16 <= args.size[0] <= args.size[1]:
        raise config.UserError(f'--size {args.size[0]} {args.size[1]} is not a range of sides '
                               f'of at least 16 pixels; give e.g. --size 100 128.')
    found = make_toy(args.dir, args.seed, args.train, args.val, tuple(args.size))
    print(f'toy data: {args.train} trainaug + {args.val} val images of {args.size[0]}-'
          f'{args.size[1]} px in {found["DATA_ROOT"]}; classes: {", ".join(TOY_CLASSES)}')
    print(f'settings: {config.as_arguments(found)}')


if __name__ == '__main__':
    main(sys.argv[1:])
