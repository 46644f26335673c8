"""Prepare an official dataset download: write the layout that dataset.py reads (see there).
Checks the whole download first, never modifies its files, uses every core, and is safe to
re-run (what is done is skipped). Prints the settings that train on the result.

    python prepare.py voc VOCdevkit/VOC2012 benchmark_RELEASE/dataset
    python prepare.py --voc VOCdevkit/VOC2012 --sbd benchmark_RELEASE/dataset
    python prepare.py cityscapes CITYSCAPES_ROOT
    python prepare.py context VOCdevkit/VOC2010 PASCAL_CONTEXT [--classes 59]
    python prepare.py cocostuff10k cocostuff-10k-v1.1
    python prepare.py cocostuff164k COCO_IMAGES stuffthingmaps_trainval2017
    python prepare.py ade20k ADEChallengeData2016

VOC writes into the VOC2012 folder itself; every other dataset goes into a new folder
<first SOURCE>/emanet_<name> (--out DIR for another): images as absolute symbolic links to
the download's own files, labels as 8-bit index PNGs (255 = ignored), lists, classes.txt.
"""
import argparse
import functools
import glob
import os
import sys

import numpy as np

from plumbing import (config, files, images, layout, preparation,  # first: settings.py checked
                      scripts)

SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)

# ---------------------------------------------------------------------------- VOC 2012 + SBD


def prepare_voc(voc, sbd, workers=None):
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
    voc_val = set(layout.read_list(f'{lists}/val.txt'))
    trainaug = {i for f in (f'{lists}/train.txt', f'{sbd}/train.txt', f'{sbd}/val.txt')
                for i in layout.read_list(f)}
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
    with files.writing(out, '--voc'):
        os.makedirs(out, exist_ok=True)
        files.remove_leftovers(out)
        jobs = [(os.path.join(voc, 'SegmentationClass', f'{i}.png'), os.path.join(out, f'{i}.png'))
                for i in sorted(voc_ids)]
        jobs += [(os.path.join(sbd, 'cls', f'{i}.mat'), os.path.join(out, f'{i}.png'))
                 for i in sorted(sbd_ids)]
        done = sum(preparation.done(target) for _, target in jobs)
        print(f'{len(jobs)} labels ({len(voc_ids)} VOC, {len(sbd_ids)} SBD), {done} already '
              f'written')
        preparation.write_labels(_voc_label, jobs, workers)
        files.write_text(os.path.join(lists, 'trainaug.txt'), trainaug)
    preparation.print_result(
        'VOC 2012 + SBD', voc, {'trainaug': trainaug, 'val': sorted(voc_val)}, set(),
        {'trainaug': 10582, 'val': 1449},  # the ids of the full VOC 2012 + SBD
        dict(N_CLASSES=21, TRAIN_SPLIT='trainaug', VAL_SPLIT='val', CROP_SIZE=513,
             ITER_MAX=30000, BATCH_SIZE=16, LR=9e-3), "the original's recipe")
    return trainaug


def _stems(folder, ext):
    """The names in `folder` ending in `ext`, without it."""
    return {f[:-len(ext)] for f in os.listdir(folder) if f.endswith(ext)}


def _voc_label(src):
    """The class map of one label of the download: a VOC PNG or an SBD .mat."""
    if src.endswith('.mat'):
        import scipy.io
        try:
            seg = scipy.io.loadmat(src, struct_as_record=False, squeeze_me=True)['GTcls']
            label = np.asarray(seg.Segmentation)
        except Exception as e:  # a truncated or foreign .mat
            raise config.UserError(f'{src} cannot be read as an SBD label ({type(e).__name__}); '
                                   f'download SBD again.') from None
        if label.ndim != 2 or label.max() >= len(layout.VOC_CLASSES):
            raise config.UserError(f'{src} does not hold a 2-D class map with values '
                                   f'below {len(layout.VOC_CLASSES)}; download SBD again.')
    else:
        try:
            label = images.read_label(src, len(layout.VOC_CLASSES), 255)
        except config.UserError as e:  # an edited or foreign VOC label
            raise config.UserError(f'{str(e).split(";")[0]}; VOC\'s own SegmentationClass '
                                   f'labels are palette PNGs of class indices, so download '
                                   f'VOC 2012 again.') from None
    return label


