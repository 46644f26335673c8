"""dataset.py: prepare (VOC + SBD), the datasets and their checks, the toy data."""
import hashlib
import os
import sys

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import config
import dataset
import settings

# ---------------------------------------------------------------------------- prepare

# every combination of where an id is listed and who labels it
VOC_TRAIN, VOC_VAL = ['v_tr', 'both_tr', 'vtr_sval'], ['v_val', 'vval_str', 'vval_sval']
SBD_TRAIN, SBD_VAL = ['s_tr', 'both_tr', 'vval_str', 's_both'], ['s_val', 'vtr_sval', 'vval_sval',
                                                                  's_both']
SBD_ONLY_MAT = ['s_unlisted']  # an SBD label listed nowhere: written, not trained on


def write_mat(path, seg):
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


def tree_state(folder):
    """{relative path: (sha1, mtime)} of every file below folder."""
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, folder)] = (hashlib.sha1(open(p, 'rb').read()).hexdigest(),
                                               os.stat(p).st_mtime_ns)
    return out


def test_prepare_writes_labels_and_trainaug_and_is_safe_to_rerun(tmp_path, capsys):
    voc, sbd, want = fake_voc_sbd(tmp_path)
    before = tree_state(voc)
    trainaug = dataset.prepare(voc, sbd, workers=2)
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
    assert dataset.prepare(voc, sbd, workers=2) == expected  # again: nothing rewritten
    assert tree_state(voc) == after
    settings.DATA_ROOT, settings.N_CLASSES = voc, 21
    assert dataset.TrainDataset().ids == expected and len(dataset.ValDataset()) == 3


def test_prepare_names_what_is_wrong(tmp_path):
    voc, sbd, _ = fake_voc_sbd(tmp_path)
    with pytest.raises(config.UserError, match='cls.*SBD labels'):
        dataset.prepare(voc, voc, workers=1)
    with pytest.raises(config.UserError, match='VOC 2012 folder'):
        dataset.prepare(str(tmp_path / 'nope'), sbd, workers=1)
    jpg = os.path.join(voc, 'JPEGImages', 's_val.jpg')
    os.rename(jpg, jpg + '.away')
    with pytest.raises(config.UserError, match='first: s_val'):  # found before any writing
        dataset.prepare(voc, sbd, workers=1)
    assert not os.path.exists(os.path.join(voc, 'SegmentationClassAug'))
    os.rename(jpg + '.away', jpg)
    with open(os.path.join(sbd, 'cls', 's_tr.mat'), 'wb') as f:
        f.write(b'not a mat file')
    with pytest.raises(config.UserError, match='s_tr.mat cannot be read'):
        dataset.prepare(voc, sbd, workers=1)
    # fixed, the next run finishes the work and clears what a killed run left half-written
    write_mat(os.path.join(sbd, 'cls', 's_tr.mat'), np.zeros((13, 19), np.uint8))
    stale = os.path.join(voc, 'SegmentationClassAug', 'v_tr.png.tmp123.png')
    open(stale, 'wb').close()
    dataset.prepare(voc, sbd, workers=1)
    assert not os.path.exists(stale) and len(os.listdir(os.path.dirname(stale))) == 10


def test_command_line(tmp_path, monkeypatch, capsys):
    """`prepare` on a bad tree: one sentence, status 2; `toy` prints the settings to use."""
    monkeypatch.setattr(sys, 'argv', ['dataset.py', 'prepare', '--voc', str(tmp_path),
                                      '--sbd', str(tmp_path)])
    with pytest.raises(SystemExit) as end:
        dataset.main()
    err = capsys.readouterr().err
    assert end.value.code == 2 and err.startswith('error: ') and err.count('\n') == 1
    monkeypatch.setattr(sys, 'argv', ['dataset.py', 'toy', str(tmp_path / 't'), '--train', '2',
                                      '--val', '1', '--size', '40', '48'])
    dataset.main()
    out = capsys.readouterr().out
    assert f'DATA_ROOT={tmp_path / "t"} N_CLASSES=5 CROP_SIZE=33 SCALES=0.75,1.0,1.25' in out
    assert config.parse('SCALES', '0.75,1.0,1.25') == (0.75, 1.0, 1.25)
    assert len(os.listdir(tmp_path / 't' / 'JPEGImages')) == 3


# ---------------------------------------------------------------------------- datasets

def use(root, crop=33):
    settings.DATA_ROOT, settings.N_CLASSES, settings.CROP_SIZE = root, 5, crop


