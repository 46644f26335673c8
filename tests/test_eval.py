"""eval.py: its report (the table, JSON with nan as null), both checkpoint forms through its
command line, saved predictions, the attention grids and the confusion picture."""
import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import eval as evaluation
import inference
import network
from conftest import StandIn as Items
from conftest import TINY, as_args, as_in_a_new_process, one_sentence, run_main, tensorboard_events
from plumbing import checkpoints, config, pictures, reports


def test_the_table_and_the_json_of_scores():
    conf = [[5, 1, 0], [2, 0, 0], [0, 0, 0]]  # class c2 in neither labels nor predictions
    s = inference.scores(conf, names=['c0', 'c1', 'c2'])
    assert math.isnan(s['per_class']['c2']) and s['per_class']['c1'] == 0
    written = json.loads(json.dumps(reports.without_nan(s), allow_nan=False))
    assert written['per_class'] == {'c0': 5 / 8, 'c1': 0.0, 'c2': None}  # nan as null
    lines = reports.table(s, 'ss, T=3').splitlines()
    assert lines[0].split() == ['class', '(%)', 'IoU', 'acc']
    assert lines[1].split() == ['c0', '62.50', '83.33'] and lines[3].split() == ['c2', '-', '-']
    assert lines[4] == 'mIoU 31.25  pAcc 62.50  mAcc 41.67  fIoU 46.88  (ss, T=3, 3 classes)'
    note = ('no labelled pixels in this split: c2 (IoU 0 where predicted, counted in mIoU; - '
            'where not, left out)')
    assert lines[5:] == [note]  # why the mean is what it is
    assert reports.table(inference.scores([[5, 1], [2, 3]])).count('\n') == 3  # all labelled
    conf = [[5, 1, 1], [2, 0, 0], [0, 0, 0]]  # c2 predicted, never labelled: IoU 0 in the mean
    s = inference.scores(conf, names=['c0', 'c1', 'c2'])
    assert s['per_class']['c2'] == 0 and s['mIoU'] == pytest.approx((5 / 9 + 0 + 0) / 3)
    assert s['unlabelled_classes'] == ['c2'] and reports.table(s).splitlines()[5] == note


# ---------------------------------------------------------------------------- pictures

