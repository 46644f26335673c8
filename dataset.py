"""PASCAL VOC 2012 (+ SBD) for training and evaluation, in the VOC layout under DATA_ROOT:
JPEGImages/<id>.jpg, SegmentationClassAug/<id>.png (index PNG), ImageSets/Segmentation/<split>.txt.

    python dataset.py prepare --voc <VOCdevkit/VOC2012> --sbd <benchmark_RELEASE/dataset>
    python dataset.py toy <dir>        # a small synthetic dataset in the same layout
"""
import argparse
import multiprocessing
import os
import shlex
import sys

import cv2
import numpy as np
from PIL import Image

import config
import settings
import transforms

cv2.setNumThreads(0)  # one sample per worker process; OpenCV's own threads only contend

VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
               'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
               'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
FULL_TRAINAUG = 10582  # ids in trainaug from the full VOC 2012 + SBD
HOW_TO_MAKE = ('run `python dataset.py prepare --voc <VOC2012 dir> --sbd <SBD dataset dir>` '
               'or make toy data with `python dataset.py toy <dir>`, and set DATA_ROOT to it')


# ---------------------------------------------------------------------------- datasets

class _VOCData:
    """The ids of one split and the reading of one (image, label) pair, checked."""

    def __init__(self, split, data_root):
        root = config.path(settings.DATA_ROOT) if data_root is None else \
            os.path.abspath(os.path.expanduser(data_root))  # settings: from the project folder
        if not os.path.isdir(root):
            raise config.UserError(f'DATA_ROOT {root} is not a folder; {HOW_TO_MAKE}.')
        for sub in ('JPEGImages', 'SegmentationClassAug'):
            if not os.path.isdir(os.path.join(root, sub)):
                raise config.UserError(f'{os.path.join(root, sub)} does not exist, so DATA_ROOT '
                                       f'{root} is not a prepared VOC folder; {HOW_TO_MAKE}.')
        self.root = root
        self.ids = read_list(os.path.join(root, 'ImageSets', 'Segmentation', f'{split}.txt'))
        self.n_classes, self.ignore = settings.N_CLASSES, settings.IGNORE_LABEL
        self.fill = transforms.mean_colour(settings.MEAN)

    def __len__(self):
        return len(self.ids)

    def load(self, i):
        """(RGB uint8 HWC image, uint8 HW label) of ids[i]."""
        image_path = os.path.join(self.root, 'JPEGImages', f'{self.ids[i]}.jpg')
        label_path = os.path.join(self.root, 'SegmentationClassAug', f'{self.ids[i]}.png')
        image = read_image(image_path)
        label = read_label(label_path, self.n_classes, self.ignore)
        if image.shape[:2] != label.shape:
            raise config.UserError(
                f'label {label_path} is {label.shape[1]}x{label.shape[0]} but its image '
                f'{image_path} is {image.shape[1]}x{image.shape[0]}; they must be the same size.')
        return image, label


class TrainDataset(_VOCData):
    """ds[index] for any index >= 0: ids[index % len] with augmentation drawn from
    (SEED, epoch = index // len, index % len) only -> (uint8 (3, C, C), int64 (C, C))."""

    def __init__(self, split='trainaug', data_root=None):
        super().__init__(split, data_root)
        self.seed = settings.SEED
        self.transform = transforms.train_transform(settings.SCALES, settings.CROP_SIZE,
                                                    self.fill, self.ignore)

    def __getitem__(self, index):
        if index < 0:
            raise IndexError(f'TrainDataset index {index} is negative')
        epoch, i = divmod(int(index), len(self.ids))
        rng = np.random.default_rng([self.seed % 2**63, epoch, i])
        image, label = self.transform(*self.load(i), rng)
        return transforms.to_tensors(image, label)


class ValDataset(_VOCData):
    """ds[i] -> (uint8 (3, H', W'), int64 (H', W'), id, h, w): the whole image padded
    bottom/right so that H', W' are 1 modulo 8 (mean colour / IGNORE_LABEL)."""

    def __init__(self, split='val', data_root=None):
        super().__init__(split, data_root)
        self.transform = transforms.PadModulo(self.fill, self.ignore, 8, 1)

    def __getitem__(self, i):
        image, label = self.load(i)
        h, w = label.shape
        return (*transforms.to_tensors(*self.transform(image, label)), self.ids[i], h, w)


