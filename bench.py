"""Speed and memory, each row against its baseline measured side by side in the same run; and the
network's size and cost.

    python bench.py [cpu|cuda] [KEY=VALUE ...]  # a table, and LOG_DIR/bench_<rows>.json
    python bench.py memory [KEY=VALUE ...]      # SAVE_MEMORY's rows (GPU, else CPU)
    python bench.py cost [KEY=VALUE ...]        # parameters and multiply-accumulates at 513x513

The CUDA rows where a GPU is visible, else the CPU rows (`cpu` asks for them anyway). CPU rows
(about a minute on 2 cores): the data pipeline against a plain re-statement of the original's,
the EM unit against a plain re-statement of the reference algorithm, and eval.py's EM-stage
sweep in one pass against one run per count. CUDA rows: the fp32, TF32 and bf16 matmul rates;
the training step that train.py runs (network.train_step) for EMANet-101 OS8 at 513x513, batch
8 and 16, in plain float32 (the baseline), TF32, bf16 alone and train.py's default (bf16 +
channels_last, + compile with COMPILE=True), each with its first step (cuDNN's search) timed
apart, its peak memory allocated and reserved, and its model FLOP utilisation against the matmul
rate of its own arithmetic (MODES); eval.py's own inference (validate) on VOC-sized images in
memory, single scale and 6 scales + flip; and the sweep. Each row of the JSON file names its
mode, the file the command. EMANET_DRY_RUN=1 `bench.py cuda` runs the CUDA rows' code on the
CPU for a small EMANet (see DRY). Memory rows (`memory`): SAVE_MEMORY against the default
training step of EMANet-101 at 513x513; on the CPU (about 6 minutes on 2 cores) its peak memory
at batch 1 and 2 in float32 and bf16 autocast, projected to batch 16, and its time; on a GPU at
batch 16 in train.py's default mode, peak memory allocated and reserved and images/s.
Benchmarks are not tests: nothing here asserts a time.
"""
import contextlib
import os
import shlex
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from plumbing import config, files, outputs, records, scripts  # first: settings.py checked
import dataset
import inference
import network
import settings

ROWS = []


def row(name, value, unit, baseline=None, baseline_value=None, note='', mode=None):
    """A row of the table and of the JSON file; `mode`: the arithmetic of a CUDA row (MODES)."""
    ratio = value / baseline_value if baseline_value else None
    ROWS.append(dict(row=name, value=value, unit=unit, baseline=baseline,
                     baseline_value=baseline_value, ratio=ratio, note=note, mode=mode))
    ratio_text = f'{ratio:6.2f}x  vs {baseline} ({baseline_value:.4g} {unit})' if ratio else ''
    print(f'{name:<46}{value:>10.4g} {unit:<10}{ratio_text}  {note}', flush=True)


