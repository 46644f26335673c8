"""What a run leaves behind, written so that nothing is lost: its record (settings, git state,
library versions), its log lines, metrics and TensorBoard events, every file written atomically,
a failed write as one sentence, the list of the outputs each script writes into a folder, and
the locks that keep two runs out of one folder. Not here: checkpoints (checkpoints.py)."""
import contextlib
import errno
import fcntl
import json
import math
import os
import platform
import re
import subprocess
import sys
import time


import config
import settings
from config import UserError, path, resolved

# ---------------------------------------------------------------------------- records

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
    return {'settings': resolved(), 'git_sha': sha, 'git_dirty': dirty,
            'argv': sys.argv, 'host': platform.node(), 'versions': versions(), **extra}


def write_record(record, log_dir, name, key='LOG_DIR'):
    """Write `record` as JSON into log_dir/name, atomically; returns the path."""
    target = os.path.join(log_dir, name)
    with writing(target, key):
        os.makedirs(log_dir, exist_ok=True)
        with atomic(target) as tmp, open(tmp, 'w') as f:
            json.dump(record, f, indent=2, default=str)
    return target


# ---------------------------------------------------------------------------- files


def folder(key):
    """The folder that setting `key` names, made if needed and checked to be writable, or one
    sentence on why it cannot be."""
    target = path(getattr(settings, key))
    probe = os.path.join(target, f'.write-test.{os.getpid()}')
    try:
        os.makedirs(target, exist_ok=True)
        open(probe, 'w').close()
        os.remove(probe)
    except OSError as e:
        raise UserError(f'{key} {target} cannot be made or written ({e.strerror}); pass a folder '
                        f'you can write, like {key}=/tmp/emanet.') from None
    return target


LEFTOVER = re.compile(r'\.tmp(\d+)(\.\w+)?$')  # the end of a temporary name: .tmp<pid>[.ext]


def temporary(target, suffix=''):
    """The temporary name beside `target` that this process writes before a rename onto it:
    <target>.tmp<pid><suffix> (`suffix` keeps an extension a writer reads the format from)."""
    return f'{target}.tmp{os.getpid()}{suffix}'


def is_leftover(name):
    """Whether `name` is a temporary file (see `temporary`) that a process no longer running
    left when it was killed (a running process's may still be written)."""
    m = LEFTOVER.search(name)
    return m is not None and not _running(int(m[1]))


def remove_leftovers(folder):
    """Remove the leftovers (see `is_leftover`) in `folder`; returns how many went."""
    removed = 0
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if is_leftover(name) and (os.path.isfile(path) or os.path.islink(path)):
            os.remove(path)
            removed += 1
    return removed


def _running(pid):
    """Whether process `pid` runs on this machine (then its temporary file may be in use)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        return True
    return True


@contextlib.contextmanager
def atomic(target, suffix=''):
    """A temporary path beside `target` to write (see `temporary`): renamed onto `target` when
    the block ends without error, removed otherwise, so a kill never leaves half a file at
    `target` and the file there before stays as it was until the rename."""
    tmp = temporary(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def writing(target, key):
    """A failed write of `target` (a full disk, a read-only folder) as one sentence naming it
    and the setting or argument `key` that chose the folder."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and 'write' not in str(e) and 'pos' not in str(e):
            raise  # not a failed write (torch.save says "file write failed", "unexpected pos")
        code = e.errno if isinstance(e, OSError) else errno.ENOSPC  # torch: a short write
        if code in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f'its folder is not writable; pass another {key}'
        elif code in (errno.ENOSPC, errno.EDQUOT):
            fix = f'the disk is full; make room or pass another {key}'
        else:
            fix = f'pass another {key}'
        why = e.strerror if isinstance(e, OSError) and e.strerror else 'the write failed'
        raise UserError(f'{target} could not be written ({why}); {fix}.') from None


def write_text(path, lines):
    """Write lines of text atomically, only when the file does not hold them already."""
    text = ''.join(f'{line}\n' for line in lines)
    if os.path.isfile(path):
        with open(path, encoding='utf-8', errors='replace') as f:
            if f.read() == text:
                return
    with atomic(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)


def unique_name(folder, stem, ext=''):
    """stem+ext, or stem-2+ext, stem-3+ext, ...: the first name not yet in `folder`."""
    name, n = stem + ext, 1
    while os.path.exists(os.path.join(folder, name)):
        n += 1
        name = f'{stem}-{n}{ext}'
    return name


# ---------------------------------------------------------------------------- outputs

EVENTS = '.emanet'  # in the name of the TensorBoard event files that the scripts write

# The list of the files a script writes into a folder of its outputs (predictions, pictures),
# written before the files: clean.py removes those and nothing else, and predict.py never
# writes over a file it did not write.
OUTPUTS = 'emanet_outputs.json'


