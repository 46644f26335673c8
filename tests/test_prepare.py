"""prepare.py: each official download's fake tree -> the layout dataset.py reads."""
import argparse
import hashlib
import os
import shlex
import sys

import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image

import config
import dataset
import prepare
import settings

# ---------------------------------------------------------------------------- prepare

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
            dataset.write_label(want[i], str(voc / 'SegmentationClass' / f'{i}.png'))
    for name, ids in (('train', VOC_TRAIN), ('val', VOC_VAL)):
        (voc / 'ImageSets/Segmentation' / f'{name}.txt').write_text('\n'.join(ids) + '\n')
    for name, ids in (('train', SBD_TRAIN), ('val', SBD_VAL)):
        (sbd / f'{name}.txt').write_text('\n'.join(ids) + '\n')
    return str(voc), str(sbd), want


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


def test_prepare_writes_labels_and_trainaug_and_is_safe_to_rerun(tmp_path, capsys):
    """VOC + SBD: labels (VOC wins), trainaug, untouched VOC files, nothing rewritten again."""
    voc, sbd, want = fake_voc_sbd(tmp_path)
    before = tree_state(voc)
    trainaug = prepare.prepare(voc, sbd, workers=2)
    expected = sorted((set(VOC_TRAIN) | set(SBD_TRAIN) | set(SBD_VAL)) - set(VOC_VAL))
    assert trainaug == expected == ['both_tr', 's_both', 's_tr', 's_val', 'v_tr', 'vtr_sval']
    lists = os.path.join(voc, 'ImageSets', 'Segmentation')
    assert open(os.path.join(lists, 'trainaug.txt')).read().split() == expected
    aug = os.path.join(voc, 'SegmentationClassAug')
    assert sorted(os.listdir(aug)) == sorted(f'{i}.png' for i in want)
    for i, label in want.items():  # VOC's label where it has one, else SBD's
        img = Image.open(os.path.join(aug, f'{i}.png'))
        assert img.mode == 'P' and np.array_equal(np.asarray(img), label), i
    after = tree_state(voc)
    assert all(after[p] == v for p, v in before.items())  # VOC's own files untouched
    assert 'differs from the 10582 ids' in capsys.readouterr().out
    assert prepare.prepare(voc, sbd, workers=2) == expected  # again: nothing rewritten
    assert tree_state(voc) == after
    settings.DATA_ROOT, settings.N_CLASSES = voc, 21
    assert dataset.TrainDataset().ids == expected and len(dataset.ValDataset()) == 3


def test_prepare_names_what_is_wrong(tmp_path):
    """VOC + SBD: a wrong folder, a missing image, a broken .mat; a fixed re-run finishes."""
    voc, sbd, _ = fake_voc_sbd(tmp_path)
    with pytest.raises(config.UserError, match='cls.*SBD labels'):
        prepare.prepare(voc, voc, workers=1)
    with pytest.raises(config.UserError, match='VOC 2012 folder'):
        prepare.prepare(str(tmp_path / 'nope'), sbd, workers=1)
    jpg = os.path.join(voc, 'JPEGImages', 's_val.jpg')
    os.rename(jpg, jpg + '.away')
    with pytest.raises(config.UserError, match='first: s_val'):  # found before any writing
        prepare.prepare(voc, sbd, workers=1)
    assert not os.path.exists(os.path.join(voc, 'SegmentationClassAug'))
    os.rename(jpg + '.away', jpg)
    with open(os.path.join(sbd, 'cls', 's_tr.mat'), 'wb') as f:
        f.write(b'not a mat file')
    with pytest.raises(config.UserError, match='s_tr.mat cannot be read'):
        prepare.prepare(voc, sbd, workers=1)
    # fixed, the next run finishes the work and clears what a killed run left half-written
    write_mat(os.path.join(sbd, 'cls', 's_tr.mat'), np.zeros((13, 19), np.uint8))
    stale = os.path.join(voc, 'SegmentationClassAug', 'v_tr.png.tmp123.png')
    open(stale, 'wb').close()
    prepare.prepare(voc, sbd, workers=1)
    assert not os.path.exists(stale) and len(os.listdir(os.path.dirname(stale))) == 10