def timed(fn, repeats, sync=lambda: None, warm_up=True):
    """Median seconds of fn() over `repeats` calls, after one warm-up call unless told not."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

# ---------------------------------------------------------------------------- row 1: data


def voc_like_folder(root, n=24, size=(375, 500)):
    """n VOC-sized JPEGs (smooth shapes and noise, like photos) and index-PNG labels."""
    rng = np.random.default_rng(0)
    for sub in ('JPEGImages', 'SegmentationClassAug', 'ImageSets/Segmentation'):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        label = np.zeros(size, np.uint8)
        image = np.stack([(xx * rng.uniform(0.2, 0.6) + yy * rng.uniform(0.1, 0.5)) % 256] * 3,
                         axis=2)
        for _ in range(3):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(30, 120)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            label[mask] = rng.integers(1, 21)
            image[mask] = rng.integers(0, 256, 3)
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(root, 'JPEGImages', f'{i:06d}.jpg'), image[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        Image.fromarray(label).save(os.path.join(root, 'SegmentationClassAug', f'{i:06d}.png'))
    with open(os.path.join(root, 'ImageSets/Segmentation/trainaug.txt'), 'w') as f:
        f.write(''.join(f'{i:06d}\n' for i in range(n)))
    return [f'{i:06d}' for i in range(n)]


def original_sample(root, image_id, rng):
    """A plain re-statement of the original's training pipeline: PIL decode, float and
    normalise first, then F.interpolate scale, pad, crop and flip on float tensors."""
    with open(os.path.join(root, 'JPEGImages', f'{image_id}.jpg'), 'rb') as fp:
        image = Image.open(fp).convert('RGB')
    image = torch.FloatTensor(np.array(image)) / 255
    image = (image - torch.tensor(settings.MEAN)) / torch.tensor(settings.STD)
    image = image.permute(2, 0, 1).unsqueeze(0)
    with open(os.path.join(root, 'SegmentationClassAug', f'{image_id}.png'), 'rb') as fp:
        label = torch.FloatTensor(np.array(Image.open(fp).convert('P')))[None, None]
    ratio = float(rng.choice(settings.SCALES))
    image = F.interpolate(image, scale_factor=ratio, mode='bilinear', align_corners=True)
    label = F.interpolate(label, scale_factor=ratio, mode='nearest')
    crop = settings.CROP_SIZE
    h, w = image.shape[-2:]
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    image = F.pad(image, (0, pw, 0, ph), value=0.)
    label = F.pad(label, (0, pw, 0, ph), value=settings.IGNORE_LABEL)
    h, w = image.shape[-2:]
    y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    image, label = image[..., y:y + crop, x:x + crop], label[..., y:y + crop, x:x + crop]
    if rng.random() < 0.5:
        image, label = image.flip(3), label.flip(3)
    return image[0], label[0, 0].long()


def bench_data(root, n, rounds=3):
    """Samples/s on one core: decode alone, the original's pipeline, ours (TrainDataset)."""
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with config.applied({'N_CLASSES': 21}):
        ours = dataset.TrainDataset('trainaug', root=root)
        rng = np.random.default_rng(0)
        ids = ours.ids
        paths = [os.path.join(root, 'JPEGImages', f'{i}.jpg') for i in ids]
        pipelines = {'decode': lambda: [cv2.imread(p) for p in paths],
                     'original': lambda: [original_sample(root, i, rng) for i in ids],
                     'ours': lambda: [ours[k] for k in range(n)]}
        rates = {name: n / timed(fn, rounds) for name, fn in pipelines.items()}
    torch.set_num_threads(threads)  # as they were before
    cv2.setNumThreads(cv2_threads)
    row('data: train samples/s per core (513 crops)', rates['ours'], 'samples/s',
        'original pipeline', rates['original'])
    row('data: JPEG decode alone (the ceiling)', rates['decode'], 'images/s',
        note=f'ours reaches {rates["ours"] / rates["decode"]:.0%} of it')

# ---------------------------------------------------------------------------- row 2: EM unit


class PlainEMAU(torch.nn.Module):
    """A plain re-statement of the reference algorithm (the original's forward)."""

    def __init__(self, unit):
        super().__init__()
        self.unit = unit

    def forward(self, x):
        u = self.unit
        idn = x
        x = u.conv1(x)
        b, c, h, w = x.size()
        x = x.view(b, c, h * w)
        mu = u.mu.repeat(b, 1, 1)
        with torch.no_grad():
            for _ in range(u.stage_num):
                z = F.softmax(torch.bmm(x.permute(0, 2, 1), mu), dim=2)
                z_ = z / (1e-6 + z.sum(dim=1, keepdim=True))
                mu = torch.bmm(x, z_)
                mu = mu / (1e-6 + mu.norm(dim=1, keepdim=True))
        x = mu.matmul(z.permute(0, 2, 1)).view(b, c, h, w)
        x = u.conv2(F.relu(x, inplace=True))
        return F.relu(x + idn, inplace=True), mu


def bench_emau(device, batch=8, repeats=3):
    """Forward + backward of the EM unit at C=512, K=64, 65x65 (513 crops at stride 8)."""
    torch.manual_seed(0)
    unit = network.EMAU(512, 64, 3, 3, 0.9).to(device).train()
    plain = PlainEMAU(network.EMAU(512, 64, 3, 3, 0.9).to(device).train())
    plain.unit.load_state_dict(unit.state_dict())
    x = torch.randn(batch, 512, 65, 65, device=device, requires_grad=True)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    def step(module):
        return lambda: module(x)[0].sum().backward()
    ours, base = timed(step(unit), repeats, sync), timed(step(plain), repeats, sync)
    row(f'EMAU fwd+bwd, batch {batch}, {device.type}', batch / ours, 'images/s',
        'plain re-statement', batch / base, note='EM kept in fp32; moving average inside')

