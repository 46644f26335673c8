"""dataset.py and toy.py: the datasets and their checks, text files, classes and palettes,
`dataset.py check`, the toy data and its command line."""
import hashlib
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import dataset
import toy
from conftest import coded_pair, decode, interior, one_sentence, run_main
from plumbing import config, images, layout, pictures


def tree_state(folder):
    """{relative path: (sha1, mtime)} of every file below folder."""
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, folder)] = (hashlib.sha1(open(p, 'rb').read()).hexdigest(),
                                               os.stat(p).st_mtime_ns)
    return out


# ---------------------------------------------------------------------------- datasets

def use(root, crop=33):
    config.apply(dict(DATA_ROOT=root, N_CLASSES=5, CROP_SIZE=crop))


def test_train_items_and_reproducible_augmentation(toy_root, given):
    use(toy_root)
    ds = dataset.TrainDataset()
    assert len(ds) == 24 and ds.ids[0] == 'toy_00000'
    image, label = ds[3]
    assert image.shape == (3, 33, 33) and image.dtype == torch.uint8
    assert label.shape == (33, 33) and label.dtype == torch.uint8
    assert set(label.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    again = dataset.TrainDataset()  # a fresh dataset (another worker, a resumed run)
    for index in (40, 3, 1000, 27):
        assert all(torch.equal(a, b) for a, b in zip(ds[index], again[index]))
    assert not torch.equal(ds[3][0], ds[3 + 24][0])  # next epoch, other augmentation
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2,
                                         sampler=[9, 50, 3, 70, 11, 1, 2, 30])
    images = torch.cat([b[0] for b in loader])
    assert torch.equal(images, torch.stack([ds[i][0] for i in [9, 50, 3, 70, 11, 1, 2, 30]]))
    given(SEED=1)
    assert not torch.equal(dataset.TrainDataset()[3][0], ds[3][0])
    with pytest.raises(IndexError):
        ds[-1]


def test_val_items_are_whole_images_and_labels(toy_root, given):
    use(toy_root)
    ds = dataset.ValDataset()
    assert len(ds) == 8 and ds.ids[0] == 'toy_00024'
    for i in range(3):
        image, label, name = ds[i]
        assert image.dtype == torch.uint8 and label.dtype == torch.uint8
        raw = cv2.imread(os.path.join(toy_root, 'JPEGImages', f'{name}.jpg'))[..., ::-1]
        assert np.array_equal(image.permute(1, 2, 0).numpy(), raw)
        png = np.asarray(Image.open(os.path.join(toy_root, 'SegmentationClassAug', f'{name}.png')))
        assert np.array_equal(label.numpy(), png)


def test_non_square_crops(toy_root, given):
    use(toy_root, crop=(25, 49))
    image, label = dataset.TrainDataset()[5]
    assert image.shape == (3, 25, 49) and label.shape == (25, 49)


def one_image_root(tmp_path, image=None, label=None, mode='P'):
    """A DATA_ROOT holding one id 'a' (15x20 by default) in both lists."""
    for d in ('JPEGImages', 'SegmentationClassAug', 'ImageSets/Segmentation'):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    image = np.full((15, 20, 3), 90, np.uint8) if image is None else image
    label = np.ones((15, 20), np.uint8) if label is None else label
    cv2.imwrite(str(tmp_path / 'JPEGImages/a.jpg'), image)
    (tmp_path / 'classes.txt').write_text('\n'.join(f'c{i}' for i in range(5)) + '\n')
    if mode == 'P':
        pictures.write_label(label, str(tmp_path / 'SegmentationClassAug/a.png'))
    else:
        Image.fromarray(label).convert(mode).save(tmp_path / 'SegmentationClassAug/a.png')
    for split in ('trainaug', 'val'):
        (tmp_path / f'ImageSets/Segmentation/{split}.txt').write_text('a\n')
    use(str(tmp_path), 17)
    return str(tmp_path)


