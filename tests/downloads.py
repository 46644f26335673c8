"""Tiny fakes of each official download in its real layout (real file and folder names, .mat
files with the official field names), and the checks the prepare tests share."""
import hashlib
import os
import shlex

import cv2
import numpy as np
import scipy.io
from PIL import Image

from conftest import dead_pid
from plumbing import config, layout, pictures
from plumbing import images as image_files

# ---------------------------------------------------------------------------- VOC 2012 + SBD

# every combination of where an id is listed and who labels it
VOC_TRAIN, VOC_VAL = ['v_tr', 'both_tr', 'vtr_sval'], ['v_val', 'vval_str', 'vval_sval']
SBD_TRAIN, SBD_VAL = ['s_tr', 'both_tr', 'vval_str', 's_both'], ['s_val', 'vtr_sval', 'vval_sval',
                                                                  's_both']
SBD_ONLY_MAT = ['s_unlisted']  # an SBD label listed nowhere: written, not trained on


def write_mat(path, seg):
    """An SBD cls/<id>.mat holding `seg`."""
    bounds = np.empty((20,), object)  # a cell array of per-class edge maps, as in SBD
    for k in range(20):
        bounds[k] = np.zeros(seg.shape, np.uint8)
    gt = {'Segmentation': seg, 'Boundaries': bounds,
          'CategoriesPresent': np.unique(seg[seg > 0]).astype(np.uint8)}
    scipy.io.savemat(path, {'GTcls': gt})


def fake_voc_sbd(tmp_path):
    """A tiny VOC2012 + SBD tree; returns (voc, sbd, {id: expected label})."""
    voc, sbd = tmp_path / 'VOC2012', tmp_path / 'sbd'
    for d in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        (voc / d).mkdir(parents=True)
    (sbd / 'cls').mkdir(parents=True)
    rng = np.random.default_rng(0)
    want = {}
    voc_ids, sbd_ids = set(VOC_TRAIN + VOC_VAL), set(SBD_TRAIN + SBD_VAL + SBD_ONLY_MAT)
    for k, i in enumerate(sorted(voc_ids | sbd_ids)):
        h, w = 12 + k, 20 - k
        cv2.imwrite(str(voc / 'JPEGImages' / f'{i}.jpg'), rng.integers(0, 256, (h, w, 3),
                                                                         dtype=np.uint8))
        if i in sbd_ids:
            want[i] = rng.integers(0, 21, (h, w)).astype(np.uint8)
            write_mat(str(sbd / 'cls' / f'{i}.mat'), want[i])
        if i in voc_ids:  # VOC's label, with 255 borders, as a palette PNG
            want[i] = rng.integers(0, 21, (h, w)).astype(np.uint8)
            want[i][0] = 255
            pictures.write_label(want[i], str(voc / 'SegmentationClass' / f'{i}.png'))
    for name, ids in (('train', VOC_TRAIN), ('val', VOC_VAL)):
        (voc / 'ImageSets/Segmentation' / f'{name}.txt').write_text('\n'.join(ids) + '\n')
    for name, ids in (('train', SBD_TRAIN), ('val', SBD_VAL)):
        (sbd / f'{name}.txt').write_text('\n'.join(ids) + '\n')
    return str(voc), str(sbd), want


# ---------------------------------------------------------------------------- other datasets

RNG = np.random.default_rng(0)


def write_image(path, shape):
    """A random RGB image file (PNG or JPEG by its extension) of shape (h, w)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), RNG.integers(0, 256, (*shape, 3), dtype=np.uint8))


def write_png(path, label):
    """A grayscale ('L') PNG of label values, like the downloads' label maps."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(label, np.uint8), 'L').save(path)


def grid(values, shape=(5, 8)):
    """A label map of `shape` holding every value of `values` at least once."""
    flat = np.resize(np.asarray(values), shape[0] * shape[1])
    return flat.reshape(shape)


# ---- Cityscapes

CS_FILES = {'train': ['aachen_000000_000019', 'aachen_000001_000019', 'bochum_000000_000313'],
            'val': ['frankfurt_000000_000294'], 'test': ['berlin_000000_000019',
                                                          'bonn_000004_000019']}


