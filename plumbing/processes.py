"""The processes a script runs in: torchrun's set-up and end, the run's end said once for all of
its processes (a mistake, a stop, a process that died), train.py's own start of many processes
on one machine, the rank and world of this process, a value gathered from every process, the
device's memory running out at inference, and a pool of threads for work on many files. Not
here: what the processes compute, the sentences themselves (scripts.ending)."""
import concurrent.futures
import contextlib
import datetime
import json
import os
import re
import signal
import socket
import sys
import time
import uuid

import settings
from plumbing import config, scripts

# How long a process waits in a collective (all-reduce, gather) for the others before it stops
# with an error: a rank that died then ends the run instead of leaving the others hanging.
TIMEOUT = datetime.timedelta(minutes=10)
# How long a process that stops on a mistake waits for the first process to find the same one
# (then the first process says it as its own; a mistake that one process alone finds is said
# by the first process, naming the one that found it), and one that lost the others waits for
# them to say why they stopped (they close their connections before they say it).
SETTLE = 3.0


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
        scripts.MANY['end'] = Peers(*rank_world()).end
    return *rank_world(), device


class Peers:
    """The other processes of this run as this one sees them at its end, through torch.
    distributed's store (torchrun's, which outlives the processes): each notes its host and pid
    when it joins and how it ended when it ends, so that the run's end is said once: by the
    first process (rank 0), or, when it died, by the first that lives."""

    def __init__(self, rank, world):
        import torch.distributed as dist
        self.rank, self.world, self.host = rank, world, socket.gethostname()
        store = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']),
                              is_master=False, timeout=datetime.timedelta(seconds=10))
        attempt = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')  # torchrun's restarts
        self.store = dist.PrefixStore(f'emanet/{attempt}', store)
        self.store.set(f'pid/{rank}', f'{self.host} {os.getpid()}')

    def end(self, error, code, line, go_on):
        """(exit status, the line this process prints or None) for the run's end: `error`, and
        the status and line that scripts.ending gives it in one process ((None, None): a bug,
        whose traceback this process prints). Said once, by rank 0 (or the first process that
        lives when rank 0 died): a mistake that rank 0 finds too as its own, one that another
        process alone finds with that process's rank, then a bug (after its traceback) or a
        process that died without a word (killed, out of memory) with the rank and how to go
        on (`go_on`). The errors of torch.distributed that follow (a connection reset by the
        dead process) and the stop that torchrun then sends the others say nothing more."""
        for s in (signal.SIGINT, signal.SIGTERM):  # this process ends already (torchrun's stop)
            signal.signal(s, signal.SIG_IGN)
        lost = code is None and _peer_lost(error)
        kind = {2: 'mistake', 130: 'stop'}.get(code, 'lost' if lost else 'bug')
        first = (str(error).strip().splitlines() or [''])[0]
        mine = line or f'{type(error).__name__}: {config.cut(first, 200)}'
        try:
            self.store.set(f'end/{self.rank}', json.dumps({'kind': kind, 'line': mine}))
            if kind == 'bug':
                return None, None
            # what the others found is said over what this one saw of it: a mistake that rank 0
            # finds too is its own, and a process that lost the others (their connection closed
            # as they stopped) waits for what they say of why they stopped
            waits = [0] if kind == 'mistake' and self.rank else \
                [r for r in range(self.world) if r != self.rank] if kind == 'lost' else []
            until = time.time() + SETTLE
            while time.time() < until and any(self._note(r) is None and self._lives(r)
                                              for r in waits):
                time.sleep(0.05)
            notes = {r: self._note(r) for r in range(self.world)}
        except Exception:  # the store went with the process that held it
            if kind == 'bug' or not lost:
                return (code, line if self.rank == 0 else None) if code else (None, None)
            return 1, (f'error: rank {self.rank} of {self.world} lost touch with the others '
                       f'({mine}); {go_on or "run it again"}.')
        return self._sentence(notes, kind, code, line, mine, lost, go_on)

    def _sentence(self, notes, kind, code, line, mine, lost, go_on):
        """(exit status, line or None) of end, from every process's note (None: none written):
        the one process that speaks says the first mistake, else the bug, the dead process, the
        stop or the lost touch, in that order."""
        dead = [r for r in range(self.world) if notes[r] is None and not self._lives(r)]
        speaks = self.rank == min(set(range(self.world)) - set(dead))
        of = {k: [r for r, n in notes.items() if n and n['kind'] == k and r != self.rank]
              for k in ('mistake', 'bug', 'stop')}
        if kind == 'mistake':
            of['mistake'].insert(0, self.rank)
        if of['mistake']:
            if 0 in of['mistake']:  # rank 0's own, said by it
                return 2, line if self.rank == 0 else None
            rank = of['mistake'][0]
            return 2, f'error: rank {rank} of {self.world}: {notes[rank]["line"][7:]}' \
                if speaks else None
        go_on = go_on or 'run it again'
        if of['bug']:
            rank = of['bug'][0]
            why = f'rank {rank} of {self.world} stopped with {notes[rank]["line"]} (its ' \
                  f'traceback above)'
        elif dead:
            why = (f'rank {", ".join(map(str, dead))} of {self.world} ended without a word '
                   f'(killed by a signal, or by the system for want of memory)')
        elif lost and of['stop']:  # another process was stopped (Ctrl-C, SIGTERM)
            return 130, f'interrupted (rank {of["stop"][0]} of {self.world}); {go_on}' \
                if speaks else None
        elif lost:  # torch.distributed failed, though no process died
            why = f'the processes lost touch ({mine})'
        else:
            return code, line if speaks else None
        return 1, f'error: {why}, so the run stopped; {go_on}.' if speaks else None

    def _note(self, rank):
        key = f'end/{rank}'
        return json.loads(self.store.get(key)) if self.store.check([key]) else None

    def _lives(self, rank):
        """Whether process `rank` runs (a zombie does not); one on another machine is taken to."""
        key = f'pid/{rank}'
        if not self.store.check([key]):
            return True
        host, pid = self.store.get(key).decode().split()
        if host != self.host:
            return True
        try:
            with open(f'/proc/{pid}/stat') as f:
                return f.read().rsplit(')', 1)[1].split()[0] not in 'ZX'
        except (OSError, IndexError):
            return False


