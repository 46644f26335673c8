"""inference.py, the one inference path: scores against brute force, multi-scale + flip
and windows, padding to the output stride, EM-stage sweeps, two processes, checkpoints into
networks."""
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import inference
import network
import settings
from conftest import StandIn as Items
from plumbing import checkpoints, config

N = 5  # classes of the tiny network


def padded_forward(net, image):
    """The original's single-scale inference: normalise, pad with 0 to 1 modulo STRIDE,
    forward, crop back; softmax."""
    h, w = image.shape[-2:]
    s = settings.STRIDE
    x = inference.to_input(image[None])
    x = F.pad(x, (0, (1 - w) % s, 0, (1 - h) % s))
    with torch.no_grad():
        return F.softmax(net(x), 1)[:, :, :h, :w]


# ---------------------------------------------------------------------------- scores

def test_scores_match_a_brute_force_count():
    rng = np.random.default_rng(1)
    n = 6  # class 4 appears in neither the labels nor the predictions, class 5 only in labels
    label = rng.choice([0, 1, 2, 3, 5, 255], size=(37, 23))
    pred = rng.choice([0, 1, 2, 3], size=(37, 23))
    conf = inference.confusion(torch.from_numpy(pred), torch.from_numpy(label), n, 255)
    brute = np.zeros((n, n), np.int64)
    for p, t in zip(pred.ravel(), label.ravel()):
        if t != 255:
            brute[t, p] += 1
    assert conf.tolist() == brute.tolist()
    s = inference.scores(conf, names=[f'c{i}' for i in range(n)])
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



# ---------------------------------------------------------------------------- inference

def test_scale_one_without_flip_is_the_padded_forward(net, given):
    image = Items()[1][0]
    given(EVAL_SCALES=(1.0,), EVAL_FLIP=False)
    assert torch.equal(inference.infer(net, image), padded_forward(net, image))


class Fake(nn.Module):
    """A network with EMANet's two halves whose logits come from `logits(x)`; it records the
    sizes of its inputs."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def features(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return x

    def head(self, x, size, stages=None):
        return self.logits(x) + 0 * (stages or 0)

    def forward(self, x):
        return self.head(self.features(x), x.shape[-2:])


class Ramp(Fake):
    """Two classes whose logits are +-column index: the output ignores the image."""

    def logits(self, x):
        col = torch.arange(x.shape[-1], dtype=torch.float32).expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([col, -col], 1)


class Pointwise(Fake):
    """Logits from each pixel's colour alone (flip-, scale- and window-equivariant)."""

    def logits(self, x):
        return torch.cat([x[:, :1] - x[:, 1:2], x[:, 2:]], 1)


def test_flip_averages_the_mirrored_prediction(given):
    image = torch.randint(0, 256, (3, 9, 17), dtype=torch.uint8)
    given(EVAL_SCALES=(1.0,), EVAL_FLIP=True, STRIDE=8)
    prob = inference.infer(Ramp(), image)
    col = torch.arange(17.)
    # the net sees 17 columns (1 modulo 8): the mirrored ramp of those 17
    expected = (torch.sigmoid(2 * col) + torch.sigmoid(2 * col.flip(0))) / 2
    assert torch.allclose(prob[0, 0], expected.expand(9, 17), atol=1e-6)
    flipped = inference.infer(Pointwise(), image)
    given(EVAL_FLIP=False)
    assert torch.allclose(inference.infer(Pointwise(), image), flipped, atol=1e-6)


@pytest.mark.parametrize('stride', [8, 16])
def test_inputs_are_1_modulo_the_output_stride_at_every_scale(stride, given):
    given(STRIDE=stride, EVAL_SCALES=(0.5, 1.0, 1.75), EVAL_FLIP=True)
    fake = Pointwise()
    for h, w in [(20, 30), (375, 500), (9, 41)]:
        fake.sizes.clear()
        prob = inference.infer(fake, torch.zeros(3, h, w, dtype=torch.uint8))
        assert prob.shape == (1, 2, h, w) and len(fake.sizes) == 6
        assert all(n % stride == 1 for size in fake.sizes for n in size), fake.sizes
        assert fake.sizes[2] == (h + (1 - h) % stride, w + (1 - w) % stride)  # scale 1: padded
        assert fake.sizes[0] == tuple(stride * max(1, round((n - 1) * 0.5 / stride)) + 1
                                      for n in (h, w))