def test_attention_grid_has_k_maps_of_the_image_size(net, tmp_path):
    data = Items()
    paths = evaluation.draw_attention(net, data, torch.device('cpu'), str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ['img0.png', 'img1.png']  # ATTN_IMAGES = 2
    image, _, _ = data[1]
    h, w = image.shape[-2:]
    z = np.random.default_rng(0).random((8, h, w))
    tiles = pictures.attention_tiles(image.permute(1, 2, 0).numpy(), z, np.zeros((h, w), np.int64))
    assert len(tiles) == 8 + 2 and all(t.shape == (h, w, 3) for t in tiles)
    picture = np.array(Image.open(paths[1]))
    assert picture.shape == (3 * h + 2 * 4, 4 * w + 3 * 4, 3)  # 10 tiles: 3 rows of 4, gap 4
    assert (picture[:h, :w] == image.permute(1, 2, 0).numpy()).all()


def test_confusion_picture_and_the_pairs_confused_most():
    conf = [[90, 10, 0], [30, 60, 10], [0, 0, 0]]
    picture = pictures.confusion_matrix(conf, ['sky', 'sea', 'sand'])
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.dtype == np.uint8
    assert picture.shape[0] > 300 and (picture < 128).any()  # drawn, not blank
    pairs = pictures.confused_most(conf, ['sky', 'sea', 'sand'])
    assert pairs == [{'true': 'sea', 'predicted': 'sky', 'share': 0.3},
                     {'true': 'sky', 'predicted': 'sea', 'share': 0.1},
                     {'true': 'sea', 'predicted': 'sand', 'share': 0.1}]


# ---------------------------------------------------------------------------- the script

def test_both_checkpoint_forms_load_and_score_the_same(toy_root, tmp_path, capsys, tiny_net):
    state = tiny_net(STAGE_NUM=2, DATA_ROOT=toy_root).state_dict()
    checkpoints.save_atomic({'net': state, 'step': 7, 'settings': config.resolved(),
                             'optimizer': {}}, str(tmp_path / 'final.pth'))
    checkpoints.save_atomic({'net': state, 'step': 7}, str(tmp_path / 'original.pth'))
    common = ['NUM_WORKERS=0', 'ATTN_IMAGES=2']
    code, out, err = run_main(evaluation.main, [f'MODEL_DIR={tmp_path}', f'LOG_DIR={tmp_path}/a',
                                                'SAVE_PRED=True'] + common, capsys)
    assert code == 0, err  # model settings and DATA_ROOT (no folder in settings.py) ...
    assert 'N_LAYERS=18' in out and f'DATA_ROOT={toy_root}' in out  # ... from the checkpoint
    name = f'eval_{checkpoints.checkpoint_id(str(tmp_path / "final.pth"))}_val_ss_T2'
    assert 'mIoU' in out and f'{tmp_path}/a/{name}.json' in out
    full = json.load(open(tmp_path / 'a' / f'{name}.json'))
    common.append(f'DATA_ROOT={toy_root}')

    code, _, err = run_main(evaluation.main, [str(tmp_path / 'original.pth'),
                                              f'LOG_DIR={tmp_path}/b'] + common, capsys)
    assert code == 2  # the original form takes settings.py's model: it does not fit
    one_sentence(err, 'original.pth does not fit', 'N_LAYERS=18 by its weights')
    model = as_args({k: v for k, v in TINY.items() if k in (
        'N_CLASSES', 'N_LAYERS', 'STRIDE', 'STEM', 'EMA_CHANNELS', 'N_BASES')}) + ['STAGE_NUM=2']
    with as_in_a_new_process():
        original = evaluation.main([str(tmp_path / 'original.pth'), f'LOG_DIR={tmp_path}/b'] +
                                   model + common)
    assert original['confusion'] == full['confusion'] and original['mIoU'] == full['mIoU']

    assert set(full) >= {'mIoU', 'pAcc', 'mAcc', 'fIoU', 'per_class', 'confused_most'}
    record = full['record']
    assert record['step'] == 7 and record['settings']['N_LAYERS'] == 18 and record['stages'] == 2
    assert record['checkpoint'] == str(tmp_path / 'final.pth') and record['mode'] == 'ss'
    ids = open(os.path.join(toy_root, 'ImageSets', 'Segmentation', 'val.txt')).read().split()
    a = tmp_path / 'a'
    assert sorted(os.listdir(a / f'{name}_pred')) == sorted(f'{i}.png' for i in ids)
    assert sorted(os.listdir(a / f'{name}_attention')) == sorted(f'{i}.png' for i in ids[:2])
    assert Image.open(a / f'{name}_confusion.png').size[0] > 300
    events = [f for f in os.listdir(a) if f.startswith('events.out')]
    tb = tensorboard_events(a)
    assert len(events) == 1 and 'eval_ss_T2/confusion' in tb.Tags()['images']
    assert [e.value for e in tb.Scalars('eval_ss_T2/mIoU')] == [pytest.approx(full['mIoU'])]


def test_results_of_two_checkpoints_of_one_name_are_both_kept(toy_root, tmp_path, use_tiny):
    use_tiny(STAGE_NUM=2, DATA_ROOT=toy_root)
    for folder, seed in (('a', 0), ('b', 1)):
        torch.manual_seed(seed)
        (tmp_path / folder).mkdir()
        checkpoints.save_atomic({'net': network.EMANet(5, 18).state_dict(), 'step': seed,
                                 'settings': config.resolved()},
                                str(tmp_path / folder / 'final.pth'))
    common = [f'LOG_DIR={tmp_path}/logs', 'NUM_WORKERS=0', 'ATTN_IMAGES=0']
    evaluation.main([str(tmp_path / 'a' / 'final.pth')] + common)
    evaluation.main([str(tmp_path / 'b' / 'final.pth')] + common)
    evaluation.main([str(tmp_path / 'b' / 'final.pth'), 'EVAL_FLIP=True'] + common)
    results = sorted(f for f in os.listdir(tmp_path / 'logs') if f.startswith('eval_') and
                     f.endswith('.json'))
    assert len(results) == 3, results
    steps = sorted(json.load(open(tmp_path / 'logs' / f))['record']['step'] for f in results)
    assert steps == [0, 1, 1]


def test_a_checkpoint_scored_with_other_settings_gets_its_own_results(toy_root, tmp_path,
                                                                      capsys, tiny_net):
    """Trained at stride 16 and scored at 8 (the paper's ablation), or on other data: said, and
    written beside the plain evaluation, never over it; a checkpoint recording a value this code
    does not take is named as the checkpoint's."""
    state = tiny_net(STAGE_NUM=2, DATA_ROOT=toy_root).state_dict()  # STRIDE=16
    target = str(tmp_path / 'final.pth')
    checkpoints.save_atomic({'net': state, 'step': 7, 'settings': config.resolved()}, target)
    common = [target, f'LOG_DIR={tmp_path}/logs', 'NUM_WORKERS=0', 'ATTN_IMAGES=0']
    copy = str(tmp_path / 'copy')
    shutil.copytree(toy_root, copy)
    for extra in ([], ['STRIDE=8'], [f'DATA_ROOT={copy}']):
        code, out, err = run_main(evaluation.main, common + extra, capsys)
        assert code == 0, err
    assert 'given: STRIDE=8; the checkpoint was trained with STRIDE=16' in run_main(
        evaluation.main, common + ['STRIDE=8'], capsys)[1]
    names = sorted(f for f in os.listdir(tmp_path / 'logs') if f.endswith('.json') and
                   f.startswith('eval_'))
    modes = sorted(n.split('_val_')[1][:-len('_T2.json')] for n in names)
    assert len(modes) == 3 and 'ss' in modes and 'ss_os8' in modes
    assert [m for m in modes if re.fullmatch(r'ss_[0-9a-f]{6}', m)]  # the other data's
    saved = config.resolved()
    saved['STRIDE'] = 32
    checkpoints.save_atomic({'net': state, 'settings': saved}, target)
    code, _, err = run_main(evaluation.main, common, capsys)
    assert code == 2
    one_sentence(err, f'checkpoint {target} was trained with settings this code does not take: '
                      f'STRIDE=32 must be one of 8, 16; give another checkpoint.')
