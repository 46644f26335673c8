"""Reading a prepared dataset for training and evaluation, and checking one. Every dataset (VOC,
the others prepare.py makes, toy.py's, your own) has this layout under DATA_ROOT:

    JPEGImages/<id>.jpg (or .png, .jpeg, .bmp, .webp)   the images (files or links)
    SegmentationClassAug/<id>.png                       labels: class index per pixel
    ImageSets/Segmentation/<split>.txt                  the ids of a split, one per line
    classes.txt                                         class names, one per line (optional)
    palette.txt                                         "R G B" per class (optional)

    python dataset.py check [DATA_ROOT] [--workers N]   # verify it, with class statistics

Not here: writing the layout (prepare.py, toy.py and preparation.py).
"""
import argparse
import collections
import os
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
IMAGE_EXTS = ('.jpg', '.png', '.jpeg', '.bmp', '.webp')
HOW_TO_MAKE = ('run `python prepare.py NAME SOURCE...` (see the README) or make toy data with '
               '`python toy.py <dir>`, and set DATA_ROOT to it')


# ---------------------------------------------------------------------------- datasets

def data_root(root=None):
    """DATA_ROOT from settings (relative to the project folder), or `root` (relative to the
    working folder), checked to be a prepared folder."""
    root = config.path(settings.DATA_ROOT) if root is None else \
        os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise config.UserError(f'DATA_ROOT {root} is not a folder; {HOW_TO_MAKE}.')
    for sub in ('JPEGImages', 'SegmentationClassAug'):
        if not os.path.isdir(os.path.join(root, sub)):
            raise config.UserError(f'{os.path.join(root, sub)} does not exist, so DATA_ROOT '
                                   f'{root} is not a prepared folder; {HOW_TO_MAKE}.')
    return root


class _Split:
    """The ids of one split and the reading of one (image, label) pair, checked. The class
    names are checked against N_CLASSES when the split is opened."""

    def __init__(self, split, root=None):
        self.root = data_root(root)
        self.ids = read_list(os.path.join(self.root, 'ImageSets', 'Segmentation',
                                          f'{split}.txt'))
        self.classes = class_names(self.root)
        self.n_classes, self.ignore = settings.N_CLASSES, settings.IGNORE_LABEL

    def __len__(self):
        return len(self.ids)

    def load(self, i):
        """(RGB uint8 HWC image, uint8 HW label) of ids[i]."""
        image_path = find_image(os.path.join(self.root, 'JPEGImages', self.ids[i]))
        label_path = os.path.join(self.root, 'SegmentationClassAug', f'{self.ids[i]}.png')
        image = read_image(image_path)
        label = read_label(label_path, self.n_classes, self.ignore)
        if image.shape[:2] != label.shape:
            raise config.UserError(
                f'label {label_path} is {label.shape[1]}x{label.shape[0]} but its image '
                f'{image_path} is {image.shape[1]}x{image.shape[0]}; they must be the same size.')
        return image, label


class TrainDataset(_Split):
    """ds[index] for any index >= 0: ids[index % len] with augmentation drawn from
    (SEED, epoch = index // len, index % len) only -> (uint8 (3, h, w), uint8 (h, w)) of
    CROP_SIZE (h, w)."""

    def __init__(self, split='trainaug', root=None):
        super().__init__(split, root)
        self.seed = settings.SEED
        self.transform = transforms.train_transform(
            settings.SCALES, config.crop_size(), transforms.mean_colour(settings.MEAN),
            self.ignore)

    def __getitem__(self, index):
        if index < 0:
            raise IndexError(f'TrainDataset index {index} is negative')
        epoch, i = divmod(int(index), len(self.ids))
        rng = np.random.default_rng([self.seed % 2**63, epoch, i])
        return transforms.to_tensors(*self.transform(*self.load(i), rng))


class ValDataset(_Split):
    """ds[i] -> (uint8 (3, H, W) image, uint8 (H, W) label, id): the whole image, as it is
    (evaluation pads it, see eval.infer)."""

    def __init__(self, split='val', root=None):
        super().__init__(split, root)

    def __getitem__(self, i):
        return (*transforms.to_tensors(*self.load(i)), self.ids[i])


# ---------------------------------------------------------------------------- reading

def read_text(path, what):
    """The lines of a UTF-8 text file; a byte-order mark or another encoding is one sentence."""
    with open(path, 'rb') as f:
        data = f.read()
    if data.startswith((b'\xef\xbb\xbf', b'\xff\xfe', b'\xfe\xff')):
        raise config.UserError(f'{what} {path} begins with a byte-order mark (saved by a '
                               f'Windows editor); save it as plain UTF-8 without one.')
    try:
        return data.decode('utf-8').splitlines()
    except UnicodeDecodeError as e:
        raise config.UserError(f'{what} {path} is not UTF-8 text (byte {e.start}); save it as '
                               f'UTF-8.') from None


def read_ids(path, what='list'):
    """The first word of each non-empty line of a text file (a list of ids)."""
    return [line.split()[0] for line in read_text(path, what) if line.strip()]