def test_train_items_keep_image_and_label_aligned(tmp_path, given):
    """End to end (read, scale, pad, crop, flip, to tensors) on an image whose colour
    encodes its label, stored losslessly (OpenCV reads a PNG whatever its name)."""
    image, label = coded_pair(60, 80)
    one_image_root(tmp_path, label=label)
    cv2.imwrite(str(tmp_path / 'JPEGImages/a.png'), image[..., ::-1])
    os.replace(tmp_path / 'JPEGImages/a.png', tmp_path / 'JPEGImages/a.jpg')
    given(CROP_SIZE=41, N_CLASSES=21)
    os.remove(tmp_path / 'classes.txt')
    ds = dataset.TrainDataset()
    for index in range(30):
        img, lab = (t.numpy() for t in ds[index])
        inside = interior(lab)
        assert (decode(img.transpose(1, 2, 0))[inside] == lab[inside]).all(), index


@pytest.mark.parametrize('mode', ['P', 'L'])
def test_palette_and_grayscale_labels_read_as_indices(tmp_path, mode, given):
    label = np.zeros((15, 20), np.uint8)
    label[5:, 3:9], label[0] = 4, 255
    one_image_root(tmp_path, label=label, mode=mode)
    assert np.array_equal(dataset.ValDataset()[0][1].numpy(), label)