def claim(folder, outputs, key='LOG_DIR'):
    """Add `outputs` {file name below folder: the input it is made from, or None} to folder's
    list of outputs (made if needed), with which script of which process claimed them when;
    returns the list {file: input} as it was before. `key`: the setting or argument that chose
    the folder (for the sentence on a failed write)."""
    target = os.path.join(folder, OUTPUTS)
    with writing(target, key):
        os.makedirs(folder, exist_ok=True)
        lock = os.open(folder, os.O_RDONLY)  # scripts may claim in one folder at once
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = _read_outputs(folder)
            listed = dict(found.get('outputs', {}))
            runs = found.get('runs', []) + [{'script': os.path.basename(sys.argv[0]),
                                             'pid': os.getpid(), 'files': len(outputs),
                                             'time': time.strftime('%Y-%m-%dT%H:%M:%S')}]
            with atomic(target) as tmp, open(tmp, 'w') as f:
                json.dump({'outputs': {**listed, **outputs}, 'runs': runs}, f, indent=1)
        finally:
            os.close(lock)  # and the lock with it
    return listed


def claimed(folder):
    """{file name below folder: its input or None} of what scripts wrote there (see claim)."""
    return dict(_read_outputs(folder).get('outputs', {}))


def _read_outputs(folder):
    try:
        with open(os.path.join(folder, OUTPUTS)) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return {}
    ok = isinstance(found, dict) and isinstance(found.get('outputs', {}), dict) and \
        isinstance(found.get('runs', []), list)
    return found if ok else {}

# ---------------------------------------------------------------------------- a run's log


HELD = []  # the lock files this process holds
LOCKS = {'MODEL_DIR': 'train.lock', 'LOG_DIR': 'train.log.lock'}  # what a running train.py holds


def lock(key, name):
    """Lock the file `name` in the folder of setting `key` for as long as this process lives
    (the OS drops the lock when it dies, even by SIGKILL; forked workers do not inherit it), or
    say that another run holds it. clean.sh respects these locks; see release_locks."""
    where = folder(key)
    f = open(os.path.join(where, name), 'a')
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UserError(f'another train.py is writing into {where}; wait for it, stop it, or '
                        f'pass another {key}.') from None
    HELD.append(f)
    return f


def release_locks():
    """Remove the lock files this process holds (at the end of a run, stopped or not)."""
    while HELD:
        f = HELD.pop()
        with contextlib.suppress(OSError):
            os.remove(f.name)
        f.close()


class Log:
    """A training run's log, on rank 0 only: lines on stdout and in LOG_DIR/train.log, one JSON
    object per log line and validation in LOG_DIR/metrics.jsonl (what compare.py reads), and
    TensorBoard scalars and images. Losses stay on the device in `pending` until a log line or
    a checkpoint asks for them (`losses`): one host-device sync then, not one per step."""

    def __init__(self, rank, start, session):
        self.on, self.dir, self.session = rank == 0, path(settings.LOG_DIR), session
        self.pending, self.t0, self.start = [], time.time(), start
        self.init_from = None  # the checkpoint the run started from (INIT_FROM)
        self.fastest, self.hinted = 0.0, False  # images/s so far; a slow-down said once
        self.appended = set()  # the files this run has appended to
        self.start_clock()
        if self.on:  # a resumed run hides what the killed one logged after its latest.pth
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(self.dir, purge_step=start + 1 if start else None,
                                    filename_suffix=f'{EVENTS}{os.getpid()}')

    def start_clock(self):
        """From now on, speeds and times to go are measured (`began`, and `last` log line)."""
        self.began = self.last = (time.time(), self.start)

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
        with writing(target, 'LOG_DIR'), open(target, 'a+b') as f:
            if name not in self.appended:  # a killed write may have left half a line
                f.seek(0, os.SEEK_END)
                if f.tell() and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b'\n':
                    f.write(b'\n')
                self.appended.add(name)
            f.write(line.encode() + b'\n')

    def losses(self):
        """(their mean or None, the first non-finite (step, value) or None) of the pending
        (step, loss tensor) pairs, emptied; the finite ones before it go to TensorBoard."""
        import torch
        if not self.pending:
            return None, None
        steps, values = zip(*self.pending)
        values, self.pending = torch.stack(values).cpu().tolist(), []
        for step, value in zip(steps, values):
            if not math.isfinite(value):
                return None, (step, value)
            self.scalars(step, {'train/loss': value})
        return sum(values) / len(values), None

    def scalars(self, step, values):
        for tag, value in values.items() if self.on else ():
            self.tb.add_scalar(tag, value, step)

    def image(self, step, tag, picture):
        if self.on:
            self.tb.add_image(tag, picture, step, dataformats='HWC')

    def flush(self):
        if self.on:
            self.tb.flush()

    def close(self):
        if self.on:
            self.tb.close()