def fake_cityscapes(tmp_path):
    """leftImg8bit/ and gtFine/ of Cityscapes (labelIds, color, instanceIds, polygons; the
    test split's dummy labels too); returns (root, {id: labelIds map})."""
    root = tmp_path / 'cityscapes'
    maps = {}
    for split, ids in CS_FILES.items():
        for k, i in enumerate(ids):
            city = i.split('_')[0]
            write_image(root / 'leftImg8bit' / split / city / f'{i}_leftImg8bit.png', (5, 8))
            gt = root / 'gtFine' / split / city
            # every official id 0..33 and the license plate's -1 (255 as uint8)
            maps[i] = np.roll(grid(list(range(34)) + [255]), k) if split != 'test' else \
                np.zeros((5, 8), np.uint8)  # the test split's labels are dummies
            write_png(gt / f'{i}_gtFine_labelIds.png', maps[i])
            write_png(gt / f'{i}_gtFine_instanceIds.png', maps[i])
            write_image(gt / f'{i}_gtFine_color.png', (5, 8))
            (gt / f'{i}_gtFine_polygons.json').write_text('{}')
    return root, maps


# ---- PASCAL Context

# the 59 classes as mmsegmentation's converter lists their ids in labels.txt, and its names
CONTEXT_59 = [2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416,
              33, 162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354,
              424, 68, 326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105,
              366, 189, 368, 113, 115]
CONTEXT_NAMES = [
    'aeroplane', 'bag', 'bed', 'bedclothes', 'bench', 'bicycle', 'bird', 'boat', 'book',
    'bottle', 'building', 'bus', 'cabinet', 'car', 'cat', 'ceiling', 'chair', 'cloth',
    'computer', 'cow', 'cup', 'curtain', 'dog', 'door', 'fence', 'floor', 'flower', 'food',
    'grass', 'ground', 'horse', 'keyboard', 'light', 'motorbike', 'mountain', 'mouse', 'person',
    'plate', 'platform', 'pottedplant', 'road', 'rock', 'sheep', 'shelves', 'sidewalk', 'sign',
    'sky', 'snow', 'sofa', 'table', 'track', 'train', 'tree', 'truck', 'tvmonitor', 'wall',
    'water', 'window', 'wood']
CONTEXT_SPLITS = {'train': ['2008_000002', '2008_000003', '2010_006086'],
                  'val': ['2008_000009', '2010_000038']}


def fake_context(tmp_path):
    """VOCdevkit/VOC2010 and the unpacked PASCAL Context trainval.tar.gz (+ 59_labels.txt);
    returns (voc2010, annotations, {id: LabelMap})."""
    voc, ann = tmp_path / 'VOCdevkit' / 'VOC2010', tmp_path / 'pascal_context'
    (voc / 'ImageSets' / 'Main').mkdir(parents=True)
    (voc / 'ImageSets' / 'Segmentation').mkdir(parents=True)
    (ann / 'trainval').mkdir(parents=True)
    names = {k: f'thing{k}' for k in range(1, 460)}
    names.update({1: 'accordion', 3: 'air conditioner'})
    names.update(zip(sorted(CONTEXT_59), CONTEXT_NAMES))
    (ann / 'labels.txt').write_text(''.join(f'{k}: {n}\n' for k, n in names.items()))
    (ann / '59_labels.txt').write_text(''.join(f'{k}: {n}\n' for k, n in
                                               enumerate(CONTEXT_NAMES, 1)))
    maps = {}
    for split, ids in CONTEXT_SPLITS.items():
        (voc / 'ImageSets' / 'Main' / f'{split}.txt').write_text('\n'.join(ids) + '\n')
        (voc / 'ImageSets' / 'Main' / f'aeroplane_{split}.txt').write_text(
            ''.join(f'{i} -1\n' for i in ids))
        for k, i in enumerate(ids):
            write_image(voc / 'JPEGImages' / f'{i}.jpg', (5, 8))
            maps[i] = np.roll(grid([0, 1, 2, 3, 9, 259, 458, 459, 115, 44]), k).astype(np.uint16)
            scipy.io.savemat(str(ann / 'trainval' / f'{i}.mat'), {'LabelMap': maps[i]})
    (voc / 'ImageSets' / 'Segmentation' / 'train.txt').write_text('2008_000002\n')
    write_image(voc / 'JPEGImages' / '2007_000027.jpg', (5, 8))  # in no Context list
    return voc, ann, maps


# ---- COCO-Stuff

