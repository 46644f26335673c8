"""Remove what this project's runs wrote into MODEL_DIR and LOG_DIR, and nothing else: the command
behind clean.sh.

    sh clean.sh [MODEL_DIR=<dir>] [LOG_DIR=<dir>]   # default: settings.py's

MODEL_DIR: the checkpoints of its own training runs (latest.pth, final.pth, best.pth,
step_<N>.pth written by the run of its latest.pth or by a run that LOG_DIR's list outputs.OUTPUTS
names as writing there; where there is none, those train.py wrote before runs had an identity,
told apart from other files of those names by what they hold) and its lock file. A checkpoint
of another run (a copy, a backup, a parent for INIT_FROM) stays. LOG_DIR: every file
that train.py, eval.py, predict.py, compare.py and bench.py listed as theirs before writing it
(the list outputs.OUTPUTS in each folder of outputs), and their TensorBoard event files. In
both, the temporary files of writes that were killed. Every other file stays, and it says which. It
refuses while a train.py runs in either folder, and a folder that holds the project, your home
folder, DATA_ROOT or (LOG_DIR) the ImageNet weights. Not here: what runs write (the scripts,
records.py, outputs.py).
"""
import fnmatch
import os
import sys

from plumbing import checkpoints, config, files, outputs, scripts  # first: settings.py checked
import settings


@scripts.command
def main(argv):
    if any(a in ('-h', '--help') for a in argv):
        return print(__doc__.strip())
    for arg in argv:
        key = arg.partition('=')[0]
        if key not in ('MODEL_DIR', 'LOG_DIR') or '=' not in arg:
            raise config.UserError(f'{config.short(key)!r} is not LOG_DIR=<dir> or '
                                   f'MODEL_DIR=<dir>; nothing removed.')
    config.apply_overrides(argv)
    folders = {key: os.path.realpath(config.path(getattr(settings, key)))
               for key in ('MODEL_DIR', 'LOG_DIR')}
    for key, folder in folders.items():
        refuse_a_folder_of_others(key, folder)
        refuse_while_a_run_holds(folder)
    own = model_dir_runs(folders['MODEL_DIR'], folders['LOG_DIR'])  # before LOG_DIR's list goes
    for folder in dict.fromkeys(folders.values()):
        if os.path.isdir(folder):
            removed, left = clean(folder, own)
            kept = f'; left {len(left)} it did not write: {", ".join(left[:5])}' if left else ''
            print(f'clean.sh: removed {removed} from {folder}{kept}{" ..." * (len(left) > 5)}')


def refuse_a_folder_of_others(key, folder):
    """One sentence when `folder` (MODEL_DIR or LOG_DIR) is, or holds, the project, the home
    folder, DATA_ROOT or (LOG_DIR) the ImageNet weights: not the folder of a run's outputs."""
    real = os.path.realpath
    protected = {'the project': config.ROOT, 'your home folder': os.path.expanduser('~'),
                 'DATA_ROOT': config.path(settings.DATA_ROOT)}
    if key == 'LOG_DIR' and settings.PRETRAINED:
        protected['PRETRAINED (the ImageNet weights)'] = config.path(settings.PRETRAINED)
    for what, path in protected.items():
        if files.inside(real(path), folder) is not None and (
                os.path.exists(path) or what == 'the project'):
            raise config.UserError(f'{key}={folder} holds {what} ({real(path)}); give the '
                                   f'run\'s own folder as {key}=<dir>; nothing removed.')


def refuse_while_a_run_holds(folder):
    """One sentence when a train.py holds `folder` (its lock; see outputs.lock)."""
    for lock in outputs.LOCKS.values():
        if os.path.isfile(os.path.join(folder, lock)):
            f = outputs.try_lock(os.path.join(folder, lock))
            if f is None:
                raise config.UserError(f'a train.py is running in {folder}; stop it first '
                                       f'(its checkpoints are in use); nothing removed.')
            f.close()


def model_dir_runs(model_dir, log_dir):
    """(the identities of MODEL_DIR's own runs, the names of the checkpoints of before
    identities that they took as their own): the run of its latest.pth (the run a MODEL_DIR
    holds, which the same command resumes) and those LOG_DIR's list names as writing there."""
    runs, adopted = outputs.runs(log_dir, model_dir)
    latest = os.path.join(model_dir, 'latest.pth')
    return runs | ({checkpoints.written_by(latest) or ''} - {''}), adopted


def clean(folder, own):
    """Remove what runs wrote in `folder` (see the module's docstring), the checkpoints of the
    runs `own` (see model_dir_runs); returns (how many files went, the names of what stays,
    folders with '/')."""
    removed = remove_claimed(folder)
    left = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            if os.path.isfile(os.path.join(path, outputs.OUTPUTS)):
                removed += remove_claimed(path)
                if not os.listdir(path):
                    os.rmdir(path)
                    continue
            left.append(name + '/')
        elif ours(folder, name, own):
            os.remove(path)
            removed += 1
        else:
            left.append(name)
    return removed, left


def ours(folder, name, own):
    """Whether file `name` of `folder` is one that runs write without listing it (see
    outputs.claim): a checkpoint of one of MODEL_DIR's runs (`own`: see model_dir_runs) or, when
    it has none of today's, one of before identities; a lock,
    a TensorBoard event file of ours, a leftover of a killed write."""
    if checkpoints.NAMES.fullmatch(name):
        run, (runs, adopted) = checkpoints.written_by(os.path.join(folder, name)), own
        return run is not None and (run in runs or run == '' and (not runs or name in adopted))
    return name in outputs.LOCKS.values() or files.is_leftover(name) or fnmatch.fnmatch(
        name, f'events.out.tfevents.*{outputs.EVENTS}*')


def remove_claimed(folder):
    """Remove the files that scripts listed as theirs in `folder` (outputs.claimed), the folders
    they leave empty, then the list itself; returns how many files went."""
    listed = outputs.claimed(folder)
    removed = 0
    for name in listed:
        path = os.path.normpath(os.path.join(folder, name))
        if files.inside(path, folder) not in (None, '.') and os.path.isfile(path) and \
                not os.path.islink(path):
            os.remove(path)
            removed += 1
            parent = os.path.dirname(path)
            while files.inside(parent, folder) not in (None, '.') and not os.listdir(parent):
                os.rmdir(parent)
                parent = os.path.dirname(parent)
    if os.path.isfile(os.path.join(folder, outputs.OUTPUTS)):
        os.remove(os.path.join(folder, outputs.OUTPUTS))
    return removed


if __name__ == '__main__':
    main(sys.argv[1:])