# ---------------------------------------------------------------------------- Cityscapes

# labelId, name and colour of the 19 training classes (trainId = row), from cityscapesScripts'
# helpers/labels.py; every other labelId (0-6, 9, 10, 14-16, 18, 29, 30, and -1 = 255) -> 255
CITYSCAPES = (
    (7, 'road', (128, 64, 128)), (8, 'sidewalk', (244, 35, 232)), (11, 'building', (70, 70, 70)),
    (12, 'wall', (102, 102, 156)), (13, 'fence', (190, 153, 153)), (17, 'pole', (153, 153, 153)),
    (19, 'traffic light', (250, 170, 30)), (20, 'traffic sign', (220, 220, 0)),
    (21, 'vegetation', (107, 142, 35)), (22, 'terrain', (152, 251, 152)),
    (23, 'sky', (70, 130, 180)), (24, 'person', (220, 20, 60)), (25, 'rider', (255, 0, 0)),
    (26, 'car', (0, 0, 142)), (27, 'truck', (0, 0, 70)), (28, 'bus', (0, 60, 100)),
    (31, 'train', (0, 80, 100)), (32, 'motorcycle', (0, 0, 230)), (33, 'bicycle', (119, 11, 32)))
CITYSCAPES_LUT = preparation.lut(
    256, [(i, c) for c, (i, _, _) in enumerate(CITYSCAPES)] + [(255, 255)], default=-1)
CITYSCAPES_LUT[:34][CITYSCAPES_LUT[:34] < 0] = 255  # the other official ids: ignored


def prepare_cityscapes(root, out=None, workers=None):
    """leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png with gtFine *_labelIds.png ->
    19 trainId classes; test (if there) as images only."""
    root = os.path.abspath(root)
    fix = (f'unpack leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip (from the '
           f'Cityscapes site) into {root}')
    splits = {}
    for split in ('train', 'val', 'test'):
        folder = os.path.join(root, 'leftImg8bit', split)
        if split == 'test' and not os.path.isdir(folder):
            continue
        preparation.must_exist(folder, f'Cityscapes {split} images', fix)
        if split != 'test':
            preparation.must_exist(os.path.join(root, 'gtFine', split),
                                   f'Cityscapes {split} labels', fix)
        images = sorted(glob.glob(os.path.join(glob.escape(folder), '*', '*_leftImg8bit.png')))
        ids = [os.path.basename(p)[:-len('_leftImg8bit.png')] for p in images]
        splits[split] = [(i, p, None if split == 'test' else os.path.join(
            root, 'gtFine', split, os.path.basename(os.path.dirname(p)),
            f'{i}_gtFine_labelIds.png')) for i, p in zip(ids, images)]
    convert = functools.partial(preparation.convert_png, lut=CITYSCAPES_LUT,
                                what='Cityscapes labelIds')
    out = preparation.write_prepared(
        out or os.path.join(root, 'emanet_cityscapes'), splits, convert,
        [n for _, n, _ in CITYSCAPES], [c for *_, c in CITYSCAPES], workers, fix)
    return preparation.print_written(
        'Cityscapes', out, splits, {'train': 2975, 'val': 500, 'test': 1525},
        dict(N_CLASSES=19, TRAIN_SPLIT='train', VAL_SPLIT='val', CROP_SIZE=(512, 1024),
             SCALES=SCALES, ITER_MAX=80000, BATCH_SIZE=8, LR=0.01),
        "mmsegmentation's EMANet config (512x1024 crops, scales 0.5-2, 80k iterations, batch 8, "
        "LR 0.01); add LOSS=ohem for the authors' OHEM setting (81.14 val, single scale)")


