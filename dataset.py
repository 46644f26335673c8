"""Reading a prepared dataset for training and evaluation, and checking one. Every dataset (VOC,
the others prepare.py makes, toy.py's, your own) has this layout under DATA_ROOT:

    JPEGImages/<id>.jpg (or .png, .jpeg, .bmp, .webp)   the images (files or links)
    SegmentationClassAug/<id>.png                       labels: class index per pixel
    ImageSets/Segmentation/<split>.txt                  the ids of a split, one per line
    classes.txt                                         class names, one per line (optional)
    palette.txt                                         "R G B" per class (optional)

    python dataset.py check [DATA_ROOT] [--workers N]   # verify it, with class statistics

Also here: the order in which training takes the images (the original's loader, from SEED and
the step alone). Not here: writing the layout (prepare.py, toy.py, plumbing/preparation.py).
"""
import argparse
import collections
import functools
import hashlib
import os
import sys

import cv2
import numpy as np
import torch
from PIL import Image

from plumbing import config, files, pictures, processes  # first: settings.py checked
import settings
import transforms

cv2.setNumThreads(0)  # one sample per worker process; OpenCV's own threads only contend

VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
               'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
               'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
IMAGE_EXTS = ('.jpg', '.png', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.gif')
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


# ---------------------------------------------------------------------------- the order

def seed_of(*parts):
    """A 63-bit seed that depends on every part (no collisions between (1, 23) and (12, 3))."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], 'little') >> 1


@functools.lru_cache(maxsize=2)
def permutation(seed, epoch, n):
    generator = torch.Generator().manual_seed(seed_of('epoch', seed, epoch))
    return torch.randperm(n, generator=generator).tolist()


def step_indices(step, n, rank, world):
    """The dataset indices that 0-based `step` takes on `rank`, as the original's loader orders
    them (shuffled anew every epoch, the last incomplete batch dropped), from SEED and the step
    alone: epoch e = step // (n // BATCH_SIZE) orders the n images by permutation(SEED, e, n)
    and cuts n // BATCH_SIZE global batches from it; rank r takes the r-th BATCH_SIZE / world of
    its batch. Index e * n + i is image i of epoch e (TrainDataset draws its augmentation
    from both)."""
    epoch, k = divmod(step, n // settings.BATCH_SIZE)
    b = settings.BATCH_SIZE // world
    first = k * settings.BATCH_SIZE + rank * b
    order = permutation(settings.SEED, epoch, n)
    return [epoch * n + order[j] for j in range(first, first + b)]


# ---------------------------------------------------------------------------- reading

def read_ids(path, what='list'):
    """The ids of a list, one per non-blank line as written (see files.read_lines)."""
    return [line for _, line in files.read_lines(path, what)]


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
    """RGB uint8 (H, W, 3), as a viewer shows it (EXIF orientation applied); grayscale, 16-bit,
    CMYK and RGBA files become RGB. What of the file is not used (more frames or pages, an alpha
    channel, extra channels, bits beyond 8) is said in one line per file, for the first three
    files of each kind in a process (a dataset of such files is not said 10,000 times)."""
    if not os.path.isfile(path):  # checked here: OpenCV would print a warning of its own
        what = 'is a folder' if os.path.isdir(path) else 'does not exist'
        raise config.UserError(f'image {path} cannot be read: it {what}.')
    try:
        with Image.open(path) as img:  # the header only: what the pixels below leave out
            unused, orientation = _unused_parts(img), img.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):
        unused, orientation = [], 1  # OpenCV may read it still; it says when not
    rgb = getattr(cv2, 'IMREAD_COLOR_RGB', None)  # OpenCV >= 4.10 decodes straight to RGB
    image = cv2.imread(path, (rgb or cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise config.UserError(f'image {path} cannot be read: it is not an image file.')
    for kind, what in unused:
        _SAID[kind] = _SAID.get(kind, 0) + 1
        if _SAID[kind] <= SAY:
            config.say(f'image {path} {what}' + (' (and so every other image like it: not said '
                                                  'again)' if _SAID[kind] == SAY else '') + '.')
    image = image if rgb else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(_orient(image, orientation))


_SAID = {}  # {kind of unused part: files of it read in this process}
SAY = 3  # files of one kind said


def _unused_parts(img):
    """[(kind, what)] of what of an opened PIL image the decoded RGB pixels leave out."""
    parts, frames = [], getattr(img, 'n_frames', 1)
    if frames > 1:
        parts.append(('frames', f'holds {frames} frames or pages; only the first is used'))
    if 'A' in img.mode or img.mode == 'P' and 'transparency' in img.info:
        parts.append(('alpha', 'has an alpha channel (transparency), which is not used: its '
                               'colours are read as if opaque'))
    bits, bands = _depth(img), len(img.getbands())
    if bits > 8:
        parts.append(('depth', f'has {bits} bits per channel; it is read at 8 (the lower bits '
                               f'are not used)'))
    samples = img.tag_v2.get(277, bands) if hasattr(img, 'tag_v2') else bands  # TIFF
    if samples > bands:
        parts.append(('channels', f'has {samples} channels; only the colour ones are used'))
    return parts


def _depth(img):
    """Bits per channel of an opened PIL image (PNG and TIFF say it in their header)."""
    if img.format == 'PNG':
        with open(img.filename, 'rb') as f:
            header = f.read(26)
        return header[24] if len(header) == 26 else 8
    if hasattr(img, 'tag_v2'):
        bits = img.tag_v2.get(258, (8,))
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 16 if img.mode.startswith('I;16') or img.mode in ('I', 'F') else 8


def _orient(image, orientation):
    """An image as its EXIF orientation (1-8) says a viewer shows it (labels are drawn so)."""
    if orientation in (5, 6, 7, 8):  # the sides swap: transpose first
        image = image.transpose(1, 0, *range(2, image.ndim))
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    return {2: image[:, ::-1], 3: image[::-1, ::-1], 4: image[::-1]}.get(orientation, image)


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
            mode, frames = img.mode, getattr(img, 'n_frames', 1)
            label = np.array(img)  # writable: torch takes it as it is
    except (OSError, ValueError, SyntaxError) as e:
        raise config.UserError(f'label {path} cannot be read ({type(e).__name__}); it is '
                               f'missing or not a PNG file.') from None
    if frames > 1:  # which frame would be the label? taking the first could mislead
        raise config.UserError(f'label {path} holds {frames} frames (an animated PNG); a label '
                               f'is one index map, so save its frame as a PNG of its own.')
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
    names = read_ids(path, 'class list')
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


def palette(root=None):
    """256 colours as a flat list of 768 ints (for PIL 'P' images): the VOC colour map, with
    the rows of root/palette.txt ("R G B" per class) first when root has that file."""
    rgb = pictures.voc_colours()
    path = os.path.join(root, 'palette.txt') if root else ''
    if path and os.path.isfile(path):
        try:
            rows = [[int(v) for v in line.split()] for line in read_ids(path, 'palette')]
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
    names and the palette (VOC's names and colours, or class_<i>, where root has none)."""
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
        for counts, problem in processes.parallel(_check_one, jobs, workers, split):
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
