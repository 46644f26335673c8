"""The plumbing around settings.py: KEY=VALUE overrides, the resolved settings, run records,
and the one way a script reports a mistake the user can fix."""
import ast
import contextlib
import difflib
import functools
import json
import os
import platform
import re
import subprocess
import sys

import torch

import settings

ROOT = os.path.dirname(os.path.abspath(__file__))


class UserError(Exception):
    """A mistake the user can fix (a setting, a path, a file): printed as one sentence."""


def main(fn):
    """Run a script's main(): a UserError ends it with its sentence and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            message = str(e)
            if 'Original Traceback' in message:  # raised in a DataLoader worker: the sentence
                message = message.strip().splitlines()[-1].split('UserError: ', 1)[-1]
            print(f'error: {message}', file=sys.stderr, flush=True)
            sys.exit(2)
    return wrapper


# ---------------------------------------------------------------------------- settings

def resolved():
    """All settings as a plain dict (upper-case names only), as they are now."""
    return {k: getattr(settings, k) for k in dir(settings) if k.isupper()}


def path(p):
    """A path from settings, relative ones taken from the project folder."""
    return os.path.normpath(os.path.join(ROOT, os.path.expanduser(p)))


def _kind(v):
    return {bool: 'True or False', int: 'an int', float: 'a number', str: 'a string',
            tuple: 'a tuple'}[type(v)]


def _convert(key, default, value):
    """`value` as the type of `default`, or None when it does not fit."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else None
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else None
    if isinstance(default, str):
        return value if isinstance(value, str) else None
    if isinstance(default, tuple):
        if not isinstance(value, (tuple, list)):
            return None
        if not default:
            return tuple(value)
        items = [_convert(key, default[0], v) for v in value]
        return None if any(v is None for v in items) else tuple(items)
    raise TypeError(f'settings.{key} has an unsupported type {type(default).__name__}')


def parse(key, text):
    """The value of `KEY=text`, checked against the type of the default in settings.py."""
    names = [k for k in resolved()]
    if key not in names:
        close = difflib.get_close_matches(key.upper(), names, n=3, cutoff=0.5)
        hint = f' (closest: {", ".join(close)})' if close else ''
        raise UserError(f'unknown setting {key!r}{hint}; the settings are the upper-case '
                        f'names in settings.py.')
    default = getattr(settings, key)
    if isinstance(default, bool) and text in ('true', 'false'):
        text = text.capitalize()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if not isinstance(default, str):
            raise UserError(f'{key}={text!r} is not a Python literal; {key} takes '
                            f'{_kind(default)}, like {key}={default!r}.') from None
        value = text  # a bare word where a string is expected: DATA_ROOT=/data/voc
    if isinstance(default, str) and not isinstance(value, str):
        value = text  # DATA_ROOT=2012 is the folder '2012'
    converted = _convert(key, default, value)
    if converted is None:
        raise UserError(f'{key}={text!r} has the wrong type; {key} takes {_kind(default)}, '
                        f'like {key}={default!r}.')
    return converted


def apply_overrides(argv):
    """Apply every KEY=VALUE of argv to settings; return the other arguments, in order."""
    rest = []
    for arg in argv:
        key, eq, text = arg.partition('=')
        if eq and re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', key):
            setattr(settings, key, parse(key, text))
        else:
            rest.append(arg)
    return rest


# ---------------------------------------------------------------------------- run records

def git_state():
    """(sha, dirty) of the project folder, or ('unknown', None) outside a git checkout."""
    def git(*args):
        return subprocess.run(['git', '-C', ROOT, *args], capture_output=True, text=True,
                              timeout=10)
    try:
        sha = git('rev-parse', 'HEAD')
        if sha.returncode != 0:
            return 'unknown', None
        dirty = git('status', '--porcelain', '--untracked-files=no').stdout.strip() != ''
        return sha.stdout.strip(), dirty
    except (OSError, subprocess.SubprocessError):
        return 'unknown', None


def run_record(**extra):
    """What a run records of itself: settings, git state, library versions, and `extra`."""
    import numpy
    sha, dirty = git_state()
    versions = {'python': platform.python_version(), 'torch': torch.__version__,
                'numpy': numpy.__version__, 'cuda': torch.version.cuda,
                'cudnn': torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    return {'settings': resolved(), 'git_sha': sha, 'git_dirty': dirty,
            'argv': sys.argv, 'host': platform.node(), 'versions': versions, **extra}


def write_record(record, log_dir, name):
    """Write `record` as JSON into log_dir/name; returns the path."""
    os.makedirs(log_dir, exist_ok=True)
    target = os.path.join(log_dir, name)
    with open(target, 'w') as f:
        json.dump(record, f, indent=2, default=str)
    return target


# ---------------------------------------------------------------------------- checkpoints

@contextlib.contextmanager
def atomic(target, suffix=''):
    """A temporary path beside `target` to write: renamed onto `target` when the block ends
    without error, removed otherwise, so a kill never leaves half a file at `target`.
    `suffix` keeps an extension that a writer reads the format from ('.png')."""
    tmp = f'{target}.tmp{os.getpid()}{suffix}'
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(obj, target):
    """torch.save through a temporary file and a rename: a kill never leaves half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with atomic(target) as tmp:
        torch.save(obj, tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())


def load_checkpoint(target):
    """A checkpoint as a dict (tensors on the CPU); a raw state dict becomes {'net': it}."""
    if not os.path.isfile(target):
        raise UserError(f'checkpoint {target} does not exist; train first or give the path '
                        f'of an existing .pth file.')
    try:
        ckpt = torch.load(target, map_location='cpu', weights_only=True)
    except Exception as e:  # a truncated, foreign or non-torch file
        raise UserError(f'checkpoint {target} cannot be read ({type(e).__name__}: '
                        f'{str(e).splitlines()[0][:200]}); it is not a complete torch '
                        f'checkpoint, so delete it or give another file.') from None
    if not isinstance(ckpt, dict):
        raise UserError(f'checkpoint {target} holds a {type(ckpt).__name__}, not a dict; '
                        f'give a file written by train.py or by the original code.')
    if 'net' not in ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        ckpt = {'net': ckpt}
    return ckpt


# ---------------------------------------------------------------------------- processes

def init_distributed():
    """(rank, world_size, device): torchrun's environment when present, else one process.
    NCCL on CUDA, gloo on the CPU; one GPU per process, chosen by LOCAL_RANK."""
    import torch.distributed as dist
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local = int(os.environ.get('LOCAL_RANK', '0'))
    if torch.cuda.is_available():
        device = torch.device('cuda', local)
        torch.cuda.set_device(device)
    else:
        device = torch.device('cpu')
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return rank, world, device
