#!/bin/sh
# Remove what this project's runs wrote into MODEL_DIR and LOG_DIR, and nothing else
# (plumbing/clean.py says what it removes and what it left), then the Python and pytest caches
# here.
# Usage, from any folder: sh clean.sh [MODEL_DIR=<dir>] [LOG_DIR=<dir>] (default: settings.py;
# relative paths are taken from this folder, as in settings.py)
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -B -m plumbing.clean "$@"  # -B: no bytecode cache written into the project while it cleans
rm -rf __pycache__ plumbing/__pycache__ tests/__pycache__ .pytest_cache  # this project's own, not a .venv's
