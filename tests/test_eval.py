"""eval.py: scores against brute force, multi-scale + flip inference, two processes, both
checkpoint forms, saved predictions and attention grids. Tiny networks, CPU, seconds."""
import json
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import config
import eval as ev
import network
import settings
import transforms

N = 4  # classes of the tiny networks


def tiny_settings():
    for key, value in dict(N_CLASSES=N, N_LAYERS=18, STRIDE=8, STEM='torchvision',
                           EMA_CHANNELS=32, N_BASES=8, STAGE_NUM=2, NUM_WORKERS=0,
                           ATTN_IMAGES=2).items():
        setattr(settings, key, value)


@pytest.fixture
def net():
    tiny_settings()
    torch.manual_seed(0)
    return network.EMANet(N, 18).eval()


class Items(torch.utils.data.Dataset):
    """A stand-in ValDataset: random images padded to 1 mod 8, labels with ignore borders."""

    def __init__(self, sizes=((20, 30), (33, 17), (9, 41)), seed=0):
        rng = np.random.default_rng(seed)
        self.items, self.ids = [], [f'img{i}' for i in range(len(sizes))]
        for id_, (h, w) in zip(self.ids, sizes):
            hp, wp = h + (1 - h) % 8, w + (1 - w) % 8
            image = torch.zeros(3, hp, wp, dtype=torch.uint8)
            image[:, :h, :w] = torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
            label = torch.full((hp, wp), 255, dtype=torch.int64)
            label[:h, :w] = torch.from_numpy(rng.integers(0, N, (h, w)))
            label[0, :] = 255
            self.items.append((image, label, id_, h, w))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# ---------------------------------------------------------------------------- scores

def test_scores_match_a_brute_force_count():
    rng = np.random.default_rng(1)
    n = 6  # class 4 appears in neither the labels nor the predictions, class 5 only in labels
    label = rng.choice([0, 1, 2, 3, 5, 255], size=(37, 23))
    pred = rng.choice([0, 1, 2, 3], size=(37, 23))
    conf = ev.confusion(torch.from_numpy(pred), torch.from_numpy(label), n, 255)
    brute = np.zeros((n, n), np.int64)
    for p, t in zip(pred.ravel(), label.ravel()):
        if t != 255:
            brute[t, p] += 1
    assert conf.tolist() == brute.tolist()
    s = ev.scores(conf, names=[f'c{i}' for i in range(n)])
    valid = label != 255
    ious, accs = [], []
    for c in range(n):
        inter = np.sum((pred == c) & (label == c) & valid)
        union = np.sum(((pred == c) | (label == c)) & valid)
        ious.append(inter / union if union else np.nan)
        if np.sum(label == c):
            accs.append(inter / np.sum(label == c))
    assert np.isnan(s['per_class']['c4']) and s['per_class']['c5'] == 0
    assert np.allclose([s['per_class'][f'c{i}'] for i in range(n)], ious, equal_nan=True)
    assert s['mIoU'] == pytest.approx(np.nanmean(ious))
    assert s['pAcc'] == pytest.approx(np.sum((pred == label) & valid) / valid.sum())
    assert s['mAcc'] == pytest.approx(np.mean(accs))
    freq = [np.sum(label == c) / valid.sum() for c in range(n)]
    assert s['fIoU'] == pytest.approx(sum(f * i for f, i in zip(freq, ious) if f > 0))
    json.dumps(ev.finite(s), allow_nan=False)  # nan is written as null
    assert 'c5' in ev.table(s) and 'mIoU' in ev.table(s)


# ---------------------------------------------------------------------------- inference

def test_scale_one_without_flip_is_the_plain_forward(net):
    image = Items()[1][0][None]
    settings.EVAL_SCALES, settings.EVAL_FLIP = (1.0,), False
    with torch.no_grad():
        plain = F.softmax(net(transforms.normalize_batch(image, settings.MEAN, settings.STD)), 1)
    assert torch.equal(ev.predict(net, image), plain)


class Ramp(nn.Module):
    """Two classes whose logits are +-column index: the output ignores the image."""

    def forward(self, x):
        col = torch.arange(x.shape[-1], dtype=torch.float32).expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([col, -col], 1)


class Pointwise(nn.Module):
    """Logits from each pixel's colour alone (flip- and scale-equivariant)."""

    def forward(self, x):
        return torch.cat([x[:, :1] - x[:, 1:2], x[:, 2:]], 1)