def test_other_scales_give_full_size_probabilities(net, given):
    image = Items()[0][0]  # 20 x 30
    given(EVAL_SCALES=(0.5, 0.75, 1.25, 1.75), EVAL_FLIP=True)
    prob = inference.infer(net, image)
    assert prob.shape == (1, N, 20, 30) and prob.dtype == torch.float32
    assert torch.allclose(prob.sum(1), torch.ones(1, 20, 30), atol=1e-5)
    flat = torch.full((3, 25, 33), 90, dtype=torch.uint8)  # a flat image: every scale agrees
    given(EVAL_SCALES=(1.0,))
    single = inference.infer(Pointwise(), flat)
    given(EVAL_SCALES=(0.5, 1.5))
    assert torch.allclose(inference.infer(Pointwise(), flat), single, atol=1e-6)


def test_slide_equals_whole_for_one_window_and_averages_overlaps(net, given):
    image = Items(sizes=((40, 57),))[0][0]
    given(EVAL_SCALES=(1.0, 0.75), EVAL_FLIP=True)
    whole = inference.infer(net, image)
    given(EVAL_MODE='slide', SLIDE_CROP=57, SLIDE_STEP=40)
    assert torch.equal(inference.infer(net, image), whole)  # one window holds it at each scale
    given(SLIDE_CROP=25, SLIDE_STEP=16)
    fake = Pointwise()
    slid = inference.infer(fake, image)  # windows at 0, 15 (rows) and 0, 16, 32 (columns) ...
    assert (25, 25) in fake.sizes and len(fake.sizes) == 2 * (2 * 3 + 2 * 2)
    given(EVAL_MODE='whole')
    assert torch.allclose(slid, inference.infer(Pointwise(), image), atol=1e-6)  # ... averaged
    given(EVAL_MODE='slide')
    prob = inference.infer(net, image)
    assert prob.shape == whole.shape and torch.allclose(prob.sum(1), torch.ones(1), atol=1e-5)
    assert not torch.allclose(prob, whole, atol=1e-3)  # the windows see less context


def test_stage_sweep_equals_separate_runs(net, tmp_path, given):
    data = Items()
    given(STAGE_NUM_EVAL=(1, 2, 4))
    swept = inference.validate(net, data, torch.device('cpu'), network.stage_counts(),
                               {2: str(tmp_path)})
    assert list(swept) == [1, 2, 4]
    for t in (1, 2, 4):
        given(STAGE_NUM_EVAL=t)
        one = inference.validate(net, data, torch.device('cpu'), network.stage_counts())[t]
        assert one['confusion'] == swept[t]['confusion'] and one['mIoU'] == swept[t]['mIoU']
    assert sorted(os.listdir(tmp_path)) == ['img0.png', 'img1.png', 'img2.png']


def test_an_image_too_large_for_memory_is_one_sentence(net, monkeypatch):
    def full(x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                           "1099511627776 bytes. Error code 12 (Cannot allocate memory)")
    monkeypatch.setattr(net, 'features', full)
    with pytest.raises(config.UserError, match=r'big.jpg at scale 1.0 \(30x20 pixels\) does '
                                               r'not fit in memory; pass EVAL_MODE=slide'):
        inference.infer(net, Items()[0][0], name='big.jpg')


def test_validate_scores_saves_pngs_and_restores_train_mode(net, tmp_path):
    data = Items()
    net.train()
    torch.backends.cudnn.benchmark = True
    result = inference.validate(net, data, torch.device('cpu'), network.stage_counts(),
                                {2: str(tmp_path)})[2]
    assert net.training and torch.backends.cudnn.benchmark  # as they were
    torch.backends.cudnn.benchmark = False
    conf = torch.zeros(N, N, dtype=torch.int64)
    for image, label, id_ in data:
        png = Image.open(tmp_path / f'{id_}.png')
        assert png.mode == 'P' and png.getpalette()[3:6] == [128, 0, 0]
        pred = torch.from_numpy(np.array(png)).long()
        assert torch.equal(pred, padded_forward(net.eval(), image)[0].argmax(0))
        conf += inference.confusion(pred, label, N, 255)
    assert result['confusion'] == conf.tolist()
    assert result['mIoU'] == inference.scores(conf)['mIoU']