# ---------------------------------------------------------------------------- PASCAL Context

# the 59 most frequent of the 459 classes of labels.txt (the ids of PyTorch-Encoding's and
# mmsegmentation's converters); class k of the 59 is the k-th smallest id, as theirs
CONTEXT_IDS = sorted((
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113,
    115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324,
    326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458))


def prepare_context(voc2010, annotations, classes=60, out=None, workers=None):
    """VOC 2010 images, ImageSets/Main/{train,val}.txt and PASCAL Context's trainval/<id>.mat
    (LabelMap over labels.txt's 459 classes) -> 60 classes (0 = background and every class
    outside the 59) or 59 classes (background and the others ignored)."""
    voc2010, annotations = os.path.abspath(voc2010), os.path.abspath(annotations)
    fix = ('unpack VOCtrainval_03-May-2010.tar (VOCdevkit/VOC2010) and PASCAL Context\'s '
           'trainval.tar.gz (trainval/ and labels.txt) and give those two folders')
    if classes not in (59, 60):
        raise config.UserError(f'--classes {classes} is not a PASCAL Context variant; give '
                               f'--classes 60 (background included) or --classes 59.')
    labels = preparation.must_exist(os.path.join(annotations, 'labels.txt'),
                                    'PASCAL Context class names', fix)
    names = {}
    for line in layout.read_ids(labels, 'class list'):
        key, _, name = line.partition(':')
        if key.strip().isdigit():
            names[int(key)] = name.strip()
    if sorted(names) != list(range(1, 460)):
        raise config.UserError(f'{labels} does not name the classes 1-459 as "id: name" lines; '
                               f'take it from PASCAL Context\'s trainval.tar.gz again.')
    named = os.path.join(annotations, '59_labels.txt')  # optional: the 59 by name, checked
    if os.path.isfile(named) and {line.partition(':')[2].strip() for line in layout.read_ids(
            named, 'class list') if ':' in line} != {names[v] for v in CONTEXT_IDS}:
        raise config.UserError(f'{named} does not name the 59 classes that {labels} names at '
                               f'the ids of the usual 59; take both from the PASCAL Context site.')
    splits = {}
    for split in ('train', 'val'):
        listed = os.path.join(voc2010, 'ImageSets', 'Main', f'{split}.txt')
        ids = layout.read_ids(preparation.must_exist(listed, f'VOC 2010 {split} list', fix))
        splits[split] = [(i, os.path.join(voc2010, 'JPEGImages', f'{i}.jpg'),
                          os.path.join(annotations, 'trainval', f'{i}.mat')) for i in ids]
    first = 1 if classes == 60 else 0
    lut = preparation.lut(460, [(v, first + k) for k, v in enumerate(CONTEXT_IDS)],
                          default=0 if classes == 60 else 255)
    convert = functools.partial(preparation.convert_mat, lut=lut,
                                what='PASCAL Context labels (0-459)', field='LabelMap')
    out = preparation.write_prepared(
        out or os.path.join(voc2010, f'emanet_context{classes}'), splits, convert,
        ['background'][:first] + [names[v] for v in CONTEXT_IDS], None, workers, fix)
    return preparation.print_written(
        f'PASCAL Context {classes}', out, splits, {'train': 4998, 'val': 5105},
        dict(N_CLASSES=classes, TRAIN_SPLIT='train', VAL_SPLIT='val', CROP_SIZE=480,
             ITER_MAX=40000, BATCH_SIZE=16, LR=0.004),
        "mmsegmentation's PASCAL Context recipe (480 crops, 40k iterations, batch 16, LR 0.004); "
        "the paper's own is unpublished")


# ---------------------------------------------------------------------------- COCO-Stuff

