"""What every preparation shares: from a checked official download to the prepared layout that
dataset.py reads (check all its files, link the images, convert the labels through a lookup
table on every core, write the lists and class files) and the report that prints the settings
that train on it. Nothing is written before all is checked; a re-run skips what is done and
clears what a killed run left half-written. Not here: each dataset's own files (prepare.py)."""
import os
import re

import numpy as np

from plumbing import config, files, images, pictures, processes


def write_prepared(out, splits, convert, classes, colours=None, workers=None, fix=''):
    """The one way every non-VOC dataset is written: check every (id, image, label source or
    None) of every split, then link the images, convert the labels (convert(source) -> uint8
    class map, in a pool), write the lists, classes.txt and palette.txt (colours: "R G B"
    rows). Nothing is written before all is checked; what is done already is skipped."""
    seen = {}
    for split, items in splits.items():
        if not items:
            raise config.UserError(f'the {split} split holds no images; {fix}.')
        listed = set()
        for i, image, src in items:
            if not re.fullmatch(r'[^/\s]+', i) or i in listed or seen.setdefault(i, image) != image:
                raise config.UserError(f'id {i!r} of {split} is not a unique file name '
                                       f'({image}); give the download as it was unpacked.')
            listed.add(i)
        missing = [p for _, image, src in items for p in (image, src)
                   if p is not None and not os.path.isfile(p)]
        if missing:
            raise config.UserError(f'{len(missing)} files listed for {split} do not exist '
                                   f'(first: {missing[0]}); {fix}.')
    out = os.path.abspath(out)
    links = {i: os.path.join(out, 'JPEGImages', i + os.path.splitext(image)[1])
             for i, image in seen.items()}
    foreign = [p for p in links.values() if os.path.lexists(p) and not os.path.islink(p)]
    if os.path.exists(out) and not os.path.isdir(out) or foreign:
        raise config.UserError(f'{foreign[0] if foreign else out} is a file, not a link made by '
                               f'prepare; give --out a new folder.')
    names = [line for _, line in files.read_lines(os.path.join(out, 'classes.txt'), 'class list')
             ] if os.path.isfile(os.path.join(out, 'classes.txt')) else None
    if names is not None and names != list(classes):
        raise config.UserError(f'{out} holds a prepared dataset of other classes (see its '
                               f'classes.txt); give another --out.')
    lists, labels = (os.path.join(out, d) for d in ('ImageSets/Segmentation',
                                                     'SegmentationClassAug'))
    with files.writing(out, '--out'):
        for folder in (out, os.path.join(out, 'JPEGImages'), labels, lists):
            os.makedirs(folder, exist_ok=True)
            files.remove_leftovers(folder)
        link_all([(seen[i], link) for i, link in links.items()])
        todo = {(src, os.path.join(labels, f'{i}.png')) for items in splits.values()
                for i, _, src in items if src is not None}
        table = pictures.voc_colours()
        if colours:
            table[:len(colours)] = colours
        write_labels(convert, sorted(todo), workers, table.ravel().tolist())
        for split, items in splits.items():
            files.write_text(os.path.join(lists, f'{split}.txt'), [i for i, _, _ in items])
        files.write_text(os.path.join(out, 'classes.txt'), classes)
        if colours:
            files.write_text(os.path.join(out, 'palette.txt'),
                            [' '.join(map(str, c)) for c in colours])
    return out


def link_all(pairs):
    """Make each link (absolute, to its image) that is missing or points elsewhere."""
    from tqdm import tqdm
    todo = [(os.path.abspath(image), link) for image, link in pairs
            if not os.path.islink(link) or os.readlink(link) != os.path.abspath(image)]
    for target, link in tqdm(todo, desc='links', unit='file', disable=not todo):
        with files.atomic(link) as tmp:  # a leftover if killed here
            os.symlink(target, tmp)


