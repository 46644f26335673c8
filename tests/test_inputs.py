"""Nothing silently different from what the user asked, by kind, each in the one place that reads
that kind of input: (1) what of an input file is not used is said (images: images.read_image)
or refused (labels: images.read_label); (2) a text line is read as written or the difference is
said (files.read_lines; settings.py as Python reads it); (3) a setting or option that cannot
take effect is said (config.no_effect), or refused where going on would mislead. And photos
turned by their EXIF orientation are read as a viewer shows them, in training, evaluation and
prediction alike."""
import collections
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

import dataset
import eval as evaluation
import predict
import train
from conftest import ENV, ROOT, args, one_sentence, run_main
from plumbing import config, images


def notes(err):
    return [line for line in err.splitlines() if line.startswith('note: ')]


# ---------------------------------------------------------------------------- (1) unused parts

@pytest.fixture
def said_afresh(monkeypatch):
    """read_image says the first files of each kind in a process: as a new process, here."""
    monkeypatch.setattr(config, '_SAID', collections.Counter())


def test_what_an_image_holds_beyond_what_is_used_is_said_once(tmp_path, checkpoint, capsys,
                                                              said_afresh):
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
              for _ in range(3)]
    frames[0].save(tmp_path / 'anim.gif', save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / 'pages.tif', save_all=True, append_images=frames[1:2])
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)).save(tmp_path / 'a.png')
    Image.fromarray(rng.integers(0, 2 ** 16, (20, 30), dtype=np.uint16)).save(tmp_path / 'g.png')
    Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)).save(tmp_path / 'b.png')
    code, _, err = run_main(predict.main, [checkpoint, str(tmp_path), '--out',
                                           str(tmp_path / 'out')], capsys)
    assert code == 0, err
    alpha = 'has an alpha channel (transparency), which is not used: its colours are read as if ' \
        'opaque'
    assert notes(err) == [
        f'note: image {tmp_path}/a.png {alpha}.',
        f'note: image {tmp_path}/anim.gif holds 3 frames or pages; only the first is used.',
        f'note: image {tmp_path}/b.png {alpha}.',
        f'note: image {tmp_path}/g.png has 16 bits per channel; it is read at 8 (the lower bits '
        f'are not used).',
        f'note: image {tmp_path}/pages.tif holds 2 frames or pages; only the first is used.'], err
    for i in range(3):  # a dataset of them: the first three, and that the others are alike
        frames[0].convert('RGBA').save(tmp_path / f'c{i}.png')
        images.read_image(str(tmp_path / f'c{i}.png'))
    said = notes(capsys.readouterr().err)
    assert said == [f'note: image {tmp_path}/c0.png {alpha} (and so every other file like it: '
                    f'not said again).'], said
    first = np.asarray(Image.open(tmp_path / 'anim.gif').convert('RGB'))  # its first frame
    assert np.array_equal(images.read_image(str(tmp_path / 'anim.gif')), first)


def test_a_label_holding_more_than_one_map_is_refused(tmp_path):
    maps = [Image.fromarray(np.full((5, 6), v, np.uint8)) for v in (1, 2)]
    maps[0].save(tmp_path / 'l.png', save_all=True, append_images=maps[1:])  # animated PNG
    with pytest.raises(config.UserError, match=r'label .*l.png holds 2 frames \(an animated PNG'
                                               r'\); a label is one index map'):
        images.read_label(str(tmp_path / 'l.png'), 5, 255)


# ---------------------------------------------------------------------------- (2) lines

def one_image_data(tmp_path, ids):
    """A prepared folder whose images are named by `ids`, with their labels."""
    root = tmp_path / 'data'
    for sub in ('JPEGImages', 'SegmentationClassAug', 'ImageSets/Segmentation'):
        (root / sub).mkdir(parents=True)
    for i in ids:
        Image.new('RGB', (6, 5), (90, 10, 200)).save(root / 'JPEGImages' / f'{i}.png')
        Image.new('L', (6, 5), 1).save(root / 'SegmentationClassAug' / f'{i}.png')
    return root


def test_id_lists_are_read_as_written_or_the_difference_is_said(tmp_path, given, capsys):
    root = one_image_data(tmp_path, ['my photo', 'b', 'c'])
    lists = root / 'ImageSets' / 'Segmentation'
    given(DATA_ROOT=str(root), N_CLASSES=2)
    (lists / 'val.txt').write_bytes(b'my photo\r\nb\r\nc\r\n')  # a space, Windows endings
    assert dataset.ValDataset().ids == ['my photo', 'b', 'c'] and dataset.ValDataset()[0]
    assert capsys.readouterr().err == ''  # each line as written: nothing to say
    (lists / 'val.txt').write_bytes(b'\xef\xbb\xbfmy photo\n\nb  \n\tc\n\n')
    assert dataset.ValDataset().ids == ['my photo', 'b', 'c']
    assert notes(capsys.readouterr().err) == [
        f'note: list {lists}/val.txt: it begins with a byte-order mark (skipped); lines 3, 4 '
        f'begin or end with spaces or tabs (removed); line 2 blank (skipped); every other line '
        f'as written.']
    (lists / 'val.txt').write_text('my  photo\n')  # two spaces: as written, so not found
    with pytest.raises(config.UserError, match=r'image .*/my  photo.jpg cannot be read: it '
                                               r'does not exist'):
        dataset.ValDataset()[0]


