#!/bin/sh
# Serve LOG_DIR with TensorBoard on this machine only: sh tensorboard.sh [PORT] [HOST]
# (default 6006 on 127.0.0.1; `sh tensorboard.sh 6006 0.0.0.0` listens on every interface).
set -eu
cd "$(dirname "$0")"
port=${1:-6006}
host=${2:-127.0.0.1}
PY=${PYTHON:-python3}
case "$port" in
    ''|*[!0-9]*) echo "tensorboard.sh: PORT $port is not a number; give one like 6006" >&2; exit 2;;
esac
case "$host" in
    *=*) echo "tensorboard.sh: HOST $host is not a host; give one like 0.0.0.0" >&2; exit 2;;
esac
if [ "$port" -lt 1024 ] || [ "$port" -gt 65535 ]; then
    echo "tensorboard.sh: PORT $port is not in 1024-65535; give one like 6006" >&2
    exit 2
fi
log_dir=$("$PY" -B -c 'import os, settings
from plumbing import config
print(os.path.realpath(config.path(settings.LOG_DIR)))') || exit 2
echo "TensorBoard of $log_dir on http://$host:$port"
if [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; then
    echo "from your own computer: ssh -N -L $port:127.0.0.1:$port $(whoami)@$(hostname)" \
         "then open http://localhost:$port"
fi
if command -v tensorboard > /dev/null; then
    exec tensorboard --logdir "$log_dir" --host "$host" --port "$port"
fi
if ! "$PY" -c 'import tensorboard' 2> /dev/null; then
    echo "tensorboard.sh: no tensorboard here; pip install tensorboard" >&2
    exit 2
fi
exec "$PY" -m tensorboard.main --logdir "$log_dir" --host "$host" --port "$port"