# ---------------------------------------------------------------------------- CUDA rows


@contextlib.contextmanager
def changed(obj, **values):
    """obj's attributes set to `values` inside, as they were after (cuDNN's flags)."""
    saved = {k: getattr(obj, k) for k in values}
    for key, value in values.items():
        setattr(obj, key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(obj, key, value)


R101 = dict(N_LAYERS=101, STRIDE=8, STEM='deep', EMA_CHANNELS=512, N_BASES=64, N_CLASSES=21,
            PRETRAINED='', AUX_WEIGHT=0.0)
# EMANET_DRY_RUN=1 without a GPU (`bench.py cuda`, .ci/gpu's dry run): the CUDA rows' code runs
# on the CPU for a small EMANet on small crops, to try it, not to time it.
DRY = bool(os.environ.get('EMANET_DRY_RUN')) and not torch.cuda.is_available()
SMALL = dict(N_LAYERS=18, STEM='torchvision', EMA_CHANNELS=64, N_BASES=16)
SIZE, BATCHES, STEPS, MATMUL_N = (65, (1, 2), 2, 256) if DRY else (513, (8, 16), 10, 8192)
IMAGE = (75, 100) if DRY else (375, 500)  # (h, w) of the VOC-sized images (inference, .ci/gpu)
# cuDNN's search (benchmark=True) times this many of its best-ranked algorithms for each new
# shape (PyTorch's default: 10); the first step, which runs it, is timed apart.
SEARCH_LIMIT = int(os.environ.get('BENCH_SEARCH_LIMIT', 3))


def r101():
    """R101's settings, or a small EMANet's on a dry run (see DRY)."""
    return {**R101, **(SMALL if DRY else {})}


# The arithmetic of each training row and the matmul rate it is held against (its ceiling):
# plain float32 (the original's, and train.py's with AMP=False: TF32 off for convolutions and
# matmuls), TF32 convolutions and matmuls (PyTorch's default for convolutions; no train.py mode),
# bf16 autocast alone, and train.py's default (bf16 autocast and channels_last, TF32 off: the EM
# loop and the logits in true float32).
MODES = {'fp32': dict(tf32=False, amp=False, channels_last=False, ceiling='fp32'),
         'tf32': dict(tf32=True, amp=False, channels_last=False, ceiling='tf32'),
         'bf16': dict(tf32=False, amp=True, channels_last=False, ceiling='bf16'),
         'default': dict(tf32=False, amp=True, channels_last=True, ceiling='bf16')}
MATMULS = {'fp32': (torch.float32, False), 'tf32': (torch.float32, True),
           'bf16': (torch.bfloat16, False)}  # (dtype, TF32 allowed)


def sync_of(device):
    return torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)


@contextlib.contextmanager
def training_step(batch, mode, device='cuda', size=513):
    """Inside: (step, eager_step) for EMANet-101 OS8 on size x size crops in `mode`: step() is
    one SGD step through network.train_step, the step train.py runs (compiled with
    COMPILE=True in the default mode), eager_step() the same without compile (for counting
    FLOPs). The optimizer is SGD with train.py's momentum and weight decay over one group
    (train.py's three groups differ in rates, not in work); the data a fixed random batch on
    the device (the data row measures the loader)."""
    m = MODES[mode]
    with config.applied({**r101(), 'AMP': m['amp']}), \
            changed(torch.backends.cudnn, allow_tf32=m['tf32'], benchmark=True,
                    benchmark_limit=SEARCH_LIMIT), \
            changed(torch.backends.cuda.matmul, allow_tf32=m['tf32']):
        torch.manual_seed(0)
        model = network.EMANet(21, settings.N_LAYERS).to(device).train()
        if m['channels_last']:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=settings.LR_MOM,
                              weight_decay=settings.WEIGHT_DECAY)
        image = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
        label = torch.randint(0, 21, (batch, size, size), dtype=torch.uint8, device=device)
        compiled = torch.compile(model) if mode == 'default' and settings.COMPILE else model

        def step(net=compiled):
            network.train_step(net, opt, inference.to_input(image, m['channels_last']), label)
        yield step, lambda: step(model)


