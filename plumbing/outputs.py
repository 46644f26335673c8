"""Whose files are whose: the list of outputs each script writes into a folder (claimed before it
writes them, so that clean.sh removes those and nothing else, and no script writes over a file
it did not write), a training run's identity (in its checkpoints, its TensorBoard event files'
names and LOG_DIR's list, with its MODEL_DIR: who owns a file is the run that wrote it, and a
folder's logs are one run's), the name of our TensorBoard event files, and the locks that keep
two train.py runs out of one folder. Not here: writing the files (files.py)."""
import contextlib
import fcntl
import json
import os
import re
import sys
import time
import uuid

from plumbing import config, files

EVENTS = '.emanet'  # in the name of the TensorBoard event files that the scripts write
# The end of the name of a training run's event files: .emanet<pid>.<run>
RUN_EVENTS = re.compile(rf'{re.escape(EVENTS)}\d+\.([0-9a-f]+)$')

# The list of the files a script writes into a folder of its outputs (predictions, pictures,
# tables), written before the files.
OUTPUTS = 'emanet_outputs.json'


def new_run():
    """The identity of a new training run (a resumed run keeps its checkpoint's)."""
    return uuid.uuid4().hex[:12]


def claim(folder, outputs, key='LOG_DIR', run=None, **about):
    """Add `outputs` {file name below folder: the input it is made from, or None} to folder's
    list of outputs (made if needed), with which script of which process claimed them when, and
    `about` it; returns the list {file: input} as it was before. `key`: the setting or argument
    that chose the folder (for the sentences). With `run` (a training run's identity) the files
    are that run's, and one sentence refuses them when the folder holds another run's logs."""
    target = os.path.join(folder, OUTPUTS)
    with files.writing(target, key):
        os.makedirs(folder, exist_ok=True)
        lock = os.open(folder, os.O_RDONLY)  # scripts may claim in one folder at once
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = _read_outputs(folder)
            listed = dict(found.get('outputs', {}))
            owners = dict(found.get('owners', {}))
            if run:
                _refuse_another_run(folder, found, run, outputs, key)
                owners.update(dict.fromkeys(outputs, run))
            runs = found.get('runs', []) + [{'script': os.path.basename(sys.argv[0]),
                                             'pid': os.getpid(), 'files': len(outputs),
                                             'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
                                             **({'run': run} if run else {}), **about}]
            with files.atomic(target) as tmp, open(tmp, 'w') as f:
                json.dump({'outputs': {**listed, **outputs}, 'runs': runs,
                           **({'owners': owners} if owners else {})}, f, indent=1)
        finally:
            os.close(lock)  # and the lock with it
    return listed


def _refuse_another_run(folder, found, run, outputs, key):
    """One sentence when `folder` holds a file of `outputs`, or TensorBoard events, that another
    training run wrote (by its identity: those of runs before identities belong to none)."""
    owners = found.get('owners', {})
    names = sorted(os.listdir(folder))
    theirs = [(n, owners[n]) for n in outputs if owners.get(n) not in (None, run) and
              os.path.exists(os.path.join(folder, n))]
    theirs += [(n, m[1]) for n in names if (m := RUN_EVENTS.search(n)) and m[1] != run]
    if theirs:
        name, other = theirs[0]
        where = next((f', MODEL_DIR {r["model_dir"]}' for r in found.get('runs', []) if
                      r.get('run') == other and r.get('model_dir')), '')
        raise config.UserError(f'{key} {folder} holds {name} of another training run (run '
                               f'{other}{where}), with whose logs this run\'s would mix; pass '
                               f'another {key}.')


def runs(folder, model_dir):
    """(the identities of the training runs that folder's list names as writing into
    `model_dir`, the names of the checkpoints of before identities that a resumed run took as
    its own there)."""
    entries = [r for r in _read_outputs(folder).get('runs', []) if isinstance(r, dict) and
               r.get('run') and os.path.realpath(str(r.get('model_dir'))) ==
               os.path.realpath(model_dir)]
    return {r['run'] for r in entries}, {n for r in entries for n in r.get('adopted', [])}


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
        isinstance(found.get('runs', []), list) and isinstance(found.get('owners', {}), dict)
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
