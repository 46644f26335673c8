"""prepare.py on Cityscapes, PASCAL Context, COCO-Stuff (10k, 164k) and ADE20K: each fake
download (downloads.py) -> the layout dataset.py reads."""
import os

import numpy as np
import pytest
import scipy.io

import prepare
from downloads import (ADE, CONTEXT_59, CONTEXT_NAMES, CONTEXT_SPLITS, COCO_164K, CS_FILES,
                       TEN_K, check_prepared, check_rerun, fake_ade20k, fake_cityscapes,
                       fake_cocostuff10k, fake_cocostuff164k, fake_context, grid, one_sentence,
                       run_prepare, tree_state, write_image, write_png)
from plumbing import config

# Each test builds a tiny fake download in the official layout (downloads.py), prepares it,
# and checks the result against expectations written out here independently of prepare.py's
# tables.

# ---- Cityscapes

# labelId -> trainId as listed in cityscapesScripts' helpers/labels.py (the rest: 255)
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


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