def _peer_lost(error):
    """Whether `error` is torch.distributed's when another process is gone or silent."""
    import torch.distributed as dist
    return isinstance(error, dist.DistError) or isinstance(error, RuntimeError) and re.search(
        r'by peer|remote worker|Broken pipe|Connection refused|Timed out', str(error)) is not None


def launch(script, argv, nproc):
    """Run `python script argv...` as `nproc` processes on this machine, as `torchrun
    --standalone --nproc_per_node=<nproc>` would (PyTorch's launcher: its rendezvous, store and
    environment; the cores shared out as OMP_NUM_THREADS unless it is set), and return their
    exit status: 2 when one of them stopped on a mistake, 130 when stopped by Ctrl-C or SIGTERM,
    1 for any other failure. The processes say how the run ended (see Peers), and nothing is
    added to it: no report of the failed processes as torchrun's."""
    import logging
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    logging.disable(logging.CRITICAL)  # its lines on what failed: the processes say it
    os.environ.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // nproc)))
    launch_config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                                 run_id=uuid.uuid4().hex, rdzv_backend='c10d',
                                 rdzv_endpoint='localhost:0', max_restarts=0)
    try:
        elastic_launch(launch_config, sys.executable)('-u', script, *argv)
    except ChildFailedError as e:
        codes = {f.exitcode for f in e.failures.values()}
        return 2 if 2 in codes else 130 if 130 in codes else 1
    except SignalException:
        return 130
    return 0


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
