"""Train EMANet with the original recipe: `python train.py [KEY=VALUE ...]` on the CPU or a GPU,
`torchrun --nproc_per_node=4 train.py` on 4 GPUs (many nodes: torchrun --nnodes ...).

A run resumes from MODEL_DIR/latest.pth when it exists and ends with the same weights, bit for
bit on the CPU, as a run never interrupted: data order, augmentation and the random numbers of
every step follow from SEED and the step alone. Ctrl-C or SIGTERM stops a run; the same command
resumes it. INIT_FROM=<checkpoint> starts a new run from another run's weights and bases (fine-
tuning) with a fresh optimizer and schedule. With VAL_EVERY, best.pth keeps the best val mIoU.
"""
import datetime
import math
import os
import shlex
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

import checkpoints
import config
import dataset
import infer
import network
import pictures
import recipe
import runs
import settings


@config.command
def main(argv):
    rest = config.apply_overrides(argv, __doc__)
    if rest:
        raise config.UserError(f'unexpected argument {config.short(rest[0])!r}; train.py takes '
                               f'only KEY=VALUE settings, like `python train.py BATCH_SIZE=8`.')
    rank, world, device = config.init_distributed()
    try:
        check_settings(world)
        train(rank, world, device)
    except KeyboardInterrupt:
        if rank == 0:
            print(f'interrupted; the same command resumes from {latest_path()} when it was '
                  f'written', file=sys.stderr, flush=True)
        sys.exit(130)
    finally:
        runs.release_locks()
        config.end_distributed()


def train(rank, world, device):
    train_set = dataset.TrainDataset(settings.TRAIN_SPLIT)
    check_split(train_set)
    val_set = dataset.ValDataset(settings.VAL_SPLIT) if settings.VAL_EVERY else None
    meta = dataset.meta()  # class names and palette, checked before anything is written
    hold_locks(rank)
    ckpt = resume_point(world)
    start = ckpt['step'] if ckpt else 0
    final = os.path.join(config.path(settings.MODEL_DIR), 'final.pth')
    if start == settings.ITER_MAX and os.path.exists(final):  # nothing to do: final.pth stays
        return print(f'finished already: {final} holds all {settings.ITER_MAX} steps.') \
            if rank == 0 else None
    log = start_log(rank, world, device, start, ckpt)
    model, optimizer, eager, net = build(ckpt, world, device, log)
    extra = {**meta, 'init_from': log.init_from,  # what every checkpoint keeps
             'best': ckpt.get('best', {}) if ckpt else {}}
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=(recipe.step_indices(s, len(train_set), rank, world)
                                  for s in range(start, settings.ITER_MAX)),
        num_workers=settings.NUM_WORKERS // world + (rank < settings.NUM_WORKERS % world),
        pin_memory=device.type == 'cuda')  # step s of rank r: the images of (SEED, s, r) alone

    net.train()
    log.start_clock()
    for step, (image, label) in enumerate(loader, start + 1):
        x = infer.to_input(image.to(device, non_blocking=True))
        label = label.to(device, non_blocking=True)
        if settings.COMPILE and step == start + 1:
            diff = check_compiled(eager, net, model, x, label)
            log(f'COMPILE: one step\'s gradients match eager ones (relative difference {diff:.2g})')
        logits = train_step(net, optimizer, x, label, step, rank, world, log)
        log_progress(log, optimizer, step, device)
        if settings.IMAGE_EVERY and step % settings.IMAGE_EVERY == 0:
            log_picture(log, image[0], label[0], logits[0], extra['palette'], step)
        if settings.VAL_EVERY and (step % settings.VAL_EVERY == 0 or step == settings.ITER_MAX):
            validate(model, optimizer, val_set, device, step, world, log, extra)
        save_checkpoints(model, optimizer, step, world, log, extra)

    if world > 1:  # every rank must hold the same weights and bases, bit for bit
        same = len(set(config.gather(checkpoints.fingerprint(model.state_dict()), world))) == 1
        log(f'{world} processes hold the {"same" if same else "DIFFERENT"} weights and bases')
    save('final.pth', model, optimizer, settings.ITER_MAX, log, world, extra)
    log(f'done: {settings.ITER_MAX} steps, {config.path(settings.MODEL_DIR)}/final.pth')
    log.metrics(step=settings.ITER_MAX, done=True)  # the session's wall time: the save too
    log.close()

