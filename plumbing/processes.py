"""The processes a script runs in: torchrun's set-up and end, the rank and world of this process,
a value gathered from every process, the device's memory running out at inference, and a pool
of threads for work on many files. Not here: what the processes compute."""
import concurrent.futures
import contextlib
import datetime
import os

import settings
from plumbing import config

# How long a process waits in a collective (all-reduce, gather) for the others before it stops
# with an error: a rank that died then ends the run instead of leaving the others hanging.
TIMEOUT = datetime.timedelta(minutes=10)


def init_distributed():
    """(rank, world_size, device): torchrun's environment when present, else one process.
    NCCL on CUDA (bound to this process's GPU, chosen by LOCAL_RANK), gloo on the CPU; on CUDA
    float32 without TF32."""
    import torch
    import torch.distributed as dist
    world = int(os.environ.get('WORLD_SIZE', '1'))
    local = int(os.environ.get('LOCAL_RANK', '0'))
    if torch.cuda.is_available():
        device = torch.device('cuda', local)
        torch.cuda.set_device(device)
        # float32 is float32 (AMP=False: the original's arithmetic): PyTorch's default lets
        # cuDNN's convolutions round to TF32; matmuls it keeps in float32, and so do we
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    else:
        device = torch.device('cpu')
    if world > 1 and not dist.is_initialized():
        cuda = device.type == 'cuda'
        dist.init_process_group('nccl' if cuda else 'gloo', timeout=TIMEOUT,
                                device_id=device if cuda else None)
    return *rank_world(), device


def rank_world():
    """(rank, world size) of this process: (0, 1) outside torch.distributed."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(value, world):
    """[value of rank 0, value of rank 1, ...] on every process (any picklable value)."""
    import torch.distributed as dist
    values = [None] * world
    dist.all_gather_object(values, value)
    return values


def end_distributed():
    """Leave torch.distributed, when in it (the end of every script that may run under torchrun)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def fits(name, size, scale):
    """Inside, the inference of image `name` at `scale` (`size` (h, w) pixels) running out of
    the device's memory becomes one sentence with the settings that make it fit."""
    import torch
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not isinstance(e, torch.OutOfMemoryError) and 'allocate' not in str(e):
            raise
        fix = 'pass EVAL_MODE=slide (windows of SLIDE_CROP pixels)' if settings.EVAL_MODE == \
            'whole' else 'pass a smaller SLIDE_CROP'
        raise config.UserError(f'{name} at scale {scale} ({size[1]}x{size[0]} pixels) does not '
                               f'fit in memory; {fix}, or fewer or smaller EVAL_SCALES.') from None


def parallel(fn, jobs, workers=None, desc=None):
    """[fn(job) for job in jobs], in order, on `workers` threads (default: every core), with a
    progress bar named `desc`. Threads, not processes: the work here (decoding and encoding
    images, reading files) releases the GIL, and no process is forked after torch has started
    its threads (unsafe) or started afresh without the KEY=VALUE overrides (forkserver, spawn)."""
    from tqdm import tqdm
    jobs = list(jobs)
    n = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=len(jobs), desc=desc, unit='file', disable=desc is None or not jobs)
    with bar, concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()  # the first error stops the rest
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [future.result() for future in futures]