TEN_K = {'train': ['COCO_train2014_000000000077', 'COCO_train2014_000000000154',
                   'COCO_train2014_000000000260'], 'test': ['COCO_train2014_000000000321']}


def fake_cocostuff10k(tmp_path):
    """cocostuff-10k-v1.1 (images, annotations/*.mat with S, names, captions, imageLists);
    returns (root, {id: S})."""
    root = tmp_path / 'cocostuff-10k-v1.1'
    (root / 'imageLists').mkdir(parents=True)
    (root / 'annotations').mkdir()
    maps = {}
    for split, ids in TEN_K.items():
        (root / 'imageLists' / f'{split}.txt').write_text('\n'.join(ids) + '\n')
        for k, i in enumerate(ids):
            write_image(root / 'images' / f'{i}.jpg', (5, 8))
            maps[i] = np.roll(grid([0, 1, 11, 12, 13, 91, 92, 182, 26, 150]), k).astype(np.uint16)
            scipy.io.savemat(str(root / 'annotations' / f'{i}.mat'),
                             {'S': maps[i], 'names': np.array(['unlabeled', 'person'], object),
                              'captions': np.array(['a caption'], object)})
    (root / 'imageLists' / 'all.txt').write_text('\n'.join(TEN_K['train'] + TEN_K['test']))
    (root / 'cocostuff-labels.txt').write_text('0: unlabeled\n1: person\n')
    return root, maps


COCO_164K = {'train': ['000000000009', '000000000025', '000000581929'], 'val': ['000000000139']}


def fake_cocostuff164k(tmp_path):
    """COCO 2017 images and stuffthingmaps_trainval2017 (0-based ids, 255 unlabeled);
    returns (images, maps folder, {id: map})."""
    images, stuff = tmp_path / 'coco', tmp_path / 'stuffthingmaps_trainval2017'
    maps = {}
    for split, ids in COCO_164K.items():
        for k, i in enumerate(ids):
            write_image(images / f'{split}2017' / f'{i}.jpg', (5, 8))
            maps[i] = np.roll(grid([255, 0, 10, 11, 12, 90, 91, 181, 25, 149]), k)
            write_png(stuff / f'{split}2017' / f'{i}.png', maps[i])
    write_image(images / 'test2017' / '000000000001.jpg', (5, 8))  # no labels: not used
    (images / 'annotations').mkdir()
    return images, stuff, maps


# ---- ADE20K

ADE = {'train': ['ADE_train_00000001', 'ADE_train_00000002', 'ADE_train_00020210'],
       'val': ['ADE_val_00000001']}


def fake_ade20k(tmp_path):
    """ADEChallengeData2016 with objectInfo150.txt as distributed (tabs, a space after some
    indices and names); returns (root, {id: annotation})."""
    root = tmp_path / 'ADEChallengeData2016'
    rows = {1: 'wall', 2: 'building, edifice', 8: 'bed ', 22: 'water', 150: 'flag'}
    info = 'Idx\tRatio\tTrain\tVal\tName\n' + ''.join(
        f'{k}{" " if k == 22 else ""}\t0.0010\t100\t10\t{rows.get(k, f"thing{k}, synonym")}\n'
        for k in range(1, 151))
    root.mkdir()
    (root / 'objectInfo150.txt').write_text(info)
    (root / 'sceneCategories.txt').write_text('ADE_train_00000001 airport_terminal\n')
    maps = {}
    for split, folder in (('train', 'training'), ('val', 'validation')):
        for k, i in enumerate(ADE[split]):
            write_image(root / 'images' / folder / f'{i}.jpg', (5, 8))
            maps[i] = np.roll(grid([0, 1, 2, 8, 22, 150, 75]), k)
            write_png(root / 'annotations' / folder / f'{i}.png', maps[i])
    return root, maps


# ---------------------------------------------------------------------------- checks

def tree_state(folder, skip=None):
    """{relative path: (sha1 or link target, mtime)} of every file and link below folder, the
    folder `skip` left out."""
    out = {}
    for d, dirs, files in os.walk(folder):
        dirs[:] = [x for x in dirs if os.path.join(d, x) != skip]
        for f in files:
            p = os.path.join(d, f)
            what = os.readlink(p) if os.path.islink(p) else \
                hashlib.sha1(open(p, 'rb').read()).hexdigest()
            out[os.path.relpath(p, folder)] = (what, os.lstat(p).st_mtime_ns)
    return out