# ---------------------------------------------------------------------------- the step


def train_step(net, optimizer, x, label, step, rank, world, log):
    """One SGD step of the original recipe at iteration `step` (counted from 1): its learning
    rate, the forward (bf16 on CUDA when AMP), the loss, the backward and the update; the bases'
    moving average is updated inside the forward. Returns the logits; the loss (the mean over the
    processes) waits on the device in `log` until a log line or a checkpoint reads it."""
    torch.manual_seed(recipe.seed_of('step', settings.SEED, step - 1, rank))  # its dropout
    recipe.set_lr(optimizer, step)
    with infer.autocast(x.device):
        logits = net(x)
    loss = recipe.loss_fn(logits, label)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    value = loss.detach().clone()
    if world > 1:
        dist.all_reduce(value)
        value /= world
    log.pending.append((step, value))
    optimizer.step()
    return logits

# ---------------------------------------------------------------------------- periodic work


def log_progress(log, optimizer, step, device):
    """The learning rates of the step in TensorBoard; every LOG_EVERY steps a line with the mean
    loss, speed, time to go and peak memory, and a metrics entry (what compare.py reads)."""
    log.scalars(step, {f'lr/{g["name"]}': g['lr'] for g in optimizer.param_groups})
    if step % settings.LOG_EVERY and step != settings.ITER_MAX:
        return
    mean = losses(log)
    now, (then, before), (began, start) = time.time(), log.last, log.began
    speed = (step - before) * settings.BATCH_SIZE / (now - then)
    eta = (now - began) / (step - start) * (settings.ITER_MAX - step)
    cuda = device.type == 'cuda'
    mem = f'{torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB' if cuda else '-'
    lr = optimizer.param_groups[0]['lr']  # the base rate this step trained at
    log(f'step {step}/{settings.ITER_MAX}  loss {mean:.4f}  lr {lr:.3e}  {speed:.1f} img/s  '
        f'eta {datetime.timedelta(seconds=round(eta))}  peak mem {mem}')
    hint = slower(speed, log.fastest, device)
    if hint and not log.hinted:
        log(hint)
        log.hinted = True
    log.fastest = max(log.fastest, speed)
    log.scalars(step, {'train/images_per_s': speed})
    log.metrics(step=step, loss=mean, lr=lr, images_per_s=speed)
    log.last = (now, step)


def slower(speed, fastest, device):
    """A hint when the CPU trains at a quarter of its fastest speed so far: most often another
    job shares the cores, and PyTorch's threads (one per core) then wait for each other."""
    if device.type != 'cpu' or speed >= fastest / 4:
        return None
    return (f'note: {speed:.1f} img/s, down from {fastest:.1f}: if another job shares these '
            f'cores, PyTorch\'s {torch.get_num_threads()} threads wait for each other; run with '
            f'OMP_NUM_THREADS set to the cores free (1 when in doubt).')


def log_picture(log, image, label, logits, colours, step):
    """The batch's first image, its label and the prediction, side by side in TensorBoard."""
    if log.on:
        pred = logits.detach().argmax(0).cpu().numpy()
        log.image(step, 'train/input_truth_prediction', np.concatenate(
            [image.permute(1, 2, 0).numpy(), pictures.colorize(label.cpu().numpy(), colours),
             pictures.colorize(pred, colours)], 1))


