#!/bin/sh
# Remove what runs produce: the files train.py writes in MODEL_DIR (latest.pth, final.pth,
# step_<N>.pth, their *.tmp* leftovers incl. the run's lock latest.pth.tmp.lock), everything
# in LOG_DIR, and the Python/pytest caches. ImageNet weights and other files in MODEL_DIR stay.
# Usage, from any folder: sh clean.sh [MODEL_DIR=<dir>] [LOG_DIR=<dir>] (default: settings.py)
set -eu
cd "$(dirname "$0")"
here=$(pwd -P)
PY=${PYTHON:-python3}
dirs=$("$PY" - "$@" <<'PYTHON'
import os, sys
import settings
given = dict(arg.partition('=')[::2] for arg in sys.argv[1:])
for key in given:
    if key not in ('LOG_DIR', 'MODEL_DIR'):
        sys.exit(f'clean.sh: {key!r} is not LOG_DIR=<dir> or MODEL_DIR=<dir>; nothing removed')
for key in ('LOG_DIR', 'MODEL_DIR'):
    d = os.path.expanduser(given.get(key, getattr(settings, key)))
    print(os.path.realpath(os.path.join(os.getcwd(), d)))
PYTHON
)
log_dir=$(echo "$dirs" | sed -n 1p)
model_dir=$(echo "$dirs" | sed -n 2p)

case "$here/" in
    "$log_dir"/*) echo "clean.sh: LOG_DIR=$log_dir holds the project; refusing to empty it" >&2
                  exit 2 ;;
esac
if [ "$log_dir" = / ] || [ "$log_dir" = "$(cd ~ && pwd -P)" ]; then
    echo "clean.sh: LOG_DIR=$log_dir is not a run folder; refusing to empty it" >&2
    exit 2
fi

if [ -d "$model_dir" ]; then
    for f in "$model_dir"/latest.pth* "$model_dir"/final.pth* \
             "$model_dir"/step_[0-9]*.pth*; do
        case "$f" in
            *.pth|*.pth.tmp*)
                if [ -f "$f" ]; then rm -f -- "$f"; echo "removed $f"; fi ;;
        esac
    done
fi
if [ -d "$log_dir" ]; then
    find "$log_dir" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
    echo "emptied $log_dir"
fi
find . -name __pycache__ -type d -prune -exec rm -rf -- {} +
rm -rf .pytest_cache
exit 0