def run_prepare(capsys, fn, *args, **kwargs):
    """fn(*args, **kwargs) with 2 workers; returns (its settings, the settings line parsed)."""
    found = fn(*args, workers=2, **kwargs)
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith('settings: ')]
    assert len(line) == 1, out
    words = dict(w.split('=', 1) for w in shlex.split(line[0][len('settings: '):]))
    assert {k: config.parse(k, v) for k, v in words.items()} == found  # pasteable as it is
    return found, out


def check_prepared(out, splits, labels, classes, palette=None):
    """The prepared folder `out`: lists {split: ids}, links to {id: image}, labels {id:
    expected array} (ids without one have no label file), classes.txt and palette.txt,
    readable by dataset.py's readers (plumbing/images.py)."""
    lists = os.path.join(out, 'ImageSets', 'Segmentation')
    assert sorted(os.listdir(lists)) == sorted(f'{s}.txt' for s in splits)
    for split, ids in splits.items():
        assert open(os.path.join(lists, f'{split}.txt')).read().split('\n')[:-1] == \
            [i for i, _ in ids]
    images = dict(i for ids in splits.values() for i in ids)
    assert sorted(os.listdir(os.path.join(out, 'JPEGImages'))) == sorted(
        i + os.path.splitext(p)[1] for i, p in images.items())
    for i, image in images.items():
        link = layout.find_image(os.path.join(out, 'JPEGImages', i))
        assert os.path.islink(link) and os.readlink(link) == str(image)
        assert os.path.isabs(os.readlink(link))
    assert sorted(os.listdir(os.path.join(out, 'SegmentationClassAug'))) == \
        sorted(f'{i}.png' for i in labels)
    assert open(os.path.join(out, 'classes.txt')).read().split('\n')[:-1] == list(classes)
    for i, want in labels.items():
        path = os.path.join(out, 'SegmentationClassAug', f'{i}.png')
        with Image.open(path) as img:
            assert img.mode == 'P' and img.getpalette()[:3 * len(palette or ())] == \
                [v for c in palette or () for v in c]
        got = image_files.read_label(path, len(classes), 255)
        assert got.shape == image_files.read_image(layout.find_image(
            os.path.join(out, 'JPEGImages', i))).shape[:2]
        np.testing.assert_array_equal(got, want, err_msg=i)
    if palette:
        assert [tuple(map(int, x.split())) for x in
                open(os.path.join(out, 'palette.txt')).read().splitlines()] == list(palette)
    else:
        assert not os.path.exists(os.path.join(out, 'palette.txt'))


def check_rerun(capsys, out, fn, *args, **kwargs):
    """A second run rewrites nothing; one after a killed run clears its leftovers and remakes
    exactly the missing or wrong link and the missing label."""
    state = tree_state(out)
    run_prepare(capsys, fn, *args, **kwargs)
    assert tree_state(out) == state
    links = sorted(os.listdir(os.path.join(out, 'JPEGImages')))
    labels = sorted(os.listdir(os.path.join(out, 'SegmentationClassAug')))
    lost, wrong, label = (os.path.join(out, 'JPEGImages', links[0]),
                          os.path.join(out, 'JPEGImages', links[-1]),
                          os.path.join(out, 'SegmentationClassAug', labels[0]))
    os.remove(lost)
    os.remove(label)
    os.remove(wrong)
    os.symlink('/elsewhere.jpg', wrong)
    pid = dead_pid()  # of the killed run
    leftovers = [f'{label}.tmp{pid}.png', f'{lost}.tmp{pid}',
                 os.path.join(out, 'ImageSets', 'Segmentation', f'train.txt.tmp{pid}')]
    for p in leftovers:
        open(p, 'w').close()
    run_prepare(capsys, fn, *args, **kwargs)
    assert not any(os.path.exists(p) for p in leftovers)
    again = tree_state(out)
    assert {p for p in again if again[p] != state[p]} == {
        os.path.relpath(p, out) for p in (lost, wrong, label)}
    assert again.keys() == state.keys() and again[os.path.relpath(wrong, out)][0] == \
        state[os.path.relpath(wrong, out)][0]


def one_sentence(error):
    """The text of a UserError, checked to be one sentence."""
    text = str(error.value)
    assert text.endswith('.') and '\n' not in text and text.count('; ') <= 2, text
    return text
