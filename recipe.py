"""The original's training recipe, as functions of the settings: the three parameter groups, the
poly learning rate, the loss (its cross-entropy, or online hard example mining), and the order
of the data: which images each step of each process takes, from SEED and the step alone. Not
here: the loop that applies it (train.py)."""
import functools
import hashlib

import torch
import torch.nn as nn
import torch.nn.functional as F

import config
import settings

# The settings that define the model and the recipe: a run resumes from latest.pth only when they
# equal those stored in it (ITER_MAX too: the poly LR of every step depends on it; AMP changes
# the arithmetic). The others (paths, DATA_ROOT, PRETRAINED, INIT_FROM, NUM_WORKERS, ITER_SAVE,
# logging, validation and evaluation knobs, COMPILE) may change between a run and its resume.
KEYS = ('MEAN', 'STD', 'SCALES', 'CROP_SIZE', 'IGNORE_LABEL', 'TRAIN_SPLIT', 'N_CLASSES',
        'N_LAYERS', 'STRIDE', 'STEM', 'BN_MOM', 'EMA_CHANNELS', 'N_BASES', 'EM_MOM', 'STAGE_NUM',
        'BATCH_SIZE', 'ITER_MAX', 'LR_DECAY', 'LR', 'LR_MOM', 'POLY_POWER', 'WEIGHT_DECAY', 'LOSS',
        'OHEM_THRESH', 'OHEM_MIN_KEPT', 'SEED', 'AMP')
# ---------------------------------------------------------------------------- recipe

def check_resume(ckpt, target, fix):
    """Stop, ending with `fix`, when checkpoint `target` cannot continue this recipe: weights
    only, or trained with other KEYS (those an older checkpoint does not hold are not compared)."""
    if 'optimizer' not in ckpt or 'settings' not in ckpt:
        raise config.UserError(f'{target} holds weights only (not a train.py checkpoint), so '
                               f'training cannot resume from it; move it away or {fix}.')
    saved, now = ckpt['settings'], config.resolved()
    same = {'CROP_SIZE': config.crop_size}
    differ = [k for k in KEYS if k in saved and
              same.get(k, lambda v: v)(saved[k]) != same.get(k, lambda v: v)(now[k])]
    if differ:
        diffs = ', '.join(f'{k}={config.short(saved[k])} (now {config.short(now[k])})'
                          for k in differ)
        on = ' (to train on from it: INIT_FROM=<it> with another MODEL_DIR)' * (
            'ITER_MAX' in differ)
        raise config.UserError(f'{target} was trained with {diffs}; change them back to '
                               f'resume{on}, or {fix}.')


def param_groups(net):
    """The original's three groups: conv weights (decay), BN weights (no decay), biases (2x LR)."""
    conv, bn, bias = [], [], []
    for name, module in net.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if pname == 'bias':
                bias.append(p)
            elif isinstance(module, nn.modules.conv._ConvNd):
                conv.append(p)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                bn.append(p)
            else:
                raise TypeError(f'parameter {name}.{pname} fits none of the three groups')
    return [dict(params=conv, name='conv_weight', lr_mult=1, weight_decay=settings.WEIGHT_DECAY),
            dict(params=bn, name='bn_weight', lr_mult=1, weight_decay=0.0),
            dict(params=bias, name='bias', lr_mult=2, weight_decay=0.0)]


def poly_lr(i):
    """The base rate of iteration i, counted from 1 as the original counts: it sets the rate
    LR * (1 - i / ITER_MAX) ^ POLY_POWER before every iteration i that is a multiple of LR_DECAY
    and keeps it in between (the first LR_DECAY - 1 iterations train at LR)."""
    i -= i % settings.LR_DECAY
    return settings.LR * (1 - i / settings.ITER_MAX) ** settings.POLY_POWER


def set_lr(optimizer, i):
    """Every group's rate for iteration i (counted from 1): poly_lr(i) times its multiplier."""
    for group in optimizer.param_groups:
        group['lr'] = poly_lr(i) * group['lr_mult']


def loss_fn(logits, label):
    """The original's per-pixel cross-entropy: ignored pixels count as 0 in the mean over H*W,
    then over the batch. With LOSS='ohem', the mean over the hard pixels only (`hard_pixels`)."""
    label = label.long()
    loss = F.cross_entropy(logits.float(), label, ignore_index=settings.IGNORE_LABEL,
                           reduction='none')                                       # (B, H, W)
    if settings.LOSS == 'ohem':
        keep = hard_pixels(logits, label)
        return (loss * keep).sum() / keep.sum().clamp(min=1)
    return loss.flatten(1).mean(1).mean()


def hard_pixels(logits, label):
    """Online hard example mining: the labelled pixels whose probability of their true class is
    at most OHEM_THRESH, or, when fewer, the OHEM_MIN_KEPT per image of the lowest probability
    (the threshold rises to the last one's); every labelled pixel when there are fewer still."""
    with torch.no_grad():
        valid = label != settings.IGNORE_LABEL
        prob = F.softmax(logits.float(), dim=1).gather(1, (label * valid)[:, None])[:, 0]
        prob = prob.masked_fill(~valid, 2.0)                  # never among the lowest
        k = min(settings.OHEM_MIN_KEPT * label.shape[0], prob.numel())
        thresh = torch.tensor(settings.OHEM_THRESH, device=prob.device)
        if k > 0:                                             # no host sync: all on the device
            thresh = prob.flatten().kthvalue(k).values.clamp(min=settings.OHEM_THRESH)
        return valid & (prob <= thresh)


# ---------------------------------------------------------------------------- sampling

def seed_of(*parts):
    """A 63-bit seed that depends on every part (no collisions between (1, 23) and (12, 3))."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], 'little') >> 1


@functools.lru_cache(maxsize=2)
def permutation(seed, epoch, n):
    generator = torch.Generator().manual_seed(seed_of('epoch', seed, epoch))
    return torch.randperm(n, generator=generator).tolist()


def step_indices(step, n, rank, world):
    """The dataset indices that 0-based `step` takes on `rank`, as the original's loader orders
    them (shuffled anew every epoch, the last incomplete batch dropped), from SEED and the step
    alone: epoch e = step // (n // BATCH_SIZE) orders the n images by permutation(SEED, e, n)
    and cuts n // BATCH_SIZE global batches from it; rank r takes the r-th BATCH_SIZE / world of
    its batch. Index e * n + i is image i of epoch e (TrainDataset draws its augmentation
    from both)."""
    epoch, k = divmod(step, n // settings.BATCH_SIZE)
    b = settings.BATCH_SIZE // world
    first = k * settings.BATCH_SIZE + rank * b
    order = permutation(settings.SEED, epoch, n)
    return [epoch * n + order[j] for j in range(first, first + b)]