def validate(model, optimizer, val_set, device, step, world, log, extra):
    """Score the val split (infer.validate, every process a share); best.pth keeps the best."""
    t = network.stage_counts()[0]
    scores = infer.validate(model, val_set, device)[t]  # and back to train mode
    headline = {k: scores[k] for k in ('mIoU', 'pAcc', 'mAcc')}
    log(f'step {step}  val (T={t}) ' + '  '.join(f'{k} {100 * v:.2f}%' for k, v in
                                                 headline.items()))
    log.scalars(step, {**{f'val/{k}': v for k, v in headline.items()},
                       **{f'val_iou/{c}': v for c, v in scores['per_class'].items()
                          if not math.isnan(v)}})  # a class absent from val has none
    log.metrics(step=step, **{f'val_{k}': v for k, v in headline.items()})
    if scores['mIoU'] > extra['best'].get('mIoU', -1):  # nan never wins
        extra['best'] = {'step': step, 'mIoU': scores['mIoU']}
        save('best.pth', model, optimizer, step, log, world, extra)
        log(f'best.pth: val mIoU {100 * scores["mIoU"]:.2f}% at step {step}')


def save_checkpoints(model, optimizer, step, world, log, extra):
    """latest.pth every ITER_SAVE / 10 steps, step_<N>.pth every ITER_SAVE (and at the end)."""
    every = max(1, settings.ITER_SAVE // 10)
    if step % every and step % settings.ITER_SAVE and step != settings.ITER_MAX:
        return
    if step % settings.ITER_SAVE == 0:
        save(f'step_{step}.pth', model, optimizer, step, log, world, extra)
    save('latest.pth', model, optimizer, step, log, world, extra)
    log.flush()  # TensorBoard holds every step up to the checkpoint


def save(name, model, optimizer, step, log, world, extra):
    """A checkpoint that holds everything to resume: weights and bases, optimizer, step, random
    state, settings, the dataset's classes and palette. The losses and weights are checked to be
    finite first (a diverged run keeps its last good checkpoint). Rank 0 writes it."""
    losses(log)
    floats = [t for t in model.state_dict().values() if t.is_floating_point()]
    if not torch.stack([torch.isfinite(t).all() for t in floats]).all():  # one host sync
        raise diverged(f'the weights became non-finite at step {step}')
    if log.on:
        rng = {'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state_all()}
        ckpt = {'net': model.state_dict(), 'step': step, 'optimizer': optimizer.state_dict(),
                'rng': rng, 'settings': config.resolved(), 'world_size': world, **extra}
        checkpoints.save_atomic(ckpt, os.path.join(config.path(settings.MODEL_DIR), name))


def losses(log):
    """The mean of the losses since the last call (see runs.Log.losses); the run stops at the
    first non-finite one, the finite ones before it in TensorBoard."""
    mean, bad = log.losses()
    if bad:
        raise diverged(f'the loss became {bad[1]} at step {bad[0]}')
    return mean


def diverged(what):
    target = latest_path()
    kept = (f'the last good checkpoint {target} is kept' if os.path.exists(target) else
            'no checkpoint was written yet')
    return config.UserError(f'{what}, so training stopped; lower LR (now {settings.LR}) or '
                            f'check the data; {kept}.')


# ---------------------------------------------------------------------------- set-up


def latest_path():
    return os.path.join(config.path(settings.MODEL_DIR), 'latest.pth')


def hold_locks(rank):
    """Rank 0 holds MODEL_DIR and LOG_DIR while it runs (see runs.lock; main releases them),
    then removes the temporary checkpoints of killed runs."""
    if rank == 0:
        for key, name in runs.LOCKS.items():
            runs.lock(key, name)
        runs.remove_leftovers(config.path(settings.MODEL_DIR))


def resume_point(world):
    """latest.pth of MODEL_DIR, checked to continue this recipe, or None for a new run (which
    must not write over the checkpoints of an earlier one)."""
    target = latest_path()
    ckpt = checkpoints.latest(config.path(settings.MODEL_DIR), f'run `{clean_command()}` to '
                                                               f'remove them')
    if ckpt is not None:
        recipe.check_resume(ckpt, target, f'run `{clean_command()}` to delete its '
                                                 f'checkpoints and logs and start afresh')
    start = ckpt['step'] if ckpt else 0
    starts = config.gather(start, world) if world > 1 else [start]
    if len(set(starts)) > 1:  # on many nodes MODEL_DIR must be one folder that all see
        raise config.UserError(f'the processes found different latest.pth files (steps '
                               f'{starts}); put MODEL_DIR on a shared folder.')
    return ckpt


def start_log(rank, world, device, start, ckpt):
    """The run's log (see runs.Log), its record written and its first lines: git state,
    devices, versions, settings."""
    stamp = time.strftime('%Y%m%d-%H%M%S', time.gmtime())
    session = runs.unique_name(config.path(settings.LOG_DIR), f'train-{stamp}-step{start}',
                               '.json') if rank == 0 else None
    log = runs.Log(rank, start, session)
    devices = f'{world} x ' + (torch.cuda.get_device_name(device) if device.type == 'cuda' else
                               f'cpu ({torch.get_num_threads()} threads each)')
    init_from = config.path(settings.INIT_FROM) if settings.INIT_FROM and not ckpt else None
    log.init_from = ckpt.get('init_from') if ckpt else init_from  # the run's parent
    record = runs.run_record(devices=devices, world_size=world, start_step=start,
                             init_from=log.init_from, model_dir=config.path(settings.MODEL_DIR))
    if rank == 0:
        runs.claim(log.dir, dict.fromkeys(['train.log', 'metrics.jsonl', session]))
        runs.write_record(record, log.dir, session)
    log(f'git {record["git_sha"]}{" (dirty)" * bool(record["git_dirty"])}, devices {devices}, '
        + ', '.join(f'{k} {v}' for k, v in record['versions'].items()))
    log('settings: ' + ', '.join(f'{k}={config.short(v)}' for k, v in record['settings'].items()))
    return log


def build(ckpt, world, device, log):
    """(model, optimizer, eager, net): EMANet with its weights (resumed, INIT_FROM, ImageNet or
    none), SyncBatchNorm across GPUs, SGD over the recipe's parameter groups, and the net to call
    (the model, in DDP over processes: `eager`; compiled too with COMPILE: `net`)."""
    cuda = device.type == 'cuda'
    torch.manual_seed(settings.SEED)
    model = network.EMANet(settings.N_CLASSES, settings.N_LAYERS)
    log(f'EMANet-{settings.N_LAYERS}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M '
        f'parameters')
    if ckpt:
        infer.load_weights(model, ckpt['net'], latest_path(), f'train with the code that wrote '
                           f'them, or run `{clean_command()}`')
        was = ckpt.get('world_size', world)
        log(f'resuming from {latest_path()} at step {ckpt["step"]}' +
            (f' (written by {was} processes, now {world})' if was != world else ''))
    elif log.init_from:
        parent = checkpoints.load_checkpoint(log.init_from)
        new = infer.load_weights(model, parent['net'], log.init_from, 'pass the model settings '
                                 'it was trained with, or another INIT_FROM', True)
        log(f'initialised from {log.init_from} (step {parent.get("step")})' +
            (f'; {", ".join(new)} new for {settings.N_CLASSES} classes' if new else ''))
    elif settings.PRETRAINED:
        with config.as_user_error(network.WeightsError):
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
    optimizer = torch.optim.SGD(recipe.param_groups(model), lr=settings.LR,
                                momentum=settings.LR_MOM)
    if ckpt:
        optimizer.load_state_dict(ckpt['optimizer'])
        torch.set_rng_state(ckpt['rng']['torch'])  # each step reseeds anyway (see train_step)
    eager = model
    if world > 1:  # every parameter that requires a gradient gets one (see EMAU.conv1)
        eager = nn.parallel.DistributedDataParallel(model, device_ids=[device] if cuda else None,
                                                    find_unused_parameters=False)
    net = eager
    if settings.COMPILE:
        torch._inductor.config.fallback_random = True  # dropout draws as eager (see the check)
        net = torch.compile(eager)
        if world > 1 and cuda:
            log('COMPILE: SyncBatchNorm breaks the compiled graph at every BN (pytorch#107372)')
    return model, optimizer, eager, net

# ---------------------------------------------------------------------------- checks


def check_settings(world):
    """What config.check cannot know: the processes, and files named by settings."""
    if settings.BATCH_SIZE % world:
        fit = world * max(1, settings.BATCH_SIZE // world)
        raise config.UserError(f'BATCH_SIZE={settings.BATCH_SIZE} is the global batch and '
                               f'does not divide over {world} processes; pass a multiple of '
                               f'{world}, like BATCH_SIZE={fit}.')
    for key, what in (('PRETRAINED', 'the ImageNet weights'), ('INIT_FROM', 'the checkpoint')):
        target = config.path(getattr(settings, key))
        if getattr(settings, key) and not os.path.isfile(target):
            how = 'are a folder; give the .pth file' if os.path.isdir(target) else \
                'do not exist; put the file there'
            raise config.UserError(f'{what} {target} ({key}) {how}, or pass {key}= to go '
                                   f'without.')


def check_split(train_set):
    """A training split of at least one batch (the original drops each epoch's last incomplete
    batch, and so does recipe.step_indices)."""
    n = len(train_set)
    if n < settings.BATCH_SIZE:
        raise config.UserError(f'the {settings.TRAIN_SPLIT} split holds {n} images, fewer than '
                               f'BATCH_SIZE={settings.BATCH_SIZE}: each epoch would be one '
                               f'incomplete batch, dropped; pass BATCH_SIZE={n} or less.')


def clean_command():
    """The clean.sh command that removes this run's checkpoints and logs."""
    return ' '.join(['sh clean.sh'] + [shlex.quote(f'{key}={config.path(getattr(settings, key))}')
                                       for key in ('MODEL_DIR', 'LOG_DIR')])


def check_compiled(eager, compiled, model, x, label):
    """One step's gradients through the compiled network against eager ones on the same batch
    (the model's statistics and bases restored after): torch.compile has been seen to drop the
    backward of the final upsample, which trains nothing with a finite loss. Returns the
    relative difference, or stops with one sentence."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = []
    for net in (eager, compiled):
        torch.manual_seed(0)  # the same dropout (inductor's fallback_random draws as eager)
        with infer.autocast(x.device):
            loss = recipe.loss_fn(net(x), label)
        loss.backward()
        grads.append([torch.zeros_like(p) if p.grad is None else p.grad.float() for _, p in params])
        model.zero_grad(set_to_none=True)
        model.load_state_dict(state)
    total = math.sqrt(sum(float(g.square().sum()) for g in grads[0]))
    diff = math.sqrt(sum(float((a - b).square().sum()) for a, b in zip(*grads))) / max(total, 1e-30)
    dead = [n for (n, _), a, b in zip(params, *grads) if a.any() and not b.any()]
    tolerance = 0.05 if x.is_cuda and settings.AMP else 0.01  # bf16 rounds at 3 digits
    if dead or not diff <= tolerance:
        raise config.UserError(
            f'COMPILE=True: the compiled network\'s gradients differ from eager ones (relative '
            f'difference {diff:.3g}, tolerance {tolerance}; {len(dead)} parameters without '
            f'gradient{", e.g. " + dead[0] if dead else ""}): torch.compile miscompiles it here, '
            f'so pass COMPILE=False.')
    return diff


if __name__ == '__main__':
    main(sys.argv[1:])