# ---------------------------------------------------------------------------- reading

def read_list(path):
    """The ids of an ImageSets list (first word of each non-empty line)."""
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        have = sorted(f[:-4] for f in os.listdir(folder) if f.endswith('.txt')) \
            if os.path.isdir(folder) else []
        raise config.UserError(f'list {path} does not exist (lists there: {have or "none"}); '
                               f'{HOW_TO_MAKE}.')
    with open(path) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise config.UserError(f'list {path} is empty; {HOW_TO_MAKE}.')
    return ids


def read_image(path):
    """RGB uint8 (H, W, 3); grayscale, CMYK and RGBA files become RGB. EXIF orientation is
    ignored: labels are drawn on the stored pixels."""
    rgb = getattr(cv2, 'IMREAD_COLOR_RGB', None)  # OpenCV >= 4.10 decodes straight to RGB
    image = cv2.imread(path, (rgb or cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise config.UserError(f'image {path} cannot be read: it is missing or not an image.')
    return image if rgb else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path, n_classes, ignore):
    """A palette ('P') or grayscale ('L') PNG as uint8 class indices, values checked."""
    try:
        with Image.open(path, formats=['PNG']) as img:
            mode, label = img.mode, np.asarray(img)
    except (OSError, ValueError, SyntaxError) as e:
        raise config.UserError(f'label {path} cannot be read ({type(e).__name__}); it is '
                               f'missing or not a PNG file.') from None
    if mode not in ('P', 'L', 'I', 'I;16'):
        raise config.UserError(f'label {path} is a {mode} image, not an index PNG (palette or '
                               f'grayscale with class numbers as values); convert it, e.g. '
                               f'with `python dataset.py prepare`.')
    bad = (label >= n_classes) & (label != ignore)
    if bad.any():
        values = np.unique(label[bad])
        raise config.UserError(f'label {path} has values {values[:8].tolist()} outside '
                               f'[0, {n_classes}) and {ignore}; fix the file or N_CLASSES.')
    return label.astype(np.uint8, copy=False)


def write_label(label, path):
    """An index PNG with the VOC palette, written via a temporary file and a rename."""
    img = Image.fromarray(np.asarray(label, np.uint8), 'L').convert('P')
    img.putpalette(palette())
    with config.atomic(path, '.png') as tmp:
        img.save(tmp)


# ---------------------------------------------------------------------------- classes

def class_names():
    """N_CLASSES names: DATA_ROOT/classes.txt when it exists, VOC's for 21, else class_<i>."""
    n = settings.N_CLASSES
    path = os.path.join(config.path(settings.DATA_ROOT), 'classes.txt')
    if os.path.isfile(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) != n:
            raise config.UserError(f'{path} names {len(names)} classes but N_CLASSES={n}; '
                                   f'set N_CLASSES={len(names)}.')
        return names
    return list(VOC_CLASSES) if n == len(VOC_CLASSES) else [f'class_{i}' for i in range(n)]


def palette():
    """The VOC colour map as a flat list of 768 ints (for PIL 'P' images)."""
    i, rgb = np.arange(256), np.zeros((256, 3), np.int64)
    for bit in range(8):
        for c in range(3):
            rgb[:, c] |= ((i >> (3 * bit + c)) & 1) << (7 - bit)
    return rgb.ravel().tolist()


_PALETTE = np.array(palette(), np.uint8).reshape(256, 3)


def colorize(label):
    """RGB uint8 (H, W, 3) of a label map with the VOC palette (255 -> light grey)."""
    label = np.asarray(label)
    return _PALETTE[np.clip(label, 0, 255).astype(np.uint8)]


# ---------------------------------------------------------------------------- prepare

def prepare(voc, sbd, workers=None):
    """Write SegmentationClassAug/<id>.png for every id labelled by VOC or SBD (VOC's label
    wins) and ImageSets/Segmentation/trainaug.txt into the VOC folder; returns trainaug."""
    voc, sbd = os.path.abspath(voc), os.path.abspath(sbd)
    lists = os.path.join(voc, 'ImageSets', 'Segmentation')
    for path, what in ((voc, 'the VOC 2012 folder'), (f'{voc}/JPEGImages', 'VOC images'),
                       (f'{voc}/SegmentationClass', 'VOC labels'),
                       (f'{lists}/train.txt', 'VOC train list'),
                       (f'{lists}/val.txt', 'VOC val list'),
                       (sbd, 'the SBD folder'), (f'{sbd}/cls', 'SBD labels'),
                       (f'{sbd}/train.txt', 'SBD train list'), (f'{sbd}/val.txt', 'SBD val list')):
        if not os.path.exists(path):
            raise config.UserError(f'{path} ({what}) does not exist; give --voc the '
                                   f'VOCdevkit/VOC2012 folder and --sbd the SBD '
                                   f'benchmark_RELEASE/dataset folder.')
    if not os.access(voc, os.W_OK):
        raise config.UserError(f'{voc} is not writable; prepare writes SegmentationClassAug/ and '
                               f'trainaug.txt there, so give a writable copy.')
    voc_ids = _stems(os.path.join(voc, 'SegmentationClass'), '.png')
    sbd_ids = _stems(os.path.join(sbd, 'cls'), '.mat') - voc_ids
    voc_val = set(read_list(f'{lists}/val.txt'))
    trainaug = {i for f in (f'{lists}/train.txt', f'{sbd}/train.txt', f'{sbd}/val.txt')
                for i in read_list(f)}
    trainaug = sorted(trainaug - voc_val)
    for split, ids in (('trainaug', trainaug), ('val', sorted(voc_val))):
        missing = [i for i in ids if i not in voc_ids and i not in sbd_ids]
        missing = missing or [i for i in ids
                              if not os.path.isfile(os.path.join(voc, 'JPEGImages', f'{i}.jpg'))]
        if missing:
            raise config.UserError(f'{len(missing)} ids of {split} (first: {missing[0]}) have no '
                                   f'label or no image in {voc} or {sbd}; the download is '
                                   f'incomplete.')
    out = os.path.join(voc, 'SegmentationClassAug')
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):  # what a killed run left half-written
        if '.png.tmp' in f:
            os.remove(os.path.join(out, f))
    jobs = [(os.path.join(voc, 'SegmentationClass', f'{i}.png'), i) for i in sorted(voc_ids)]
    jobs += [(os.path.join(sbd, 'cls', f'{i}.mat'), i) for i in sorted(sbd_ids)]
    todo = [(src, os.path.join(out, f'{i}.png')) for src, i in jobs
            if not os.path.exists(os.path.join(out, f'{i}.png'))]
    print(f'{len(jobs)} labels ({len(voc_ids)} VOC, {len(sbd_ids)} SBD), '
          f'{len(jobs) - len(todo)} already written')
    if todo:
        from tqdm import tqdm
        with multiprocessing.Pool(workers or os.cpu_count()) as pool:
            for _ in tqdm(pool.imap_unordered(_convert_label, todo, chunksize=8),
                          total=len(todo), desc='labels', unit='file'):
                pass
    _write_text(os.path.join(lists, 'trainaug.txt'), ''.join(f'{i}\n' for i in trainaug))
    print(f'trainaug: {len(trainaug)} ids, val: {len(voc_val)} ids')
    if len(trainaug) != FULL_TRAINAUG:
        print(f'note: trainaug differs from the {FULL_TRAINAUG} ids of the full VOC 2012 + SBD; '
              f'if this was meant to be the full data, part of it is missing.')
    print(f'done: train with DATA_ROOT={voc}')
    return trainaug


