"""What a run records of itself, where it writes its logs: its settings, git state and library
versions (a JSON record), and a training run's log lines, metrics and TensorBoard events. Not
here: checkpoints (checkpoints.py) and reading records back (compare.py)."""
import json
import os
import platform
import subprocess
import sys
import time

import settings
from plumbing import config, files, outputs, scripts

ORIGIN = 'experiment.json'  # in LOG_DIR: where `experiment.py new` made the folder from


def git_state():
    """(sha, dirty) of the project folder, or ('unknown', None) outside a git checkout."""
    def git(*args):
        return subprocess.run(['git', '-C', config.ROOT, *args], capture_output=True, text=True,
                              timeout=10)
    try:
        sha = git('rev-parse', 'HEAD')
        if sha.returncode != 0:
            return 'unknown', None
        dirty = git('status', '--porcelain', '--untracked-files=no').stdout.strip() != ''
        return sha.stdout.strip(), dirty
    except (OSError, subprocess.SubprocessError):
        return 'unknown', None


def versions():
    """The versions of everything that decides the numbers: Python, torch, CUDA, the libraries
    that decode and resize the data, and the CPU's vector instructions that torch's kernels use
    (the same code and versions give other low digits on an AVX2 and an AVX-512 machine)."""
    import torch  # imported here: compare.py reads records without it
    import cv2
    import numpy
    import PIL
    cuda = torch.cuda.is_available()
    return {'python': platform.python_version(), 'torch': torch.__version__,
            'numpy': numpy.__version__, 'opencv': cv2.__version__, 'pillow': PIL.__version__,
            'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version() if cuda else None,
            'cpu': torch.backends.cpu.get_cpu_capability()}


def run_record(**extra):
    """What a run records of itself: settings, git state, library versions, and `extra`."""
    sha, dirty = git_state()
    return {'settings': config.resolved(), 'git_sha': sha, 'git_dirty': dirty,
            'argv': sys.argv, 'host': platform.node(), 'versions': versions(), **extra}


def write_record(record, log_dir, name, key='LOG_DIR'):
    """Write `record` as JSON into log_dir/name, atomically; returns the path."""
    target = os.path.join(log_dir, name)
    with files.writing(target, key):
        os.makedirs(log_dir, exist_ok=True)
        with files.atomic(target) as tmp, open(tmp, 'w') as f:
            json.dump(record, f, indent=2, default=str)
    return target


class Log:
    """A training run's log, written by rank 0 only (the others' calls do nothing): lines on
    stdout and in LOG_DIR/train.log, one JSON object per log line and validation in
    LOG_DIR/metrics.jsonl (what compare.py reads), TensorBoard scalars and images in event files
    named after the run (`run`: see outputs.new_run). A resumed run (start > 0) hides in
    TensorBoard what a killed one logged after its latest.pth."""

    def __init__(self, rank, start, session, run='0'):
        self.on, self.dir, self.session = rank == 0, config.path(settings.LOG_DIR), session
        self.t0 = time.time()
        self.appended = set()  # the files this run has appended to
        if self.on:
            from tensorboardX import SummaryWriter
            with scripts.uninterrupted():  # (its writer thread and queue: see uninterrupted)
                self.tb = SummaryWriter(self.dir, purge_step=start + 1 if start else None,
                                        filename_suffix=f'{outputs.EVENTS}{os.getpid()}.{run}')

    def __call__(self, line):
        if self.on:
            print(line, flush=True)
            self._append('train.log', line)

    def metrics(self, **values):
        if self.on:
            values.update(session=self.session, elapsed=round(time.time() - self.t0, 3))
            self._append('metrics.jsonl', json.dumps(values))

    def _append(self, name, line):
        target = os.path.join(self.dir, name)
        with files.writing(target, 'LOG_DIR'), open(target, 'a+b') as f:
            if name not in self.appended:  # a killed write may have left half a line
                f.seek(0, os.SEEK_END)
                if f.tell() and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b'\n':
                    f.write(b'\n')
                self.appended.add(name)
            f.write(line.encode() + b'\n')

    def scalars(self, step, values):
        with scripts.uninterrupted():
            for tag, value in values.items() if self.on else ():
                self.tb.add_scalar(tag, value, step)

    def image(self, step, tag, picture):
        if self.on:
            with scripts.uninterrupted():
                self.tb.add_image(tag, picture, step, dataformats='HWC')

    def flush(self):
        if self.on:
            with scripts.uninterrupted(), files.writing(f'the TensorBoard events in {self.dir}',
                                                       'LOG_DIR'):
                self.tb.flush()

    def close(self):
        """Close the TensorBoard writer (again: nothing). A disk that refuses its last events
        (full, read-only) loses them; the sentence is that of the write that failed first, and
        tensorboardX's own handler at the process's exit finds nothing left to write."""
        if self.on and self.tb is not None:
            tb, self.tb = self.tb, None
            with scripts.uninterrupted():
                try:
                    tb.close()
                except OSError:  # its close stops at the failed flush: the rest of it
                    for writer in tb.all_writers.values():
                        events = writer.event_writer
                        events._worker.stop()
                        events._event_queue.close()
                        events._closed = True
