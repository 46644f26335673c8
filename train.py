"""Train EMANet with the original recipe: `python train.py [KEY=VALUE ...]` on the CPU or a GPU,
`torchrun --nproc_per_node=4 train.py` on 4 GPUs (many nodes: torchrun --nnodes ...). A run
resumes from MODEL_DIR/latest.pth when it exists and ends with the same weights, bit for bit on
the CPU, as a run never interrupted: data order, augmentation and the random numbers of every
step follow from SEED and the step alone."""
import atexit
import datetime
import fcntl
import functools
import hashlib
import math
import os
import shlex
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import config
import dataset
import eval as evaluation
import network
import settings
import transforms

# Settings that define the model and the recipe: a run resumes from latest.pth only when they
# equal those stored in it (ITER_MAX too: the poly LR of every step depends on it; AMP changes
# the arithmetic). The others (paths, DATA_ROOT, PRETRAINED, NUM_WORKERS, ITER_SAVE, logging,
# validation and evaluation knobs, COMPILE) may change between a run and its resume.
RECIPE_KEYS = ('MEAN', 'STD', 'SCALES', 'CROP_SIZE', 'IGNORE_LABEL', 'TRAIN_SPLIT',
               'N_CLASSES', 'N_LAYERS', 'STRIDE', 'STEM', 'BN_MOM', 'EMA_CHANNELS', 'N_BASES',
               'EM_MOM', 'STAGE_NUM', 'BATCH_SIZE', 'ITER_MAX', 'LR_DECAY', 'LR', 'LR_MOM',
               'POLY_POWER', 'WEIGHT_DECAY', 'SEED', 'AMP')


# ---------------------------------------------------------------------------- recipe

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


def poly_lr(it):
    """LR * (1 - it / ITER_MAX) ^ POLY_POWER, updated every LR_DECAY iterations."""
    it -= it % settings.LR_DECAY
    return settings.LR * (1 - it / settings.ITER_MAX) ** settings.POLY_POWER


def set_lr(optimizer, it):
    for group in optimizer.param_groups:
        group['lr'] = poly_lr(it) * group['lr_mult']


def loss_fn(logits, label):
    """Per-pixel cross-entropy; ignored pixels count as 0 in the mean over H*W, then the batch."""
    loss = F.cross_entropy(logits.float(), label, ignore_index=settings.IGNORE_LABEL,
                           reduction='none')
    return loss.flatten(1).mean(1).mean()


# ---------------------------------------------------------------------------- sampling

def seed_of(*parts):
    """A 63-bit seed that depends on every part (no collisions between (1, 23) and (12, 3))."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], 'little') >> 1


@functools.lru_cache(maxsize=2)
def permutation(seed, epoch, n):
    generator = torch.Generator().manual_seed(seed_of('epoch', seed, epoch))
    return torch.randperm(n, generator=generator).tolist()


def sample(g, n):
    """Global sample g of the stream: epoch e = g // n, index e * n + perm_e[g % n]."""
    return g // n * n + permutation(settings.SEED, g // n, n)[g % n]


def step_indices(step, n, rank, world):
    """The dataset indices of `step` on `rank`: stream slice [s*B + r*b, s*B + (r+1)*b)."""
    b = settings.BATCH_SIZE // world
    first = step * settings.BATCH_SIZE + rank * b
    return [sample(g, n) for g in range(first, first + b)]


# ---------------------------------------------------------------------------- checks

