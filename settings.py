# Every knob of an experiment, as a plain constant. Copy the folder per experiment, edit
# this file (or pass KEY=VALUE to any script) and compare experiments with `diff -r`.
# Relative paths are taken from this folder, wherever the scripts are run from.

# ---- Data
DATA_ROOT = '/path/to/VOC2012'  # VOC 2012 folder prepared by `python prepare.py voc ...`
MEAN = (0.485, 0.456, 0.406)  # ImageNet RGB mean, images scaled to [0, 1]
STD = (0.229, 0.224, 0.225)  # ImageNet RGB standard deviation
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # random training scales
CROP_SIZE = 513  # side of the square training crop, or (height, width): (512, 1024)
IGNORE_LABEL = 255  # label value that the loss and the scores ignore
TRAIN_SPLIT = 'trainaug'  # list in ImageSets/Segmentation used for training
VAL_SPLIT = 'val'  # list in ImageSets/Segmentation used for evaluation

# ---- Model
N_CLASSES = 21  # classes, background included
N_LAYERS = 101  # ResNet depth: 18, 34, 50, 101 or 152
STRIDE = 8  # output stride of the backbone: 8 or 16
STEM = 'deep'  # 'deep' (three 3x3 convs, the original's) or 'torchvision' (one 7x7 conv)
BN_MOM = 3e-4  # BatchNorm momentum, PyTorch convention
EMA_CHANNELS = 512  # channels of fc0 and the EM unit (256 is the paper's light variant)
N_BASES = 64  # K, the number of bases
EM_MOM = 0.9  # momentum of the bases' moving average
STAGE_NUM = 3  # EM stages in training
STAGE_NUM_EVAL = 0  # EM stages in evaluation (0 = STAGE_NUM); a tuple (1, 2, 3, 6) sweeps
PRETRAINED = './models/resnet101-2a57e44d.pth'  # ImageNet weights; '' trains from scratch
INIT_FROM = ''  # a checkpoint to fine-tune from (weights and bases; new optimizer and schedule)

# ---- Training
BATCH_SIZE = 16  # global batch, split over all processes
ITER_MAX = 30000  # training iterations
ITER_SAVE = 2000  # step_<N>.pth every ITER_SAVE iterations, latest.pth ten times as often
LR_DECAY = 10  # the poly learning rate is updated every LR_DECAY iterations
LR = 9e-3  # base learning rate (biases use twice this)
LR_MOM = 0.9  # SGD momentum
POLY_POWER = 0.9  # exponent of the poly schedule
WEIGHT_DECAY = 1e-4  # weight decay of the conv weights
LOSS = 'ce'  # 'ce' (the original's cross-entropy) or 'ohem' (online hard example mining)
OHEM_THRESH = 0.7  # 'ohem': pixels whose true-class probability is below this are kept
OHEM_MIN_KEPT = 100000  # 'ohem': at least this many pixels kept per image
AUX_WEIGHT = 0.0  # loss weight of an auxiliary FCN head on layer3 (0: none, the original's)
SEED = 0  # seed of weights, sampling and augmentation
NUM_WORKERS = 16  # data loading processes in all, split over the training processes
AMP = True  # bf16 autocast on CUDA (the EM loop always runs in float32)
COMPILE = False  # torch.compile the network (its gradients checked against eager at start)
SAVE_MEMORY = False  # recompute the backbone's activations in the backward: same step, less memory
LOG_EVERY = 20  # iterations between log lines
IMAGE_EVERY = 500  # iterations between TensorBoard image panels (0 = never)
VAL_EVERY = 0  # iterations between validations during training (0 = never)

# ---- Evaluation
EVAL_SCALES = (1.0,)  # inference scales; (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) for multi-scale
EVAL_FLIP = False  # also average the prediction of the mirrored image
EVAL_MODE = 'whole'  # 'whole' image at once (the original's), or 'slide' windows for large images
SLIDE_CROP = 513  # 'slide': side of the square window
SLIDE_STEP = 342  # 'slide': step between windows (less than SLIDE_CROP: they overlap)
SAVE_PRED = False  # write one palette PNG per val image beside the scores in LOG_DIR
ATTN_IMAGES = 4  # val images (the first ones) whose bases' attention maps are drawn

# ---- Output
LOG_DIR = './logdir'  # run records, TensorBoard events, scores
MODEL_DIR = './models'  # checkpoints (ImageNet weights live here too)
