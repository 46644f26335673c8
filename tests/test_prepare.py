"""prepare.py on VOC 2012 + SBD, the prepare command line, and a short training and
evaluation on each prepared dataset."""
import os
import shlex
import shutil
from signal import SIGINT, SIGTERM

import numpy as np
import pytest
from PIL import Image

import dataset
import eval as evaluation
import prepare
import train
from conftest import TINY, as_args, dead_pid, one_sentence, run_main
from downloads import (SBD_TRAIN, SBD_VAL, VOC_TRAIN, VOC_VAL, fake_ade20k, fake_cityscapes,
                       fake_cocostuff10k, fake_cocostuff164k, fake_context, fake_voc_sbd,
                       tree_state, write_mat)
from plumbing import config, layout

# ---------------------------------------------------------------------------- VOC 2012 + SBD

def test_prepare_writes_labels_and_trainaug_and_is_safe_to_rerun(tmp_path, capsys, given):
    """VOC + SBD: labels (VOC wins), trainaug, untouched VOC files, nothing rewritten again."""
    voc, sbd, want = fake_voc_sbd(tmp_path)
    before = tree_state(voc)
    trainaug = prepare.prepare_voc(voc, sbd, workers=2)
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
    assert prepare.prepare_voc(voc, sbd, workers=2) == expected  # again: nothing rewritten
    assert tree_state(voc) == after
    given(DATA_ROOT=voc, N_CLASSES=21)
    assert dataset.TrainDataset().ids == expected and len(dataset.ValDataset()) == 3


def test_prepare_names_what_is_wrong(tmp_path):
    """VOC + SBD: a wrong folder, a missing image, a broken .mat; a fixed re-run finishes."""
    voc, sbd, _ = fake_voc_sbd(tmp_path)
    with pytest.raises(config.UserError, match='cls.*SBD labels'):
        prepare.prepare_voc(voc, voc, workers=1)
    with pytest.raises(config.UserError, match='VOC 2012 folder'):
        prepare.prepare_voc(str(tmp_path / 'nope'), sbd, workers=1)
    jpg = os.path.join(voc, 'JPEGImages', 's_val.jpg')
    os.rename(jpg, jpg + '.away')
    with pytest.raises(config.UserError, match='first: s_val'):  # found before any writing
        prepare.prepare_voc(voc, sbd, workers=1)
    assert not os.path.exists(os.path.join(voc, 'SegmentationClassAug'))
    os.rename(jpg + '.away', jpg)
    with open(os.path.join(sbd, 'cls', 's_tr.mat'), 'wb') as f:
        f.write(b'not a mat file')
    with pytest.raises(config.UserError, match='s_tr.mat cannot be read'):
        prepare.prepare_voc(voc, sbd, workers=1)
    # fixed, the next run finishes the work and clears what a killed run left half-written
    write_mat(os.path.join(sbd, 'cls', 's_tr.mat'), np.zeros((13, 19), np.uint8))
    stale = os.path.join(voc, 'SegmentationClassAug', f'v_tr.png.tmp{dead_pid()}.png')
    open(stale, 'wb').close()
    prepare.prepare_voc(voc, sbd, workers=1)
    assert not os.path.exists(stale) and len(os.listdir(os.path.dirname(stale))) == 10


# ---------------------------------------------------------------------------- the command line