def test_flip_averages_the_mirrored_prediction():
    image = torch.randint(0, 256, (1, 3, 9, 17), dtype=torch.uint8)
    settings.EVAL_SCALES, settings.EVAL_FLIP = (1.0,), True
    prob = ev.predict(Ramp(), image)
    col = torch.arange(17.)
    expected = (torch.sigmoid(2 * col) + torch.sigmoid(2 * col.flip(0))) / 2
    assert torch.allclose(prob[0, 0], expected.expand(9, 17), atol=1e-6)
    flipped = ev.predict(Pointwise(), image)
    settings.EVAL_FLIP = False
    assert torch.allclose(ev.predict(Pointwise(), image), flipped, atol=1e-6)


def test_other_scales_give_full_size_probabilities(net):
    image = Items()[0][0][None]  # 25 x 33
    settings.EVAL_SCALES, settings.EVAL_FLIP = (0.5, 0.75, 1.25, 1.75), True
    prob = ev.predict(net, image)
    assert prob.shape == (1, N, 25, 33) and prob.dtype == torch.float32
    assert torch.allclose(prob.sum(1), torch.ones(1, 25, 33), atol=1e-5)
    flat = torch.full((1, 3, 25, 33), 90, dtype=torch.uint8)  # a flat image: every scale agrees
    settings.EVAL_SCALES = (1.0,)
    single = ev.predict(Pointwise(), flat)
    settings.EVAL_SCALES = (0.5, 1.5)
    assert torch.allclose(ev.predict(Pointwise(), flat), single, atol=1e-6)


def test_validate_scores_saves_pngs_and_restores_train_mode(net, tmp_path):
    data = Items()
    net.train()
    result = ev.validate(net, data, torch.device('cpu'), pred_dir=str(tmp_path))
    assert net.training
    conf = torch.zeros(N, N, dtype=torch.int64)
    for image, label, id_, h, w in data:
        png = Image.open(tmp_path / f'{id_}.png')
        assert png.mode == 'P' and png.getpalette()[3:6] == [128, 0, 0]
        pred = torch.from_numpy(np.array(png)).long()
        with torch.no_grad():
            x = transforms.normalize_batch(image[None], settings.MEAN, settings.STD)
            assert torch.equal(pred, net.eval()(x)[0, :, :h, :w].argmax(0))
        conf += ev.confusion(pred, label[:h, :w], N, 255)
    assert result['confusion'] == conf.tolist()
    assert result['mIoU'] == ev.scores(conf)['mIoU']


def _worker(rank, world, values, state, init, out):
    for key, value in values.items():  # a spawned process starts from settings.py
        setattr(settings, key, value)
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', init_method=f'file://{init}', rank=rank,
                                         world_size=world)
    net = network.EMANet(N, 18)
    net.load_state_dict(state)
    net = nn.parallel.DistributedDataParallel(net)  # as train.py passes it; 2 + 1 images
    result = ev.validate(net, Items(), torch.device('cpu'))
    assert net.training
    torch.save(result, f'{out}.{rank}')
    torch.distributed.destroy_process_group()


def test_two_processes_give_the_numbers_of_one(net, tmp_path):
    settings.EVAL_SCALES, settings.EVAL_FLIP = (0.75, 1.0), True
    one = ev.validate(net, Items(), torch.device('cpu'))
    args = (2, config.resolved(), net.state_dict(), tmp_path / 'init', tmp_path / 'out')
    mp.spawn(_worker, args=args, nprocs=2)
    for rank in range(2):
        two = torch.load(tmp_path / f'out.{rank}', weights_only=False)
        assert two['confusion'] == one['confusion'] and two['mIoU'] == one['mIoU']


def test_load_net_accepts_old_and_wrapped_state_dicts(net, tmp_path):
    state = {f'module.{k}': v for k, v in net.state_dict().items()
             if not k.endswith('num_batches_tracked')}  # DataParallel, PyTorch < 0.4.1
    config.save_atomic({'net': state, 'settings': config.resolved()}, str(tmp_path / 'a.pth'))
    settings.STRIDE, settings.N_LAYERS = 16, 50
    loaded, step = ev.load_net(str(tmp_path / 'a.pth'), torch.device('cpu'), keep={'STRIDE'})
    assert step is None and settings.N_LAYERS == 18 and settings.STRIDE == 16  # command line
    assert not loaded.training and loaded.extractor[6][0].conv1.stride == (2, 2)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, net.state_dict()[key])
    with pytest.raises(config.UserError, match='nothing.pth does not exist'):
        ev.load_net(str(tmp_path / 'nothing.pth'), torch.device('cpu'))


