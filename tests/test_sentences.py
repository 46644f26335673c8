"""A mistake's sentence by kind, each from the one place that makes it: (1) a setting given that a
run does not read is said from what it reads, found in the code (plumbing/reads.py), on this
device, and changes neither a resume nor a result's name; (2) a fix checked against
who owns the value (a checkpoint fixes the settings of its network: the sentence points at the
data or another checkpoint, never at a setting that would only be refused); (3) a path built
from a line of a list names the list and the line, and the file of a likelier name that exists;
(4) the data checked wherever it is read: a file cut short is found by training, evaluation,
prediction and preparation alike, once per file in a process."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import eval as evaluation
import predict
import train
from conftest import ENV, ROOT, args, one_sentence, run_main
from plumbing import checkpoints, config, images, pictures, preparation


def copy_of(toy_root, tmp_path, name='data'):
    target = tmp_path / name
    shutil.copytree(toy_root, target)
    return target


def scored(checkpoint, data, tmp_path, *given):
    return [checkpoint, f'DATA_ROOT={data}', 'NUM_WORKERS=0', f'LOG_DIR={tmp_path}/logs',
            *given]


def ends_with_the_sentence(err, *parts):
    """stderr ends with `error: <one line>` holding every part (after eval's progress bar)."""
    last = err.rstrip('\n').split('\n')[-1]
    assert last.startswith('error: ') and err.endswith(last + '\n'), err
    for part in parts:
        assert part in last, err


def lines_of(path):
    return open(path).read().split()

# ---------------------------------------------------------------------------- (2) the owner


def test_a_fix_never_asks_for_a_setting_the_checkpoint_fixes(toy_root, tmp_path, checkpoint,
                                                            capsys, tiny_net):
    data = copy_of(toy_root, tmp_path)
    classes = data / 'classes.txt'
    classes.write_text(classes.read_text() + 'star\n')  # 6 names, a checkpoint of 5 classes
    code, _, err = run_main(evaluation.main, scored(checkpoint, data, tmp_path), capsys)
    assert code == 2 and 'set N_CLASSES' not in err
    one_sentence(err, f'{classes} names 6 classes but checkpoint {checkpoint} was trained with '
                      f'N_CLASSES=5; give data of its 5 classes (DATA_ROOT) or another '
                      f'checkpoint.')
    code, _, err = run_main(evaluation.main, scored(checkpoint, data, tmp_path, 'N_CLASSES=6'),
                            capsys)  # what the user might try next: said why not, no loop
    assert code == 2
    one_sentence(err, 'does not fit the network built with N_CLASSES=6', 'leave out N_CLASSES: '
                      'it was trained with N_CLASSES=5.')
    classes.write_text('\n'.join(f'c{i}' for i in range(5)) + '\n')  # 5 names, 6 classes
    six = str(tmp_path / 'six' / 'final.pth')
    net = tiny_net(N_CLASSES=6, STRIDE=8, STAGE_NUM=2, DATA_ROOT=str(data))
    checkpoints.save_atomic({'net': net.state_dict(), 'step': 5, 'settings': config.resolved()},
                            six)
    code, _, err = run_main(evaluation.main, scored(six, data, tmp_path), capsys)
    assert code == 2
    one_sentence(err, f'names 5 classes but checkpoint {six} was trained with N_CLASSES=6; give '
                      f'data of its 6 classes (DATA_ROOT) or another checkpoint.')
    classes.write_text(''.join(f'c{i}\n' for i in range(5)))
    label = data / 'SegmentationClassAug' / 'toy_00024.png'
    pictures.write_label(np.full((50, 50), 7, np.uint8), str(label))
    image = data / 'JPEGImages' / 'toy_00024.jpg'
    Image.new('RGB', (50, 50)).save(image)
    code, _, err = run_main(evaluation.main, scored(checkpoint, data, tmp_path), capsys)
    assert code == 2 and 'N_CLASSES' not in err.split(';', 1)[1]
    ends_with_the_sentence(err, f'label {label} has values [7] outside [0, 5) and 255; fix the '
                                f'file, or give data of its classes or another checkpoint.')
    run = args(str(data), str(tmp_path / 'run'), ITER_MAX=1)  # the user's own N_CLASSES: set it
    classes.write_text(''.join(f'c{i}\n' for i in range(6)))
    code, _, err = run_main(train.main, run, capsys)
    assert code == 2
    one_sentence(err, 'names 6 classes but N_CLASSES=5; set N_CLASSES=6.')

# ---------------------------------------------------------------------------- (3) the line


@pytest.mark.parametrize('line, kind', [
    ('{}.jpg', 'an extension'),                   # toy_00024.jpg -> toy_00024.jpg.jpg
    ('JPEGImages/{}', 'a folder'),                # -> JPEGImages/JPEGImages/toy_00024.jpg
    ('{}', 'a label of another case'),            # toy_00024.png lost, toy_00024.PNG there
    ('{}x', 'no near miss'),
])
def test_a_missing_file_names_its_list_line_and_the_file_that_exists(toy_root, tmp_path, line,
                                                                    kind, checkpoint, capsys):
    data = copy_of(toy_root, tmp_path)
    val = data / 'ImageSets' / 'Segmentation' / 'val.txt'
    ids = lines_of(val)
    val.write_text('\n'.join(ids[:2] + [line.format(ids[2])] + ids[3:]) + '\n')
    if kind == 'a label of another case':
        labels = data / 'SegmentationClassAug'
        os.rename(labels / f'{ids[2]}.png', labels / f'{ids[2]}.PNG')
    code, _, err = run_main(evaluation.main, scored(checkpoint, data, tmp_path), capsys)
    assert code == 2
    what = 'label' if kind == 'a label of another case' else 'image'
    folder = 'SegmentationClassAug' if what == 'label' else 'JPEGImages'
    built = f'{data}/{folder}/{line.format(ids[2])}{".png" if what == "label" else ".jpg"}'
    named = f'; {data}/JPEGImages/{ids[2]}.jpg exists, named by the line {ids[2]}'
    hint = {'an extension': named, 'a folder': named,
            'a label of another case': f'; {data}/SegmentationClassAug/{ids[2]}.PNG exists: '
                                       f'rename it to {ids[2]}.png'}.get(kind, '')
    one_sentence(err, f'{what} {built} cannot be read: it does not exist (line 3 of {val})'
                      f'{hint}; fix the list or the files.')


def test_a_missing_file_stops_training_before_it_starts_and_predict_lists_say_their_line(
        toy_root, tmp_path, checkpoint, capsys):
    data = copy_of(toy_root, tmp_path)
    train_list = data / 'ImageSets' / 'Segmentation' / 'trainaug.txt'
    ids = lines_of(train_list)
    train_list.write_text(''.join(f'{i}.jpg\n' for i in ids))  # every line with its extension
    code, out, err = run_main(train.main, args(str(data), str(tmp_path / 'run')), capsys)
    assert code == 2 and 'step 1' not in out and not os.path.exists(tmp_path / 'run' / 'models')
    one_sentence(err, f'(line 1 of {train_list}); {data}/JPEGImages/{ids[0]}.jpg exists, named '
                      f'by the line {ids[0]}')
    photos = tmp_path / 'photos'
    photos.mkdir()
    Image.new('RGB', (20, 15)).save(photos / 'b.jpg')
    listed = tmp_path / 'list.txt'
    listed.write_text('photos/b.jpg\nphotos/B.jpeg\n')
    code, _, err = run_main(predict.main, [checkpoint, str(listed), '--out', str(tmp_path / 'o')],
                            capsys)
    assert code == 2 and not os.path.exists(tmp_path / 'o' / 'b.png')  # before any is written
    one_sentence(err, f'image {tmp_path}/photos/B.jpeg cannot be read: it does not exist (line 2 '
                      f'of {listed}); {photos}/b.jpg exists, named by the line photos/b.jpg')

# ---------------------------------------------------------------------------- (4) cut short


def cut(path, keep=0.5):
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:int(len(data) * keep)])