def bench_train_step(batch, mode, device, steps=STEPS):
    """(images/s, seconds of the first step, peak GiB allocated, peak GiB reserved, FLOP/s) of
    real SGD steps of EMANet-101 OS8 at 513x513. The first step (cuDNN's search) is timed
    apart; the peaks are the steady steps' (the search's workspaces released before them);
    the FLOPs are counted on the eager network."""
    from torch.utils.flop_counter import FlopCounterMode
    cuda, sync = device.type == 'cuda', sync_of(device)
    if cuda:
        torch.cuda.empty_cache()  # what the previous row held
    try:
        with training_step(batch, mode, device, SIZE) as (step, eager_step):
            first = timed(step, 1, sync, warm_up=False)
            for _ in range(2):
                step()
            if cuda:
                sync()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            seconds = timed(step, steps, sync, warm_up=False)
            peaks = (torch.cuda.max_memory_allocated() / 2 ** 30,
                     torch.cuda.max_memory_reserved() / 2 ** 30) if cuda else (None, None)
            counter = FlopCounterMode(display=False)
            with counter:
                eager_step()
            return batch / seconds, first, *peaks, counter.get_total_flops() / seconds
    except torch.cuda.OutOfMemoryError:
        print(f'train step batch {batch}, {mode}: out of memory', flush=True)
        return None


def matmul_rate(kind, device, n=8192, seconds=0.1, repeats=5):
    """FLOP/s of n x n matmuls in `kind` (MATMULS), each timing holding enough of them to last
    about `seconds` (one would time the launch)."""
    dtype, tf32 = MATMULS[kind]
    sync = sync_of(device)
    with changed(torch.backends.cuda.matmul, allow_tf32=tf32):
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        inner = max(1, round(seconds / timed(lambda: torch.mm(a, b), 3, sync)))

        def many():
            for _ in range(inner):
                torch.mm(a, b)
        return inner * 2 * n ** 3 / timed(many, repeats, sync)


class InMemory(torch.utils.data.Dataset):
    """A ValDataset's items decoded once and kept: validate over it times the inference in its
    steady state, not the decoding or the start of loader workers."""

    def __init__(self, data):
        self.items, self.classes = [data[i] for i in range(len(data))], data.classes

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def eval_net_and_data(root, device):
    """EMANet-101 OS8 as eval.py runs it (eval mode, channels_last) and the VOC-sized images
    in memory; inside config.applied(r101())."""
    torch.manual_seed(0)
    net = network.EMANet(21, settings.N_LAYERS).to(device).eval()
    if device.type == 'cuda':
        net = net.to(memory_format=torch.channels_last)
    return net, InMemory(dataset.ValDataset('trainaug', root=root))


def bench_inference(root, n, device):
    """images/s of eval.py's own path (validate: padding, scales, flip, bf16, TF32 off) on n
    VOC-sized images in memory, single scale and 6 scales + flip, projected to the 1449 VOC val
    images (decoding them on the loader's workers runs beside it)."""
    with config.applied({**r101(), 'NUM_WORKERS': 0}), \
            changed(torch.backends.cudnn, allow_tf32=False):
        net, data = eval_net_and_data(root, device)
        stages = network.stage_counts()
        for scales, flip in (((1.0,), False), ((0.5, 0.75, 1.0, 1.25, 1.5, 1.75), True)):
            with config.applied({'EVAL_SCALES': scales, 'EVAL_FLIP': flip}):
                seconds = timed(lambda: inference.validate(net, data, device, stages), 2,
                                sync_of(device)) / n
            row(f'inference {IMAGE[1]}x{IMAGE[0]} (validate), {len(scales)} scale(s)'
                f'{" + flip" * flip}',
                1 / seconds, 'images/s', note=f'1449 VOC val images: {1449 * seconds:.0f} s',
                mode='default')