# ---------------------------------------------------------------------------- pictures

def test_attention_grid_has_k_maps_of_the_image_size(net, tmp_path):
    data = Items()
    paths = ev.draw_attention(net, data, torch.device('cpu'), str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ['img0.png', 'img1.png']  # ATTN_IMAGES = 2
    image, _, _, h, w = data[1]
    z = np.random.default_rng(0).random((8, h, w))
    tiles = ev.attention_tiles(image[:, :h, :w].permute(1, 2, 0).numpy(), z,
                               np.zeros((h, w), np.int64))
    assert len(tiles) == 8 + 2 and all(t.shape == (h, w, 3) for t in tiles)
    picture = np.array(Image.open(paths[1]))
    assert picture.shape == (3 * h + 2 * 4, 4 * w + 3 * 4, 3)  # 10 tiles: 3 rows of 4, gap 4
    assert (picture[:h, :w] == image[:, :h, :w].permute(1, 2, 0).numpy()).all()


# ---------------------------------------------------------------------------- the script

@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    """Toy data (dataset.make_toy) smaller than conftest's: 3 val images of 40-56 pixels."""
    import dataset
    root = str(tmp_path_factory.mktemp('toy_eval'))
    dataset.make_toy(root, seed=0, n_train=1, n_val=3, size=(40, 56))
    return root


def test_both_checkpoint_forms_load_and_score_the_same(toy_root, tmp_path, capsys):
    defaults = config.resolved()
    tiny_settings()
    settings.N_CLASSES, settings.DATA_ROOT = 5, toy_root  # the toy data's
    torch.manual_seed(0)
    state = network.EMANet(5, 18).state_dict()
    config.save_atomic({'net': state, 'step': 7, 'settings': config.resolved(), 'optimizer': {}},
                       str(tmp_path / 'final.pth'))
    config.save_atomic({'net': state, 'step': 7}, str(tmp_path / 'original.pth'))
    common = ['NUM_WORKERS=0', 'ATTN_IMAGES=2']
    for key, value in defaults.items():  # a fresh process: settings.py as it is
        setattr(settings, key, value)
    full = ev.main([f'MODEL_DIR={tmp_path}', f'LOG_DIR={tmp_path}/a', 'SAVE_PRED=True'] + common)
    out = capsys.readouterr().out  # model settings and DATA_ROOT (no folder in settings.py) ...
    assert 'N_LAYERS=18' in out and f"DATA_ROOT='{toy_root}'" in out  # ... from the checkpoint
    assert 'mIoU' in out and f'{tmp_path}/a/eval_final_ss.json' in out
    common.append(f'DATA_ROOT={toy_root}')

    for key, value in defaults.items():
        setattr(settings, key, value)
    with pytest.raises(SystemExit) as stop:  # the original form takes settings.py's model
        ev.main([str(tmp_path / 'original.pth'), f'LOG_DIR={tmp_path}/b'] + common)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and 'original.pth' in err and 'N_LAYERS=18' in err
    model = ['N_CLASSES=5', 'N_LAYERS=18', 'STEM=torchvision', 'EMA_CHANNELS=32', 'N_BASES=8',
             'STAGE_NUM=2']
    original = ev.main([str(tmp_path / 'original.pth'), f'LOG_DIR={tmp_path}/b'] + model + common)
    assert original['confusion'] == full['confusion'] and original['mIoU'] == full['mIoU']

    saved = json.load(open(tmp_path / 'a' / 'eval_final_ss.json'))
    assert set(saved) >= {'mIoU', 'pAcc', 'mAcc', 'fIoU', 'per_class'}
    assert saved['mIoU'] == pytest.approx(full['mIoU'])
    record = json.load(open(tmp_path / 'a' / 'eval_final_ss_record.json'))
    assert record['step'] == 7 and record['settings']['N_LAYERS'] == 18
    ids = open(os.path.join(toy_root, 'ImageSets', 'Segmentation', 'val.txt')).read().split()
    assert sorted(os.listdir(tmp_path / 'a' / 'pred')) == sorted(f'{i}.png' for i in ids)
    assert sorted(os.listdir(tmp_path / 'a' / 'attention')) == sorted(f'{i}.png' for i in ids[:2])
    assert any(f.startswith('events.out') for f in os.listdir(tmp_path / 'a'))
