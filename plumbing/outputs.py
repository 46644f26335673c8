"""Whose files are whose: the list of outputs each script writes into a folder (claimed before it
writes them, so that clean.sh removes those and nothing else, and no script writes over a file
it did not write), the name of our TensorBoard event files, and the locks that keep two
train.py runs out of one folder. Not here: writing the files (files.py)."""
import contextlib
import fcntl
import json
import os
import sys
import time

from plumbing import config, files

EVENTS = '.emanet'  # in the name of the TensorBoard event files that the scripts write

# The list of the files a script writes into a folder of its outputs (predictions, pictures,
# tables), written before the files.
OUTPUTS = 'emanet_outputs.json'


def claim(folder, outputs, key='LOG_DIR'):
    """Add `outputs` {file name below folder: the input it is made from, or None} to folder's
    list of outputs (made if needed), with which script of which process claimed them when;
    returns the list {file: input} as it was before. `key`: the setting or argument that chose
    the folder (for the sentence on a failed write)."""
    target = os.path.join(folder, OUTPUTS)
    with files.writing(target, key):
        os.makedirs(folder, exist_ok=True)
        lock = os.open(folder, os.O_RDONLY)  # scripts may claim in one folder at once
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = _read_outputs(folder)
            listed = dict(found.get('outputs', {}))
            runs = found.get('runs', []) + [{'script': os.path.basename(sys.argv[0]),
                                             'pid': os.getpid(), 'files': len(outputs),
                                             'time': time.strftime('%Y-%m-%dT%H:%M:%S')}]
            with files.atomic(target) as tmp, open(tmp, 'w') as f:
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


def claim_file(target, option):
    """Claim the single file `target` (given as `option`, like --out) before writing it: one
    sentence when a file of that name exists that no script of ours wrote there."""
    folder, name = os.path.split(os.path.abspath(target))
    if os.path.exists(target) and name not in claimed(folder):
        raise config.UserError(f'{option} {target} exists and was not written by this project\'s '
                               f'scripts, so it is left as it is; give a new file name.')
    claim(folder, {name: None}, option)

# ---------------------------------------------------------------------------- locks


HELD = []  # the lock files this process holds
LOCKS = {'MODEL_DIR': 'train.lock', 'LOG_DIR': 'train.log.lock'}  # what a running train.py holds


def try_lock(path):
    """The file `path` opened and locked by this process (the OS drops the lock when it dies,
    even by SIGKILL; forked workers do not inherit it), or None when another process holds it."""
    f = open(path, 'a')
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def lock(key, name):
    """Hold the lock file `name` in the folder of setting `key` for as long as this process
    lives, or say that another run holds it (clean.sh respects these locks; see
    release_locks)."""
    where = files.folder(key)
    f = try_lock(os.path.join(where, name))
    if f is None:
        raise config.UserError(f'another train.py is writing into {where}; wait for it, stop '
                               f'it, or pass another {key}.')
    HELD.append(f)
    return f


def release_locks():
    """Remove the lock files this process holds (at the end of a run, stopped or not)."""
    while HELD:
        f = HELD.pop()
        with contextlib.suppress(OSError):
            os.remove(f.name)
        f.close()