def bench_sweep(root, device, n):
    """The EM-stage sweep STAGE_NUM_EVAL=(1,2,3,4,6,8) of EMANet-101 in one validate (the
    backbone once per image) against six validates, one per count; the scores must agree."""
    sync = sync_of(device)
    scores = {}

    def run(counts):  # seconds of one validate with STAGE_NUM_EVAL=counts; scores kept
        def score():
            with config.applied({'STAGE_NUM_EVAL': counts}):
                scores[counts] = inference.validate(net, data, device, network.stage_counts())
        return timed(score, 1, sync, warm_up=False)
    with config.applied({**r101(), 'NUM_WORKERS': 0}):
        net, data = eval_net_and_data(root, device)
        data.items = data.items[:n]
        run(3)  # one warm-up for all
        counts = (1, 2, 3, 4, 6, 8)
        one = run(counts)
        apart = sum(run(count) for count in counts)
        for count in counts:
            if scores[count][count]['confusion'] != scores[counts][count]['confusion']:
                raise RuntimeError(f'the sweep scored T={count} unlike a run of it alone')
    row(f'EM stage sweep (1,2,3,4,6,8), {n} images, {device.type}', n / one, 'images/s',
        'six runs', n / apart, note='the same scores as the six runs')


def bench_cuda(root, n, keep, device):
    """The CUDA rows (on the CPU for a dry run: see DRY); keep() writes the rows so far after
    each group (a run cut short by a time limit keeps what it measured)."""
    where = torch.cuda.get_device_name() if device.type == 'cuda' else 'the CPU, a dry run'
    rates = {kind: matmul_rate(kind, device, MATMUL_N) for kind in MATMULS}
    for kind, rate in rates.items():
        modes = ' and '.join(m for m in MODES if MODES[m]['ceiling'] == kind)
        row(f'matmul {MATMUL_N}^3, {kind}', rate / 1e12, 'TFLOP/s', mode=kind,
            note=f'the ceiling of the {modes} rows; {where}')
    keep()
    with config.applied(r101()):
        net = f'R{settings.N_LAYERS} OS{settings.STRIDE} {SIZE}'
    notes = {'fp32': 'the original\'s arithmetic (train.py AMP=False)',
             'tf32': 'TF32 convolutions and matmuls, NCHW (no train.py mode)',
             'bf16': 'bf16 autocast, NCHW (no train.py mode)',
             'default': 'train.py: bf16 + channels_last' + ' + compile' * settings.COMPILE}
    for batch in BATCHES:
        got = {mode: bench_train_step(batch, mode, device) for mode in MODES}
        base = got['fp32'] or (None,) * 5
        for mode, figures in got.items():
            if figures is None:
                continue
            speed, first, allocated, reserved, flops = figures

            def vs(i):  # against plain fp32's figure i
                return dict(baseline='plain fp32', baseline_value=base[i]) if mode != 'fp32' \
                    else {}
            ceiling = MODES[mode]['ceiling']
            row(f'train step {net}, batch {batch}, {mode}', speed, 'images/s', **vs(0),
                note=notes[mode], mode=mode)
            row(f'  first step, batch {batch}, {mode}', first, 's', **vs(1), mode=mode,
                note=f'cuDNN\'s search over {SEARCH_LIMIT} algorithms a shape')
            if allocated is not None:
                row(f'  peak memory allocated, batch {batch}, {mode}', allocated, 'GiB',
                    **vs(2), mode=mode)
                row(f'  peak memory reserved, batch {batch}, {mode}', reserved, 'GiB', **vs(3),
                    mode=mode)
            row(f'  model FLOP utilisation, batch {batch}, {mode}', flops / rates[ceiling],
                f'of {ceiling}', mode=mode,
                note=f'{flops / 1e12:.3g} TFLOP/s of the {ceiling} matmul rate')
        keep()
    bench_inference(root, n, device)
    keep()
    bench_sweep(root, device, n)

# ---------------------------------------------------------------------------- memory rows