def test_command_line(tmp_path, monkeypatch, capsys):
    """`prepare` on a bad tree: one sentence, status 2."""
    monkeypatch.setattr(sys, 'argv', ['dataset.py', 'prepare', '--voc', str(tmp_path),
                                      '--sbd', str(tmp_path)])
    with pytest.raises(SystemExit) as end:
        dataset.main()
    err = capsys.readouterr().err
    assert end.value.code == 2 and err.startswith('error: ') and err.count('\n') == 1


# ---------------------------------------------------------------------------- other datasets
# Each test builds a tiny fake download in the official layout (real file and folder names,
# .mat files with the official field names), prepares it, and checks the result against
# expectations written out here independently of prepare.py's tables.

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
    readable by dataset.py's readers."""
    lists = os.path.join(out, 'ImageSets', 'Segmentation')
    assert sorted(os.listdir(lists)) == sorted(f'{s}.txt' for s in splits)
    for split, ids in splits.items():
        assert open(os.path.join(lists, f'{split}.txt')).read().split('\n')[:-1] == \
            [i for i, _ in ids]
    images = dict(i for ids in splits.values() for i in ids)
    assert sorted(os.listdir(os.path.join(out, 'JPEGImages'))) == sorted(
        i + os.path.splitext(p)[1] for i, p in images.items())
    for i, image in images.items():
        link = dataset.find_image(os.path.join(out, 'JPEGImages', i))
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
        got = dataset.read_label(path, len(classes), 255)
        assert got.shape == dataset.read_image(dataset.find_image(
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
    leftovers = [label + '.tmp123.png', lost + '.tmp77',
                 os.path.join(out, 'ImageSets', 'Segmentation', 'train.txt.tmp5')]
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


# ---- Cityscapes

# labelId -> trainId as listed in cityscapesScripts' helpers/labels.py (the rest: 255)
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
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


def test_cityscapes(tmp_path, capsys):
    """Cityscapes: labelId -> trainId, lists, links, palette, settings, untouched, re-run."""
    root, maps = fake_cityscapes(tmp_path)
    before = tree_state(root)
    found, text = run_prepare(capsys, prepare.prepare_cityscapes, str(root))
    out = str(root / 'emanet_cityscapes')
    assert os.listdir(root) == ['leftImg8bit', 'gtFine', 'emanet_cityscapes'] or \
        sorted(os.listdir(root)) == ['emanet_cityscapes', 'gtFine', 'leftImg8bit']
    assert tree_state(root, skip=out) == before
    want = {i: np.vectorize(lambda v: TRAIN_IDS.get(int(v), 255))(m).astype(np.uint8)
            for i, m in maps.items() if i not in CS_FILES['test']}
    m, w = maps['aachen_000000_000019'], want['aachen_000000_000019']
    assert (w[m == 7] == 0).all() and (w[m == 33] == 18).all() and (w[m == 0] == 255).all()
    assert (w[m == 255] == 255).all() and (w[m == 9] == 255).all() and (w[m == 26] == 13).all()
    splits = {s: [(i, str(root / 'leftImg8bit' / s / i.split('_')[0] / f'{i}_leftImg8bit.png'))
                  for i in ids] for s, ids in CS_FILES.items()}
    check_prepared(out, splits, want, ['road', 'sidewalk', 'building', 'wall', 'fence', 'pole',
                                       'traffic light', 'traffic sign', 'vegetation', 'terrain',
                                       'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
                                       'motorcycle', 'bicycle'],
                   [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
                    (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
                    (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
                    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
                    (0, 0, 230), (119, 11, 32)])
    assert found == {'DATA_ROOT': out, 'N_CLASSES': 19, 'TRAIN_SPLIT': 'train',
                     'VAL_SPLIT': 'val', 'CROP_SIZE': (512, 1024),
                     'SCALES': (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), 'ITER_MAX': 80000,
                     'BATCH_SIZE': 8, 'LR': 0.01}
    assert 'train 3, val 1, test 2 (images only)' in text and 'LOSS=ohem' in text
    assert 'train (3 ids) differs from the 2975 ids' in text and '1525 ids' in text
    check_rerun(capsys, out, prepare.prepare_cityscapes, str(root))
    assert tree_state(root, skip=out) == before


def test_cityscapes_bad_tree(tmp_path):
    """Cityscapes: a missing label, a wrong root, no gtFine; nothing written."""
    root, _ = fake_cityscapes(tmp_path)
    os.remove(root / 'gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png')
    with pytest.raises(config.UserError) as e:
        prepare.prepare_cityscapes(str(root), workers=1)
    assert 'frankfurt_000000_000294_gtFine_labelIds.png' in one_sentence(e)
    assert 'gtFine_trainvaltest.zip' in str(e.value)
    assert not os.path.exists(root / 'emanet_cityscapes')  # found before anything was written
    with pytest.raises(config.UserError, match=r'leftImg8bit/leftImg8bit/train \(Cityscapes '
                                               r'train images\) does not exist'):
        prepare.prepare_cityscapes(str(root / 'leftImg8bit'), workers=1)
    os.rename(root / 'gtFine', root / 'gt')
    with pytest.raises(config.UserError, match='gtFine/train.*does not exist; unpack'):
        prepare.prepare_cityscapes(str(root), workers=1)


def test_cityscapes_foreign_values_and_occupied_out(tmp_path):
    """Cityscapes: values that are no labelId; an --out holding real images."""
    root, _ = fake_cityscapes(tmp_path)
    write_png(root / 'gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png',
              grid([7, 34, 200]))  # not labelIds
    with pytest.raises(config.UserError) as e:
        prepare.prepare_cityscapes(str(root), workers=1)
    assert 'holds values [34, 200] that are not Cityscapes labelIds' in one_sentence(e)
    out = tmp_path / 'taken'
    write_image(out / 'JPEGImages' / 'aachen_000000_000019.png', (5, 8))  # a real file there
    with pytest.raises(config.UserError, match='is a file, not a link made by prepare'):
        prepare.prepare_cityscapes(str(root), out=str(out), workers=1)
    assert os.listdir(out) == ['JPEGImages']


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


@pytest.mark.parametrize('classes', [60, 59])
def test_context(tmp_path, capsys, classes):
    """PASCAL Context 60 and 59: the 459 -> 60/59 mapping, lists, links, classes, re-run."""
    voc, ann, maps = fake_context(tmp_path)
    before, before_ann = tree_state(voc), tree_state(ann)
    kwargs = {} if classes == 60 else {'classes': 59}
    found, text = run_prepare(capsys, prepare.prepare_context, str(voc), str(ann), **kwargs)
    out = str(voc / f'emanet_context{classes}')
    assert tree_state(voc, skip=out) == before and tree_state(ann) == before_ann
    rank = {v: k for k, v in enumerate(sorted(CONTEXT_59))}
    if classes == 60:  # background 0 and every class outside the 59 -> 0
        want = {i: np.vectorize(lambda v: rank[v] + 1 if v in rank else 0)(m).astype(np.uint8)
                for i, m in maps.items()}
        hand = {0: 0, 1: 0, 2: 1, 3: 0, 9: 2, 259: 35, 458: 59, 459: 0}
    else:  # the 59 classes 0..58, background and the others ignored
        want = {i: np.vectorize(lambda v: rank.get(v, 255))(m).astype(np.uint8)
                for i, m in maps.items()}
        hand = {0: 255, 1: 255, 2: 0, 3: 255, 9: 1, 259: 34, 458: 58, 459: 255}
    m, w = maps['2008_000002'], want['2008_000002']
    assert all((w[m == v] == c).all() for v, c in hand.items())
    assert CONTEXT_NAMES[34] == 'mountain' and sorted(CONTEXT_59)[34] == 259  # 258 motorbike
    splits = {s: [(i, str(voc / 'JPEGImages' / f'{i}.jpg')) for i in ids]
              for s, ids in CONTEXT_SPLITS.items()}
    check_prepared(out, splits, want, ['background'] * (classes == 60) + CONTEXT_NAMES)
    assert found == {'DATA_ROOT': out, 'N_CLASSES': classes, 'TRAIN_SPLIT': 'train',
                     'VAL_SPLIT': 'val', 'CROP_SIZE': 480, 'ITER_MAX': 40000, 'BATCH_SIZE': 16,
                     'LR': 0.004}
    assert 'train 3, val 2' in text and 'differs from the 4998 ids' in text
    check_rerun(capsys, out, prepare.prepare_context, str(voc), str(ann), **kwargs)


def test_context_bad_tree(tmp_path, capsys):
    """PASCAL Context: a missing .mat, no labels.txt, 59_labels.txt disagreeing, a short list."""
    voc, ann, _ = fake_context(tmp_path)
    os.remove(ann / 'trainval' / '2010_000038.mat')
    with pytest.raises(config.UserError) as e:
        prepare.prepare_context(str(voc), str(ann), workers=1)
    assert '1 files listed for val do not exist' in one_sentence(e)
    assert 'trainval/2010_000038.mat' in str(e.value)
    assert not os.path.exists(voc / 'emanet_context60')
    with pytest.raises(config.UserError, match=r'labels.txt \(PASCAL Context class names\)'):
        prepare.prepare_context(str(voc), str(voc), workers=1)
    labels = (ann / 'labels.txt').read_text()
    (ann / 'labels.txt').write_text(labels.replace('259: mountain', '259: hill'))
    with pytest.raises(config.UserError, match='59_labels.txt does not name the 59 classes'):
        prepare.prepare_context(str(voc), str(ann), workers=1)
    (ann / 'labels.txt').write_text('1: accordion\n')
    with pytest.raises(config.UserError, match='does not name the classes 1-459'):
        prepare.prepare_context(str(voc), str(ann), workers=1)


def test_context_variants_do_not_share_a_folder(tmp_path, capsys):
    """PASCAL Context: 59 into the folder of 60 is refused; so is --classes 33."""
    voc, ann, _ = fake_context(tmp_path)
    out = str(tmp_path / 'context')
    prepare.prepare_context(str(voc), str(ann), out=out, workers=1)
    with pytest.raises(config.UserError, match='holds a prepared dataset of other classes'):
        prepare.prepare_context(str(voc), str(ann), classes=59, out=out, workers=1)
    with pytest.raises(config.UserError, match='--classes 33 is not a PASCAL Context variant'):
        prepare.prepare_context(str(voc), str(ann), classes=33, workers=1)


# ---- COCO-Stuff

# the COCO thing ids (1-based, as in COCO-Stuff's labels.txt) that no image uses
UNUSED = {12: 'street sign', 26: 'hat', 29: 'shoe', 30: 'eye glasses', 45: 'plate',
          66: 'mirror', 68: 'window', 69: 'desk', 71: 'door', 83: 'blender', 91: 'hair brush'}


def coco_index(k):
    """The class (0..170) of COCO-Stuff id k (1..182), or 255 for unlabeled and unused."""
    return 255 if k == 0 or k in UNUSED else k - 1 - sum(u < k for u in UNUSED)


COCO_HAND = {0: 255, 1: 0, 11: 10, 12: 255, 13: 11, 91: 255, 92: 80, 182: 170}


def check_coco_classes(out):
    """classes.txt of COCO-Stuff: 171 names, the unused 11 left out; returns them."""
    names = open(os.path.join(out, 'classes.txt')).read().splitlines()
    assert len(names) == 171 and not set(names) & set(UNUSED.values())
    assert (names[0], names[10], names[11], names[79], names[80], names[170]) == (
        'person', 'fire hydrant', 'stop sign', 'toothbrush', 'banner', 'wood')
    return names


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


def test_cocostuff10k(tmp_path, capsys):
    """COCO-Stuff 10k: ids 0-182 -> 171 classes, lists, links, classes, re-run."""
    root, maps = fake_cocostuff10k(tmp_path)
    before = tree_state(root)
    found, text = run_prepare(capsys, prepare.prepare_cocostuff10k, str(root))
    out = str(root / 'emanet_cocostuff10k')
    assert tree_state(root, skip=out) == before
    want = {i: np.vectorize(coco_index)(m).astype(np.uint8) for i, m in maps.items()}
    m, w = maps[TEN_K['train'][0]], want[TEN_K['train'][0]]
    assert all((w[m == v] == c).all() for v, c in COCO_HAND.items())
    splits = {s: [(i, str(root / 'images' / f'{i}.jpg')) for i in ids] for s, ids in TEN_K.items()}
    check_prepared(out, splits, want, check_coco_classes(out))
    assert found == {'DATA_ROOT': out, 'N_CLASSES': 171, 'TRAIN_SPLIT': 'train',
                     'VAL_SPLIT': 'test', 'CROP_SIZE': 513, 'ITER_MAX': 30000, 'BATCH_SIZE': 16,
                     'LR': 0.009}
    assert 'train 3, test 1' in text and 'differs from the 9000 ids' in text
    check_rerun(capsys, out, prepare.prepare_cocostuff10k, str(root))


def test_cocostuff10k_bad_tree(tmp_path):
    """COCO-Stuff 10k: a missing image, a .mat without S, values above 182."""
    root, _ = fake_cocostuff10k(tmp_path)
    os.remove(root / 'images' / 'COCO_train2014_000000000321.jpg')
    with pytest.raises(config.UserError) as e:
        prepare.prepare_cocostuff10k(str(root), workers=1)
    assert 'COCO_train2014_000000000321.jpg' in one_sentence(e)
    assert not os.path.exists(root / 'emanet_cocostuff10k')
    write_image(root / 'images' / 'COCO_train2014_000000000321.jpg', (5, 8))
    scipy.io.savemat(str(root / 'annotations' / 'COCO_train2014_000000000321.mat'),
                     {'L': np.zeros((5, 8), np.uint16)})  # no S
    with pytest.raises(config.UserError, match="has no readable field 'S'"):
        prepare.prepare_cocostuff10k(str(root), workers=1)
    scipy.io.savemat(str(root / 'annotations' / 'COCO_train2014_000000000321.mat'),
                     {'S': grid([1, 183, 300]).astype(np.uint16)})
    with pytest.raises(config.UserError, match=r'values \[183, 300\] that are not COCO-Stuff'):
        prepare.prepare_cocostuff10k(str(root), workers=1)


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


def test_cocostuff164k(tmp_path, capsys):
    """COCO-Stuff 164k: ids 0-181/255 -> 171 classes, lists, links, classes, re-run."""
    images, stuff, maps = fake_cocostuff164k(tmp_path)
    before, before_stuff = tree_state(images), tree_state(stuff)
    found, text = run_prepare(capsys, prepare.prepare_cocostuff164k, str(images), str(stuff))
    out = str(images / 'emanet_cocostuff164k')
    assert tree_state(images, skip=out) == before and tree_state(stuff) == before_stuff
    want = {i: np.vectorize(lambda v: 255 if v == 255 else coco_index(v + 1))(m).astype(np.uint8)
            for i, m in maps.items()}
    m, w = maps['000000000009'], want['000000000009']
    assert all((w[m == v - 1] == c).all() for v, c in COCO_HAND.items() if v)
    assert (w[m == 255] == 255).all()
    splits = {s: [(i, str(images / f'{s}2017' / f'{i}.jpg')) for i in ids]
              for s, ids in COCO_164K.items()}
    check_prepared(out, splits, want, check_coco_classes(out))
    assert found == {'DATA_ROOT': out, 'N_CLASSES': 171, 'TRAIN_SPLIT': 'train',
                     'VAL_SPLIT': 'val', 'CROP_SIZE': 512, 'ITER_MAX': 80000, 'BATCH_SIZE': 16,
                     'LR': 0.01}
    assert 'train 3, val 1' in text and 'differs from the 118287 ids' in text
    check_rerun(capsys, out, prepare.prepare_cocostuff164k, str(images), str(stuff))


def test_cocostuff164k_bad_tree(tmp_path):
    """COCO-Stuff 164k: a missing label map, a wrong maps folder."""
    images, stuff, _ = fake_cocostuff164k(tmp_path)
    os.remove(stuff / 'train2017' / '000000581929.png')
    with pytest.raises(config.UserError) as e:
        prepare.prepare_cocostuff164k(str(images), str(stuff), workers=1)
    assert 'stuffthingmaps_trainval2017/train2017/000000581929.png' in one_sentence(e)
    assert not os.path.exists(images / 'emanet_cocostuff164k')
    with pytest.raises(config.UserError, match=r'nope/train2017 \(COCO-Stuff train2017 label '
                                               r'maps\) does not exist'):
        prepare.prepare_cocostuff164k(str(images), str(tmp_path / 'nope'), workers=1)


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


def test_ade20k(tmp_path, capsys):
    """ADE20K: 0 -> 255, k -> k-1, names from objectInfo150.txt, lists, links, re-run."""
    root, maps = fake_ade20k(tmp_path)
    before = tree_state(root)
    found, text = run_prepare(capsys, prepare.prepare_ade20k, str(root))
    out = str(root / 'emanet_ade20k')
    assert tree_state(root, skip=out) == before
    want = {i: np.where(m == 0, 255, m.astype(int) - 1).astype(np.uint8) for i, m in maps.items()}
    m, w = maps['ADE_train_00000001'], want['ADE_train_00000001']
    assert (w[m == 0] == 255).all() and (w[m == 1] == 0).all() and (w[m == 150] == 149).all()
    splits = {s: [(i, str(root / 'images' / f / f'{i}.jpg')) for i in ADE[s]]
              for s, f in (('train', 'training'), ('val', 'validation'))}
    names = ['wall', 'building'] + [f'thing{k}' for k in range(3, 151)]
    names[7], names[21], names[149] = 'bed', 'water', 'flag'
    check_prepared(out, splits, want, names)
    assert found == {'DATA_ROOT': out, 'N_CLASSES': 150, 'TRAIN_SPLIT': 'train',
                     'VAL_SPLIT': 'val', 'CROP_SIZE': 512, 'ITER_MAX': 160000, 'BATCH_SIZE': 16,
                     'LR': 0.01}
    assert 'train 3, val 1' in text and 'differs from the 20210 ids' in text
    check_rerun(capsys, out, prepare.prepare_ade20k, str(root))


def test_ade20k_bad_tree(tmp_path):
    """ADE20K: a missing annotation, a value above 150, no objectInfo150.txt."""
    root, _ = fake_ade20k(tmp_path)
    os.remove(root / 'annotations' / 'training' / 'ADE_train_00000002.png')
    with pytest.raises(config.UserError) as e:
        prepare.prepare_ade20k(str(root), workers=1)
    assert 'annotations/training/ADE_train_00000002.png' in one_sentence(e)
    assert 'ADEChallengeData2016.zip' in str(e.value)
    assert not os.path.exists(root / 'emanet_ade20k')
    write_png(root / 'annotations' / 'training' / 'ADE_train_00000002.png', grid([0, 151]))
    with pytest.raises(config.UserError, match=r'values \[151\] that are not ADE20K labels'):
        prepare.prepare_ade20k(str(root), workers=1)
    os.remove(root / 'objectInfo150.txt')
    with pytest.raises(config.UserError, match=r'objectInfo150.txt \(ADE20K class names\) does '
                                               r'not exist'):
        prepare.prepare_ade20k(str(root), workers=1)


# ---- the command line

def test_command_line_prepares_and_refuses_mistakes(tmp_path, monkeypatch, capsys):
    """`python dataset.py prepare cityscapes ROOT --out DIR` through dataset.main(), and
    the mistakes of the command line as one sentence with status 2."""
    root, _ = fake_cityscapes(tmp_path)
    out = tmp_path / 'prepared'
    monkeypatch.setattr(sys, 'argv', ['dataset.py', 'prepare', 'cityscapes', str(root),
                                      '--out', str(out), '--workers', '2'])
    dataset.main()
    assert f'settings: DATA_ROOT={out} N_CLASSES=19' in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ['ImageSets', 'JPEGImages', 'SegmentationClassAug',
                                       'classes.txt', 'palette.txt']
    for argv, match in (
            (['cityscapes', str(root), '--workers', '-1'], '--workers -1 must be 0'),
            (['cityscapes'], 'prepare cityscapes takes 1 folder'),
            (['context', str(root)], 'prepare context takes 2 folder'),
            ([], 'prepare takes a dataset'),
            (['ade20k', str(root), '--classes', '59'], '--classes does not apply to ade20k'),
            (['voc', str(root), str(root), '--out', str(out)], '--out does not apply to voc'),
            (['--voc', str(root)], 'give both --voc and --sbd')):
        monkeypatch.setattr(sys, 'argv', ['dataset.py', 'prepare', *argv])
        with pytest.raises(SystemExit) as end:
            dataset.main()
        err = capsys.readouterr().err
        assert end.value.code == 2 and err.startswith('error: ') and err.count('\n') == 1, err
        assert match in err, err
    args = argparse.ArgumentParser()
    prepare.add_arguments(args)
    with pytest.raises(config.UserError, match='--workers -3 must be 0'):  # prepare's own check
        prepare.run(args.parse_args(['ade20k', str(root), '--workers', '-3']))


# ---------------------------------------------------------------------------- train and score

TINY = ['N_LAYERS=18', 'STEM=torchvision', 'STRIDE=16', 'EMA_CHANNELS=16', 'N_BASES=4',
        'BATCH_SIZE=2', 'ITER_MAX=2', 'ITER_SAVE=2', 'LOG_EVERY=1', 'NUM_WORKERS=0',
        'PRETRAINED=', 'IMAGE_EVERY=0', 'ATTN_IMAGES=0', 'SCALES=(0.5,1.0,2.0)']


@pytest.mark.parametrize('name, extra', [
    ('cityscapes', ['LOSS=ohem', 'OHEM_MIN_KEPT=50', 'EVAL_MODE=slide', 'SLIDE_CROP=17',
                    'SLIDE_STEP=9']),
    ('context', []), ('cocostuff10k', []), ('cocostuff164k', []), ('ade20k', []), ('voc', []),
])
def test_a_short_training_and_evaluation_on_each_prepared_dataset(tmp_path, capsys, name,
                                                                     extra):
    """Each fake download, prepared, trains with the printed settings (two steps of a tiny
    network, crops (17, 33)) and is scored by eval.py: the same code for every dataset."""
    import eval as ev
    import train
    make = {'cityscapes': lambda: (fake_cityscapes(tmp_path)[0],),
            'context': lambda: fake_context(tmp_path)[:2],
            'cocostuff10k': lambda: (fake_cocostuff10k(tmp_path)[0],),
            'cocostuff164k': lambda: fake_cocostuff164k(tmp_path)[:2],
            'ade20k': lambda: (fake_ade20k(tmp_path)[0],),
            'voc': lambda: fake_voc_sbd(tmp_path)[:2]}[name]
    prepare.DATASETS[name][0](*map(str, make()), workers=1)
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith('settings: ')][0]
    words = shlex.split(line[len('settings: '):])  # as a user pastes them
    found = {k: config.parse(k, v) for k, v in (w.split('=', 1) for w in words)}
    out = [f'MODEL_DIR={tmp_path}/models', f'LOG_DIR={tmp_path}/logs']
    train.main(words + TINY + extra + out + ['CROP_SIZE=(17,33)'])
    saved = config.resolved()
    result = ev.main([f'{tmp_path}/models/final.pth', f'DATA_ROOT={found["DATA_ROOT"]}'] + TINY
                     + extra + out)
    text = capsys.readouterr().out
    assert 'done: 2 steps' in text and 'mIoU' in text and 0 <= result['pAcc'] <= 1
    assert len(result['per_class']) == found['N_CLASSES'] == saved['N_CLASSES']
    names = dataset.read_classes(found['DATA_ROOT']) or list(dataset.VOC_CLASSES)  # VOC: none
    assert list(result['per_class']) == names
