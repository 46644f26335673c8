"""A training run around train.py's recipe and loop, each part behind one call: its start (the
settings against the processes, the files they name, the training split, locks, the resume
point and its check, the notes of what has no effect, the run record and the first log lines),
the weights it starts from, its log of every step (every scalar the step computes, averaged over
the processes, their divergence, speed, a slow-down note, pictures, validation scores), its
checkpoints (finite, written once by rank 0), the compile check, and its end (the processes
agree; locks released; how to go on when stopped). Not here: the recipe and the loop
(train.py), what a checkpoint holds (train.py), the log's files (records.py)."""
import contextlib
import datetime
import math
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

import settings
from plumbing import checkpoints, config, files, layout, outputs, pictures, processes, records


@contextlib.contextmanager
def training(argv, usage):
    """Inside, the Run of `python train.py argv...`: its KEY=VALUE settings applied and checked,
    torch.distributed set up under torchrun; with --nproc_per_node=N this process starts N of
    them on this machine instead (see processes.launch) and ends as they end. A stop (Ctrl-C,
    SIGTERM, a process of many lost) is said by scripts.command with `go_on`; the locks it took
    are released, its log closed, the processes ended."""
    rest = config.apply_overrides(argv, usage)
    nproc = launching(rest)
    if nproc > 1:  # the settings are checked once, here, before the processes start
        check_settings(nproc)
        sys.exit(processes.launch(os.path.join(config.ROOT, 'train.py'),
                                  [a for a in argv if a not in rest], nproc))
    rank, world, device = processes.init_distributed()
    run = None
    try:
        check_settings(world)
        run = Run(rank, world, device, config.given(argv))
        yield run
    finally:
        if run is not None and run.log is not None:
            run.log.close()
        outputs.release_locks()
        processes.end_distributed()


def launching(rest):
    """The N of --nproc_per_node=N in `rest` (train.py's arguments that are not settings), 1
    without it; one sentence for any other argument, or for N under torchrun."""
    for arg in rest:
        if not arg.startswith('--nproc_per_node='):
            raise config.UserError(f'unexpected argument {config.short(arg)!r}; train.py takes '
                                   f'KEY=VALUE settings and --nproc_per_node=N (N processes on '
                                   f'this machine), like `python train.py BATCH_SIZE=8`.')
        count = arg.partition('=')[2]
        if not count.isdigit() or int(count) < 1:
            raise config.UserError(f'{config.short(arg)} is not a count of processes; give one, '
                                   f'like --nproc_per_node=2.')
        if 'WORLD_SIZE' in os.environ:
            raise config.UserError(f'{arg} given under torchrun, which starts the processes; '
                                   f'give it to torchrun or to train.py, not both.')
    return int(rest[-1].partition('=')[2]) if rest else 1


def go_on():
    """How a stopped run goes on (scripts.command says it)."""
    return f'the same command resumes from {latest_path()} when it was written'


