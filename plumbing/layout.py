"""The prepared layout that dataset.py reads (see there): where DATA_ROOT and each file of it is,
its text files read with every check (split lists, classes.txt, palette.txt), what a checkpoint
keeps of it (class names and palette), and `dataset.py check`, which reads every file of every
split once. Not here: reading an image or label file (images.py), the datasets (dataset.py)."""
import collections
import os

import numpy as np

import settings
from plumbing import config, files, images, pictures, processes

IMAGES, LABELS, LISTS = 'JPEGImages', 'SegmentationClassAug', os.path.join('ImageSets',
                                                                            'Segmentation')
IMAGE_EXTS = ('.jpg', '.png', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.gif')
VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
               'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
               'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
HOW_TO_MAKE = ('run `python prepare.py NAME SOURCE...` (see the README) or make toy data with '
               '`python toy.py <dir>`, and set DATA_ROOT to it')

# ---------------------------------------------------------------------------- where


def resolve(root=None):
    """DATA_ROOT (relative to the project folder), or `root` (relative to the working folder),
    as an absolute path."""
    return config.path(settings.DATA_ROOT) if root is None else \
        os.path.abspath(os.path.expanduser(root))


def data_root(root=None):
    """resolve(root), checked to be a prepared folder."""
    root = resolve(root)
    if not os.path.isdir(root):
        raise config.UserError(f'DATA_ROOT {root} is not a folder; {HOW_TO_MAKE}.')
    for sub in (IMAGES, LABELS):
        if not os.path.isdir(os.path.join(root, sub)):
            raise config.UserError(f'{os.path.join(root, sub)} does not exist, so DATA_ROOT '
                                   f'{root} is not a prepared folder; {HOW_TO_MAKE}.')
    return root


def split_files(root, split, labelled=True):
    """[(id, image, label or None)] of a split of a prepared folder (see read_list), every
    file there: one sentence for the first that is not, naming the line of the list it comes
    from and the file of a likelier name that exists (see not_there)."""
    listed = os.path.join(root, LISTS, f'{split}.txt')
    return [(id_, *files_of(root, id_, listed, number, labelled))
            for number, id_ in read_list(listed, numbered=True)]


def files_of(root, id_, listed, number, labelled=True):
    """(image, label or None) of the id on line `number` of list `listed`, each there: else one
    sentence for the first that is not (see not_there)."""
    image, label = image_path(root, id_), label_path(root, id_) if labelled else None
    for what, folder, path in (('image', IMAGES, image), ('label', LABELS, label)):
        if path is not None and not os.path.isfile(path):
            raise config.UserError(not_there(what, path, listed, number, lambda near: (
                os.path.splitext(os.path.relpath(near, os.path.join(root, folder)))[0])))
    return image, label


def not_there(what, path, listed, number, line_of):
    """The sentence for file `path`, built from line `number` of list `listed`, that is not
    there: the line named, and a file of a likelier name that exists (files.near) with the line
    that names it (line_of(file))."""
    why = 'is a folder' if os.path.isdir(path) else 'does not exist'
    near = files.near(path, IMAGE_EXTS)
    hint = '' if not near else f'; {near} exists, named by the line {line_of(near)}' if \
        line_of(near) != line_of(path) else f'; {near} exists: rename it to ' \
        f'{os.path.basename(path)}'
    return (f'{what} {path} cannot be read: it {why} (line {number} of {listed}){hint}; fix '
            f'the list or the files.')


def image_path(root, id_):
    """The image file of an id: JPEGImages/<id> + the first of IMAGE_EXTS that exists."""
    return find_image(os.path.join(root, IMAGES, id_))


def label_path(root, id_):
    return os.path.join(root, LABELS, f'{id_}.png')


def find_image(stem):
    """stem + the first of IMAGE_EXTS that exists (stem + '.jpg' when none does)."""
    for ext in IMAGE_EXTS:
        if os.path.exists(stem + ext):
            return stem + ext
    return stem + IMAGE_EXTS[0]

# ---------------------------------------------------------------------------- text files


def read_ids(path, what='list'):
    """The ids of a list, one per non-blank line as written (see files.read_lines)."""
    return [line for _, line in files.read_lines(path, what)]


def read_list(path, numbered=False):
    """The ids of a split list of a prepared dataset, which must exist and hold some, as
    [(line number, id)] when `numbered`."""
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        have = sorted(f[:-4] for f in os.listdir(folder) if f.endswith('.txt')) \
            if os.path.isdir(folder) else []
        raise config.UserError(f'list {path} does not exist (lists there: {have or "none"}); '
                               f'{HOW_TO_MAKE}.')
    lines = files.read_lines(path, 'list')
    ids = [line for _, line in lines]
    if not ids:
        raise config.UserError(f'list {path} is empty; {HOW_TO_MAKE}.')
    twice = repeated(ids)
    if twice:
        raise config.UserError(f'list {path} names {twice[0]} more than once ({len(twice)} ids '
                               f'so); an image listed twice would count twice, so remove the '
                               f'repeats.')
    return lines if numbered else ids


def repeated(ids):
    """The ids that a list names more than once, in their order."""
    return [i for i, n in collections.Counter(ids).items() if n > 1]


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
    n, root = settings.N_CLASSES, resolve(root)
    names = read_classes(root)
    if names is not None and len(names) != n:
        fix = config.fix('N_CLASSES', len(names), f'give data of its {n} classes (DATA_ROOT) '
                                                  f'or another checkpoint')
        raise config.UserError(f'{os.path.join(root, "classes.txt")} names {len(names)} '
                               f'classes but {config.whose("N_CLASSES")}; {fix}.')
    if names is not None:
        return names
    return list(VOC_CLASSES) if n == len(VOC_CLASSES) else [f'class_{i}' for i in range(n)]


def palette(root=None):
    """256 colours as a flat list of 768 ints (for PIL 'P' images): the VOC colour map, with
    the rows of root/palette.txt ("R G B" per class) first when root has that file."""
    rgb = pictures.voc_colours()
    path = os.path.join(resolve(root), 'palette.txt')
    if os.path.isfile(path):
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
    return {'classes': class_names(root), 'palette': palette(root)}

# ---------------------------------------------------------------------------- check


def check(root=None, workers=None, show=8):
    """Read every image and label of every split of a prepared dataset: sizes, label values,
    pixels and images per class. Prints a table and the first problems; returns the number
    of problems."""
    root = data_root(root)
    lists = os.path.join(root, LISTS)
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
        listed = os.path.join(lists, f'{split}.txt')
        lines, first = files.read_lines(listed, 'list'), {}
        for k, i in lines:
            first.setdefault(i, k)  # each image once in the counts, by its first line
        twice, lines = repeated([i for _, i in lines]), [(k, i) for i, k in first.items()]
        labelled = [i for _, i in lines if os.path.exists(label_path(root, i))]
        jobs = [(root, i, listed, k, n, settings.IGNORE_LABEL, bool(labelled)) for k, i in lines]
        pixels, counted, bad = np.zeros(n + 1, np.int64), np.zeros(n, np.int64), []
        for counts, problem in processes.parallel(_check_one, jobs, workers, split):
            pixels += counts
            counted += counts[:n] > 0
            if problem:
                bad.append(problem)
        bad += [f'{i} is listed more than once in {split}.txt (it would count twice)'
                for i in twice]
        kind = 'labelled' if labelled else 'unlabelled (images only)'
        print(f'\n{split}: {len(lines)} ids, {kind}, {len(bad)} with problems')
        if labelled:
            total = max(1, pixels.sum())
            print(f'{"class":<24}{"pixels %":>10}{"images":>8}')
            for name, p, k in zip(names, pixels[:n], counted):
                print(f'{name[:23]:<24}{100 * p / total:>10.3f}{k:>8}')
            print(f'{"(ignored)":<24}{100 * pixels[n] / total:>10.3f}')
        for problem in bad[:show]:
            print(f'  problem: {problem}')
        problems += len(bad)
    print(f'\n{problems} problem(s) in {root}')
    return problems


def _check_one(job):
    """(pixels per class + ignored (n + 1,), problem sentence or None) of one id."""
    root, id_, listed, number, n, ignore, labelled = job
    counts = np.zeros(n + 1, np.int64)
    try:
        image, label = files_of(root, id_, listed, number, labelled)
        if labelled:
            label = images.read_pair(image, label, n, ignore)[1]
        else:
            images.read_image(image)
    except config.UserError as e:
        return counts, str(e)
    if labelled:
        values = np.bincount(label.ravel(), minlength=256)
        counts[:n], counts[n] = values[:n], values[ignore]
    return counts, None


def check_command(argv, usage):
    """`python dataset.py check [DATA_ROOT] [--workers N]`: exit status 1 when a file has a
    problem."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog='dataset.py', description=usage.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=usage.split('\n\n', 1)[1])
    sub = parser.add_subparsers(dest='command', required=True)
    c = sub.add_parser('check', help='verify a prepared dataset and count its classes')
    c.add_argument('root', nargs='?', help='the prepared folder (default: DATA_ROOT)')
    c.add_argument('--workers', type=int, default=0, help='threads (default: every core)')
    args = parser.parse_args(config.apply_overrides(argv))
    if args.workers < 0:
        raise config.UserError(f'--workers {args.workers} must be 0 (every core) or more.')
    if check(args.root, args.workers or None):
        sys.exit(1)