def test_command_line_prepares_and_refuses_mistakes(tmp_path, capsys):
    """`python prepare.py cityscapes ROOT --out DIR`, and the mistakes of the command line as one
    sentence naming what is wrong, with status 2."""
    root, _ = fake_cityscapes(tmp_path)
    out = tmp_path / 'prepared'
    code, text, err = run_main(prepare.main, ['cityscapes', str(root), '--out', str(out),
                                              '--workers', '2'], capsys)
    assert code == 0 and f'settings: DATA_ROOT={out} N_CLASSES=19' in text, err
    assert sorted(os.listdir(out)) == ['ImageSets', 'JPEGImages', 'SegmentationClassAug',
                                       'classes.txt', 'palette.txt']
    for argv, match in (
            (['--voc', str(tmp_path), '--sbd', str(tmp_path)],
             f'{tmp_path}/JPEGImages (VOC images) does not exist'),
            (['cityscapes', str(root), '--workers', '-1'], '--workers -1 must be 0'),
            (['cityscapes'], 'prepare.py cityscapes takes 1 folder'),
            (['context', str(root)], 'prepare.py context takes 2 folder'),
            ([], 'prepare.py takes a dataset'),
            (['ade20k', str(root), '--classes', '59'], '--classes does not apply to ade20k'),
            (['voc', str(root), str(root), '--out', str(out)], '--out does not apply to voc'),
            (['--voc', str(root)], 'give both --voc and --sbd')):
        code, _, err = run_main(prepare.main, argv, capsys)
        assert code == 2
        one_sentence(err, match)


# ---------------------------------------------------------------------------- train and score

# the tiny network, two steps, its classes those of the dataset
SHORT = as_args({k: v for k, v in TINY.items() if k != 'N_CLASSES'}) + [
    'BATCH_SIZE=2', 'ITER_MAX=2', 'ITER_SAVE=2', 'LOG_EVERY=1', 'IMAGE_EVERY=0',
    'SCALES=(0.5,1.0,2.0)']


@pytest.mark.parametrize('name, extra', [
    ('cityscapes', ['LOSS=ohem', 'OHEM_MIN_KEPT=50', 'EVAL_MODE=slide', 'SLIDE_CROP=17',
                    'SLIDE_STEP=9']),
    ('context', []), ('cocostuff10k', []), ('cocostuff164k', []), ('ade20k', []), ('voc', []),
])
def test_a_short_training_and_evaluation_on_each_prepared_dataset(tmp_path, capsys, name,
                                                                     extra):
    """Each fake download, prepared, trains with the printed settings (two steps of a tiny
    network, crops (17, 33)) and is scored by eval.py: the same code for every dataset."""
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
    train.main(words + SHORT + extra + out + ['CROP_SIZE=(17,33)'])
    result = evaluation.main([f'{tmp_path}/models/final.pth'] + words + SHORT + extra + out)
    text = capsys.readouterr().out
    assert 'done: 2 steps' in text and 'mIoU' in text and 0 <= result['pAcc'] <= 1
    assert len(result['per_class']) == found['N_CLASSES']
    names = layout.read_classes(found['DATA_ROOT']) or list(layout.VOC_CLASSES)  # VOC: none
    assert list(result['per_class']) == names


def test_an_interrupted_prepare_says_that_the_same_command_goes_on(tmp_path, capsys,
                                                                    monkeypatch):
    """Ctrl-C or SIGTERM in the middle of the labels: one line saying that the same command goes
    on, which it does, skipping what is done."""
    voc, sbd, want = fake_voc_sbd(tmp_path)
    real, calls = prepare._voc_label, []

    def stopped(*a, **k):  # the signal comes after two labels
        calls.append(a)
        if len(calls) == 3:
            os.kill(os.getpid(), signal)
        return real(*a, **k)
    monkeypatch.setattr(prepare, '_voc_label', stopped)
    for signal in (SIGINT, SIGTERM):
        calls.clear()  # every label to write again: the last run may have written all before
        shutil.rmtree(os.path.join(voc, 'SegmentationClassAug'), ignore_errors=True)  # it stopped
        code, out, err = run_main(prepare.main, ['voc', voc, sbd, '--workers', '1'], capsys)
        assert code == 130 and 'Traceback' not in err and err.splitlines()[-1] == (
            'interrupted; the same command goes on (what is done is skipped)'), err
    monkeypatch.undo()
    code, out, err = run_main(prepare.main, ['voc', voc, sbd], capsys)
    assert code == 0 and 'trainaug' in out, err
    aug = os.path.join(voc, 'SegmentationClassAug')
    assert sorted(os.listdir(aug)) == sorted(f'{i}.png' for i in want)
