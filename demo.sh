#!/bin/sh
# The toy demo, end to end on the CPU: make the toy data, train a small EMANet from scratch with
# train.py, score it with eval.py. Same code paths as VOC; the only differences from the VOC
# recipe are these settings (a ResNet-18 without ImageNet weights, so BN statistics must move:
# BN_MOM=0.1; 57-pixel crops that hold each 48-56 px toy image whole; few steps, a larger LR).
# eval.py is given only what it reads: the checkpoint holds the network's settings.
# Usage, from any folder: sh demo.sh    (again: resumes or re-scores; sh clean.sh + rm -r toy/)
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
DATA="DATA_ROOT=./toy/data LOG_DIR=./toy/logdir NUM_WORKERS=2"
RECIPE="N_CLASSES=5 N_LAYERS=18 PRETRAINED= BN_MOM=0.1 EMA_CHANNELS=64 N_BASES=16
        CROP_SIZE=57 SCALES=(0.75,1.0,1.25) BATCH_SIZE=8 LR=0.04 ITER_MAX=750 ITER_SAVE=750
        LOG_EVERY=50 IMAGE_EVERY=150 MODEL_DIR=./toy/models"
[ -f toy/data/classes.txt ] || $PY toy.py toy/data
start=$(date +%s)
$PY train.py $DATA $RECIPE
$PY eval.py toy/models/final.pth $DATA
echo "demo: $(( $(date +%s) - start )) s for training and evaluation"