def allocator_peaks(step):
    """(forward, backward and update) peaks, in bytes, of what the CPU allocator holds during the
    second of two calls of step() (a training step), above what it held at that call's start:
    torch's profiler records every allocation and free (profile_memory); the backward begins at
    the autograd engine's first function. The first call is profiled too, so that the frees of
    the second (the gradients of the first) are seen with what they free."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile, record_function
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
        with record_function('measured step'):
            step()
    events = list(prof.profiler.kineto_results.experimental_event_tree())
    allocations, backward = [], []
    while events:
        event = events.pop()
        if event.tag == _EventType.Allocation:
            allocations.append((event.start_time_ns, event.extra_fields.alloc_size))
        elif event.name == 'measured step':
            start, end = event.start_time_ns, event.end_time_ns
        elif event.name.startswith('autograd::engine::evaluate_function'):
            backward.append(event.start_time_ns)
        events.extend(event.children)
    turn = min(t for t in backward if t >= start)
    held, peaks = 0, [0, 0]
    for time_ns, size in sorted(a for a in allocations if start <= a[0] <= end):
        held += size
        peaks[time_ns >= turn] = max(peaks[time_ns >= turn], held)
    return tuple(peaks)


def projected_peak(peaks, batch):
    """The peak at `batch` of a line through the peaks measured at two batches ({batch:
    (forward, backward)}), phase by phase: the larger of the two phases' lines at `batch`."""
    (b1, p1), (b2, p2) = sorted(peaks.items())
    return max(p1[i] + (p2[i] - p1[i]) / (b2 - b1) * (batch - b1) for i in (0, 1))


def bench_memory_cpu(size=513, batches=(1, 2), repeats=3):
    """SAVE_MEMORY against the default step, measured the same way: EMANet-101 OS8's training
    step (network.train_step) on size x size crops at `batches` in float32 and in bf16 autocast
    (the dtypes of the GPU's default), its peak the model's state (weights, buffers, gradients,
    momentum) and batch plus the allocator's highest above them (allocator_peaks), projected to
    batch 16 phase by phase; and the float32 step's images/s at the larger batch, the two
    interleaved, median of `repeats`. The optimizer's rate is 0: every step the same work."""
    with config.applied({**R101, 'COMPILE': False}):
        torch.manual_seed(0)
        model = network.EMANet(21, 101).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=settings.LR_MOM,
                                    weight_decay=settings.WEIGHT_DECAY)
        data = {b: (inference.to_input(torch.randint(0, 256, (b, 3, size, size),
                                                     dtype=torch.uint8)),
                    torch.randint(0, 21, (b, size, size), dtype=torch.uint8)) for b in batches}

        def step(batch, save, amp=False):
            def run():
                with config.applied({'SAVE_MEMORY': save}), \
                        torch.autocast('cpu', torch.bfloat16, enabled=amp):
                    network.train_step(model, optimizer, *data[batch])
            return run
        peaks = {(amp, save): {b: allocator_peaks(step(b, save, amp)) for b in batches}
                 for amp in (False, True) for save in (False, True)}
        state = sum(t.nbytes for t in [*model.parameters(), *model.buffers()] + [
            p.grad for p in model.parameters() if p.grad is not None] + [
            v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)])
        big = max(batches)
        seconds = {save: [] for save in (False, True)}
        for save in seconds:
            step(big, save)()  # warm-up
        for _ in range(repeats):
            for save in seconds:
                seconds[save].append(timed(step(big, save), 1, warm_up=False))
    for amp in (False, True):
        for batch in (big, 16):
            size_of = {save: (state + sum(t.nbytes for t in data[big]) / big * batch + (
                max(peaks[amp, save][batch]) if batch in batches else
                projected_peak(peaks[amp, save], batch))) / 2 ** 30 for save in (False, True)}
            how = 'measured' if batch in batches else \
                f'projected from batches {", ".join(map(str, batches))}'
            row(f'peak memory R101 {size}, batch {batch}, {"bf16" if amp else "fp32"}',
                size_of[True], 'GiB', 'without SAVE_MEMORY', size_of[False],
                note=f'SAVE_MEMORY; {how}' + ', bf16 autocast as on GPUs' * amp)
    times = {save: statistics.median(seconds[save]) for save in seconds}
    row(f'train step R101 {size}, batch {big}, fp32', big / times[True], 'images/s',
        'without SAVE_MEMORY', big / times[False],
        note=f'SAVE_MEMORY: {times[True] / times[False]:.2f}x the step time')