def test_train_items_and_reproducible_augmentation(toy_root):
    use(toy_root)
    ds = dataset.TrainDataset()
    assert len(ds) == 24 and ds.ids[0] == 'toy_00000'
    image, label = ds[3]
    assert image.shape == (3, 33, 33) and image.dtype == torch.uint8
    assert label.shape == (33, 33) and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    again = dataset.TrainDataset()  # a fresh dataset (another worker, a resumed run)
    for index in (40, 3, 1000, 27):
        assert all(torch.equal(a, b) for a, b in zip(ds[index], again[index]))
    assert not torch.equal(ds[3][0], ds[3 + 24][0])  # next epoch, other augmentation
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2,
                                         sampler=[9, 50, 3, 70, 11, 1, 2, 30])
    images = torch.cat([b[0] for b in loader])
    assert torch.equal(images, torch.stack([ds[i][0] for i in [9, 50, 3, 70, 11, 1, 2, 30]]))
    settings.SEED = 1
    assert not torch.equal(dataset.TrainDataset()[3][0], ds[3][0])
    with pytest.raises(IndexError):
        ds[-1]


def test_val_items_are_padded_to_1_mod_8(toy_root):
    use(toy_root)
    ds = dataset.ValDataset()
    assert len(ds) == 8 and ds.ids[0] == 'toy_00024'
    for i in range(3):
        image, label, name, h, w = ds[i]
        H, W = label.shape
        assert H % 8 == 1 and W % 8 == 1 and 0 <= H - h < 8 and 0 <= W - w < 8
        assert image.shape == (3, H, W) and image.dtype == torch.uint8
        raw = cv2.imread(os.path.join(toy_root, 'JPEGImages', f'{name}.jpg'))[..., ::-1]
        assert np.array_equal(image[:, :h, :w].permute(1, 2, 0).numpy(), raw)
        png = np.asarray(Image.open(os.path.join(toy_root, 'SegmentationClassAug', f'{name}.png')))
        assert np.array_equal(label[:h, :w].numpy(), png)
        assert (label[h:] == 255).all() and (label[:, w:] == 255).all()
        assert (image[:, h:] == torch.tensor([124, 116, 104]).view(3, 1, 1)).all()


def one_image_root(tmp_path, image=None, label=None, mode='P'):
    """A DATA_ROOT holding one id 'a' (15x20 by default) in both lists."""
    for d in ('JPEGImages', 'SegmentationClassAug', 'ImageSets/Segmentation'):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    image = np.full((15, 20, 3), 90, np.uint8) if image is None else image
    label = np.ones((15, 20), np.uint8) if label is None else label
    cv2.imwrite(str(tmp_path / 'JPEGImages/a.jpg'), image)
    if mode == 'P':
        dataset.write_label(label, str(tmp_path / 'SegmentationClassAug/a.png'))
    else:
        Image.fromarray(label).convert(mode).save(tmp_path / 'SegmentationClassAug/a.png')
    for split in ('trainaug', 'val'):
        (tmp_path / f'ImageSets/Segmentation/{split}.txt').write_text('a\n')
    use(str(tmp_path), 17)
    return str(tmp_path)


def test_train_items_keep_image_and_label_aligned(tmp_path):
    """End to end (read, scale, pad, crop, flip, to tensors) on an image whose colour
    encodes its label, stored losslessly (OpenCV reads a PNG whatever its name)."""
    from test_transforms import coded_pair, decode, interior
    image, label = coded_pair(60, 80)
    one_image_root(tmp_path, label=label)
    cv2.imwrite(str(tmp_path / 'JPEGImages/a.png'), image[..., ::-1])
    os.replace(tmp_path / 'JPEGImages/a.png', tmp_path / 'JPEGImages/a.jpg')
    settings.CROP_SIZE, settings.N_CLASSES = 41, 21
    ds = dataset.TrainDataset()
    for index in range(30):
        img, lab = (t.numpy() for t in ds[index])
        inside = interior(lab)
        assert (decode(img.transpose(1, 2, 0))[inside] == lab[inside]).all(), index


@pytest.mark.parametrize('mode', ['P', 'L'])
def test_palette_and_grayscale_labels_read_as_indices(tmp_path, mode):
    label = np.zeros((15, 20), np.uint8)
    label[5:, 3:9], label[0] = 4, 255
    one_image_root(tmp_path, label=label, mode=mode)
    assert np.array_equal(dataset.ValDataset()[0][1][:15, :20].numpy(), label)


