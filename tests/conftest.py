"""What the tests share: the project folder on sys.path, one thread per process, the `given`
fixture (settings applied as KEY=VALUE overrides would be, undone after the test), the tiny
network and run every test uses, toy data, and the ways to run a script and read what it wrote.
A test that leaves the settings changed fails (see pytest_runtest_teardown)."""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from plumbing import config  # noqa: E402
import settings  # noqa: E402

# A tiny EMANet (a ResNet-18 with a small EM unit) for 5 classes: a forward takes milliseconds.
TINY = dict(N_CLASSES=5, N_LAYERS=18, STEM='torchvision', STRIDE=16, EMA_CHANNELS=32, N_BASES=8,
            PRETRAINED='', NUM_WORKERS=0, ATTN_IMAGES=0)
# A tiny training run of it on the toy data: 6 steps of 2 crops.
TINY_RUN = dict(CROP_SIZE=33, BATCH_SIZE=2, ITER_MAX=6, ITER_SAVE=10, LOG_EVERY=2, IMAGE_EVERY=0,
                VAL_EVERY=0)
# One thread per process: on a small shared machine more threads mostly wait for each other.
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


AS_STARTED = config.resolved()  # settings.py as every test finds it


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    """A test must leave the settings as it found them: changes go through `given` (or
    config.applied), which undoes them."""
    now = config.resolved()
    changed = sorted(k for k in set(now) | set(AS_STARTED)
                     if now.get(k, 0j) != AS_STARTED.get(k, 0j))
    if changed:
        config.apply(AS_STARTED)
        for key in set(now) - set(AS_STARTED):
            delattr(settings, key)
        pytest.fail(f'{item.nodeid} left settings changed: {", ".join(changed)}')


@pytest.fixture
def given():
    """config.apply, undone after the test: given(KEY=value, ...) sets settings as overrides
    would."""
    with config.applied():
        yield lambda **values: config.apply(values)


@pytest.fixture(autouse=True, scope='session')
def one_thread():
    """One torch thread in this process, as ENV gives new ones (numbers depend on the count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory):
    """A small toy dataset (toy.make_toy): 24 trainaug + 8 val images of 48-56 pixels, 5 classes;
    returns its path (use_tiny or args set DATA_ROOT)."""
    import toy
    root = tmp_path_factory.mktemp('toy')
    toy.make_toy(str(root), seed=0, n_train=24, n_val=8)
    return str(root)


class StandIn(torch.utils.data.Dataset):
    """A stand-in ValDataset of the tiny network's classes: random images of odd sizes, labels
    with an ignored first row."""

    def __init__(self, sizes=((20, 30), (33, 17), (9, 41)), seed=0, n=TINY['N_CLASSES']):
        rng = np.random.default_rng(seed)
        self.items, self.ids = [], [f'img{i}' for i in range(len(sizes))]
        self.classes = [f'c{i}' for i in range(n)]
        for id_, (h, w) in zip(self.ids, sizes):
            image = torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
            label = torch.from_numpy(rng.integers(0, n, (h, w)).astype(np.uint8))
            label[0, :] = 255
            self.items.append((image, label, id_))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture
def use_tiny(given):
    """use_tiny(**over): the settings of the tiny network (TINY), then `over` (see `given`)."""
    return lambda **over: given(**{**TINY, **over})


@pytest.fixture
def tiny_net(use_tiny):
    """tiny_net(**over): the tiny network, its settings applied (see use_tiny), seeded."""
    import network

    def make(**over):
        use_tiny(**over)
        torch.manual_seed(0)
        return network.EMANet(settings.N_CLASSES, settings.N_LAYERS)
    return make


@pytest.fixture
def net(tiny_net):
    """The tiny network in eval mode at output stride 8, 2 EM stages, 2 attention images."""
    return tiny_net(STRIDE=8, STAGE_NUM=2, ATTN_IMAGES=2).eval()


@pytest.fixture
def checkpoint(toy_root, tmp_path, tiny_net):
    """A tiny EMANet's checkpoint as train.py writes it (its weights random, not trained), with
    the toy data's classes and a palette of its own."""
    from plumbing import checkpoints, layout
    net = tiny_net(STRIDE=8, STAGE_NUM=2, DATA_ROOT=toy_root)
    with torch.no_grad():  # a head whose logits vary enough to predict several classes
        net.fc2.weight.mul_(50)
    colours = layout.palette()
    colours[3:6] = [1, 2, 3]
    target = str(tmp_path / 'run' / 'final.pth')
    checkpoints.save_atomic({'net': net.state_dict(), 'step': 5, 'settings': config.resolved(),
                            'classes': layout.class_names(toy_root), 'palette': colours}, target)
    return target


def args(toy_root, tmp, **over):
    """KEY=VALUE arguments of the tiny run on the toy data, writing into tmp/models, tmp/logdir."""
    return as_args({**TINY, **TINY_RUN, 'DATA_ROOT': toy_root,
                    'MODEL_DIR': os.path.join(tmp, 'models'),
                    'LOG_DIR': os.path.join(tmp, 'logdir'), **over})