def _stems(folder, ext):
    return {f[:-len(ext)] for f in os.listdir(folder) if f.endswith(ext)}


def _convert_label(job):
    """One label (a VOC PNG or an SBD .mat) as an index PNG."""
    src, dst = job
    if src.endswith('.mat'):
        import scipy.io
        try:
            seg = scipy.io.loadmat(src, struct_as_record=False, squeeze_me=True)['GTcls']
            label = np.asarray(seg.Segmentation)
        except Exception as e:  # a truncated or foreign .mat
            raise config.UserError(f'{src} cannot be read as an SBD label ({type(e).__name__}); '
                                   f'download SBD again.') from None
        if label.ndim != 2 or label.max() >= len(VOC_CLASSES):
            raise config.UserError(f'{src} does not hold a 2-D class map with values '
                                   f'below {len(VOC_CLASSES)}; download SBD again.')
    else:
        label = read_label(src, len(VOC_CLASSES), 255)
    write_label(label, dst)


def _write_text(path, text):
    """Write text via a temporary file and a rename, only when it changes."""
    if os.path.isfile(path):
        with open(path) as f:
            if f.read() == text:
                return
    with config.atomic(path) as tmp, open(tmp, 'w') as f:
        f.write(text)


# ---------------------------------------------------------------------------- toy data

