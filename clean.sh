#!/bin/sh
# Remove what runs wrote, by name, and nothing else:
#   MODEL_DIR: latest.pth, final.pth, best.pth, step_<N>.pth, train.lock
#   LOG_DIR:   train.log, train-*.json, metrics.jsonl, events.out.tfevents.*, train.log.lock,
#              eval_*.json, eval_*_confusion.png, eval_*_pred/, eval_*_attention/, predict_*/,
#              bench.json
#   both:      the temporary files of killed writes (runs.temporary: <name>.tmp<pid>[.ext])
# plus the Python and pytest caches here. Other files stay (it says which). It refuses while a
# train.py holds the folders, and a LOG_DIR that holds the project, DATA_ROOT or the ImageNet
# weights (PRETRAINED).
# Usage, from any folder: sh clean.sh [MODEL_DIR=<dir>] [LOG_DIR=<dir>] (default: settings.py;
# relative paths are taken from this folder, as in settings.py)
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -B - "$@" <<'PYTHON'  # -B: import settings without writing a cache here
import fcntl, fnmatch, os, re, sys
import runs, settings

here = os.path.realpath('.')
given = dict(arg.partition('=')[::2] for arg in sys.argv[1:])
for key in given:
    if key not in ('LOG_DIR', 'MODEL_DIR'):
        sys.exit(f'clean.sh: {key!r} is not LOG_DIR=<dir> or MODEL_DIR=<dir>; nothing removed')
real = lambda p: os.path.realpath(os.path.join(here, os.path.expanduser(p)))  # noqa: E731
log_dir, model_dir = (real(given.get(k, getattr(settings, k))) for k in ('LOG_DIR', 'MODEL_DIR'))


def within(path, folder):
    return path == folder or path.startswith(folder.rstrip('/') + '/')


protected = {'the project': here, 'DATA_ROOT': real(settings.DATA_ROOT),
             'PRETRAINED (the ImageNet weights)': real(settings.PRETRAINED or '/nonexistent'),
             'your home folder': os.path.realpath(os.path.expanduser('~'))}
for what, path in protected.items():
    if within(path, log_dir) and (os.path.exists(path) or what == 'the project'):
        sys.exit(f'clean.sh: LOG_DIR={log_dir} holds {what} ({path}); give the run\'s own log '
                 f'folder as LOG_DIR=<dir>; nothing removed')
for folder, lock in ((model_dir, 'train.lock'), (log_dir, 'train.log.lock')):
    if os.path.isfile(os.path.join(folder, lock)):
        with open(os.path.join(folder, lock), 'a') as f:
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                sys.exit(f'clean.sh: a train.py is running in {folder}; stop it first (its '
                         f'checkpoints are in use); nothing removed')

def empty_ours(folder):
    """Remove the pictures (and archives) that eval.py and predict.py write below folder, then
    the folders left empty; True when folder itself went."""
    for top, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            if any(fnmatch.fnmatch(name, p) for p in ('*.png', '*.jpg', '*.tar.gz')) or \
                    runs.is_leftover(name):
                os.remove(os.path.join(top, name))
        if not os.listdir(top):
            os.rmdir(top)
    return not os.path.exists(folder)


OURS = {}  # folder: (file patterns, folder patterns); LOG_DIR may be MODEL_DIR
for folder, files, folders in (
        (model_dir, ['latest.pth', 'final.pth', 'best.pth', 'step_[0-9]*.pth', 'train.lock'], []),
        (log_dir, ['train.log', 'train-*.json', 'metrics.jsonl', 'events.out.tfevents.*',
                   'train.log.lock', 'eval_*.json', 'eval_*_confusion.png', 'bench.json'],
         ['eval_*_pred', 'eval_*_attention', 'predict_*'])):
    have = OURS.setdefault(folder, ([], []))
    have[0].extend(files)
    have[1].extend(folders)
for folder, (files, folders) in OURS.items():
    if not os.path.isdir(folder):
        continue
    removed, left = 0, []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        ours = any(fnmatch.fnmatch(name, p) for p in (folders if os.path.isdir(path) else files))
        ours = ours or not os.path.isdir(path) and runs.is_leftover(name)
        if ours and name.endswith('.pth') and name.startswith('step_'):
            ours = re.fullmatch(r'step_\d+\.pth', name) is not None
        if ours and os.path.isdir(path) and not os.path.islink(path):
            ours = empty_ours(path)  # a folder of pictures: only those go
            left += [] if ours else [name + '/ (files it did not write)']
        elif ours:
            os.remove(path)
        else:
            left.append(name)
        removed += ours
    kept = f'; left {len(left)} it did not write: {", ".join(left[:5])}' if left else ''
    kept += ' ...' if len(left) > 5 else ''
    print(f'clean.sh: removed {removed} from {folder}{kept}')
PYTHON
find . -name __pycache__ -type d -prune -exec rm -rf -- {} +
rm -rf .pytest_cache
exit 0
