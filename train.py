"""Train EMANet with the original recipe: `python train.py [KEY=VALUE ...]` on the CPU or a GPU,
`python train.py --nproc_per_node=4` or `torchrun --nproc_per_node=4 train.py` on 4 GPUs (many
nodes: torchrun --nnodes ...).

A run resumes from MODEL_DIR/latest.pth when it exists and ends with the same weights, bit for
bit on the CPU, as a run never interrupted: data order, augmentation and the random numbers of
every step follow from SEED and the step alone. Ctrl-C or SIGTERM stops a run; the same command
resumes it. INIT_FROM=<checkpoint> starts a new run from another run's weights and bases (fine-
tuning) with a fresh optimizer and schedule. With VAL_EVERY, best.pth keeps the best val mIoU.
The checks and the log of a run are plumbing/runs.py's, one call each here.
"""
import sys

import torch
import torch.nn as nn

from plumbing import config, runs, scripts  # first: settings.py checked
import dataset
import inference
import network
import settings


@scripts.command(go_on=runs.go_on)  # stopped: how the same command goes on
def main(argv):
    with runs.training(argv, __doc__) as run:  # settings, processes, locks: see plumbing/runs.py
        train(run)

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


def build(run):
    """(model, optimizer, eager, net): EMANet with the weights the run starts from (resumed,
    INIT_FROM, ImageNet or none), SyncBatchNorm across GPUs, SGD over the recipe's parameter
    groups, and the net to call (the model, in DDP over processes: `eager`; compiled too with
    COMPILE: `net`)."""
    cuda = run.device.type == 'cuda'
    torch.manual_seed(settings.SEED)
    model = network.EMANet(settings.N_CLASSES, settings.N_LAYERS)
    run.load_weights(model, network)
    if run.world > 1 and cuda:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(run.device)
    if cuda:
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.SGD(get_params(model), lr=settings.LR, momentum=settings.LR_MOM)
    run.load_optimizer(optimizer)  # resumed: its momentum and random state
    eager = net = model
    if run.world > 1:
        # Every parameter that requires a gradient gets one (see EMAU.conv1). The buffers need
        # no broadcast at every forward on GPUs: the bases are averaged over the processes
        # inside the EMAU, and SyncBatchNorm's statistics are the global batch's on every one.
        # On the CPU (no SyncBatchNorm) rank 0's BatchNorm statistics are broadcast.
        eager = net = nn.parallel.DistributedDataParallel(
            model, device_ids=[run.device] if cuda else None, broadcast_buffers=not cuda,
            gradient_as_bucket_view=True)
    if settings.COMPILE:
        torch._inductor.config.fallback_random = True  # dropout draws as eager (see the check)
        net = torch.compile(eager)
    return model, optimizer, eager, net

# ---------------------------------------------------------------------------- the loop


def train(run):
    train_set = dataset.TrainDataset(settings.TRAIN_SPLIT)
    val_set = dataset.ValDataset(settings.VAL_SPLIT) if settings.VAL_EVERY else None
    if not run.begin(train_set):  # checks, locks, the resume point, the log: False when done
        return
    model, optimizer, eager, net = build(run)
    rank, world, device = run.rank, run.world, run.device
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=(dataset.step_indices(s, len(train_set), rank, world)
                                  for s in range(run.start, settings.ITER_MAX)),
        num_workers=settings.NUM_WORKERS // world + (rank < settings.NUM_WORKERS % world),
        pin_memory=device.type == 'cuda')  # step s of rank r: the images of (SEED, s, r) alone

    def save(name, step):
        """A checkpoint that holds everything to resume: the original's {'net', 'step'}, the
        optimizer, the random state and the settings (the run adds the dataset's classes and
        palette, the parent and the best, and writes it)."""
        run.save(name, model, {
            'net': model.state_dict(), 'step': step, 'optimizer': optimizer.state_dict(),
            'rng': {'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state_all()},
            'settings': config.resolved(), 'world_size': world})

    net.train()
    run.started()
    for step, (image, label) in enumerate(loader, run.start + 1):
        x = inference.to_input(image.to(device, non_blocking=True))
        label = label.to(device, non_blocking=True)
        if step == run.start + 1:
            run.check_compiled(eager, net, model, x, label)  # COMPILE: gradients as eager's
        torch.manual_seed(dataset.seed_of('step', settings.SEED, step - 1, rank))  # its dropout
        poly_lr_scheduler(optimizer, step)
        scalars, logits = network.train_step(net, optimizer, x, label)
        run.log_step(step, scalars, optimizer, (image[0], label[0], logits[0]))
        del logits  # not kept alive into the next step's forward
        if settings.VAL_EVERY and (step % settings.VAL_EVERY == 0 or step == settings.ITER_MAX):
            t = network.stage_counts()[0]  # every process scores a share (and back to train)
            if run.validated(step, inference.validate(model, val_set, device, (t,))[t], t):
                save('best.pth', step)
        if step % settings.ITER_SAVE == 0:
            save(f'step_{step}.pth', step)
        if step % max(1, settings.ITER_SAVE // 10) == 0 or step % settings.ITER_SAVE == 0 or \
                step == settings.ITER_MAX:
            save('latest.pth', step)
    run.agree(model)  # every process holds the same weights, bases and BatchNorm statistics
    save('final.pth', settings.ITER_MAX)
    run.done()


if __name__ == '__main__':
    main(sys.argv[1:])
