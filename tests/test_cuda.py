"""The CUDA path, on a GPU only (skipped without one): bf16 + channels_last training and
evaluation agree with fp32, compiled gradients match eager ones, a killed run resumes on the GPU,
and the EM loop stays in float32 under autocast. Measured differences are printed (pytest -s)
and written to $CUDA_REPORT (a JSON file) when that is set."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import network
import settings
from conftest import ROOT, assert_same_state

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
DEMO = dict(N_CLASSES=5, N_LAYERS=18, PRETRAINED='', BN_MOM=0.1, EMA_CHANNELS=64, N_BASES=16,
            CROP_SIZE=57, SCALES=(0.75, 1.0, 1.25), BATCH_SIZE=8, LR=0.1, NUM_WORKERS=4,
            LOG_EVERY=25, IMAGE_EVERY=0, ATTN_IMAGES=0)
REPORT = {}


def report(key, value):
    REPORT[key] = value
    print(f'{key}: {value}')
    if os.environ.get('CUDA_REPORT'):
        with open(os.environ['CUDA_REPORT'], 'w') as f:
            json.dump(REPORT, f, indent=2)


def argv(root, tmp, **over):
    values = {**DEMO, 'DATA_ROOT': root, 'MODEL_DIR': f'{tmp}/models', 'LOG_DIR': f'{tmp}/logs',
              **over}
    return [f'{k}={v}' if isinstance(v, str) else f'{k}={v!r}' for k, v in values.items()]


def script(name, args, check=True):
    done = subprocess.run([sys.executable, os.path.join(ROOT, name), *args], capture_output=True,
                          text=True, timeout=900)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def miou(out):
    return float(out.split('mIoU ')[1].split()[0])


def losses(tmp):
    rows = [json.loads(line) for line in open(f'{tmp}/logs/metrics.jsonl')]
    return {r['step']: r['loss'] for r in rows if 'loss' in r}


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    import toy
    root = str(tmp_path_factory.mktemp('toy_cuda'))
    toy.make_toy(root)
    return root


def test_bf16_channels_last_training_and_evaluation_agree_with_fp32(toy, tmp_path):
    runs = {}
    for amp in (True, False):
        tmp = str(tmp_path / f'amp{amp}')
        script('train.py', argv(toy, tmp, AMP=amp, ITER_MAX=400, ITER_SAVE=400))
        out = script('eval.py', [f'{tmp}/models/final.pth', f'AMP={amp}', f'LOG_DIR={tmp}/logs',
                                 f'DATA_ROOT={toy}', 'ATTN_IMAGES=0']).stdout
        runs[amp] = (miou(out), losses(tmp), f'{tmp}/models/final.pth')
    (bf16, curve_bf16, ckpt), (fp32, curve_fp32, _) = runs[True], runs[False]
    gap = max(abs(curve_bf16[s] - curve_fp32[s]) for s in curve_fp32 if s > 100)
    report('toy mIoU after 400 steps, bf16 / fp32', (bf16, fp32))
    report('largest loss gap after step 100 (means over 25 steps)', gap)
    assert abs(bf16 - fp32) <= 0.5 and gap < 0.1
    scores = [miou(script('eval.py', [ckpt, f'AMP={amp}', f'LOG_DIR={tmp_path}/e{amp}',
                                      f'DATA_ROOT={toy}', 'ATTN_IMAGES=0']).stdout)
              for amp in (True, False)]  # one checkpoint, evaluated in bf16 and in fp32
    report('toy mIoU of one checkpoint evaluated in bf16 / fp32', scores)
    assert abs(scores[0] - scores[1]) <= 0.1


def test_compiled_gradients_match_eager_ones_on_cuda(toy):
    import dataset
    import infer
    import train
    for key, value in {**DEMO, 'DATA_ROOT': toy}.items():
        setattr(settings, key, value)
    torch.manual_seed(0)
    model = network.EMANet(5, 18).cuda().to(memory_format=torch.channels_last).train()
    data = dataset.TrainDataset()
    image, label = (torch.stack(t).cuda() for t in zip(*[data[i] for i in range(8)]))
    x = infer.to_input(image)
    torch._inductor.config.fallback_random = True
    diff = train.check_compiled(model, torch.compile(model), model, x, label)
    report('compiled vs eager gradients, relative difference (bf16)', diff)


def test_a_killed_run_resumes_on_cuda(toy, tmp_path):
    whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
    common = dict(ITER_MAX=60, ITER_SAVE=30, LOG_EVERY=1, NUM_WORKERS=2)
    script('train.py', argv(toy, whole, **common))
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'),
                             *argv(toy, parts, **common)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    for line in proc.stdout:
        if line.startswith('step 40/60'):
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert 'resuming from' in script('train.py', argv(toy, parts, **common)).stdout
    a = torch.load(f'{whole}/models/final.pth', weights_only=True)
    b = torch.load(f'{parts}/models/final.pth', weights_only=True)
    worst = max(float((a['net'][k].float() - b['net'][k].float()).abs().max() /
                      a['net'][k].float().abs().max().clamp(min=1e-12))
                for k in a['net'] if a['net'][k].is_floating_point())
    report('resumed vs uninterrupted run, largest relative weight difference', worst)
    try:
        assert_same_state(a, b)
        report('resumed vs uninterrupted run', 'bit for bit')
    except AssertionError:  # cuDNN's autotuned kernels are not deterministic
        assert worst < 0.05


def test_the_em_loop_runs_in_float32_under_autocast_on_cuda():
    torch.manual_seed(0)
    unit = network.EMAU(64, 8).cuda().train()
    x = torch.randn(2, 64, 9, 11, device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16):
        y, mu, z = unit(x, return_z=True)
        assert unit.conv1(x).dtype == torch.bfloat16
    assert mu.dtype == z.dtype == unit.mu.dtype == torch.float32
    assert torch.allclose(z.sum(-1), torch.ones(1, device='cuda'), atol=1e-5)