# ids 1-182 of COCO-Stuff (nightrome/cocostuff labels.txt; 0 = unlabeled); the 11 COCO thing
# ids no image uses are dropped, leaving 171 classes 0..170 in id order
COCO_NAMES = (
    'person,bicycle,car,motorcycle,airplane,bus,train,truck,boat,traffic light,fire hydrant,'
    'street sign,stop sign,parking meter,bench,bird,cat,dog,horse,sheep,cow,elephant,bear,zebra,'
    'giraffe,hat,backpack,umbrella,shoe,eye glasses,handbag,tie,suitcase,frisbee,skis,snowboard,'
    'sports ball,kite,baseball bat,baseball glove,skateboard,surfboard,tennis racket,bottle,'
    'plate,wine glass,cup,fork,knife,spoon,bowl,banana,apple,sandwich,orange,broccoli,carrot,'
    'hot dog,pizza,donut,cake,chair,couch,potted plant,bed,mirror,dining table,window,desk,'
    'toilet,door,tv,laptop,mouse,remote,keyboard,cell phone,microwave,oven,toaster,sink,'
    'refrigerator,blender,book,clock,vase,scissors,teddy bear,hair drier,toothbrush,hair brush,'
    'banner,blanket,branch,bridge,building-other,bush,cabinet,cage,cardboard,carpet,'
    'ceiling-other,ceiling-tile,cloth,clothes,clouds,counter,cupboard,curtain,desk-stuff,dirt,'
    'door-stuff,fence,floor-marble,floor-other,floor-stone,floor-tile,floor-wood,flower,fog,'
    'food-other,fruit,furniture-other,grass,gravel,ground-other,hill,house,leaves,light,mat,'
    'metal,mirror-stuff,moss,mountain,mud,napkin,net,paper,pavement,pillow,plant-other,plastic,'
    'platform,playingfield,railing,railroad,river,road,rock,roof,rug,salad,sand,sea,shelf,'
    'sky-other,skyscraper,snow,solid-other,stairs,stone,straw,structural-other,table,tent,'
    'textile-other,towel,tree,vegetable,wall-brick,wall-concrete,wall-other,wall-panel,'
    'wall-stone,wall-tile,wall-wood,water-other,waterdrops,window-blind,window-other,wood'
).split(',')
COCO_UNUSED = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
COCO_USED = [k for k in range(1, 183) if k not in COCO_UNUSED]
COCO_CLASSES = [COCO_NAMES[k - 1] for k in COCO_USED]
COCO_LUT = preparation.lut(183, [(k, c) for c, k in enumerate(COCO_USED)])  # 1-based (10k .mat)
COCO_RECIPE = dict(N_CLASSES=171, TRAIN_SPLIT='train')


def prepare_cocostuff10k(root, out=None, workers=None):
    """cocostuff-10k-v1.1: images/<id>.jpg, annotations/<id>.mat (S: 0 = unlabeled, ids
    1-182) and imageLists/{train,test}.txt -> 171 classes."""
    root = os.path.abspath(root)
    fix = f'unpack cocostuff-10k-v1.1.zip (from the COCO-Stuff page) and give its folder {root}'
    lists = {split: preparation.must_exist(os.path.join(root, 'imageLists', f'{split}.txt'),
                                           f'COCO-Stuff 10k {split} list', fix)
             for split in ('train', 'test')}
    splits = {split: [(i, os.path.join(root, 'images', f'{i}.jpg'),
                       os.path.join(root, 'annotations', f'{i}.mat'))
                      for i in layout.read_ids(listed)] for split, listed in lists.items()}
    convert = functools.partial(preparation.convert_mat, lut=COCO_LUT,
                                what='COCO-Stuff ids (0-182)', field='S')
    out = preparation.write_prepared(out or os.path.join(root, 'emanet_cocostuff10k'), splits,
                                     convert, COCO_CLASSES, None, workers, fix)
    return preparation.print_written(
        'COCO-Stuff 10k', out, splits, {'train': 9000, 'test': 1000},
        dict(COCO_RECIPE, VAL_SPLIT='test', CROP_SIZE=513, ITER_MAX=30000, BATCH_SIZE=16,
             LR=0.009),
        "the author's (EMANet issue #19: 513 crops, 30k iterations, LR 9e-3, batch 16 as for VOC)")