@pytest.mark.parametrize('problem, match', [
    ('rgb', 'a.png is an image of mode RGB, not an index PNG'),
    ('size', 'a.png is 21x15 but its image .*a.jpg is 20x15'),
    ('value', r'a.png has values \[7\] outside \[0, 5\) and 255'),
    ('image', 'a.jpg cannot be read'),
    ('no_label', 'a.png cannot be read'),
    ('jpeg_label', 'a.png cannot be read'),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, problem, match, given):
    root = one_image_root(tmp_path)
    png = os.path.join(root, 'SegmentationClassAug/a.png')
    jpg = os.path.join(root, 'JPEGImages/a.jpg')
    if problem == 'rgb':
        Image.new('RGB', (20, 15)).save(png)
    elif problem == 'size':
        pictures.write_label(np.zeros((15, 21), np.uint8), png)
    elif problem == 'value':
        pictures.write_label(np.full((15, 20), 7, np.uint8), png)
    elif problem == 'jpeg_label':
        Image.new('L', (20, 15)).save(png, format='JPEG')
    elif problem == 'image':
        open(jpg, 'wb').write(b'\xff\xd8 truncated')
    else:
        os.remove(png)
    for make in (dataset.TrainDataset, dataset.ValDataset):  # a missing file: when opened
        with pytest.raises(config.UserError, match=match):
            make()[0]


def test_missing_root_list_or_folder_says_how_to_fix(tmp_path, toy_root, given):
    given(DATA_ROOT=str(tmp_path / 'nowhere'))
    with pytest.raises(config.UserError, match='nowhere is not a folder.*python prepare.py NAME'):
        dataset.TrainDataset()
    with pytest.raises(config.UserError, match=r"train\.txt does not exist \(lists there: \['"
                                               r"trainaug', 'val'\]\).*python toy.py"):
        dataset.TrainDataset('train', root=toy_root)
    (tmp_path / 'JPEGImages').mkdir()
    with pytest.raises(config.UserError, match='SegmentationClassAug does not exist'):
        dataset.ValDataset(root=str(tmp_path))


@pytest.mark.parametrize('what', ['bom', 'utf16', 'latin1'])
def test_text_files_with_a_byte_order_mark_are_read_and_said_other_encodings_refused(
        tmp_path, what, given, capsys):
    root = one_image_root(tmp_path)
    data = {'bom': b'\xef\xbb\xbfa\n', 'utf16': 'a\n'.encode('utf-16'),
            'latin1': 'caf\xe9\n'.encode('latin-1')}[what]
    lists = os.path.join(root, 'ImageSets/Segmentation')
    open(os.path.join(lists, 'val.txt'), 'wb').write(data)
    if what == 'latin1':
        with pytest.raises(config.UserError, match='list .*val.txt is not UTF-8 text'):
            dataset.ValDataset()
        return
    capsys.readouterr()
    assert dataset.ValDataset().ids == ['a']
    said = {'bom': 'it begins with a byte-order mark (skipped)',
            'utf16': 'it is UTF-16 with a byte-order mark (read as such)'}[what]
    assert capsys.readouterr().err == f'note: list {lists}/val.txt: {said}; every other line as ' \
                                      f'written.\n'
    open(os.path.join(root, 'classes.txt'), 'wb').write(('\n'.join(f'c{i}' for i in range(5)) +
                                                          '\n').encode('utf-16'))
    assert dataset.ValDataset().classes == ['c0', 'c1', 'c2', 'c3', 'c4']


def test_class_count_is_checked_when_a_dataset_opens(toy_root, given):
    use(toy_root)
    given(N_CLASSES=21)  # the default, with 5-class toy data: train.py and eval.py refuse
    for make in (dataset.TrainDataset, dataset.ValDataset):
        with pytest.raises(config.UserError, match='classes.txt names 5 classes but '
                                                   'N_CLASSES=21; set N_CLASSES=5'):
            make()


def test_image_formats_become_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (15, 20, 3), dtype=np.uint8)
    files = {'gray.jpg': Image.fromarray(rgb[..., 0]),
             'cmyk.jpg': Image.fromarray(rgb).convert('CMYK'),
             'rgba.png': Image.fromarray(rgb).convert('RGBA'),
             'p.bmp': Image.fromarray(rgb), 'w.webp': Image.fromarray(rgb)}
    for name, img in files.items():
        img.save(tmp_path / name, quality=100, **({'lossless': True} if 'webp' in name else {}))
        out = images.read_image(str(tmp_path / name))
        want = np.asarray(Image.open(tmp_path / name).convert('RGB')).astype(int)
        assert out.shape == (15, 20, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - want).mean() < 3, name
    for name in ('rgba.png', 'p.bmp', 'w.webp'):
        assert np.array_equal(images.read_image(str(tmp_path / name)), rgb), name
    deep = rgb.astype(np.uint16) * 257  # 16-bit: the top byte of each value
    cv2.imwrite(str(tmp_path / 'deep.png'), deep[..., ::-1])
    assert np.array_equal(images.read_image(str(tmp_path / 'deep.png')), rgb)
    assert layout.find_image(str(tmp_path / 'w')) == str(tmp_path / 'w.webp')


# ---------------------------------------------------------------------------- classes, toy

def test_class_names_palette_and_colorize(toy_root, tmp_path, given):
    given(DATA_ROOT=toy_root, N_CLASSES=5)
    assert layout.class_names() == ['background', 'disk', 'bar', 'triangle', 'cross']
    given(N_CLASSES=6)
    with pytest.raises(config.UserError, match='classes.txt names 5 classes but N_CLASSES=6'):
        layout.class_names()
    given(DATA_ROOT='/nonexistent')
    assert layout.class_names()[5] == 'class_5'
    given(N_CLASSES=21)
    assert layout.class_names()[15] == 'person'
    pal = layout.palette()
    assert len(pal) == 768 and pal[3:9] == [128, 0, 0, 0, 128, 0] and pal[-3:] == [224, 224, 192]
    rgb = pictures.colorize(np.array([[0, 1], [2, 255]]))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[1, 1].tolist() == [224, 224, 192]
    (tmp_path / 'palette.txt').write_text('10 20 30\n\n40 50 60\n')  # a dataset's own colours
    pal = layout.palette(str(tmp_path))
    assert pal[:6] == [10, 20, 30, 40, 50, 60] and pal[6:9] == [0, 128, 0]  # then VOC's
    assert pictures.colorize(np.array([[1]]), pal)[0, 0].tolist() == [40, 50, 60]
    (tmp_path / 'palette.txt').write_text('10 20\n')
    with pytest.raises(config.UserError, match='palette .*palette.txt is not lines of three'):
        layout.palette(str(tmp_path))
    (tmp_path / 'palette.txt').write_text('10 20 300\n')
    with pytest.raises(config.UserError, match='values in \\[0, 255\\]'):
        layout.palette(str(tmp_path))