def check_settings(world):
    s = config.resolved()
    bad = ([f'{k}={s[k]} must be at least 1' for k in
            ('BATCH_SIZE', 'ITER_MAX', 'ITER_SAVE', 'LR_DECAY', 'LOG_EVERY') if s[k] < 1] +
           [f'{k}={s[k]} must be 0 or more' for k in
            ('NUM_WORKERS', 'IMAGE_EVERY', 'VAL_EVERY') if s[k] < 0] +
           [f'{k}={s[k]} must be a finite number >= 0' for k in
            ('LR', 'LR_MOM', 'WEIGHT_DECAY', 'POLY_POWER') if not 0 <= s[k] < math.inf])
    if bad:
        raise config.UserError(f'{bad[0]}; set it in settings.py or pass it as KEY=VALUE.')
    if settings.BATCH_SIZE % world:
        fit = world * max(1, settings.BATCH_SIZE // world)
        raise config.UserError(f'BATCH_SIZE={settings.BATCH_SIZE} is the global batch and '
                               f'does not divide over {world} processes; pass a multiple of '
                               f'{world}, like BATCH_SIZE={fit}.')
    weights = config.path(settings.PRETRAINED)
    if settings.PRETRAINED and not os.path.isfile(weights):
        raise config.UserError(f'the ImageNet weights {weights} (PRETRAINED) do not exist; put '
                               f'the file there, or pass PRETRAINED= to train from scratch.')


def clean_command():
    """`sh clean.sh`, with the MODEL_DIR and LOG_DIR given on this command line."""
    given = [a for a in sys.argv[1:] if a.startswith(('MODEL_DIR=', 'LOG_DIR='))]
    return ' '.join(['sh clean.sh'] + [shlex.quote(a) for a in given])


def check_recipe(ckpt, target):
    """Stop when latest.pth was trained with other model- or recipe-defining settings."""
    if 'optimizer' not in ckpt or 'settings' not in ckpt:
        raise config.UserError(f'{target} holds weights only (not a train.py checkpoint), so '
                               f'training cannot resume from it; move it away or run '
                               f'`{clean_command()}` to start afresh.')
    saved, now = ckpt['settings'], config.resolved()
    differ = [k for k in RECIPE_KEYS if saved.get(k) != now[k]]
    if differ:
        diffs = ', '.join(f'{k}={saved.get(k)!r} (now {now[k]!r})' for k in differ)
        raise config.UserError(f'{target} was trained with {diffs}; change them back to '
                               f'resume, or run `{clean_command()}` to delete its checkpoints '
                               f'and logs and start afresh.')


def load_net(model, state, target):
    """Load a checkpoint's weights, or say in one sentence why they do not fit this network."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        why = ' '.join(str(e).split('\n', 1)[-1].split())[:300]
        raise config.UserError(f'the weights in {target} do not fit the network this code '
                               f'builds ({why}); train with the code that wrote them, or run '
                               f'`{clean_command()}` to start afresh.') from None


def diverged(what, target):
    kept = (f'the last good checkpoint {target} is kept' if os.path.exists(target) else
            'no checkpoint was written yet')
    return config.UserError(f'{what}, so training stopped; lower LR (now {settings.LR}) or '
                            f'check the data; {kept}.')


# ---------------------------------------------------------------------------- output

class Log:
    """Lines on stdout and in LOG_DIR/train.log, TensorBoard scalars and images; rank 0 only."""

    def __init__(self, rank, start):
        self.on, self.dir = rank == 0, writable('LOG_DIR') if rank == 0 else None
        if self.on:  # a resumed run hides what the killed one logged after its latest.pth
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(self.dir, purge_step=start + 1 if start else None)
            self.file = open(os.path.join(self.dir, 'train.log'), 'a')
            atexit.register(self.tb.close)  # also when an error ends the run

    def __call__(self, line):
        if self.on:
            print(line, flush=True)
            self.file.write(line + '\n')
            self.file.flush()

    def flush(self):
        if self.on:
            self.tb.flush()

    def scalars(self, step, values):
        for tag, value in values.items() if self.on else ():
            self.tb.add_scalar(tag, value, step)

    def panel(self, step, image, label, logits):
        """Input, ground truth and prediction of the batch's first image, side by side."""
        if self.on:
            pred = logits[0].argmax(0).cpu().numpy()
            row = [image[0].permute(1, 2, 0).numpy(), dataset.colorize(label[0].numpy()),
                   dataset.colorize(pred)]
            self.tb.add_image('train/input_truth_prediction', np.concatenate(row, 1), step,
                              dataformats='HWC')


def save(name, model, optimizer, step, rank, world):
    if rank != 0:
        return
    rng = {'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state_all()}
    ckpt = {'net': model.state_dict(), 'step': step, 'optimizer': optimizer.state_dict(),
            'rng': rng, 'settings': config.resolved(), 'world_size': world}
    config.save_atomic(ckpt, os.path.join(config.path(settings.MODEL_DIR), name))


def writable(key):
    """The folder of setting `key`, made if needed, or one sentence on why it cannot be."""
    folder = config.path(getattr(settings, key))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise config.UserError(f'{key} {folder} cannot be made ({e.strerror}); pass a folder '
                               f'you can write, like {key}=/tmp/emanet.') from None
    return folder


def hold_lock(rank):
    """Rank 0 locks MODEL_DIR/latest.pth.tmp.lock while it runs (the OS drops the lock when the
    process dies, even by SIGKILL; forked loader workers do not inherit it): one run per folder."""
    if rank != 0:
        return None
    folder = writable('MODEL_DIR')
    f = open(os.path.join(folder, 'latest.pth.tmp.lock'), 'a')
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise config.UserError(f'another train.py is writing into {folder}; wait for it, stop '
                               f'it, or pass another MODEL_DIR.') from None
    return f


def gather(value, world):
    values = [None] * world
    dist.all_gather_object(values, value)
    return values


def fingerprint(model):
    """sha256 of the weights and bases (not of BN statistics: without SyncBN they are local)."""
    digest = hashlib.sha256()
    for key, t in model.state_dict().items():
        if 'running_' not in key and 'num_batches' not in key:
            digest.update(t.detach().cpu().flatten().view(torch.uint8).numpy())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- training

def train(rank, world, device):
    cuda = device.type == 'cuda'
    train_set = dataset.TrainDataset(settings.TRAIN_SPLIT)
    val_set = dataset.ValDataset(settings.VAL_SPLIT) if settings.VAL_EVERY else None
    lock = hold_lock(rank)
    target = os.path.join(config.path(settings.MODEL_DIR), 'latest.pth')
    ckpt = config.load_checkpoint(target) if os.path.exists(target) else None
    if ckpt is not None:
        check_recipe(ckpt, target)
    start = ckpt['step'] if ckpt else 0
    starts = gather(start, world) if world > 1 else [start]
    if len(set(starts)) > 1:  # on many nodes MODEL_DIR must be one folder that all see
        raise config.UserError(f'the processes found different latest.pth files (steps '
                               f'{starts}); put MODEL_DIR on a shared folder.')

    log = Log(rank, start)
    devices = f'{world} x ' + (torch.cuda.get_device_name(device) if cuda else
                               f'cpu ({torch.get_num_threads()} threads each)')
    record = config.run_record(devices=devices, world_size=world, start_step=start)
    stamp = time.strftime('%Y%m%d-%H%M%S', time.gmtime())
    if rank == 0:
        config.write_record(record, log.dir, f'train-{stamp}-step{start}.json')
    log(f'git {record["git_sha"]}{" (dirty)" * bool(record["git_dirty"])}, devices {devices}, '
        + ', '.join(f'{k} {v}' for k, v in record['versions'].items()))
    log('settings: ' + ', '.join(f'{k}={v!r}' for k, v in record['settings'].items()))

    # model, optimizer, and the state of a run to resume
    torch.manual_seed(settings.SEED)
    model = network.EMANet(settings.N_CLASSES, settings.N_LAYERS)
    log(f'EMANet-{settings.N_LAYERS}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M '
        f'parameters')
    if ckpt:
        load_net(model, ckpt['net'], target)
        was = ckpt.get('world_size', world)
        log(f'resuming from {target} at step {start}' +
            (f' (written by {was} processes, now {world})' if was != world else ''))
    elif settings.PRETRAINED:
        n = network.load_imagenet(model, config.path(settings.PRETRAINED))
        log(f'loaded {n} ImageNet tensors from {config.path(settings.PRETRAINED)}')
    else:
        log('training from scratch (PRETRAINED is empty)')
    if world > 1 and cuda:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.SGD(param_groups(model), lr=settings.LR, momentum=settings.LR_MOM)
    if ckpt:
        optimizer.load_state_dict(ckpt['optimizer'])
        torch.set_rng_state(ckpt['rng']['torch'])  # each step reseeds anyway (see the loop)
    net = model
    if world > 1:  # every parameter that requires a gradient gets one (see EMAU.conv1)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if cuda else None,
                                                  find_unused_parameters=False)
    if settings.COMPILE and cuda:
        net = torch.compile(net)
    elif settings.COMPILE:
        log('COMPILE is for CUDA only; the CPU runs eagerly')

    # data: per-rank batch and workers; the sampler makes step s of rank r from (SEED, s, r)
    workers = settings.NUM_WORKERS // world + (rank < settings.NUM_WORKERS % world)
    batches = (step_indices(s, len(train_set), rank, world)
               for s in range(start, settings.ITER_MAX))
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=batches, num_workers=workers,
                                         pin_memory=cuda)

    net.train()
    step, every, t_start = start, max(1, settings.ITER_SAVE // 10), time.time()
    t_log = (t_start, start)
    for image, label in loader:
        torch.manual_seed(seed_of('step', settings.SEED, step, rank))  # dropout of this step
        set_lr(optimizer, step)
        x = transforms.normalize_batch(image.to(device, non_blocking=True), settings.MEAN,
                                       settings.STD)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with evaluation.autocast(device):  # bf16 on CUDA when AMP, as in evaluation
            logits = net(x)
        loss = loss_fn(logits, label.to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = loss.detach().clone()
        if world > 1:
            dist.all_reduce(value)
            value /= world
        value = value.item()
        if not math.isfinite(value):
            raise diverged(f'the loss became {value} at step {step + 1}', target)
        optimizer.step()
        step += 1

        # log, images, validation, checkpoints
        log.scalars(step, {'train/loss': value,
                           **{f'lr/{g["name"]}': g['lr'] for g in optimizer.param_groups}})
        if step % settings.LOG_EVERY == 0 or step == settings.ITER_MAX:
            now = time.time()
            speed = (step - t_log[1]) * settings.BATCH_SIZE / (now - t_log[0])
            eta = (now - t_start) / (step - start) * (settings.ITER_MAX - step)
            mem = f'{torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB' if cuda else '-'
            log(f'step {step}/{settings.ITER_MAX}  loss {value:.4f}  lr {poly_lr(step - 1):.3e}  '
                f'{speed:.1f} img/s  eta {datetime.timedelta(seconds=round(eta))}  '
                f'peak mem {mem}')
            log.scalars(step, {'train/images_per_s': speed})
            t_log = (now, step)
        if settings.IMAGE_EVERY and step % settings.IMAGE_EVERY == 0:
            log.panel(step, image, label, logits.detach().float())
        if settings.VAL_EVERY and (step % settings.VAL_EVERY == 0 or step == settings.ITER_MAX):
            scores = evaluation.validate(model, val_set, device)  # and back to train mode
            log(f'step {step}  val ' + '  '.join(f'{k} {100 * scores[k]:.2f}%'
                                                 for k in ('mIoU', 'pAcc', 'mAcc')))
            log.scalars(step, {**{f'val/{k}': scores[k] for k in ('mIoU', 'pAcc', 'mAcc')},
                               **{f'val_iou/{c}': v for c, v in scores['per_class'].items()}})
        if step % every == 0 or step % settings.ITER_SAVE == 0 or step == settings.ITER_MAX:
            if not all(torch.isfinite(t).all() for t in model.state_dict().values()):
                raise diverged(f'the weights became non-finite at step {step}', target)
            if step % settings.ITER_SAVE == 0:
                save(f'step_{step}.pth', model, optimizer, step, rank, world)
            save('latest.pth', model, optimizer, step, rank, world)
            log.flush()  # TensorBoard holds every step up to the checkpoint

    if world > 1:  # every rank must hold the same weights and bases, bit for bit
        same = len(set(gather(fingerprint(model), world))) == 1
        log(f'{world} processes hold the {"same" if same else "DIFFERENT"} weights and bases')
    save('final.pth', model, optimizer, step, rank, world)
    log(f'done: {settings.ITER_MAX} steps, {config.path(settings.MODEL_DIR)}/final.pth')
    if lock:
        os.remove(lock.name)


@config.main
def main(argv):
    rest = config.apply_overrides(argv)
    if rest:
        raise config.UserError(f'unexpected argument {rest[0]!r}; train.py takes only '
                               f'KEY=VALUE settings, like `python train.py BATCH_SIZE=8`.')
    rank, world, device = config.init_distributed()
    try:
        check_settings(world)
        train(rank, world, device)
    except KeyboardInterrupt:
        print(f'interrupted; the same command resumes from {config.path(settings.MODEL_DIR)}'
              f'/latest.pth when it was written', file=sys.stderr, flush=True)
        sys.exit(130)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == '__main__':
    main(sys.argv[1:])
