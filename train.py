"""Train EMANet with the original recipe: `python train.py [KEY=VALUE ...]` on the CPU or a GPU,
`torchrun --nproc_per_node=4 train.py` on 4 GPUs (many nodes: torchrun --nnodes ...).

A run resumes from MODEL_DIR/latest.pth when it exists and ends with the same weights, bit for
bit on the CPU, as a run never interrupted: data order, augmentation and the random numbers of
every step follow from SEED and the step alone. Ctrl-C or SIGTERM stops a run; the same command
resumes it. INIT_FROM=<checkpoint> starts a new run from another run's weights and bases (fine-
tuning) with a fresh optimizer and schedule. With VAL_EVERY, best.pth keeps the best val mIoU.
"""
import dataclasses
import datetime
import math
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from plumbing import (checkpoints, config, files, inference, outputs,  # first: settings.py
                      pictures, processes, records)                     # checked
import dataset
import network
import settings


@config.command
def main(argv):
    rest = config.apply_overrides(argv, __doc__)
    if rest:
        raise config.UserError(f'unexpected argument {config.short(rest[0])!r}; train.py takes '
                               f'only KEY=VALUE settings, like `python train.py BATCH_SIZE=8`.')
    rank, world, device = processes.init_distributed()
    try:
        check_settings(world)
        train(rank, world, device, config.given(argv))
    except KeyboardInterrupt:
        if rank == 0:
            print(f'interrupted; the same command resumes from {latest_path()} when it was '
                  f'written', file=sys.stderr, flush=True)
        sys.exit(130)
    finally:
        outputs.release_locks()
        processes.end_distributed()

# ---------------------------------------------------------------------------- the recipe


def get_params(net):
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


def poly_lr_scheduler(optimizer, i):
    """Every group's rate for iteration i (counted from 1): poly_lr(i) times its multiplier."""
    for group in optimizer.param_groups:
        group['lr'] = poly_lr(i) * group['lr_mult']


def check_resume(ckpt, target):
    """Stop when checkpoint `target` cannot continue this run: weights only, or trained with a
    setting that differs from today's (every setting but config.MID_RUN, a setting added or
    removed since included)."""
    fix = f'run `{checkpoints.clean_command()}` to delete its checkpoints and logs and start afresh'
    if 'optimizer' not in ckpt or 'settings' not in ckpt:
        raise config.UserError(f'{target} holds weights only (not a train.py checkpoint), so '
                               f'training cannot resume from it; move it away or {fix}.')
    saved, now = ckpt['settings'], config.resolved()
    same = {'CROP_SIZE': config.crop_size}

    def value(values, k):
        return same.get(k, lambda v: config.convert(k, v))(values[k]) if k in values else None
    differ = [k for k in sorted(set(saved) | set(now)) if k not in config.MID_RUN and
              (k not in saved or k not in now or value(saved, k) != value(now, k))]
    if differ:
        def was(k):
            return config.short(saved[k]) if k in saved else '(not recorded)'
        diffs = ', '.join(f'{k}={was(k)} (now {config.short(now[k]) if k in now else "none"})'
                          for k in differ)
        on = ' (to train on from it: INIT_FROM=<it> with another MODEL_DIR)' * (
            'ITER_MAX' in differ)
        raise config.UserError(f'{target} was trained with {diffs}; change them back to '
                               f'resume{on}, or {fix}.')

# ---------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Progress:
    """What the loop carries from step to step besides the model and the optimizer."""
    start: int                  # the step it resumed after (0: a new run)
    best: dict                  # {'step', 'mIoU'} of best.pth (VAL_EVERY)
    losses: list = dataclasses.field(default_factory=list)  # (step, loss on the device), unread
    clock: tuple = (0.0, 0)     # (time, step) of the last log line
    began: tuple = (0.0, 0)     # (time, step) when the loop began
    fastest: float = 0.0        # images/s of the fastest log line so far
    hinted: bool = False        # whether a slow-down was said


