#!/bin/sh
# Serve LOG_DIR with TensorBoard on this machine only: sh tensorboard.sh [PORT] [HOST]
# (default 6006 on 127.0.0.1; pass HOST=0.0.0.0 explicitly to listen on every interface).
set -eu
cd "$(dirname "$0")"
port=${1:-6006}
host=${2:-127.0.0.1}
PY=${PYTHON:-python3}
log_dir=$("$PY" -c 'import os, settings
print(os.path.realpath(os.path.join(os.getcwd(), os.path.expanduser(settings.LOG_DIR))))')
echo "TensorBoard of $log_dir on http://$host:$port"
if [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; then
    echo "from your own computer: ssh -N -L $port:127.0.0.1:$port $(whoami)@$(hostname)" \
         "then open http://localhost:$port"
fi
if ! command -v tensorboard > /dev/null; then
    echo "tensorboard.sh: no tensorboard command here; pip install tensorboard" >&2
    exit 2
fi
exec tensorboard --logdir "$log_dir" --host "$host" --port "$port"