def test_a_file_cut_short_is_refused_or_skipped_and_said_wherever_it_is_read(
        toy_root, tmp_path, checkpoint, capsys):
    data = copy_of(toy_root, tmp_path)
    for id_ in lines_of(data / 'ImageSets' / 'Segmentation' / 'trainaug.txt'):  # a download
        cut(data / 'JPEGImages' / f'{id_}.jpg')                                  # cut short
    jpg = str(data / 'JPEGImages' / 'toy_00000.jpg')
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'),
                           *args(str(data), str(tmp_path / 'run'))], capture_output=True,
                          text=True, env=ENV, timeout=300)  # libjpeg would warn on stderr
    assert done.returncode == 2 and 'Premature end' not in done.stderr, done.stderr
    assert done.stderr.startswith('error: image ') and done.stderr.count('\n') == 1
    assert 'is cut short (no end of image after its last scan); copy it again.' in done.stderr
    val = lines_of(data / 'ImageSets' / 'Segmentation' / 'val.txt')[1]
    label = data / 'SegmentationClassAug' / f'{val}.png'
    cut(label, 0.9)
    code, _, err = run_main(evaluation.main, scored(checkpoint, data, tmp_path), capsys)
    assert code == 2
    ends_with_the_sentence(err, f'label {label} is cut short (no end chunk); copy it again.')
    photos = tmp_path / 'photos'
    photos.mkdir()
    shutil.copy(jpg, photos / 'cut.jpg')
    shutil.copy(data / 'JPEGImages' / f'{val}.jpg', photos / 'whole.jpg')
    code, _, err = run_main(predict.main, [checkpoint, str(photos), '--out', str(tmp_path / 'o')],
                            capsys)  # predict skips what it cannot read and says so
    assert code == 1 and f'skipped {photos}/cut.jpg: image {photos}/cut.jpg is cut short' in err
    assert os.path.exists(tmp_path / 'o' / 'whole.png')