@pytest.mark.parametrize('problem, match', [
    ('rgb', 'a.png is a RGB image, not an index PNG'),
    ('size', 'a.png is 21x15 but its image .*a.jpg is 20x15'),
    ('value', r'a.png has values \[7\] outside \[0, 5\) and 255'),
    ('image', 'a.jpg cannot be read'),
    ('no_label', 'a.png cannot be read'),
    ('jpeg_label', 'a.png cannot be read'),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, problem, match):
    root = one_image_root(tmp_path)
    png = os.path.join(root, 'SegmentationClassAug/a.png')
    jpg = os.path.join(root, 'JPEGImages/a.jpg')
    if problem == 'rgb':
        Image.new('RGB', (20, 15)).save(png)
    elif problem == 'size':
        dataset.write_label(np.zeros((15, 21), np.uint8), png)
    elif problem == 'value':
        dataset.write_label(np.full((15, 20), 7, np.uint8), png)
    elif problem == 'jpeg_label':
        Image.new('L', (20, 15)).save(png, format='JPEG')
    elif problem == 'image':
        open(jpg, 'wb').write(b'\xff\xd8 truncated')
    else:
        os.remove(png)
    for ds in (dataset.TrainDataset(), dataset.ValDataset()):
        with pytest.raises(config.UserError, match=match):
            ds[0]


def test_missing_root_list_or_folder_says_how_to_fix(tmp_path, toy_root):
    settings.DATA_ROOT = str(tmp_path / 'nowhere')
    with pytest.raises(config.UserError, match='nowhere is not a folder.*dataset.py prepare'):
        dataset.TrainDataset()
    with pytest.raises(config.UserError, match=r"train\.txt does not exist \(lists there: \['"
                                               r"trainaug', 'val'\]\).*dataset.py toy"):
        dataset.TrainDataset('train', data_root=toy_root)
    (tmp_path / 'JPEGImages').mkdir()
    with pytest.raises(config.UserError, match='SegmentationClassAug does not exist'):
        dataset.ValDataset(data_root=str(tmp_path))


def test_grayscale_cmyk_and_rgba_images_become_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (15, 20, 3), dtype=np.uint8)
    files = {'gray.jpg': Image.fromarray(rgb[..., 0]),
             'cmyk.jpg': Image.fromarray(rgb).convert('CMYK'),
             'rgba.png': Image.fromarray(rgb).convert('RGBA')}
    for name, img in files.items():
        img.save(tmp_path / name, quality=100)
        out = dataset.read_image(str(tmp_path / name))
        want = np.asarray(Image.open(tmp_path / name).convert('RGB')).astype(int)
        assert out.shape == (15, 20, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - want).mean() < 3, name
    assert np.array_equal(dataset.read_image(str(tmp_path / 'rgba.png')), rgb)


# ---------------------------------------------------------------------------- classes, toy

def test_class_names_palette_and_colorize(toy_root):
    settings.DATA_ROOT, settings.N_CLASSES = toy_root, 5
    assert dataset.class_names() == ['background', 'disk', 'bar', 'triangle', 'cross']
    settings.N_CLASSES = 6
    with pytest.raises(config.UserError, match='classes.txt names 5 classes but N_CLASSES=6'):
        dataset.class_names()
    settings.DATA_ROOT = '/nonexistent'
    assert dataset.class_names()[5] == 'class_5'
    settings.N_CLASSES = 21
    assert dataset.class_names()[15] == 'person'
    pal = dataset.palette()
    assert len(pal) == 768 and pal[3:9] == [128, 0, 0, 0, 128, 0] and pal[-3:] == [224, 224, 192]
    rgb = dataset.colorize(np.array([[0, 1], [2, 255]]))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[1, 1].tolist() == [224, 224, 192]


def test_toy_is_deterministic_and_shape_not_colour_decides(tmp_path):
    a, b, c = (str(tmp_path / n) for n in 'abc')
    for root, seed in ((a, 5), (b, 5), (c, 6)):
        found = dataset.make_toy(root, seed=seed, n_train=3, n_val=2)
    assert found == {'DATA_ROOT': c, 'N_CLASSES': 5, 'CROP_SIZE': 57, 'SCALES': (0.75, 1.0, 1.25)}
    assert tree_state(a).keys() == tree_state(c).keys()
    digests = [{k: v[0] for k, v in tree_state(r).items()} for r in (a, b, c)]
    assert digests[0] == digests[1] != digests[2]
    with pytest.raises(config.UserError, match='already holds other files'):
        dataset.make_toy(str(tmp_path), n_train=1, n_val=1)
    assert dataset.make_toy(b, seed=5, n_train=3, n_val=2, size=(100, 128))['CROP_SIZE'] == 97
    # every class appears, borders are 255, and the mean colour of an object says little:
    # class centroids of object colours fitted on 100 images classify 100 others near chance
    means, classes = [], []
    for i in range(200):
        image, label = dataset.toy_sample(np.random.default_rng([0, i]))
        assert 0 < (label == 255).mean() < 0.2
        for k in range(1, 5):
            if (label == k).sum() > 30:
                means.append(image[label == k].mean(0))
                classes.append((k, i < 100))
    means, (classes, fit) = np.array(means), np.array(classes).T
    assert set(classes) == {1, 2, 3, 4}
    centres = np.stack([means[(classes == k) & fit].mean(0) for k in range(1, 5)])
    guess = np.argmin(((means[:, None] - centres[None]) ** 2).sum(-1), 1) + 1
    assert (guess == classes)[fit == 0].mean() < 0.4  # 4 classes: chance is 0.25
