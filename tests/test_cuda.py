"""The CUDA path, on a GPU (skipped without one; EMANET_DRY_RUN=1 runs it on the CPU to try its
plumbing, bf16 being float32 there): bf16 + channels_last against fp32 from the same weights on
the same batches; the EM loop in float32 under autocast, by value; compiled gradients against
eager ones with no dropout mask to differ; a killed run's resume against an uninterrupted run,
bit for bit with deterministic algorithms, with a resume that lost its momentum as the control;
one checkpoint scored in bf16 and in fp32. fp32 is float32 here (TF32 off, as train.py and
eval.py run it). Every figure measured is printed (pytest -s) and written, as it is measured, to
$CUDA_REPORT (a JSON file, with the command) when that is set; each bound holds by design, not
by luck, and says why beside it."""
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import dataset
import inference
import network
import settings
import train
from conftest import ENV, ROOT, assert_same_state, slow_em
from plumbing import config, runs

CUDA = torch.cuda.is_available()
DEVICE = torch.device('cuda' if CUDA else 'cpu')
pytestmark = pytest.mark.skipif(not CUDA and not os.environ.get('EMANET_DRY_RUN'),
                                reason='needs a CUDA GPU (EMANET_DRY_RUN=1: on the CPU)')
DEMO = dict(N_CLASSES=5, N_LAYERS=18, PRETRAINED='', BN_MOM=0.1, EMA_CHANNELS=64, N_BASES=16,
            CROP_SIZE=57, SCALES=(0.75, 1.0, 1.25), BATCH_SIZE=8, LR=0.04, NUM_WORKERS=2,
            LOG_EVERY=1, IMAGE_EVERY=0, ATTN_IMAGES=0, STEM='torchvision', STRIDE=8)
REPORT = {}


def report(key, value):
    REPORT[key] = value
    print(f'{key}: {value}', flush=True)
    if os.environ.get('CUDA_REPORT'):
        with open(os.environ['CUDA_REPORT'], 'w') as f:
            json.dump({'command': shlex.join(['python', '-m', 'pytest', *sys.argv[1:]]),
                       'device': torch.cuda.get_device_name() if CUDA else 'cpu (a dry run)',
                       'figures': REPORT}, f, indent=2)


@pytest.fixture(autouse=True)
def float32_is_float32():
    """TF32 off for cuDNN's convolutions and for matmuls, as train.py, eval.py and predict.py
    run float32 on CUDA (PyTorch's default rounds convolutions to TF32): a test's fp32 is
    float32."""
    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = [flag.allow_tf32 for flag in flags]
    for flag in flags:
        flag.allow_tf32 = False
    yield
    for flag, value in zip(flags, saved):
        flag.allow_tf32 = value


def relative(a, b):
    """|a - b| / |a| over every floating-point tensor of two state dicts (or two tensors)."""
    if torch.is_tensor(a):
        return float((a.float() - b.float()).norm() / a.float().norm().clamp(min=1e-30))
    keys = [k for k in a if a[k].is_floating_point()]
    diff = sum(float((a[k].float() - b[k].float()).square().sum()) for k in keys)
    return (diff / max(sum(float(a[k].float().square().sum()) for k in keys), 1e-30)) ** 0.5


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    import toy
    root = str(tmp_path_factory.mktemp('toy_cuda'))
    toy.make_toy(root, n_train=64, n_val=16)
    return root


@pytest.fixture
def demo(toy):
    with config.applied({**DEMO, 'DATA_ROOT': toy}):
        yield


def batches(n=4):
    """The first n training batches of the demo recipe, on the device (uint8 images, labels)."""
    data = dataset.TrainDataset()
    out = []
    for step in range(n):
        items = [data[i] for i in dataset.step_indices(step, len(data), 0, 1)]
        out.append(tuple(torch.stack(t).to(DEVICE) for t in zip(*items)))
    return out


def sgd_steps(state, data, amp):
    """SGD steps of the demo network from `state` on `data`, in bf16 + channels_last (amp) or
    float32, with the same dropout masks: (each step's loss, the first step's logits)."""
    with config.applied({'AMP': amp}):
        net = network.EMANet(settings.N_CLASSES, settings.N_LAYERS).to(DEVICE).train()
        net.load_state_dict(state)
        channels_last = amp and CUDA
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(train.get_params(net), lr=settings.LR, momentum=0.9)
        losses, first = [], None
        for step, (image, label) in enumerate(data, 1):
            torch.manual_seed(step)
            train.poly_lr_scheduler(optimizer, step)
            scalars, logits = network.train_step(
                net, optimizer, inference.to_input(image, channels_last), label)
            losses.append(float(scalars['loss']))
            first = logits.float() if first is None else first
    return losses, first