TOY_CLASSES = ('background', 'disk', 'bar', 'triangle', 'cross')
TOY_LAYOUT = {'JPEGImages', 'SegmentationClassAug', 'ImageSets', 'classes.txt'}
TOY_SIZE = (64, 80)  # sides in pixels: small, for a network trained on a CPU in minutes


def make_toy(root, seed=0, n_train=320, n_val=80, size=TOY_SIZE):
    """A synthetic dataset in the VOC layout (see toy_sample), 255 on object borders, and
    classes.txt; deterministic from seed. Returns the settings that train on it."""
    root = os.path.abspath(root)
    extra = sorted(set(os.listdir(root)) - TOY_LAYOUT) if os.path.isdir(root) else []
    if extra:
        raise config.UserError(f'{root} already holds other files ({extra[0]}); give a new or '
                               f'empty folder for the toy data.')
    lists = os.path.join(root, 'ImageSets', 'Segmentation')
    for sub in ('JPEGImages', 'SegmentationClassAug', lists):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    ids = [f'toy_{i:05d}' for i in range(n_train + n_val)]
    for i, name in enumerate(ids):
        image, label = toy_sample(np.random.default_rng([seed, i]), size)
        cv2.imwrite(os.path.join(root, 'JPEGImages', f'{name}.jpg'), image[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        write_label(label, os.path.join(root, 'SegmentationClassAug', f'{name}.png'))
    _write_text(os.path.join(lists, 'trainaug.txt'), ''.join(f'{i}\n' for i in ids[:n_train]))
    _write_text(os.path.join(lists, 'val.txt'), ''.join(f'{i}\n' for i in ids[n_train:]))
    _write_text(os.path.join(root, 'classes.txt'), ''.join(f'{c}\n' for c in TOY_CLASSES))
    crop = (min(size) - 1) // 8 * 8 + 1  # the largest 1-mod-8 side that fits every image
    return {'DATA_ROOT': root, 'N_CLASSES': len(TOY_CLASSES), 'CROP_SIZE': crop,
            'SCALES': (0.75, 1.0, 1.25)}  # halving would leave objects of ~3 output pixels


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

@config.main
def main():
    parser = argparse.ArgumentParser(prog='dataset.py', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('prepare', help='VOC 2012 + SBD -> SegmentationClassAug, trainaug.txt')
    p.add_argument('--voc', required=True, help='the VOCdevkit/VOC2012 folder')
    p.add_argument('--sbd', required=True, help='the SBD benchmark_RELEASE/dataset folder')
    p.add_argument('--workers', type=int, default=0, help='processes (default: every core)')
    t = sub.add_parser('toy', help='a small synthetic dataset in the VOC layout')
    t.add_argument('dir')
    t.add_argument('--seed', type=int, default=0)
    t.add_argument('--train', type=int, default=320, help='images in trainaug')
    t.add_argument('--val', type=int, default=80, help='images in val')
    t.add_argument('--size', type=int, nargs=2, default=TOY_SIZE, metavar=('MIN', 'MAX'),
                   help='range of image sides in pixels')
    args = parser.parse_args(config.apply_overrides(sys.argv[1:]))
    if args.command == 'prepare':
        prepare(args.voc, args.sbd, args.workers or None)
        return
    if not 16 <= args.size[0] <= args.size[1]:
        raise config.UserError(f'--size {args.size[0]} {args.size[1]} is not a range of sides '
                               f'of at least 16 pixels; give e.g. --size 100 128.')
    found = make_toy(args.dir, args.seed, args.train, args.val, tuple(args.size))
    print(f'toy data: {args.train} trainaug + {args.val} val images of {args.size[0]}-'
          f'{args.size[1]} px in {found["DATA_ROOT"]}; classes: {", ".join(TOY_CLASSES)}')
    text = {k: ','.join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in found.items()}
    print('settings: ' + ' '.join(f'{k}={shlex.quote(v)}' for k, v in text.items()))


if __name__ == '__main__':
    main()