def test_toy_is_deterministic_and_shape_not_colour_decides(tmp_path):
    a, b, c = (str(tmp_path / n) for n in 'abc')
    for root, seed in ((a, 5), (b, 5), (c, 6)):
        found = toy.make_toy(root, seed=seed, n_train=3, n_val=2)
    assert found == {'DATA_ROOT': c, 'N_CLASSES': 5, 'CROP_SIZE': 57, 'SCALES': (0.75, 1.0, 1.25)}
    assert tree_state(a).keys() == tree_state(c).keys()
    digests = [{k: v[0] for k, v in tree_state(r).items()} for r in (a, b, c)]
    assert digests[0] == digests[1] != digests[2]
    with pytest.raises(config.UserError, match='already holds other files'):
        toy.make_toy(str(tmp_path), n_train=1, n_val=1)
    before = tree_state(b)
    with pytest.raises(config.UserError, match=r'b holds toy data made with --seed 5 --train 3 '
                                               r'--val 2 --size 48 56, which other arguments '
                                               r'would replace; give those arguments, or a new '
                                               r'folder for --seed 5 --train 3 --val 2 --size '
                                               r'100 128\.'):
        toy.make_toy(b, seed=5, n_train=3, n_val=2, size=(100, 128))
    assert tree_state(b) == before  # not a file written
    toy.make_toy(b, seed=5, n_train=3, n_val=2)  # the same arguments: the same files again
    assert {k: v[0] for k, v in tree_state(b).items()} == digests[0]
    assert toy.make_toy(c + '2', seed=5, n_train=3, n_val=2, size=(100, 128))['CROP_SIZE'] == 129
    # every class appears, borders are 255, and the mean colour of an object says little:
    # class centroids of object colours fitted on 100 images classify 100 others near chance
    means, classes = [], []
    for i in range(200):
        image, label = toy.toy_sample(np.random.default_rng([0, i]))
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


def test_toy_command_line_and_its_mistakes(tmp_path, capsys):
    def run(*argv):
        code, _, err = run_main(toy.main, list(argv), capsys)
        assert code == 2
        one_sentence(err)
        return err
    assert 'at least 1 train and 1 val image, not -5 and 80' in run(str(tmp_path / 'a'),
                                                                   '--train', '-5')
    assert 'not 0 and 80' in run(str(tmp_path / 'a'), '--train', '0')
    assert not os.path.exists(tmp_path / 'a')  # refused before writing anything
    (tmp_path / 'file').write_text('x')
    assert 'file is a file; give a new or empty folder' in run(str(tmp_path / 'file'))
    code, out, _ = run_main(toy.main, [str(tmp_path / 't'), '--train', '2', '--val', '1', '--size',
                                       '40', '48'], capsys)
    assert code == 0
    assert f'DATA_ROOT={tmp_path / "t"} N_CLASSES=5 CROP_SIZE=49 SCALES=0.75,1.0,1.25' in out
    assert config.parse('SCALES', '0.75,1.0,1.25') == (0.75, 1.0, 1.25)
    assert len(os.listdir(tmp_path / 't' / 'JPEGImages')) == 3