def test_bf16_follows_fp32_from_the_same_weights_on_the_same_batches(demo):
    torch.manual_seed(0)
    state = network.EMANet(settings.N_CLASSES, settings.N_LAYERS).state_dict()
    data = batches()
    fp32, fp32_logits = sgd_steps(state, data, amp=False)
    bf16, bf16_logits = sgd_steps(state, data, amp=True)
    logits_error = relative(fp32_logits, bf16_logits)
    gaps = [abs(a - b) / abs(a) for a, b in zip(fp32, bf16)]
    report('bf16 vs fp32, first step logits, relative error', logits_error)
    report('bf16 vs fp32, losses of steps 1-4', [fp32, bf16])
    report('bf16 vs fp32, largest relative loss gap over 4 steps', max(gaps))
    # bf16 keeps 8 significant bits (relative rounding 2^-8 per operation); summed in float32
    # through ~20 layers the logits stay within a few percent, and four steps of SGD from the
    # same weights do not take the runs apart. An EM loop or a loss in bf16 would not hold this.
    assert logits_error < 0.05 and max(gaps) < 0.05


def test_the_em_loop_runs_in_float32_under_autocast_by_value():
    torch.manual_seed(0)
    unit = network.EMAU(64, 8).to(DEVICE).train()
    mu0 = unit.mu.clone()
    x = torch.randn(2, 64, 9, 11, device=DEVICE)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        y, mu, z = unit(x, return_z=True)
        features = unit.conv1(x)
    assert features.dtype == torch.bfloat16  # autocast is on around the unit
    assert mu.dtype == z.dtype == unit.mu.dtype == torch.float32
    _, mu_ref, z_ref = slow_em(features.float(), mu0, 3)  # in float32 from the same input
    errors = [float((z - z_ref).abs().max()), float((mu - mu_ref).abs().max())]
    report('EM loop under autocast vs the float32 reference, largest |dz|, |dmu|', errors)
    assert max(errors) < 1e-4  # float32 rounding (a bf16 loop errs by ~1e-2)


@pytest.mark.skipif(CUDA and (importlib.util.find_spec('triton') is None or not (
    shutil.which('cc') or shutil.which('gcc'))), reason='torch.compile needs triton and cc')
def test_compiled_gradients_match_eager_ones(demo):
    torch.manual_seed(0)
    model = network.EMANet(settings.N_CLASSES, settings.N_LAYERS).to(DEVICE).train()
    if CUDA:
        model = model.to(memory_format=torch.channels_last)
    for m in model.modules():  # no dropout: no mask that could differ between the two
        if isinstance(m, torch.nn.Dropout2d):
            m.eval()
    image, label = batches(1)[0]
    x = inference.to_input(image)
    compiled = torch.compile(model, backend='inductor' if CUDA else 'eager')
    diff = runs.compiled_gap(model, compiled, model, x, label)
    report('compiled vs eager gradients, relative difference', diff)
    assert diff < (0.05 if CUDA else 1e-5)  # bf16 rounding of two kernel orders


# tests/deterministic.py runs a script with deterministic algorithms; it imports the project
DETERMINISTIC = [sys.executable, os.path.join(ROOT, 'tests', 'deterministic.py')]
DETERMINISTIC_ENV = {**ENV, 'PYTHONPATH': os.pathsep.join(
    [ROOT, *filter(None, [ENV.get('PYTHONPATH')])])}


def script(name, argv, check=True, deterministic=False):
    """`python name argv...`; with deterministic=True through tests/deterministic.py."""
    python = DETERMINISTIC if deterministic else [sys.executable]
    done = subprocess.run([*python, os.path.join(ROOT, name), *argv], capture_output=True,
                          text=True, timeout=600, env=DETERMINISTIC_ENV if deterministic else ENV)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def argv(toy, tmp, **over):
    values = {**DEMO, 'DATA_ROOT': toy, 'MODEL_DIR': f'{tmp}/models', 'LOG_DIR': f'{tmp}/logs',
              'ITER_MAX': 40, 'ITER_SAVE': 300, **over}  # latest.pth at step 30 only
    return [f'{k}={v}' if isinstance(v, str) else f'{k}={v!r}' for k, v in values.items()]