def test_predicts_image_lists_are_read_as_written_or_the_difference_is_said(tmp_path, checkpoint,
                                                                           capsys):
    photos = tmp_path / 'photos'
    photos.mkdir()
    for name in ('my photo.jpg', 'b.jpg', 'c.jpg'):
        Image.new('RGB', (20, 15), (200, 30, 30)).save(photos / name)
    listed = tmp_path / 'list.txt'
    listed.write_bytes(b'\xef\xbb\xbfphotos/my photo.jpg\r\nphotos/b.jpg \r\n\r\nphotos/c.jpg\r\n')
    code, out, err = run_main(predict.main, [checkpoint, str(listed), '--out',
                                             str(tmp_path / 'out')], capsys)
    assert code == 0, err
    assert sorted(f for f in os.listdir(tmp_path / 'out') if f.endswith('.png')) == [
        'b.png', 'c.png', 'my photo.png']
    assert notes(err) == [f'note: image list {listed}: it begins with a byte-order mark '
                          f'(skipped); line 2 begin or end with spaces or tabs (removed); line 3 '
                          f'blank (skipped); every other line as written.']


@pytest.fixture
def project(tmp_path):
    """The project's code and clean.sh, copied: clean.sh reads settings.py as every script does."""
    folder = tmp_path / 'project'
    shutil.copytree(os.path.join(ROOT, 'plumbing'), folder / 'plumbing',
                    ignore=shutil.ignore_patterns('__pycache__'))
    for name in os.listdir(ROOT):
        if name.endswith(('.py', '.sh')):
            shutil.copy(os.path.join(ROOT, name), folder)
    return folder


@pytest.mark.parametrize('edit, said', [
    (lambda text: text.replace('\n', '\r\n'), None),  # Windows line endings: as Python reads
    (lambda text: '\ufeff' + text, None),  # a byte-order mark: as Python reads
    (lambda text: text.replace("LOG_DIR = './logdir'", "LOG_DIR = './logdir '"),
     "LOG_DIR = './logdir ' begins or ends with a space, taken as written."),
])
def test_settings_py_is_read_as_python_reads_it_and_a_space_in_a_value_is_said(project, edit,
                                                                               said):
    with open(os.path.join(ROOT, 'settings.py'), encoding='utf-8') as f:
        text = f.read()
    with open(project / 'settings.py', 'w', encoding='utf-8', newline='') as f:
        f.write(edit(text))
    done = subprocess.run(['sh', str(project / 'clean.sh')], capture_output=True, text=True,
                          env={**ENV, 'PYTHON': sys.executable})
    assert done.returncode == 0, done.stderr
    line = next((x for x in notes(done.stderr)), None)
    assert (line is None) if said is None else (said in line and 'settings.py line ' in line)
    logs = project / ('logdir ' if said else 'logdir')
    assert f'clean.sh: removed 0 from {logs}' in done.stdout or not logs.exists()
    from plumbing import config as ours  # the same reader rewrites it, keeping the mark
    ours.set_in_settings_file(str(project / 'settings.py'), {'LR': 0.02})
    with open(project / 'settings.py', encoding='utf-8', newline='') as f:
        written = f.read()
    assert written == edit(text).replace('LR = 9e-3', 'LR = 0.02')


# ---------------------------------------------------------------------------- (3) no effect

def test_settings_that_cannot_take_effect_are_said(toy_root, tmp_path, capsys):
    run = args(toy_root, str(tmp_path), ITER_MAX=2)
    code, _, err = run_main(train.main, run + ['OHEM_THRESH=0.5', 'VAL_SPLIT=val'], capsys)
    assert code == 0 and notes(err) == [
        "note: OHEM_THRESH=0.5 has no effect: LOSS='ce' keeps every pixel.",
        'note: VAL_SPLIT=val has no effect: VAL_EVERY=0 never validates.'], err
    parent = str(tmp_path / 'models' / 'final.pth')
    finished = args(toy_root, str(tmp_path / 'child'), ITER_MAX=2, INIT_FROM=parent)
    assert run_main(train.main, finished, capsys)[0] == 0
    code, out, err = run_main(train.main, finished + ['LOG_EVERY=1', f'PRETRAINED={parent}'],
                              capsys)
    assert code == 0 and out.startswith('finished already') and notes(err) == [
        f'note: INIT_FROM={parent} has no effect: the run is finished, which began from it.',
        'note: ITER_SAVE=10 has no effect: the run is finished.',
        'note: LOG_EVERY=1 has no effect: the run is finished.',
        f'note: PRETRAINED={parent} has no effect: the run is finished.'], err
    other = str(tmp_path / 'other.pth')
    shutil.copy(parent, other)
    os.remove(tmp_path / 'child' / 'models' / 'final.pth')  # as if killed before the end
    code, _, err = run_main(train.main, finished[:-1] + [f'INIT_FROM={other}'], capsys)
    assert code == 2  # it would resume, not fine-tune from the other: refused
    one_sentence(err, f'is the latest.pth of a run that began from {parent}, so INIT_FROM='
                      f'{other} would not be read: pass another MODEL_DIR to fine-tune from it')
    code, _, err = run_main(evaluation.main, [parent, f'DATA_ROOT={toy_root}', 'NUM_WORKERS=0',
                                              f'LOG_DIR={tmp_path}/e', 'ATTN_IMAGES=0',
                                              'SLIDE_CROP=400'], capsys)
    assert code == 0 and notes(err) == [
        'note: SLIDE_CROP=400 has no effect: EVAL_MODE=whole infers each image whole.'], err


