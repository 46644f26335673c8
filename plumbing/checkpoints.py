"""Checkpoints: written so that a kill or a full disk never leaves half a file, read back with
every mistake said in one sentence and their weights checked to be finite, told apart from other
files of their names, and fingerprinted. Not here: what goes into one (train.py) and loading one
into a network (infer.py, network.py)."""
import collections
import hashlib
import os
import pickle
import re
import shlex
import zipfile

import settings
from plumbing import config, files

NAMES = re.compile(r'(latest|final|best|step_\d+)\.pth')  # what train.py writes into MODEL_DIR


def save_atomic(obj, target, key='MODEL_DIR'):
    """torch.save through a temporary file and a rename: a kill or a full disk never leaves
    half a file at `target`, and the file there before stays as it was."""
    import torch
    with files.writing(target, key):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with files.atomic(target) as tmp:
            torch.save(obj, tmp)
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())


def load_checkpoint(target):
    """A checkpoint as a dict (tensors on the CPU), its weights checked to be finite; a raw state
    dict becomes {'net': it}. Every mistake (no file, a folder, empty, foreign) one sentence."""
    import torch
    if os.path.isdir(target):
        raise config.UserError(f'checkpoint {target} is a folder; give a .pth file, like '
                               f'{os.path.join(target, "final.pth")}.')
    if not os.path.isfile(target):
        raise config.UserError(f'checkpoint {target} does not exist; train first or give the path '
                               f'of an existing .pth file.')
    if os.path.getsize(target) == 0:
        raise config.UserError(f'checkpoint {target} is empty (0 bytes: a copy or a save that did '
                               f'not finish); delete it or give another file.')
    try:
        ckpt = torch.load(target, map_location='cpu', weights_only=True)
    except Exception as e:  # a truncated, foreign or non-torch file
        why = re.sub(r'\x1b\[[0-9;]*m', '', (str(e).strip().splitlines() or [''])[0])
        raise config.UserError(f'checkpoint {target} cannot be read ({type(e).__name__}: '
                               f'{config.cut(why, 160)}); it is not a complete torch '
                               f'checkpoint: give a .pth written by train.py or the original '
                               f'code.') from None
    if not isinstance(ckpt, dict):
        raise config.UserError(f'checkpoint {target} holds a {type(ckpt).__name__}, not a dict; '
                               f'give a file written by train.py or by the original code.')
    if 'net' not in ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        ckpt = {'net': ckpt}
    kinds = {'net': dict, 'step': int, 'settings': dict, 'optimizer': dict, 'classes': list,
             'palette': list, 'best': dict}  # what train.py writes, as it writes it
    for key, kind in kinds.items():
        if (key in ckpt or key == 'net') and not isinstance(ckpt.get(key), kind) or \
                key == 'palette' and key in ckpt and len(ckpt[key]) != 768:
            raise config.UserError(f'checkpoint {target} holds a malformed {key!r} (not a '
                                   f'{kind.__name__} as train.py writes it: a hand-edited file?); '
                                   f'give a file written by train.py or by the original code.')
    bad = first_non_finite(ckpt['net'])
    if bad is not None:  # it would score or train silently wrong
        raise config.UserError(f'checkpoint {target} holds non-finite values (nan or inf) in '
                               f'{bad!r}; it cannot be used, so give an earlier checkpoint.')
    return ckpt


def latest():
    """MODEL_DIR/latest.pth (see load_checkpoint) to resume from, or None for a new run; one
    sentence when MODEL_DIR holds an earlier run's checkpoints without it, which a new run would
    write over; a broken one names the step checkpoint to take instead."""
    folder = config.path(settings.MODEL_DIR)
    found = sorted(f for f in os.listdir(folder) if NAMES.fullmatch(f)) \
        if os.path.isdir(folder) else []
    steps = sorted((f for f in found if f.startswith('step_')), key=lambda f: int(f[5:-4]))
    if found and 'latest.pth' not in found:
        raise config.UserError(f'MODEL_DIR {folder} holds {", ".join(found[:3])} of an earlier '
                               f'run but no latest.pth to resume from, and a new run would write '
                               f'over them (INIT_FROM may be one: keep it); pass another '
                               f'MODEL_DIR, or run `{clean_command()}` to remove them.')
    try:
        return load_checkpoint(os.path.join(folder, 'latest.pth')) if found else None
    except config.UserError as e:
        if not steps:
            raise
        raise config.UserError(f'{str(e)[:-1]}; or copy {steps[-1]} over it to resume from '
                               f'there.') from None


def clean_command():
    """The clean.sh command that removes this run's checkpoints and logs (for messages)."""
    return ' '.join(['sh clean.sh'] + [shlex.quote(f'{key}={config.path(getattr(settings, key))}')
                                       for key in ('MODEL_DIR', 'LOG_DIR')])


def checkpoint_id(target):
    """<file stem>-<8 hex digits of its absolute path, size and time>: the same for one file,
    different for another file of the same name (a/final.pth, b/final.pth) or a rewritten one."""
    st = os.stat(target)
    key = f'{os.path.abspath(target)}:{st.st_size}:{st.st_mtime_ns}'
    stem = os.path.splitext(os.path.basename(target))[0]
    return f'{stem}-{hashlib.sha256(key.encode()).hexdigest()[:8]}'


def first_non_finite(state):
    """The first key of a state dict whose floating-point tensor holds nan or inf, or None."""
    import torch
    for key, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
            return key
    return None


def fingerprint(state):
    """sha256 of a state dict's weights and bases (not of BatchNorm statistics: without
    SyncBatchNorm every process keeps its own)."""
    import torch
    digest = hashlib.sha256()
    for key, t in state.items():
        if 'running_' not in key and 'num_batches' not in key:
            digest.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy())
    return digest.hexdigest()


def is_checkpoint_of_train(target):
    """Whether file `target` is a checkpoint that train.py wrote (its keys 'net', 'step',
    'optimizer' and 'settings'), read without torch and without loading its tensors."""
    class Keys(pickle.Unpickler):  # every object but dicts a placeholder: nothing runs
        def find_class(self, module, name):
            if (module, name) == ('collections', 'OrderedDict'):
                return collections.OrderedDict
            return lambda *args, **kwargs: None

        def persistent_load(self, pid):
            return None
    try:
        with zipfile.ZipFile(target) as archive:
            name = next(n for n in archive.namelist() if n.endswith('/data.pkl'))
            with archive.open(name) as f:
                top = Keys(f).load()
    except Exception:  # not a zip, no data.pkl, a foreign pickle: not ours
        return False
    return isinstance(top, dict) and {'net', 'step', 'optimizer', 'settings'} <= set(top)