def _worker(rank, world, values, state, init, out):
    config.apply(values)  # a spawned process starts from settings.py
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', init_method=f'file://{init}', rank=rank,
                                         world_size=world)
    net = network.EMANet(N, 18)
    net.load_state_dict(state)
    net = nn.parallel.DistributedDataParallel(net)  # as train.py passes it; 2 + 1 images
    result = inference.validate(net, Items(), torch.device('cpu'), network.stage_counts())[2]
    assert net.training
    torch.save(result, f'{out}.{rank}')
    torch.distributed.destroy_process_group()


def test_two_processes_give_the_numbers_of_one(net, tmp_path, given):
    given(EVAL_SCALES=(0.75, 1.0), EVAL_FLIP=True)
    one = inference.validate(net, Items(), torch.device('cpu'), network.stage_counts())[2]
    args = (2, config.resolved(), net.state_dict(), tmp_path / 'init', tmp_path / 'out')
    mp.spawn(_worker, args=args, nprocs=2)
    for rank in range(2):
        two = torch.load(tmp_path / f'out.{rank}', weights_only=False)
        assert two['confusion'] == one['confusion'] and two['mIoU'] == one['mIoU']


def test_load_net_accepts_old_and_wrapped_state_dicts(net, tmp_path, given):
    state = {f'module.{k}': v for k, v in net.state_dict().items()
             if not k.endswith('num_batches_tracked')}  # DataParallel, PyTorch < 0.4.1
    checkpoints.save_atomic({'net': state, 'settings': config.resolved(), 'classes': list('abcd')},
                       str(tmp_path / 'a.pth'))
    given(STRIDE=16, N_LAYERS=50)
    loaded, info = inference.load_net(str(tmp_path / 'a.pth'), torch.device('cpu'),
                                      keep={'STRIDE'})
    assert info['step'] is None and settings.N_LAYERS == 18 and settings.STRIDE == 16
    assert info['classes'] == list('abcd') and 'palette' not in info  # eval.py: DATA_ROOT's
    assert not loaded.training and loaded.extractor[6][0].conv1.stride == (2, 2)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, net.state_dict()[key])


@pytest.mark.parametrize('problem, message', [
    ('missing', 'nothing.pth does not exist'),
    ('empty', r'empty.pth is empty \(0 bytes'),
    ('folder', r'is a folder; give a .pth file, like .*/final.pth'),
    ('nan', r"holds non-finite values \(nan or inf\) in 'fc2.weight'; it cannot be used"),
    ('junk', r'cannot be read \(.*\); it is not a complete torch checkpoint: give a .pth'),
    ('palette', r"holds a malformed 'palette' \(not a list as train.py writes it"),
])
def test_bad_checkpoints_are_one_sentence(net, tmp_path, problem, message, given):
    target = tmp_path / {'missing': 'nothing.pth', 'empty': 'empty.pth'}.get(problem, 'x.pth')
    if problem == 'empty':
        target.write_bytes(b'')
    elif problem == 'folder':
        target.mkdir()
    elif problem == 'junk':
        target.write_bytes(b'PK\x03\x04 half a zip')
    elif problem == 'palette':
        checkpoints.save_atomic({'net': net.state_dict(), 'palette': [1, 2, 3]}, str(target))
    elif problem == 'nan':
        state = net.state_dict()
        state['fc2.weight'][1, 3] = float('nan')  # one weight: it would score silently wrong
        checkpoints.save_atomic({'net': state, 'settings': config.resolved()}, str(target))
    with pytest.raises(config.UserError, match=message):
        inference.load_net(str(target), torch.device('cpu'))