def test_toy_into_a_folder_it_cannot_write_is_one_sentence(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(os, 'makedirs', refuse)  # as a read-only folder does (root ignores modes)
    with pytest.raises(config.UserError, match='could not be written .*its folder is not '
                                               'writable; pass another <dir>'):
        toy.make_toy(str(tmp_path / 'ro'), n_train=1, n_val=1)


def test_check_reports_classes_and_problems(tmp_path, capfd, given):
    root = tmp_path / 'd'
    toy.make_toy(str(root), seed=0, n_train=6, n_val=3)
    labels = [np.asarray(Image.open(root / 'SegmentationClassAug' / f'toy_{i:05d}.png'))
              for i in range(9)]
    argv = ['check', str(root), '--workers', '2']
    dataset.main(argv)  # no problems: exit status 0
    out = capfd.readouterr().out
    train = np.concatenate([x.ravel() for x in labels[:6]])
    disk = 100 * (train == 1).sum() / train.size
    images = sum((x == 1).any() for x in labels[:6])
    assert f'disk{" " * 20}{disk:>10.3f}{images:>8}' in out, out
    assert 'trainaug: 6 ids, labelled, 0 with problems' in out and '0 problem(s)' in out
    pictures.write_label(np.full((5, 5), 7, np.uint8), str(root / 'SegmentationClassAug' /
                                                          'toy_00001.png'))
    os.remove(root / 'JPEGImages' / 'toy_00007.jpg')
    with pytest.raises(SystemExit) as end:
        dataset.main(argv)
    out, err = capfd.readouterr()
    assert end.value.code == 1 and '2 problem(s)' in out and 'WARN' not in err  # OpenCV quiet
    assert 'toy_00001.png has values [7] outside [0, 5)' in out
    assert 'toy_00007.jpg cannot be read: it does not exist' in out
    with open(root / 'ImageSets' / 'Segmentation' / 'val.txt', 'a') as f:
        f.write('toy_00008\n')  # an id listed twice: counted once, named as a problem
    with pytest.raises(SystemExit):
        dataset.main(argv)
    out = capfd.readouterr().out
    assert 'val: 3 ids, labelled, 2 with problems' in out and '3 problem(s)' in out
    assert 'toy_00008 is listed more than once in val.txt (it would count twice)' in out
    given(DATA_ROOT=str(root), N_CLASSES=5)  # training and evaluation refuse it
    with pytest.raises(config.UserError, match=r'val.txt names toy_00008 more than once \(1 '
                                               r'ids so\); an image listed twice would count '
                                               r'twice, so remove the repeats\.'):
        dataset.ValDataset('val')


def test_check_finds_cut_images_and_repeated_class_names_palettes_and_folders(tmp_path,
                                                                                capsys):
    root = tmp_path / 'd'
    toy.make_toy(str(root), seed=0, n_train=4, n_val=2)
    jpg = root / 'JPEGImages' / 'toy_00002.jpg'
    jpg.write_bytes(jpg.read_bytes()[:700])  # a copy cut short: decoders fill in grey
    with pytest.raises(SystemExit):
        dataset.main(['check', str(root), '--workers', '1'])
    out = capsys.readouterr().out
    assert f'image {jpg} is cut short' in out and '1 problem(s)' in out
    (root / 'palette.txt').write_text('#000000\n')
    with pytest.raises(config.UserError, match='palette .* is not lines of three numbers'):
        layout.check(str(root), 1)
    (root / 'palette.txt').unlink()
    (root / 'classes.txt').write_text('background\ndisk\ndisk\ntriangle\ncross\n')
    with pytest.raises(config.UserError, match=r"classes.txt names 'disk' more than once; class "
                                               r"names must be distinct"):
        layout.check(str(root), 1)
    with pytest.raises(config.UserError, match=r'image .*JPEGImages cannot be read: it is a '
                                               r'folder\.'):
        images.read_image(str(root / 'JPEGImages'))
    code, _, err = run_main(toy.main, [str(tmp_path / 'x'), '--seed', '-5'], capsys)
    assert code == 2
    one_sentence(err, '--seed -5 must be 0 or more.')