def check_settings(world):
    """What config.check cannot know: the processes, and the files that settings name."""
    config.check_save_memory(world)
    if settings.BATCH_SIZE % world:
        fit = world * max(1, settings.BATCH_SIZE // world)
        raise config.UserError(f'BATCH_SIZE={settings.BATCH_SIZE} is the global batch and '
                               f'does not divide over {world} processes; pass a multiple of '
                               f'{world}, like BATCH_SIZE={fit}.')
    for key in ('PRETRAINED', 'INIT_FROM'):
        if getattr(settings, key):
            config.named_file(key)


def latest_path():
    return os.path.join(config.path(settings.MODEL_DIR), 'latest.pth')


class Run:
    """One training run of this process (rank of world, on device): what it resumes from
    (`ckpt`, `start`) and began from (`init_from`), its log, and what the loop carries from
    step to step besides the model and the optimizer."""

    def __init__(self, rank, world, device, given):
        self.rank, self.world, self.device, self.given = rank, world, device, given
        self.ckpt, self.start, self.init_from, self.log = None, 0, None, None
        self.run = None             # its identity (outputs.new_run), in all it writes
        self.kept = {}              # what every checkpoint holds besides the state
        self.best = {}              # {'step', 'mIoU'} of best.pth (VAL_EVERY)
        self.pending = []           # (step, names, their values on the device), not read yet
        self.clock = (0.0, 0)       # (time, step) of the last log line
        self.began = (0.0, 0)       # (time, step) when the loop began
        self.fastest = 0.0          # images/s of the fastest log line so far
        self.hinted = False         # whether a slow-down was said

    # ------------------------------------------------------------------------ the start

    def begin(self, train_set):
        """Check the training split and the dataset's classes and palette, hold MODEL_DIR and
        LOG_DIR, find the resume point (latest.pth, checked to continue this run), say what
        has no effect, and start the log with the run's record. False when the run is finished
        already (final.pth stays)."""
        n = len(train_set)
        if n < settings.BATCH_SIZE:  # the original drops each epoch's last incomplete batch
            raise config.UserError(f'the {settings.TRAIN_SPLIT} split holds {n} images, fewer '
                                   f'than BATCH_SIZE={settings.BATCH_SIZE}: each epoch would be '
                                   f'one incomplete batch, dropped; pass BATCH_SIZE={n} or less.')
        meta = layout.meta()  # class names and palette, checked before anything is written
        if self.rank == 0:
            for key, name in outputs.LOCKS.items():
                outputs.lock(key, name)  # released at the end (see `training`)
            files.remove_leftovers(config.path(settings.MODEL_DIR))  # of killed saves
        self.ckpt = ckpt = self._resume_point()
        self.start = ckpt['step'] if ckpt else 0
        self.best = ckpt.get('best', {}) if ckpt else {}
        self.init_from = ckpt.get('init_from') if ckpt else \
            config.path(settings.INIT_FROM) if settings.INIT_FROM else None
        self.kept = {**meta, 'init_from': self.init_from, 'run': self.run}
        final = os.path.join(config.path(settings.MODEL_DIR), 'final.pth')
        done = self.start == settings.ITER_MAX and os.path.exists(final)
        self._say_unused(done)
        if done:
            if self.rank == 0:
                print(f'finished already: {final} holds all {settings.ITER_MAX} steps.')
            return False
        self._start_log()
        return True

    def _resume_point(self):
        """latest.pth of MODEL_DIR, checked to continue this run, or None for a new run (which
        must not write over the checkpoints of an earlier one); the run's identity: latest.pth's,
        a new one for a new run or a resume from a checkpoint written before identities."""
        ckpt = checkpoints.latest()
        if ckpt is not None:
            check_resume(ckpt, latest_path(), self.device.type == 'cuda')
        start = ckpt['step'] if ckpt else 0
        found = (start, ckpt and ckpt.get('run') or outputs.new_run())
        found = processes.gather(found, self.world) if self.world > 1 else [found]
        starts = [step for step, _ in found]
        if len(set(starts)) > 1:  # on many nodes MODEL_DIR must be one folder that all see
            raise config.UserError(f'the processes found different latest.pth files (steps '
                                   f'{starts}); put MODEL_DIR on a shared folder.')
        self.run = found[0][1]  # rank 0's
        return ckpt

    def _say_unused(self, done):
        """One line for each setting that cannot take effect in this run (config.no_effect); a
        resume that would silently not fine-tune from the INIT_FROM given is refused."""
        ckpt = self.ckpt
        began = ckpt.get('init_from') if ckpt else None
        if ckpt and settings.INIT_FROM and config.path(settings.INIT_FROM) != began:
            raise config.UserError(
                f'{latest_path()} is the latest.pth of a run that began from '
                f'{began or "ImageNet weights or none"}, so INIT_FROM={settings.INIT_FROM} would '
                f'not be read: pass another MODEL_DIR to fine-tune from it, or INIT_FROM= to '
                f'resume.')
        why = 'the run is finished' if done else 'the run resumes from latest.pth' if ckpt else \
            None
        config.no_effect({'INIT_FROM': settings.INIT_FROM} if settings.INIT_FROM else {}, {
            'INIT_FROM': why and f'{why}, which began from it'})
        reasons = {  # what the settings' values make this run skip
            **{k: why for k in ('ITER_SAVE', 'LOG_EVERY', 'IMAGE_EVERY', 'VAL_EVERY', 'COMPILE',
                                'NUM_WORKERS') if done},
            'PRETRAINED': why or 'INIT_FROM gives the weights' * bool(settings.INIT_FROM),
            'OHEM_THRESH': "LOSS='ce' keeps every pixel" * (settings.LOSS == 'ce'),
            'OHEM_MIN_KEPT': "LOSS='ce' keeps every pixel" * (settings.LOSS == 'ce'),
            'VAL_SPLIT': 'VAL_EVERY=0 never validates' * (settings.VAL_EVERY == 0)}
        phases = ('training',) + ('validation',) * bool(settings.VAL_EVERY)
        unread = config.unread(self.given, phases, 'train.py', self.device.type == 'cuda',
                               unless=('validation', 'VAL_EVERY=0 never validates'))
        config.no_effect(self.given, {**unread, **{k: v for k, v in reasons.items() if v}})

    def _start_log(self):
        """The run's logs claimed as its own in LOG_DIR's list (one sentence when LOG_DIR holds
        another run's), with its MODEL_DIR and the checkpoints of before identities it takes
        as its own there (a resume from one), its record written, then its log (see
        records.Log) and its first lines: git state, devices, versions, settings."""
        stamp = time.strftime('%Y%m%d-%H%M%S', time.gmtime())
        log_dir, model_dir = config.path(settings.LOG_DIR), config.path(settings.MODEL_DIR)
        session = files.unique_name(log_dir, f'train-{stamp}-step{self.start}', '.json') \
            if self.rank == 0 else None
        device = self.device
        devices = f'{self.world} x ' + (torch.cuda.get_device_name(device) if device.type ==
                                        'cuda' else f'cpu ({torch.get_num_threads()} threads '
                                                    f'each)')
        record = records.run_record(devices=devices, world_size=self.world,
                                    start_step=self.start, init_from=self.init_from,
                                    model_dir=model_dir, run=self.run)
        if self.rank == 0:  # first: a run refused or a full disk leaves no file and no writer
            adopted = [] if self.ckpt is None or 'run' in self.ckpt else sorted(
                f for f in os.listdir(model_dir) if checkpoints.NAMES.fullmatch(f) and
                checkpoints.written_by(os.path.join(model_dir, f)) == '')
            outputs.claim(log_dir, dict.fromkeys(['train.log', 'metrics.jsonl', session]),
                          run=self.run, model_dir=model_dir,
                          **({'adopted': adopted} if adopted else {}))
            records.write_record(record, log_dir, session)
        self.log = log = records.Log(self.rank, self.start, session, self.run)
        log(f'git {record["git_sha"]}{" (dirty)" * bool(record["git_dirty"])}, devices '
            f'{devices}, ' + ', '.join(f'{k} {v}' for k, v in record['versions'].items()))
        log('settings: ' + ', '.join(f'{k}={config.short(v)}' for k, v in
                                     record['settings'].items()))

    # ------------------------------------------------------------------------ the weights

    def load_weights(self, model, network):
        """The weights the run starts from, loaded into `model` and said: latest.pth's when it
        resumes, INIT_FROM's, the ImageNet file's (PRETRAINED) or none. `network`: the model
        module (network.py), whose load_weights raises its WeightsError when they do not fit."""
        log, ckpt = self.log, self.ckpt
        log(f'EMANet-{settings.N_LAYERS}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}'
            f'M parameters')
        if ckpt:
            with config.as_user_error(network.WeightsError, prefix=f'checkpoint {latest_path()} ',
                                      fix=f'train with the code that wrote them, or run '
                                          f'`{checkpoints.clean_command()}`'):
                network.load_weights(model, ckpt['net'])
            was = ckpt.get('world_size', self.world)
            log(f'resuming from {latest_path()} at step {ckpt["step"]}' +
                (f' (written by {was} processes, now {self.world})' if was != self.world else ''))
        elif self.init_from:
            parent = checkpoints.load_checkpoint(self.init_from)
            with config.as_user_error(network.WeightsError, prefix=f'checkpoint {self.init_from} ',
                                      fix='pass the model settings it was trained with, or '
                                          'another INIT_FROM'):
                new = network.load_weights(model, parent['net'], head_may_differ=True)
            log(f'initialised from {self.init_from} (step {parent.get("step")})' +
                (f'; {", ".join(new)} new for {settings.N_CLASSES} classes' if new else ''))
        elif settings.PRETRAINED:
            n = network.load_imagenet(model, checkpoints.read_imagenet)
            log(f'loaded {n} ImageNet tensors from {config.path(settings.PRETRAINED)}')
        else:
            log('training from scratch (PRETRAINED is empty)')

    def load_optimizer(self, optimizer):
        """A resumed run's optimizer state (its momentum) and random state."""
        if self.ckpt:
            optimizer.load_state_dict(self.ckpt['optimizer'])
            torch.set_rng_state(self.ckpt['rng']['torch'])  # each step reseeds anyway

    # ------------------------------------------------------------------------ the steps

    def started(self):
        """The loop begins now (its clock for speed and time to go)."""
        self.began = self.clock = (time.time(), self.start)

    def log_step(self, step, scalars, optimizer, picture):
        """After each training step: its scalars ({name: value on the device}, see
        network.train_step) averaged over the processes and kept until the next log line, the
        rates of every group, the first image, label and prediction every IMAGE_EVERY steps
        (`picture`), and every LOG_EVERY steps a log line."""
        values = torch.stack([v.float() for v in scalars.values()])
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        self.pending.append((step, tuple(scalars), values))
        if step == self.start + 1 and self.device.type == 'cuda':  # not cuDNN's search
            torch.cuda.reset_peak_memory_stats(self.device)
        self.log.scalars(step, {f'lr/{g["name"]}': g['lr'] for g in optimizer.param_groups})
        if settings.IMAGE_EVERY and step % settings.IMAGE_EVERY == 0 and self.log.on:
            image, label, logits = picture
            colours = self.kept['palette']
            self.log.image(step, 'train/input_truth_prediction', np.concatenate(
                [image.permute(1, 2, 0).numpy(), pictures.colorize(label.cpu().numpy(), colours),
                 pictures.colorize(logits.argmax(0).cpu().numpy(), colours)], 1))
        if step % settings.LOG_EVERY == 0 or step == settings.ITER_MAX:
            self._log_progress(step, optimizer)

    def _read(self):
        """{name: mean} of the scalars not read yet (one host-device sync for all of them), each
        step's into TensorBoard; the run stops at the first non-finite loss, those before it
        logged."""
        if not self.pending:
            return {}
        values = torch.stack([v for _, _, v in self.pending]).cpu().tolist()
        sums = {}
        for (step, names, _), row in zip(self.pending, values):
            scalars = dict(zip(names, row))
            if not math.isfinite(scalars['loss']):
                self.pending = []
                raise self._diverged(f'the loss became {scalars["loss"]} at step {step}')
            self.log.scalars(step, {f'train/{k}': v for k, v in scalars.items()})
            for k, v in scalars.items():
                sums[k] = sums.get(k, 0.0) + v
        count, self.pending = len(self.pending), []
        return {k: v / count for k, v in sums.items()}

    def _log_progress(self, step, optimizer):
        """A line with the mean scalars since the last one, the rate, speed, time to go and peak
        memory, and its metrics entry (what compare.py reads); a hint when a CPU run slows."""
        means = self._read()
        now, (then, before), (began, start) = time.time(), self.clock, self.began
        speed = (step - before) * settings.BATCH_SIZE / (now - then)
        eta = (now - began) / (step - start) * (settings.ITER_MAX - step)
        cuda = self.device.type == 'cuda'
        mem = f'{torch.cuda.max_memory_allocated(self.device) / 2 ** 30:.2f} GiB' if cuda else '-'
        lr = optimizer.param_groups[0]['lr']  # the base rate this step trained at
        terms = ''.join(f'  {k} {v:.4f}' for k, v in means.items() if k != 'loss')
        self.log(f'step {step}/{settings.ITER_MAX}  loss {means["loss"]:.4f}  lr {lr:.3e}  '
                 f'{speed:.1f} img/s  eta {datetime.timedelta(seconds=round(eta))}  peak mem '
                 f'{mem}{terms}')
        hint = slower(speed, self.fastest, self.device)
        if hint and not self.hinted:
            self.log(hint)
            self.hinted = True
        self.fastest, self.clock = max(self.fastest, speed), (now, step)
        self.log.scalars(step, {'train/images_per_s': speed})
        self.log.metrics(step=step, **means, lr=lr, images_per_s=speed)

    def validated(self, step, scores, stages):
        """Log the val scores of `step` (at `stages` EM stages); whether they are the best so
        far (then best.pth is saved)."""
        headline = {k: scores[k] for k in ('mIoU', 'pAcc', 'mAcc')}
        self.log(f'step {step}  val (T={stages}) ' + '  '.join(f'{k} {100 * v:.2f}%' for k, v in
                                                              headline.items()))
        self.log.scalars(step, {**{f'val/{k}': v for k, v in headline.items()},
                                **{f'val_iou/{c}': v for c, v in scores['per_class'].items()
                                   if not math.isnan(v)}})  # a class absent from val has none
        self.log.metrics(step=step, **{f'val_{k}': v for k, v in headline.items()})
        if not scores['mIoU'] > self.best.get('mIoU', -1):  # nan never wins
            return False
        self.best = {'step': step, 'mIoU': scores['mIoU']}
        self.log(f'best.pth: val mIoU {100 * scores["mIoU"]:.2f}% at step {step}')
        return True

    # ------------------------------------------------------------------------ checkpoints

    def save(self, name, model, ckpt):
        """Write checkpoint `ckpt` of `model` as MODEL_DIR/`name` (rank 0, atomically) with the
        dataset's classes and palette, the parent and the best, once the losses so far and its
        weights are checked finite (a diverged run keeps its last good checkpoint); TensorBoard
        then holds every step up to it."""
        self._read()
        floats = [t for t in model.state_dict().values() if t.is_floating_point()]
        if not torch.stack([torch.isfinite(t).all() for t in floats]).all():  # one host sync
            raise self._diverged(f'the weights became non-finite at step {ckpt["step"]}')
        if self.rank == 0:
            checkpoints.save_atomic({**ckpt, **self.kept, 'best': self.best},
                                    os.path.join(config.path(settings.MODEL_DIR), name))
        self.log.flush()

    def _diverged(self, what):
        target = latest_path()
        kept = (f'the last good checkpoint {target} is kept' if os.path.exists(target) else
                'no checkpoint was written yet')
        return config.UserError(f'{what}, so training stopped; lower LR (now {settings.LR}) or '
                                f'check the data; {kept}.')

    # ------------------------------------------------------------------------ the end

    def agree(self, model):
        """Say whether every process holds the same weights and bases (one process: nothing)."""
        if self.world > 1:
            same = len(set(processes.gather(checkpoints.fingerprint(model.state_dict()),
                                            self.world))) == 1
            self.log(f'{self.world} processes hold the {"same" if same else "DIFFERENT"} '
                     f'weights and bases')

    def done(self):
        """The last line, the session's wall time (the final save too), the log closed."""
        self.log(f'done: {settings.ITER_MAX} steps, '
                 f'{os.path.join(config.path(settings.MODEL_DIR), "final.pth")}')
        self.log.metrics(step=settings.ITER_MAX, done=True)
        self.log.close()

    # ------------------------------------------------------------------------ compile

    def check_compiled(self, eager, compiled, model, x, label):
        """With COMPILE, one step's gradients through the compiled network held against eager
        ones on the first batch (see `compiled_gap`), said in the log; else nothing."""
        if settings.COMPILE:
            if self.world > 1 and self.device.type == 'cuda':
                self.log('COMPILE: SyncBatchNorm breaks the compiled graph at every BN '
                         '(pytorch#107372)')
            diff = compiled_gap(eager, compiled, model, x, label)
            self.log(f'COMPILE: one step\'s gradients match eager ones (relative difference '
                     f'{diff:.2g})')


def check_resume(ckpt, target, cuda):
    """Stop when checkpoint `target` cannot continue this run: weights only, or trained with a
    setting training reads (on CUDA or the CPU) that differs from today's, but those of
    config.MID_RUN, a setting added or removed since included."""
    fix = f'run `{checkpoints.clean_command()}` to delete its checkpoints and logs and start afresh'
    if 'optimizer' not in ckpt or 'settings' not in ckpt:
        raise config.UserError(f'{target} holds weights only (not a train.py checkpoint), so '
                               f'training cannot resume from it; move it away or {fix}.')
    saved, now = ckpt['settings'], config.resolved()
    read = config.read_by('training', cuda=cuda)
    differ = config.differ(saved, [k for k in set(saved) | set(now) if (
        k in read or k not in now) and k not in config.MID_RUN])
    if differ:
        diffs = ', '.join(f'{k}={config.short(saved[k]) if k in saved else "(not recorded)"} '
                          f'(now {config.short(now[k]) if k in now else "none"})' for k in differ)
        on = ' (to train on from it: INIT_FROM=<it> with another MODEL_DIR)' * (
            'ITER_MAX' in differ)
        raise config.UserError(f'{target} was trained with {diffs}; change them back to '
                               f'resume{on}, or {fix}.')


def slower(speed, fastest, device):
    """A hint when the CPU trains at a quarter of its fastest speed so far: most often another
    job shares the cores, and PyTorch's threads (one per core) then wait for each other."""
    if device.type != 'cpu' or speed >= fastest / 4:
        return None
    return (f'note: {speed:.1f} img/s, down from {fastest:.1f}: if another job shares these '
            f'cores, PyTorch\'s {torch.get_num_threads()} threads wait for each other; run with '
            f'OMP_NUM_THREADS set to the cores free (1 when in doubt).')


def compiled_gap(eager, compiled, model, x, label):
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
        sum(net(x, label)[0].values()).backward()
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