def write_labels(convert, jobs, workers=None, colours=None):
    """For each (source, target) whose target is not written yet (see done): convert(source) ->
    a uint8 class map, written as an index PNG in `colours` (VOC's by default), on every
    core."""
    def one(job):
        pictures.write_label(convert(job[0]), job[1], colours)
    processes.parallel(one, [job for job in jobs if not done(job[1])], workers, 'labels')


def done(target):
    """Whether a label file a preparation writes is written already: there and whole (a file a
    crash or a full disk cut short is written again)."""
    return os.path.isfile(target) and not images.cut_short(target)


def lut(size, pairs, default=255):
    """A lookup table over source values 0..size-1: pairs (value, class), the rest `default`
    (-1: a value the source must not hold)."""
    table = np.full(size, default, np.int16)
    for value, cls in pairs:
        table[value] = cls
    return table


def mapped(label, lut, src, what):
    """label (integer array) through lut; a value the lut does not allow is one sentence."""
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype.kind not in 'iu':
        raise config.UserError(f'{src} does not hold a 2-D map of integers; it is not {what}, '
                               f'so download the dataset again.')
    bad = np.unique(label[(label < 0) | (label >= len(lut))])
    bad = bad if bad.size else np.unique(label[lut[label] < 0])
    if bad.size:
        raise config.UserError(f'{src} holds values {bad[:8].tolist()} that are not {what}; '
                               f'download the dataset again.')
    return lut[label].astype(np.uint8)


def convert_png(src, lut, what):
    """An index PNG of the download (grayscale or palette) through lut."""
    from PIL import Image
    try:
        with Image.open(src, formats=['PNG']) as img:
            mode, label = img.mode, np.asarray(img)
    except (OSError, ValueError, SyntaxError) as e:
        raise config.UserError(f'{src} cannot be read as a PNG ({type(e).__name__}); download '
                               f'the dataset again.') from None
    if mode not in ('L', 'P', 'I', 'I;16'):
        label = np.zeros((0,))  # an RGB colour image: not a map of ids
    return mapped(label, lut, src, what)


def convert_mat(src, lut, what, field):
    """The label map `field` of a MATLAB .mat file of the download through lut."""
    import scipy.io
    try:
        label = scipy.io.loadmat(src, variable_names=[field])[field]
    except Exception as e:  # a truncated or foreign file, or no such field
        raise config.UserError(f'{src} has no readable field {field!r} ({type(e).__name__}); '
                               f'it is not {what}, so download the dataset again.') from None
    return mapped(label, lut, src, what)


def must_exist(path, what, fix):
    """path, or one sentence naming it when it does not exist."""
    if not os.path.exists(path):
        raise config.UserError(f'{path} ({what}) does not exist; {fix}.')
    return path


def print_result(name, root, splits, unlabelled, official, settings, recipe):
    """Print split sizes (with a note where one differs from the official count), where the
    recipe comes from and the settings line; returns the settings."""
    sizes = ', '.join(f'{s} {len(ids)}' + (' (images only)' if s in unlabelled else '')
                      for s, ids in splits.items())
    print(f'{name}: {sizes} in {root}')
    for split, n in official.items():
        if split in splits and len(splits[split]) != n:
            print(f'note: {split} ({len(splits[split])} ids) differs from the {n} ids '
                  f'of the full {name}; if this was meant to be the full data, part of it is '
                  f'missing.')
    print(f'recipe: {recipe}')
    settings = dict(DATA_ROOT=root, **settings)
    print(f'settings: {config.as_arguments(settings)}')
    return settings


def print_written(name, out, splits, official, settings, recipe):
    """print_result for a dataset written by write_prepared (splits of (id, image, source))."""
    ids = {s: [i for i, _, _ in items] for s, items in splits.items()}
    unlabelled = {s for s, items in splits.items() if all(src is None for *_, src in items)}
    return print_result(name, out, ids, unlabelled, official, settings, recipe)