def prepare_cocostuff164k(images, maps, out=None, workers=None):
    """COCO 2017 {train,val}2017/<id>.jpg and stuffthingmaps_trainval2017/{train,val}2017/
    <id>.png (0-based ids 0-181, 255 unlabeled) -> the same 171 classes."""
    images, maps = os.path.abspath(images), os.path.abspath(maps)
    fix = ('give the folder holding COCO\'s train2017/ and val2017/ (train2017.zip, '
           'val2017.zip) and the unpacked stuffthingmaps_trainval2017.zip')
    splits = {}
    for split in ('train', 'val'):
        folder = preparation.must_exist(os.path.join(images, f'{split}2017'),
                                        f'COCO {split}2017 images', fix)
        preparation.must_exist(os.path.join(maps, f'{split}2017'),
                               f'COCO-Stuff {split}2017 label maps', fix)
        ids = sorted(f[:-4] for f in os.listdir(folder) if f.endswith('.jpg'))
        splits[split] = [(i, os.path.join(folder, f'{i}.jpg'),
                          os.path.join(maps, f'{split}2017', f'{i}.png')) for i in ids]
    lut = preparation.lut(256, [(k - 1, c) for k, c in enumerate(COCO_LUT) if k >= 1],
                          default=-1)
    lut[255] = 255
    convert = functools.partial(preparation.convert_png, lut=lut,
                                what='COCO-Stuff ids (0-181, 255)')
    out = preparation.write_prepared(out or os.path.join(images, 'emanet_cocostuff164k'), splits,
                                     convert, COCO_CLASSES, None, workers, fix)
    return preparation.print_written(
        'COCO-Stuff 164k', out, splits, {'train': 118287, 'val': 5000},
        dict(COCO_RECIPE, VAL_SPLIT='val', CROP_SIZE=512, ITER_MAX=80000, BATCH_SIZE=16,
             LR=0.01),
        "mmsegmentation's COCO-Stuff 164k schedule (512 crops, 80k iterations, batch 16, "
        "LR 0.01); no EMANet recipe is published for it")


# ---------------------------------------------------------------------------- ADE20K

def prepare_ade20k(root, out=None, workers=None):
    """ADEChallengeData2016: images/{training,validation}/*.jpg, annotations/.../*.png (0 =
    other, 1-150) and objectInfo150.txt -> 150 classes 0..149, other ignored."""
    root = os.path.abspath(root)
    fix = f'unpack ADEChallengeData2016.zip (from the MIT Scene Parsing site) and give {root}'
    info = preparation.must_exist(os.path.join(root, 'objectInfo150.txt'), 'ADE20K class names',
                                  fix)
    rows = [line.split('\t') for line in layout.read_ids(info, 'class list')[1:]]
    classes = [r[-1].split(',')[0].strip() for r in rows if r[0].strip().isdigit()]
    if len(classes) != 150:
        raise config.UserError(f'{info} does not list the 150 classes ("Idx Ratio Train Val '
                               f'Name" rows); take it from ADEChallengeData2016.zip again.')
    splits = {}
    for split, name in (('train', 'training'), ('val', 'validation')):
        folder = preparation.must_exist(os.path.join(root, 'images', name),
                                        f'ADE20K {name} images', fix)
        preparation.must_exist(os.path.join(root, 'annotations', name), f'ADE20K {name} labels',
                               fix)
        ids = sorted(f[:-4] for f in os.listdir(folder) if f.endswith('.jpg'))
        splits[split] = [(i, os.path.join(folder, f'{i}.jpg'),
                          os.path.join(root, 'annotations', name, f'{i}.png')) for i in ids]
    lut = preparation.lut(151, [(k, k - 1) for k in range(1, 151)])
    convert = functools.partial(preparation.convert_png, lut=lut, what='ADE20K labels (0-150)')
    out = preparation.write_prepared(out or os.path.join(root, 'emanet_ade20k'), splits,
                                     convert, classes, None, workers, fix)
    return preparation.print_written(
        'ADE20K', out, splits, {'train': 20210, 'val': 2000},
        dict(N_CLASSES=150, TRAIN_SPLIT='train', VAL_SPLIT='val', CROP_SIZE=512, ITER_MAX=160000,
             BATCH_SIZE=16, LR=0.01),
        "sssegmentation's and mmsegmentation's ADE20K schedule (512 crops, 160k iterations = 130 "
        "epochs, batch 16, LR 0.01)")