def test_a_killed_run_resumes_bit_for_bit_with_deterministic_algorithms(toy, tmp_path):
    """With deterministic algorithms (tests/deterministic.py: on CUDA the bilinear upsample's
    backward, cuDNN's choice of algorithms and cuBLAS's workspace would otherwise differ between
    runs), a run killed after its latest.pth and resumed ends with the state of an
    uninterrupted one, bit for bit; a second uninterrupted run shows the runs are deterministic,
    and a resume that lost its momentum (the original's) must differ."""
    runs = {name: str(tmp_path / name) for name in ('a', 'b', 'resumed', 'no_momentum')}
    for name in ('a', 'b'):
        script('train.py', argv(toy, runs[name]), deterministic=True)
    proc = subprocess.Popen([*DETERMINISTIC, os.path.join(ROOT, 'train.py'),
                             *argv(toy, runs['resumed'])], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env=DETERMINISTIC_ENV)
    for line in proc.stdout:
        if line.startswith('step 31/40'):  # after latest.pth of step 30
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    latest = torch.load(f'{runs["resumed"]}/models/latest.pth', weights_only=True)
    assert latest['step'] == 30
    for state in latest['optimizer']['state'].values():
        state['momentum_buffer'].zero_()
    os.makedirs(f'{runs["no_momentum"]}/models')
    torch.save(latest, f'{runs["no_momentum"]}/models/latest.pth')
    for name in ('resumed', 'no_momentum'):
        done = script('train.py', argv(toy, runs[name]), deterministic=True)
        assert 'resuming from' in done.stdout
    final = {name: torch.load(f'{folder}/models/final.pth', weights_only=True)
             for name, folder in runs.items()}
    spread = relative(final['a']['net'], final['b']['net'])
    gap = relative(final['a']['net'], final['resumed']['net'])
    control = relative(final['a']['net'], final['no_momentum']['net'])
    report('two uninterrupted runs of 40 steps, relative weight difference', spread)
    report('resumed at 30 vs uninterrupted, relative weight difference', gap)
    report('resumed without momentum vs uninterrupted (control)', control)
    assert_same_state(final['a'], final['b'])  # deterministic: else the next would be luck
    assert_same_state(final['a'], final['resumed'])
    assert control > 1e-4  # 10 steps without momentum: the comparison sees a lost state


def test_one_checkpoint_scores_alike_in_bf16_and_fp32(toy, tmp_path):
    script('train.py', argv(toy, str(tmp_path), ITER_MAX=20))
    target = str(tmp_path / 'models' / 'final.pth')
    probs = []
    with config.applied({'DATA_ROOT': toy, 'NUM_WORKERS': 0}):
        for amp in (True, False):
            with config.applied({'AMP': amp}):
                net, _ = inference.load_net(target, DEVICE)
                data = dataset.ValDataset()
                with inference.eval_mode(net):
                    probs.append([inference.infer(net, data[i][0].to(DEVICE))[0]
                                  for i in range(len(data))])
    bf16, fp32 = (torch.cat([p.flatten(1) for p in ps], 1) for ps in probs)  # (classes, pixels)
    top2 = fp32.topk(2, dim=0).values
    # bf16 rounds to 8 significant bits (2^-8 relative); through the network a probability moves
    # by a few such roundings (0.007 at most in bf16 on a CPU). Two classes closer than 2^-4 in
    # fp32, eight roundings each, may swap by rounding alone: those pixels are not counted.
    clear = top2[0] - top2[1] >= 2 ** -4
    agree = bf16.argmax(0)[clear] == fp32.argmax(0)[clear]
    diff = float((bf16 - fp32).abs().mean())
    report('one checkpoint, bf16 vs fp32 inference: mean |dp|, largest |dp|',
           [diff, float((bf16 - fp32).abs().max())])
    report('pixels whose two best fp32 classes are 2^-4 apart or more: share, bf16 agreement',
           [float(clear.float().mean()), float(agree.float().mean())])
    assert diff < 0.01 and bool(agree.all())