def as_args(values):
    """{KEY: value} as KEY=VALUE arguments."""
    return [f'{k}={v}' if isinstance(v, str) else f'{k}={v!r}' for k, v in values.items()]


def run_script(name, argv, torchrun=0, check=True, timeout=300):
    """`python <name> argv...` (or under torchrun) in a new process: its CompletedProcess."""
    launcher = ([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                 f'--nproc_per_node={torchrun}'] if torchrun else [sys.executable])
    done = subprocess.run(launcher + [os.path.join(ROOT, name), *argv], capture_output=True,
                          text=True, timeout=timeout, env=ENV)
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def run_main(main, argv, capsys):
    """A script's main(argv) in this process, from settings.py as a new process starts (the
    test's settings as they were after): (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        with as_in_a_new_process():
            main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@contextlib.contextmanager
def as_in_a_new_process():
    """Inside, settings.py's values as a new process starts (the test's own applied on top of
    them are back afterwards)."""
    with config.applied(AS_STARTED):
        yield


def dead_pid():
    """The pid of a process that has ended: a killed writer's, in a temporary file's name."""
    done = subprocess.Popen(['true'])
    done.wait()
    return done.pid


def load(tmp, name):
    return torch.load(os.path.join(tmp, 'models', name), weights_only=True)


def assert_same_state(a, b):
    """Two checkpoints hold the same step, weights, bases and optimizer state, bit for bit."""
    assert a['step'] == b['step']
    assert a['net'].keys() == b['net'].keys()
    for key in a['net']:
        assert torch.equal(a['net'][key], b['net'][key]), key
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys() and len(sa) > 0
    for key in sa:
        assert torch.equal(sa[key]['momentum_buffer'], sb[key]['momentum_buffer'])
    assert a['optimizer']['param_groups'] == b['optimizer']['param_groups']


def tensorboard_events(log_dir):
    accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
    events = accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    return events


def one_sentence(err, *parts):
    """stderr is `error: <one line>` holding every part."""
    assert err.startswith('error: ') and err.count('\n') == 1, err
    for part in parts:
        assert part in err, err


# ---------------------------------------------------------------------------- aligned pairs

IGNORE = 255
COLOURS = np.random.default_rng(1).integers(0, 256, (21, 3)).astype(np.uint8)


def coded_pair(h=75, w=100, seed=0):
    """A label of random blocks (classes 0..20) and 255 bands, nothing thinner than 5 px, and an
    image whose colour encodes each pixel's class (COLOURS[class], black on 255)."""
    rng = np.random.default_rng(seed)
    coarse = np.zeros((h // 5, w // 5), np.uint8)
    for _ in range(40):
        y, x, bh, bw = rng.integers(0, h // 5), rng.integers(0, w // 5), *rng.integers(2, 5, 2)
        coarse[y:y + bh, x:x + bw] = rng.integers(0, 21)
    coarse[::4] = IGNORE
    label = np.kron(coarse, np.ones((5, 5), np.uint8))
    image = np.where((label == IGNORE)[..., None], 0, COLOURS[label % 21]).astype(np.uint8)
    return image, label


def decode(image):
    """The class whose colour is nearest to each pixel."""
    d = ((image[:, :, None].astype(int) - COLOURS[None, None].astype(int)) ** 2).sum(-1)
    return d.argmin(-1)


def interior(label):
    """Pixels whose 3x3 neighbourhood has one class (not the ignore value)."""
    p = np.pad(label, 1, constant_values=IGNORE)  # the crop's edge is no interior
    same = np.ones(label.shape, bool)
    for dy in range(3):
        for dx in range(3):
            same &= p[dy:dy + label.shape[0], dx:dx + label.shape[1]] == label
    return same & (label != IGNORE)


# ---------------------------------------------------------------------------- the EM unit

def slow_em(x, mu0, stages):
    """The reference algorithm, one image and one stage at a time, with explicit sums.
    x (B, C, H, W) after conv1; mu0 (1, C, K). Returns (reconstruction, mu, z)."""
    outs, mus, zs = [], [], []
    for b in range(x.shape[0]):
        X = x[b].reshape(x.shape[1], -1)                # (C, N)
        mu = mu0[0].clone()                             # (C, K)
        for _ in range(stages):
            logits = X.t() @ mu                         # (N, K)
            e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            z = e / e.sum(dim=1, keepdim=True)          # softmax over the K bases
            zn = z / (1e-6 + z.sum(dim=0, keepdim=True))
            mu = X @ zn
            mu = mu / (1e-6 + torch.sqrt((mu * mu).sum(dim=0, keepdim=True)))
        outs.append((mu @ z.t()).reshape(x.shape[1:]))
        mus.append(mu)
        zs.append(z)
    return torch.stack(outs), torch.stack(mus), torch.stack(zs)