def test_preparation_writes_again_a_label_cut_short_and_each_file_is_checked_once(tmp_path,
                                                                                 monkeypatch):
    label = np.arange(30, dtype=np.uint8).reshape(5, 6) % 3
    jobs = [(f'src{i}', str(tmp_path / f'{i}.png')) for i in range(3)]
    preparation.write_labels(lambda src: label, jobs, workers=1)
    cut(jobs[1][1], 0.6)  # a label a crash or a full disk left short
    assert [preparation.done(target) for _, target in jobs] == [True, False, True]
    converted = []
    preparation.write_labels(lambda src: converted.append(src) or label, jobs, workers=1)
    assert converted == ['src1'] and preparation.done(jobs[1][1])
    assert np.array_equal(np.asarray(Image.open(jobs[1][1])), label)
    calls = []
    monkeypatch.setattr(images, '_WHOLE', set())
    monkeypatch.setattr(images, 'cut_short', lambda path: calls.append(path))
    for _ in range(3):
        images.read_label(jobs[0][1], 3, 255)
    assert calls == [jobs[0][1]]  # once in a process, however often it is read


def test_what_owns_a_value_is_kept_and_undone_with_the_settings(given):
    config.apply({'N_CLASSES': 7}, owner='checkpoint a.pth')
    assert config.whose('N_CLASSES') == 'checkpoint a.pth was trained with N_CLASSES=7'
    assert config.fix('N_CLASSES', 3, 'give other data') == 'give other data'
    with config.applied({'N_CLASSES': 4}):  # the user's value: set it
        assert config.whose('N_CLASSES') == 'N_CLASSES=4'
        assert config.fix('N_CLASSES', 3, 'give other data') == 'set N_CLASSES=3'
    assert config.whose('N_CLASSES').startswith('checkpoint a.pth')  # as it was
    config.apply({'N_CLASSES': 5})
    assert config.whose('N_CLASSES') == 'N_CLASSES=5'

# ---------------------------------------------------------------------------- (1) what is read


def notes(err):
    return [line for line in err.splitlines() if line.startswith('note: ')]


def test_a_setting_a_run_does_not_read_is_said_from_what_it_reads(toy_root, tmp_path, checkpoint,
                                                                   capsys):
    run = args(toy_root, str(tmp_path / 'run'), ITER_MAX=2)
    code, _, err = run_main(train.main, run + ['AMP=True', 'EVAL_FLIP=True', 'SAVE_PRED=True',
                                               'SLIDE_CROP=999'], capsys)
    assert code == 0 and notes(err) == [
        'note: AMP=True has no effect: it acts on CUDA only.',  # on this CPU
        'note: EVAL_FLIP=True has no effect: VAL_EVERY=0 never validates.',
        'note: SAVE_PRED=True has no effect: train.py does not read it.',
        'note: SLIDE_CROP=999 has no effect: VAL_EVERY=0 never validates.'], err
    os.remove(tmp_path / 'run' / 'models' / 'final.pth')  # as if killed before its end
    code, out, err = run_main(train.main, run + ['AMP=False'], capsys)  # on the CPU: the same
    assert code == 0 and 'resuming from' in out, err
    common = [checkpoint, f'DATA_ROOT={toy_root}', 'NUM_WORKERS=0', f'LOG_DIR={tmp_path}/e']
    code, out, err = run_main(evaluation.main, common, capsys)
    assert code == 0
    plain = out.split('scores: ')[1].split()[0]
    code, out, err = run_main(evaluation.main, common + ['BATCH_SIZE=4', 'LR=0.5', 'SEED=3',
                                                         "SCALES=(1.0,)", 'ITER_MAX=9'], capsys)
    assert code == 0 and 'given:' not in out and out.split('scores: ')[1].split()[0] == plain
    assert notes(err) == [f'note: {k} has no effect: eval.py does not read it.' for k in (
        'BATCH_SIZE=4', 'LR=0.5', 'SEED=3', 'SCALES=(1.0,)', 'ITER_MAX=9')], err
    code, out, err = run_main(predict.main, [checkpoint, f'{toy_root}/JPEGImages/toy_00030.jpg',
                                             '--out', str(tmp_path / 'p'), 'NUM_WORKERS=3',
                                             'VAL_EVERY=5'], capsys)
    assert code == 0 and notes(err) == [
        'note: NUM_WORKERS=3 has no effect: predict.py does not read it.',
        'note: VAL_EVERY=5 has no effect: predict.py does not read it.'], err