def bench_memory_cuda(batch=16, steps=5):
    """SAVE_MEMORY against the default step on the GPU: the step train.py runs by default (bf16 +
    channels_last, see training_step) at batch 16 on 513x513 crops, its peak memory allocated
    and reserved (after two steps: not cuDNN's search) and images/s, without and with."""
    got = {}
    for save in (False, True):
        torch.cuda.empty_cache()  # what the previous row held
        try:
            with config.applied({'SAVE_MEMORY': save, 'COMPILE': False}), \
                    training_step(batch, 'default') as (step, _):
                for _ in range(2):
                    step()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                seconds = timed(step, steps, torch.cuda.synchronize, warm_up=False)
                got[save] = (batch / seconds, torch.cuda.max_memory_allocated() / 2 ** 30,
                             torch.cuda.max_memory_reserved() / 2 ** 30)
        except torch.cuda.OutOfMemoryError:
            print(f'train step batch {batch}, SAVE_MEMORY={save}: out of memory', flush=True)
            got[save] = None
    if got[True] is None:
        return
    base = got[False] or (None, None, None)
    for i, (what, unit) in enumerate((('train step', 'images/s'), ('  peak allocated', 'GiB'),
                                      ('  peak reserved', 'GiB'))):
        row(f'{what} R101 513, batch {batch}, default', got[True][i], unit,
            'without SAVE_MEMORY', base[i], note='SAVE_MEMORY' + ' (goal: 11 GB, 1.4x the time)'
            * (i == 0))


# ---------------------------------------------------------------------------- main


@scripts.command
def main(argv):
    rest = config.apply_overrides(argv, __doc__)
    cuda = torch.cuda.is_available()
    if rest == ['cost']:
        return print_cost()
    if rest not in ([], ['cpu'], ['cuda'], ['memory']) or rest == ['cuda'] and not (cuda or DRY):
        raise config.UserError(f'unexpected argument {config.short(" ".join(rest))!r}; bench.py '
                               f'takes cpu, cuda (on a GPU, or on the CPU with '
                               f'EMANET_DRY_RUN=1), memory or cost, and KEY=VALUE.')
    rows = rest[0] if rest else 'cuda' if cuda else 'cpu'
    # the settings as given, before any row changes them; the command of every row
    record = {**records.run_record(), 'command': shlex.join(['python', *sys.argv])}
    print(f'bench.py {rows} rows on {torch.get_num_threads()} CPU threads'
          f'{", " + torch.cuda.get_device_name() if cuda else ""}'
          f'{", a dry run of the CUDA rows on the CPU" if rows == "cuda" and DRY else ""}',
          flush=True)
    log_dir = files.folder('LOG_DIR')
    name = f'bench_{rows}.json'
    outputs.claim(log_dir, {name: None})
    with tempfile.TemporaryDirectory() as root:
        n = len(voc_like_folder(root, 2, IMAGE) if DRY and rows == 'cuda' else
                voc_like_folder(root))
        if rows == 'memory':
            bench_memory_cuda() if cuda else bench_memory_cpu()
        elif rows == 'cpu':
            bench_data(root, n)
            bench_emau(torch.device('cpu'), batch=int(os.environ.get('BENCH_EMAU_BATCH', 8)))
            bench_sweep(root, torch.device('cpu'), 2)
        else:
            device = torch.device('cuda' if cuda else 'cpu')
            bench_emau(device, batch=1 if DRY else 8)
            bench_cuda(root, n, lambda: records.write_record({**record, 'rows': ROWS}, log_dir,
                                                             name), device)
    print('written to', records.write_record({**record, 'rows': ROWS}, log_dir, name))


def print_cost():
    """The configured EMANet's parameters and multiply-accumulates at 513x513, by part."""
    table = network.cost()
    print(f'EMANet-{settings.N_LAYERS}, output stride {settings.STRIDE}, {settings.STEM} stem, '
          f'EMA {settings.EMA_CHANNELS} channels, K={settings.N_BASES}, '
          f'T={network.stage_counts()[0]}, 513x513 input')
    print(f'{"part":<16}{"params":>12}{"MACs":>12}')
    for name, (params, macs) in table.items():
        print(f'{name:<16}{params / 1e6:>11.2f}M{macs / 1e9:>11.2f}G')
    head = [table['fc0'][i] + table['emau'][i] for i in (0, 1)]
    print(f'{"fc0+emau":<16}{head[0] / 1e6:>+11.2f}M{head[1] / 1e9:>+11.2f}G'
          '   (the "+" columns of the paper\'s Table 1)')


if __name__ == '__main__':
    main(sys.argv[1:])