def read_list(path):
    """The ids of a split list of a prepared dataset, which must exist and hold some."""
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        have = sorted(f[:-4] for f in os.listdir(folder) if f.endswith('.txt')) \
            if os.path.isdir(folder) else []
        raise config.UserError(f'list {path} does not exist (lists there: {have or "none"}); '
                               f'{HOW_TO_MAKE}.')
    ids = read_ids(path)
    if not ids:
        raise config.UserError(f'list {path} is empty; {HOW_TO_MAKE}.')
    twice = repeated(ids)
    if twice:
        raise config.UserError(f'list {path} names {twice[0]} more than once ({len(twice)} ids '
                               f'so); an image listed twice would count twice, so remove the '
                               f'repeats.')
    return ids


def repeated(ids):
    """The ids that a list names more than once, in their order."""
    return [i for i, n in collections.Counter(ids).items() if n > 1]


def find_image(stem):
    """stem + the first of IMAGE_EXTS that exists (stem + '.jpg' when none does)."""
    for ext in IMAGE_EXTS:
        if os.path.exists(stem + ext):
            return stem + ext
    return stem + IMAGE_EXTS[0]


def read_image(path):
    """RGB uint8 (H, W, 3); grayscale, 16-bit, CMYK and RGBA files become RGB. EXIF
    orientation is ignored: labels are drawn on the stored pixels."""
    if not os.path.isfile(path):  # checked here: OpenCV would print a warning of its own
        what = 'is a folder' if os.path.isdir(path) else 'does not exist'
        raise config.UserError(f'image {path} cannot be read: it {what}.')
    rgb = getattr(cv2, 'IMREAD_COLOR_RGB', None)  # OpenCV >= 4.10 decodes straight to RGB
    image = cv2.imread(path, (rgb or cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise config.UserError(f'image {path} cannot be read: it is not an image file.')
    return image if rgb else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_whole(path):
    """One sentence when an image file ends before its data does (a copy or a download cut
    short): decoders fill the rest in grey, with no more than a warning."""
    try:
        with Image.open(path) as img:
            img.load()
    except OSError as e:
        if 'truncated' in str(e):
            raise config.UserError(f'image {path} is cut short ({e}); copy it again.') from None


def read_label(path, n_classes, ignore):
    """A palette ('P') or grayscale ('L') PNG as uint8 class indices, values checked."""
    try:
        with Image.open(path, formats=['PNG']) as img:
            mode, label = img.mode, np.array(img)  # writable: torch takes it as it is
    except (OSError, ValueError, SyntaxError) as e:
        raise config.UserError(f'label {path} cannot be read ({type(e).__name__}); it is '
                               f'missing or not a PNG file.') from None
    if mode not in ('P', 'L', 'I', 'I;16'):
        raise config.UserError(f'label {path} is an image of mode {mode}, not an index PNG '
                               f'(palette or grayscale with class numbers as values); convert it '
                               f'(see "Your own dataset" in docs/datasets.md).')
    bad = (label >= n_classes) & (label != ignore)
    if bad.any():
        values = np.unique(label[bad])
        raise config.UserError(f'label {path} has values {values[:8].tolist()} outside '
                               f'[0, {n_classes}) and {ignore}; fix the file or N_CLASSES.')
    return label.astype(np.uint8, copy=False)


# ---------------------------------------------------------------------------- classes

def read_classes(root):
    """The names in root/classes.txt (one per line), or None when it has none."""
    path = os.path.join(root, 'classes.txt')
    if not os.path.isfile(path):
        return None
    names = [line.strip() for line in read_text(path, 'class list') if line.strip()]
    twice = repeated(names)
    if twice:
        raise config.UserError(f'{path} names {twice[0]!r} more than once; class names must be '
                               f'distinct (the scores are by name), so rename one.')
    return names


def class_names(root=None):
    """N_CLASSES names: root/classes.txt when it exists (checked against N_CLASSES), VOC's
    for 21 classes, else class_<i>. root: DATA_ROOT by default."""
    n = settings.N_CLASSES
    root = config.path(settings.DATA_ROOT) if root is None else root
    names = read_classes(root)
    if names is not None and len(names) != n:
        raise config.UserError(f'{os.path.join(root, "classes.txt")} names {len(names)} '
                               f'classes but N_CLASSES={n}; set N_CLASSES={len(names)}.')
    if names is not None:
        return names
    return list(VOC_CLASSES) if n == len(VOC_CLASSES) else [f'class_{i}' for i in range(n)]


def voc_colours():
    """The VOC colour map: 256 RGB rows (class 1 = (128, 0, 0), ..., 255 = (224, 224, 192))."""
    i, rgb = np.arange(256), np.zeros((256, 3), np.int64)
    for bit in range(8):
        for c in range(3):
            rgb[:, c] |= ((i >> (3 * bit + c)) & 1) << (7 - bit)
    return rgb


def palette(root=None):
    """256 colours as a flat list of 768 ints (for PIL 'P' images): the VOC colour map, with
    the rows of root/palette.txt ("R G B" per class) first when root has that file."""
    rgb = voc_colours()
    path = os.path.join(root, 'palette.txt') if root else ''
    if path and os.path.isfile(path):
        try:
            rows = [[int(v) for v in line.split()] for line in read_text(path, 'palette')
                    if line.strip()]
            rows = np.array(rows, np.int64).reshape(-1, 3)
        except ValueError:
            raise config.UserError(f'palette {path} is not lines of three numbers "R G B"; '
                                   f'fix or delete it.') from None
        if len(rows) > 255 or rows.min(initial=0) < 0 or rows.max(initial=0) > 255:
            raise config.UserError(f'palette {path} needs at most 255 rows of values in '
                                   f'[0, 255]; fix or delete it.')
        rgb[:len(rows)] = rows
    return rgb.ravel().tolist()


def meta(root=None):
    """What a checkpoint keeps of its dataset so that predictions need no data: the class
    names and the palette."""
    root = config.path(settings.DATA_ROOT) if root is None else root
    return {'classes': class_names(root), 'palette': palette(root)}


# ---------------------------------------------------------------------------- check

def check(root=None, workers=None, show=8):
    """Read every image and label of every split of a prepared dataset: sizes, label values,
    pixels and images per class. Prints a table and the first problems; returns the number
    of problems."""
    root = data_root(root)
    lists = os.path.join(root, 'ImageSets', 'Segmentation')
    splits = sorted(f[:-4] for f in os.listdir(lists) if f.endswith('.txt')) \
        if os.path.isdir(lists) else []
    if not splits:
        raise config.UserError(f'{lists} holds no split lists; {HOW_TO_MAKE}.')
    names = read_classes(root) or class_names(root)
    n = len(names)
    print(f'{root}: {n} classes, splits {", ".join(splits)}')
    palette(root)  # a malformed palette.txt: one sentence, as train.py would say it
    problems = 0
    for split in splits:
        ids = read_ids(os.path.join(lists, f'{split}.txt'))
        twice, ids = repeated(ids), list(dict.fromkeys(ids))  # each image once in the counts
        labelled = [i for i in ids if os.path.exists(
            os.path.join(root, 'SegmentationClassAug', f'{i}.png'))]
        jobs = [(root, i, n, settings.IGNORE_LABEL, bool(labelled)) for i in ids]
        pixels, images, bad = np.zeros(n + 1, np.int64), np.zeros(n, np.int64), []
        for counts, problem in config.parallel(_check_one, jobs, workers, split):
            pixels += counts
            images += counts[:n] > 0
            if problem:
                bad.append(problem)
        bad += [f'{i} is listed more than once in {split}.txt (it would count twice)'
                for i in twice]
        kind = 'labelled' if labelled else 'unlabelled (images only)'
        print(f'\n{split}: {len(ids)} ids, {kind}, {len(bad)} with problems')
        if labelled:
            total = max(1, pixels.sum())
            print(f'{"class":<24}{"pixels %":>10}{"images":>8}')
            for name, p, k in zip(names, pixels[:n], images):
                print(f'{name[:23]:<24}{100 * p / total:>10.3f}{k:>8}')
            print(f'{"(ignored)":<24}{100 * pixels[n] / total:>10.3f}')
        for problem in bad[:show]:
            print(f'  problem: {problem}')
        problems += len(bad)
    print(f'\n{problems} problem(s) in {root}')
    return problems


def _check_one(job):
    """(pixels per class + ignored (n + 1,), problem sentence or None) of one id."""
    root, id_, n, ignore, labelled = job
    counts = np.zeros(n + 1, np.int64)
    try:
        path = find_image(os.path.join(root, 'JPEGImages', id_))
        image = read_image(path)
        check_whole(path)
        if not labelled:
            return counts, None
        label = read_label(os.path.join(root, 'SegmentationClassAug', f'{id_}.png'), n, ignore)
        if image.shape[:2] != label.shape:
            return counts, (f'{id_}: label {label.shape[1]}x{label.shape[0]}, image '
                            f'{image.shape[1]}x{image.shape[0]}')
    except config.UserError as e:
        return counts, str(e)
    values = np.bincount(label.ravel(), minlength=256)
    counts[:n], counts[n] = values[:n], values[ignore]
    return counts, None


# ---------------------------------------------------------------------------- command line

@config.command
def main(argv):
    parser = argparse.ArgumentParser(prog='dataset.py', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    sub = parser.add_subparsers(dest='command', required=True)
    c = sub.add_parser('check', help='verify a prepared dataset and count its classes')
    c.add_argument('root', nargs='?', help='the prepared folder (default: DATA_ROOT)')
    c.add_argument('--workers', type=int, default=0, help='threads (default: every core)')
    args = parser.parse_args(config.apply_overrides(argv))
    if args.workers < 0:
        raise config.UserError(f'--workers {args.workers} must be 0 (every core) or more.')
    if check(args.root, args.workers or None):
        sys.exit(1)


if __name__ == '__main__':
    main(sys.argv[1:])