def test_predict_says_the_settings_it_does_not_read(checkpoint, tmp_path, capsys):
    Image.new('RGB', (20, 15), (200, 30, 30)).save(tmp_path / 'x.jpg')
    code, _, err = run_main(predict.main, [checkpoint, str(tmp_path / 'x.jpg'), 'SAVE_PRED=True',
                                           'STAGE_NUM_EVAL=(1,2)', '--out',
                                           str(tmp_path / 'o')], capsys)
    assert code == 0 and notes(err) == [
        'note: SAVE_PRED=True has no effect: predict.py writes a PNG and an overlay per image.',
        'note: STAGE_NUM_EVAL=(1,2) has no effect: predict.py takes its first count, 1.'], err


# ---------------------------------------------------------------------------- EXIF orientation

def test_exif_orientations_are_read_as_a_viewer_shows_them(tmp_path):
    shown = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        stored = ImageOps.exif_transpose  # what a viewer does, inverted below by trying all
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f'o{orientation}.png'
        Image.fromarray(shown).save(path, exif=exif)
        want = np.asarray(stored(Image.open(path)).convert('RGB'))
        assert np.array_equal(images.read_image(str(path)), want), orientation


@pytest.mark.parametrize('orientation', [6, 8])
def test_a_phone_photo_turned_by_exif_is_aligned_everywhere(tmp_path, given, capsys, checkpoint,
                                                            orientation):
    """A photo stored on its side with EXIF orientation 6 or 8 (as phones write), its label drawn
    on the photo as a viewer shows it (left half class 1, right half class 2): training items,
    evaluation and prediction all see the image that way."""
    shown = np.zeros((40, 64, 3), np.uint8)
    shown[:, :32], shown[:, 32:] = (220, 20, 20), (20, 20, 220)
    label = np.ones((40, 64), np.uint8)
    label[:, 32:] = 2
    root = one_image_data(tmp_path, [])
    stored = np.rot90(shown, 1 if orientation == 6 else -1)  # what a viewer turns back
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored)).save(root / 'JPEGImages' / 'p.jpg', exif=exif,
                                                       quality=95)
    Image.fromarray(label).save(root / 'SegmentationClassAug' / 'p.png')
    for split in ('train', 'val'):
        (root / 'ImageSets' / 'Segmentation' / f'{split}.txt').write_text('p\n')
    given(DATA_ROOT=str(root), N_CLASSES=5, CROP_SIZE=33, SCALES=(1.0,))
    image, lab, _ = dataset.ValDataset()[0]  # the label fits: no size refusal
    red = image[0].float() > image[2].float()
    assert ((lab == 1) == red).float().mean() > 0.98
    for i in range(4):  # training crops: red where the label says 1
        image, lab = dataset.TrainDataset('train')[i]
        inside = lab != 255
        assert (((lab == 1) == (image[0] > image[2]))[inside]).float().mean() > 0.98
    code, _, err = run_main(predict.main, [checkpoint, str(root / 'JPEGImages' / 'p.jpg'),
                                           '--out', str(tmp_path / 'out')], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / 'out' / 'p.png').size == (64, 40)  # as shown
    overlay = np.asarray(Image.open(tmp_path / 'out' / 'p_overlay.jpg'))[:40, :64].astype(int)
    assert (overlay[:, :28, 0] > overlay[:, :28, 2]).mean() > 0.9  # red on the left, as shown
    assert (overlay[:, 36:, 2] > overlay[:, 36:, 0]).mean() > 0.9
    code, _, err = run_main(evaluation.main, [checkpoint, f'DATA_ROOT={root}', 'VAL_SPLIT=val',
                                              'NUM_WORKERS=0', 'ATTN_IMAGES=0',
                                              f'LOG_DIR={tmp_path}/e'], capsys)
    assert code == 0, err  # scored: image and label of one size