# ---------------------------------------------------------------------------- command line

# name -> (function, what each SOURCE is)
DATASETS = {
    'voc': (prepare_voc, ('the VOCdevkit/VOC2012 folder', "SBD's benchmark_RELEASE/dataset")),
    'cityscapes': (prepare_cityscapes, ('the folder holding leftImg8bit/ and gtFine/',)),
    'context': (prepare_context, ('the VOCdevkit/VOC2010 folder',
                                  'the folder holding PASCAL Context\'s trainval/ and '
                                  'labels.txt')),
    'cocostuff10k': (prepare_cocostuff10k, ('the cocostuff-10k-v1.1 folder',)),
    'cocostuff164k': (prepare_cocostuff164k, ('the folder holding COCO\'s train2017/ and '
                                              'val2017/', 'the stuffthingmaps_trainval2017 '
                                              'folder')),
    'ade20k': (prepare_ade20k, ('the ADEChallengeData2016 folder',)),
}


@scripts.command(go_on='the same command goes on (what is done is skipped)')
def main(argv):
    parser = argparse.ArgumentParser(prog='prepare.py', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('name', nargs='?', choices=tuple(DATASETS), help='the dataset')
    parser.add_argument('sources', nargs='*', help="the download's folders")
    parser.add_argument('--voc', help='the VOCdevkit/VOC2012 folder (with --sbd)')
    parser.add_argument('--sbd', help='the SBD benchmark_RELEASE/dataset folder (with --voc)')
    parser.add_argument('--out', help='the folder to write (default: <first SOURCE>/emanet_'
                                      '<name>; VOC is written into its own folder)')
    parser.add_argument('--classes', type=int, help='context only: 60 (default, background '
                                                    'included) or 59')
    parser.add_argument('--workers', type=int, default=0, help='threads (default: every core)')
    args = parser.parse_args(argv)
    if args.workers < 0:
        raise config.UserError(f'--workers {args.workers} must be 0 (every core) or more.')
    if args.voc or args.sbd:
        if args.name or args.sources or not (args.voc and args.sbd):
            raise config.UserError('give both --voc and --sbd and nothing else, or the form '
                                   '`python prepare.py voc <VOC2012 folder> <SBD dataset '
                                   'folder>`.')
        args.name, args.sources = 'voc', [args.voc, args.sbd]
    if args.name is None:
        raise config.UserError(f'prepare.py takes a dataset ({", ".join(DATASETS)}) and its '
                               f'folders, like `python prepare.py cityscapes <Cityscapes '
                               f'folder>`.')
    fn, wanted = DATASETS[args.name]
    if len(args.sources) != len(wanted):
        raise config.UserError(f'prepare.py {args.name} takes {len(wanted)} folder(s): '
                               f'{"; ".join(wanted)} (got {len(args.sources)}).')
    for option, value, applies in (('--out', args.out, args.name != 'voc'),
                                   ('--classes', args.classes, args.name == 'context')):
        if value is not None and not applies:
            raise config.UserError(f'{option} does not apply to {args.name}; VOC is written '
                                   f'into its own folder and --classes is for context only.')
    kwargs = {} if args.name == 'voc' else {'out': args.out}
    if args.name == 'context':
        kwargs['classes'] = 60 if args.classes is None else args.classes
    fn(*args.sources, workers=args.workers or None, **kwargs)


if __name__ == '__main__':
    main(sys.argv[1:])