def train(rank, world, device, given):
    train_set = dataset.TrainDataset(settings.TRAIN_SPLIT)
    check_split(train_set)
    val_set = dataset.ValDataset(settings.VAL_SPLIT) if settings.VAL_EVERY else None
    meta = dataset.meta()  # class names and palette, checked before anything is written
    hold_locks(rank)
    ckpt = resume_point(world)
    start = ckpt['step'] if ckpt else 0
    init_from = ckpt.get('init_from') if ckpt else config.path(settings.INIT_FROM) \
        if settings.INIT_FROM else None
    final = os.path.join(config.path(settings.MODEL_DIR), 'final.pth')
    done = start == settings.ITER_MAX and os.path.exists(final)
    say_unused(given, ckpt, done)
    if done:  # nothing to do: final.pth stays
        return print(f'finished already: {final} holds all {settings.ITER_MAX} steps.') \
            if rank == 0 else None
    log = start_log(rank, world, device, start, init_from)
    model, optimizer, eager, net = build(ckpt, init_from, world, device, log)
    state = Progress(start, best=ckpt.get('best', {}) if ckpt else {})
    kept = {**meta, 'init_from': init_from}  # what every checkpoint holds besides the state
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=(dataset.step_indices(s, len(train_set), rank, world)
                                  for s in range(start, settings.ITER_MAX)),
        num_workers=settings.NUM_WORKERS // world + (rank < settings.NUM_WORKERS % world),
        pin_memory=device.type == 'cuda')  # step s of rank r: the images of (SEED, s, r) alone

    def save(name, step):  # after the losses so far are checked: a diverged run writes nothing
        read_losses(log, state)
        save_checkpoint(name, model, optimizer, step, world, {**kept, 'best': state.best})

    net.train()
    state.began = state.clock = (time.time(), start)
    for step, (image, label) in enumerate(loader, start + 1):
        x = inference.to_input(image.to(device, non_blocking=True))
        label = label.to(device, non_blocking=True)
        if settings.COMPILE and step == start + 1:
            diff = check_compiled(eager, net, model, x, label)
            log(f'COMPILE: one step\'s gradients match eager ones (relative difference {diff:.2g})')
        torch.manual_seed(dataset.seed_of('step', settings.SEED, step - 1, rank))  # its dropout
        poly_lr_scheduler(optimizer, step)
        loss, logits = network.train_step(net, optimizer, x, label)
        state.losses.append((step, mean_over_processes(loss, world)))
        if step == start + 1 and device.type == 'cuda':  # not cuDNN's search: the training's
            torch.cuda.reset_peak_memory_stats(device)
        log.scalars(step, {f'lr/{g["name"]}': g['lr'] for g in optimizer.param_groups})
        if settings.IMAGE_EVERY and step % settings.IMAGE_EVERY == 0:
            log_picture(log, image[0], label[0], logits[0], meta['palette'], step)
        del logits  # not kept alive into the next step's forward
        if step % settings.LOG_EVERY == 0 or step == settings.ITER_MAX:
            log_progress(log, state, optimizer, step, device)
        if settings.VAL_EVERY and (step % settings.VAL_EVERY == 0 or step == settings.ITER_MAX):
            scores = validate(model, val_set, device, step, log)
            if scores['mIoU'] > state.best.get('mIoU', -1):  # nan never wins
                state.best = {'step': step, 'mIoU': scores['mIoU']}
                save('best.pth', step)
                log(f'best.pth: val mIoU {100 * scores["mIoU"]:.2f}% at step {step}')
        if step % settings.ITER_SAVE == 0:
            save(f'step_{step}.pth', step)
        if step % max(1, settings.ITER_SAVE // 10) == 0 or step % settings.ITER_SAVE == 0 or \
                step == settings.ITER_MAX:
            save('latest.pth', step)
            log.flush()  # TensorBoard holds every step up to the checkpoint

    if world > 1:  # every rank must hold the same weights, bases and BatchNorm statistics
        same = len(set(processes.gather(checkpoints.fingerprint(model.state_dict()), world))) == 1
        log(f'{world} processes hold the {"same" if same else "DIFFERENT"} weights and bases')
    save('final.pth', settings.ITER_MAX)
    log(f'done: {settings.ITER_MAX} steps, {final}')
    log.metrics(step=settings.ITER_MAX, done=True)  # the session's wall time: the save too
    log.close()


def mean_over_processes(loss, world):
    """The loss (on the device) averaged over the processes: what the log shows."""
    if world > 1:
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= world
    return loss

# ---------------------------------------------------------------------------- periodic work


def log_progress(log, state, optimizer, step, device):
    """A line with the mean loss since the last one, the rate, speed, time to go and peak memory,
    and its metrics entry (what compare.py reads); a hint when a CPU run slows down."""
    mean = read_losses(log, state)
    now, (then, before), (began, start) = time.time(), state.clock, state.began
    speed = (step - before) * settings.BATCH_SIZE / (now - then)
    eta = (now - began) / (step - start) * (settings.ITER_MAX - step)
    cuda = device.type == 'cuda'
    mem = f'{torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB' if cuda else '-'
    lr = optimizer.param_groups[0]['lr']  # the base rate this step trained at
    log(f'step {step}/{settings.ITER_MAX}  loss {mean:.4f}  lr {lr:.3e}  {speed:.1f} img/s  '
        f'eta {datetime.timedelta(seconds=round(eta))}  peak mem {mem}')
    hint = slower(speed, state.fastest, device)
    if hint and not state.hinted:
        log(hint)
        state.hinted = True
    state.fastest, state.clock = max(state.fastest, speed), (now, step)
    log.scalars(step, {'train/images_per_s': speed})
    log.metrics(step=step, loss=mean, lr=lr, images_per_s=speed)


def read_losses(log, state):
    """The mean of the losses not read yet (one host-device sync for all of them), each into
    TensorBoard; the run stops at the first non-finite one, those before it logged."""
    if not state.losses:
        return None
    steps, values = zip(*state.losses)
    values, state.losses = torch.stack(values).cpu().tolist(), []
    for step, value in zip(steps, values):
        if not math.isfinite(value):
            raise diverged(f'the loss became {value} at step {step}')
        log.scalars(step, {'train/loss': value})
    return sum(values) / len(values)


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
        pred = logits.argmax(0).cpu().numpy()
        log.image(step, 'train/input_truth_prediction', np.concatenate(
            [image.permute(1, 2, 0).numpy(), pictures.colorize(label.cpu().numpy(), colours),
             pictures.colorize(pred, colours)], 1))


def validate(model, val_set, device, step, log):
    """The val split's scores at the first EM stage count (inference.validate, every process a
    share), logged; returns them."""
    t = network.stage_counts()[0]
    scores = inference.validate(model, val_set, device, (t,))[t]  # and back to train mode
    headline = {k: scores[k] for k in ('mIoU', 'pAcc', 'mAcc')}
    log(f'step {step}  val (T={t}) ' + '  '.join(f'{k} {100 * v:.2f}%' for k, v in
                                                 headline.items()))
    log.scalars(step, {**{f'val/{k}': v for k, v in headline.items()},
                       **{f'val_iou/{c}': v for c, v in scores['per_class'].items()
                          if not math.isnan(v)}})  # a class absent from val has none
    log.metrics(step=step, **{f'val_{k}': v for k, v in headline.items()})
    return scores


def save_checkpoint(name, model, optimizer, step, world, kept):
    """A checkpoint that holds everything to resume: weights and bases, optimizer, step, random
    state, settings, and `kept` (the dataset's classes and palette, the parent, the best). Its
    weights are checked to be finite first (a diverged run keeps its last good checkpoint).
    Rank 0 writes it."""
    floats = [t for t in model.state_dict().values() if t.is_floating_point()]
    if not torch.stack([torch.isfinite(t).all() for t in floats]).all():  # one host sync
        raise diverged(f'the weights became non-finite at step {step}')
    if processes.rank_world()[0] == 0:
        rng = {'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state_all()}
        ckpt = {'net': model.state_dict(), 'step': step, 'optimizer': optimizer.state_dict(),
                'rng': rng, 'settings': config.resolved(), 'world_size': world, **kept}
        checkpoints.save_atomic(ckpt, os.path.join(config.path(settings.MODEL_DIR), name))


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
    """Rank 0 holds MODEL_DIR and LOG_DIR while it runs (see outputs.lock; main releases them),
    then removes the temporary checkpoints of killed runs."""
    if rank == 0:
        for key, name in outputs.LOCKS.items():
            outputs.lock(key, name)
        files.remove_leftovers(config.path(settings.MODEL_DIR))


def resume_point(world):
    """latest.pth of MODEL_DIR, checked to continue this run, or None for a new run (which
    must not write over the checkpoints of an earlier one)."""
    ckpt = checkpoints.latest()
    if ckpt is not None:
        check_resume(ckpt, latest_path())
    start = ckpt['step'] if ckpt else 0
    starts = processes.gather(start, world) if world > 1 else [start]
    if len(set(starts)) > 1:  # on many nodes MODEL_DIR must be one folder that all see
        raise config.UserError(f'the processes found different latest.pth files (steps '
                               f'{starts}); put MODEL_DIR on a shared folder.')
    return ckpt


def say_unused(given, ckpt, done):
    """One line for each setting that cannot take effect in this run (config.no_effect); a
    resume that would silently not fine-tune from the INIT_FROM given is refused."""
    began = ckpt.get('init_from') if ckpt else None
    if ckpt and settings.INIT_FROM and config.path(settings.INIT_FROM) != began:
        raise config.UserError(
            f'{latest_path()} is the latest.pth of a run that began from '
            f'{began or "ImageNet weights or none"}, so INIT_FROM={settings.INIT_FROM} would not '
            f'be read: pass another MODEL_DIR to fine-tune from it, or INIT_FROM= to resume.')
    why = 'the run is finished' if done else 'the run resumes from latest.pth' if ckpt else None
    config.no_effect({'INIT_FROM': settings.INIT_FROM} if settings.INIT_FROM else {}, {
        'INIT_FROM': why and f'{why}, which began from it'})
    config.no_effect(given, {
        **{k: why for k in ('ITER_SAVE', 'LOG_EVERY', 'IMAGE_EVERY', 'VAL_EVERY', 'COMPILE',
                            'NUM_WORKERS') if done},
        'PRETRAINED': why or 'INIT_FROM gives the weights' * bool(settings.INIT_FROM),
        'OHEM_THRESH': "LOSS='ce' keeps every pixel" * (settings.LOSS == 'ce'),
        'OHEM_MIN_KEPT': "LOSS='ce' keeps every pixel" * (settings.LOSS == 'ce'),
        'VAL_SPLIT': 'VAL_EVERY=0 never validates' * (settings.VAL_EVERY == 0)})


def start_log(rank, world, device, start, init_from):
    """The run's log (see records.Log), its record written and its first lines: git state,
    devices, versions, settings."""
    stamp = time.strftime('%Y%m%d-%H%M%S', time.gmtime())
    session = files.unique_name(config.path(settings.LOG_DIR), f'train-{stamp}-step{start}',
                                '.json') if rank == 0 else None
    log = records.Log(rank, start, session)
    devices = f'{world} x ' + (torch.cuda.get_device_name(device) if device.type == 'cuda' else
                               f'cpu ({torch.get_num_threads()} threads each)')
    record = records.run_record(devices=devices, world_size=world, start_step=start,
                                init_from=init_from, model_dir=config.path(settings.MODEL_DIR))
    if rank == 0:
        outputs.claim(log.dir, dict.fromkeys(['train.log', 'metrics.jsonl', session]))
        records.write_record(record, log.dir, session)
    log(f'git {record["git_sha"]}{" (dirty)" * bool(record["git_dirty"])}, devices {devices}, '
        + ', '.join(f'{k} {v}' for k, v in record['versions'].items()))
    log('settings: ' + ', '.join(f'{k}={config.short(v)}' for k, v in record['settings'].items()))
    return log


def build(ckpt, init_from, world, device, log):
    """(model, optimizer, eager, net): EMANet with its weights (resumed, INIT_FROM, ImageNet or
    none), SyncBatchNorm across GPUs, SGD over the recipe's parameter groups, and the net to call
    (the model, in DDP over processes: `eager`; compiled too with COMPILE: `net`)."""
    cuda = device.type == 'cuda'
    torch.manual_seed(settings.SEED)
    model = network.EMANet(settings.N_CLASSES, settings.N_LAYERS)
    log(f'EMANet-{settings.N_LAYERS}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M '
        f'parameters')
    if ckpt:
        with config.as_user_error(network.WeightsError, prefix=f'checkpoint {latest_path()} ',
                                  fix=f'train with the code that wrote them, or run '
                                      f'`{checkpoints.clean_command()}`'):
            network.load_weights(model, ckpt['net'])
        was = ckpt.get('world_size', world)
        log(f'resuming from {latest_path()} at step {ckpt["step"]}' +
            (f' (written by {was} processes, now {world})' if was != world else ''))
    elif init_from:
        parent = checkpoints.load_checkpoint(init_from)
        with config.as_user_error(network.WeightsError, prefix=f'checkpoint {init_from} ',
                                  fix='pass the model settings it was trained with, or another '
                                      'INIT_FROM'):
            new = network.load_weights(model, parent['net'], head_may_differ=True)
        log(f'initialised from {init_from} (step {parent.get("step")})' +
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
    optimizer = torch.optim.SGD(get_params(model), lr=settings.LR, momentum=settings.LR_MOM)
    if ckpt:
        optimizer.load_state_dict(ckpt['optimizer'])
        torch.set_rng_state(ckpt['rng']['torch'])  # each step reseeds anyway (see the loop)
    eager = model
    if world > 1:
        # Every parameter that requires a gradient gets one (see EMAU.conv1). The buffers need
        # no broadcast at every forward on GPUs: the bases are averaged over the processes
        # inside the EMAU, and SyncBatchNorm's statistics are the global batch's on every one.
        # On the CPU (no SyncBatchNorm) rank 0's BatchNorm statistics are broadcast.
        eager = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if cuda else None, broadcast_buffers=not cuda,
            gradient_as_bucket_view=True)
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
    config.check_save_memory(world)
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
    batch, and so does dataset.step_indices)."""
    n = len(train_set)
    if n < settings.BATCH_SIZE:
        raise config.UserError(f'the {settings.TRAIN_SPLIT} split holds {n} images, fewer than '
                               f'BATCH_SIZE={settings.BATCH_SIZE}: each epoch would be one '
                               f'incomplete batch, dropped; pass BATCH_SIZE={n} or less.')


def check_compiled(eager, compiled, model, x, label):
    """One step's gradients through the compiled network against eager ones on the same batch
    (the model's statistics and bases restored after each): torch.compile has been seen to drop
    the backward of the final upsample, which trains nothing with a finite loss. Robust to
    dropout masks: the gap to eager is held against the spread of two eager steps with other
    masks (inductor's fallback_random draws as eager, so the gap is rounding, but where it does
    not, masks differ and the gap is that spread). Returns the relative gap, or stops with one
    sentence."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def grads(net, seed):
        torch.manual_seed(seed)
        net(x, label)[0].backward()
        out = [torch.zeros_like(p) if p.grad is None else p.grad.float() for _, p in params]
        model.zero_grad(set_to_none=True)
        model.load_state_dict(state)
        return out

    def gap(a, b):
        return math.sqrt(sum(float((p - q).square().sum()) for p, q in zip(a, b))) / max(
            math.sqrt(sum(float(p.square().sum()) for p in a)), 1e-30)
    ours, other, theirs = grads(eager, 0), grads(eager, 1), grads(compiled, 0)
    diff, spread = gap(ours, theirs), gap(ours, other)
    dead = [n for (n, _), a, b in zip(params, ours, theirs) if a.any() and not b.any()]
    tolerance = (0.05 if x.is_cuda and settings.AMP else 0.01) + 2 * spread  # bf16: 3 digits
    if dead or not diff <= tolerance:
        raise config.UserError(
            f'COMPILE=True: the compiled network\'s gradients differ from eager ones (relative '
            f'difference {diff:.3g}, tolerance {tolerance:.3g}; {len(dead)} parameters without '
            f'gradient{", e.g. " + dead[0] if dead else ""}): torch.compile miscompiles it here, '
            f'so pass COMPILE=False.')
    return diff


if __name__ == '__main__':
    main(sys.argv[1:])
