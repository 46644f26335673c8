"""train.py: whole runs (end to end, resume after SIGKILL, torchrun, refusals, fine-tuning) through
its command line, in this process where no process must die and in a new one where it must;
the compile check."""
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import network
import settings
import train
from conftest import (ENV, ROOT, TINY_RUN, args, as_in_a_new_process, assert_same_state, load,
                      one_sentence, run_main, run_script, tensorboard_events)
from plumbing import config, runs


@pytest.fixture(scope='module')
def reference(toy_root, tmp_path_factory):
    """One uninterrupted run (2 loader workers, images and validation on) and its folder."""
    tmp = str(tmp_path_factory.mktemp('reference'))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), as_in_a_new_process():
        train.main(args(toy_root, tmp, NUM_WORKERS=2, IMAGE_EVERY=3, VAL_EVERY=3, ITER_SAVE=3))
    return tmp, out.getvalue()


def run(argv, capsys, code=0):
    """train.main(argv) in this process: its stdout and stderr, the exit status checked."""
    got, out, err = run_main(train.main, argv, capsys)
    assert got == code, out[-2000:] + err[-2000:]
    return out, err


# ---------------------------------------------------------------------------- whole runs


def test_a_run_writes_checkpoints_logs_and_tensorboard(reference):
    tmp, out = reference
    models = sorted(os.listdir(os.path.join(tmp, 'models')))
    assert models == ['best.pth', 'final.pth', 'latest.pth', 'step_3.pth', 'step_6.pth']
    final = load(tmp, 'final.pth')
    assert final['step'] == 6 and load(tmp, 'step_3.pth')['step'] == 3
    assert {'net', 'step', 'optimizer', 'rng', 'settings', 'classes', 'palette'} <= set(final)
    assert final['classes'] == ['background', 'disk', 'bar', 'triangle', 'cross']
    assert not any(k.startswith(('module.', '_orig_mod.')) for k in final['net'])
    assert 'emau.mu' in final['net'] and final['settings']['ITER_MAX'] == 6
    for line in ('step 2/6  loss ', 'img/s  eta ', 'peak mem', 'val (T=3) mIoU', 'git ', 'torch',
                 'opencv', 'pillow'):
        assert line in out
    logs = os.listdir(os.path.join(tmp, 'logdir'))
    assert 'train.log' in logs and any(f.startswith('events.out.tfevents') for f in logs)
    assert not any(f.endswith('.lock') for f in logs + models)  # removed at the end
    records = [f for f in logs if f.startswith('train-') and f.endswith('.json')]
    record = json.load(open(os.path.join(tmp, 'logdir', records[0])))
    assert len(records) == 1
    assert {'opencv', 'pillow', 'numpy', 'torch', 'cpu'} <= set(record['versions'])
    metrics = [json.loads(line) for line in open(os.path.join(tmp, 'logdir', 'metrics.jsonl'))]
    assert [m['step'] for m in metrics if 'loss' in m] == [2, 4, 6]
    val = [m for m in metrics if 'val_mIoU' in m]
    assert [m['step'] for m in val] == [3, 6] and all(m['session'] == records[0] for m in metrics)
    best = max(val, key=lambda m: m['val_mIoU'])  # the first of equals
    assert final['best'] == {'step': best['step'], 'mIoU': best['val_mIoU']}
    assert load(tmp, 'best.pth')['step'] == best['step']
    with open(os.path.join(tmp, 'logdir', 'train.log')) as f:
        assert 'step 6/6' in f.read()
    events = tensorboard_events(os.path.join(tmp, 'logdir'))
    tags = events.Tags()
    assert {'train/loss', 'train/images_per_s', 'lr/conv_weight', 'lr/bn_weight', 'lr/bias',
            'val/mIoU', 'val_iou/disk'} <= set(tags['scalars'])
    assert [e.step for e in events.Scalars('train/loss')] == [1, 2, 3, 4, 5, 6]
    bias, conv = events.Scalars('lr/bias'), events.Scalars('lr/conv_weight')
    assert bias[0].value == pytest.approx(2 * conv[0].value) == pytest.approx(0.018)
    assert len(events.Images('train/input_truth_prediction')) == 2  # steps 3 and 6


def test_imagenet_weights_start_a_run_but_not_its_resume(toy_root, tmp_path, capsys, tiny_net):
    tmp = str(tmp_path)
    extractor = tiny_net().extractor.state_dict()
    weights = {network.imagenet_name(k): v + 1 for k, v in extractor.items()}
    torch.save({**weights, 'fc.weight': torch.zeros(1000, 512)}, os.path.join(tmp, 'r18.pth'))
    argv = args(toy_root, tmp, ITER_MAX=1, PRETRAINED=os.path.join(tmp, 'r18.pth'), BN_MOM=0.0)
    out, _ = run(argv, capsys)
    assert f'loaded {len(extractor)} ImageNet tensors' in out
    state = load(tmp, 'final.pth')['net']  # BN statistics do not move with BN_MOM=0
    assert torch.equal(state['extractor.1.running_var'], weights['bn1.running_var'])
    os.remove(os.path.join(tmp, 'models', 'final.pth'))  # as if killed before its final save
    out, _ = run(argv, capsys)
    assert 'resuming from' in out and 'ImageNet' not in out


def test_sigkill_and_resume_equal_an_uninterrupted_run(reference, toy_root, tmp_path, capsys):
    tmp = str(tmp_path)
    argv = args(toy_root, tmp, NUM_WORKERS=2, LOG_EVERY=1, ITER_SAVE=3, VAL_EVERY=3)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), *argv], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    for line in proc.stdout:  # the log line of step 3 comes just before its save
        if line.startswith('step 3/6'):
            break
    os.killpg(proc.pid, signal.SIGKILL)  # the process and its loader workers
    proc.wait()
    proc.stdout.close()
    assert load(tmp, 'latest.pth')['step'] in (2, 3)
    assert not os.path.exists(os.path.join(tmp, 'models', 'final.pth'))
    half = os.path.join(tmp, 'models', f'latest.pth.tmp{proc.pid}')
    with open(half, 'wb') as f:
        f.write(b'half a checkpoint')  # what a kill during a save leaves behind
    out, _ = run(argv + ['NUM_WORKERS=0'], capsys)  # the loader workers do not change the data
    assert 'resuming from' in out
    assert_same_state(load(tmp, 'final.pth'), load(reference[0], 'final.pth'))
    assert not os.path.exists(half)  # removed
    assert load(tmp, 'final.pth')['best'] == load(reference[0], 'final.pth')['best']
    for name in ('step_3.pth', 'step_6.pth'):  # its other checkpoints match the reference too
        assert_same_state(load(tmp, name), load(reference[0], name))
    losses = tensorboard_events(os.path.join(tmp, 'logdir')).Scalars('train/loss')
    assert [e.step for e in losses] == [1, 2, 3, 4, 5, 6]  # steps after latest.pth: once
    reference_losses = tensorboard_events(os.path.join(reference[0], 'logdir')).Scalars(
        'train/loss')
    assert [e.value for e in losses] == [e.value for e in reference_losses]


def test_torchrun_two_processes_agree(toy_root, tmp_path, given):
    tmp = str(tmp_path)
    done = run_script('train.py', args(toy_root, tmp, ITER_MAX=3, NUM_WORKERS=2, VAL_EVERY=3,
                                       IMAGE_EVERY=3), torchrun=2)
    assert '2 processes hold the same weights and bases' in done.stdout
    assert done.stdout.count('val (T=3) mIoU') == 1  # rank 0 logs, both ranks validate
    assert load(tmp, 'final.pth')['step'] == 3
    given(BATCH_SIZE=3)
    with pytest.raises(config.UserError, match='does not divide over 2 processes'):
        runs.check_settings(2)


def test_resume_refuses_other_recipe_and_accepts_other_logging(reference, toy_root, tmp_path,
                                                                 capsys):
    tmp = str(tmp_path)
    shutil.copytree(os.path.join(reference[0], 'models'), os.path.join(tmp, 'models'))
    os.remove(os.path.join(tmp, 'models', 'final.pth'))  # as if killed before its final save
    _, err = run(args(toy_root, tmp, LR=0.02, N_BASES=4), capsys, code=2)
    one_sentence(err, 'LR=0.009 (now 0.02)', 'N_BASES=8 (now 4)',
                 f"sh clean.sh MODEL_DIR={tmp}/models LOG_DIR={tmp}/logdir`")
    ckpt = load(tmp, 'latest.pth')
    ckpt['net']['fc2.extra'] = ckpt['net'].pop('fc2.bias')
    torch.save(ckpt, os.path.join(tmp, 'models', 'latest.pth'))
    _, err = run(args(toy_root, tmp), capsys, code=2)
    one_sentence(err, 'does not fit the network', 'missing 1 key(s) like fc2.bias')
    shutil.copy(os.path.join(reference[0], 'models', 'latest.pth'), os.path.join(tmp, 'models'))
    with locked(os.path.join(tmp, 'models', 'train.lock')):  # as a run writing there holds it
        _, err = run(args(toy_root, tmp), capsys, code=2)
    one_sentence(err, 'another train.py is writing into')
    os.makedirs(os.path.join(tmp, 'logdir'), exist_ok=True)
    with locked(os.path.join(tmp, 'logdir', 'train.log.lock')):  # a run of another MODEL_DIR
        _, err = run(args(toy_root, tmp), capsys, code=2)
    one_sentence(err, f'writing into {tmp}/logdir; wait for it, stop it, or pass another LOG_DIR')
    out, _ = run(args(toy_root, tmp, LOG_EVERY=5, NUM_WORKERS=1, VAL_EVERY=0), capsys)
    assert 'resuming from' in out and 'at step 6' in out


@contextlib.contextmanager
def locked(path):
    """Inside, another process holds the lock on file `path`, as a running train.py does
    (fcntl locks belong to a process: this one's own would not stop it)."""
    holder = subprocess.Popen([sys.executable, '-c', 'import fcntl, sys\n'
                               'f = open(sys.argv[1], "a")\nfcntl.lockf(f, fcntl.LOCK_EX)\n'
                               'print("held", flush=True)\nsys.stdin.read()', path],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'held\n'
        yield
    finally:
        holder.communicate('')


def test_a_diverging_run_stops_and_keeps_its_last_checkpoint(toy_root, tmp_path, capsys):
    tmp = str(tmp_path)
    _, err = run(args(toy_root, tmp, LR=1e30), capsys, code=2)
    one_sentence(err, 'training stopped; lower LR')
    ckpt = load(tmp, 'latest.pth')
    assert all(torch.isfinite(t).all() for t in ckpt['net'].values() if t.is_floating_point())
    events = tensorboard_events(os.path.join(tmp, 'logdir'))  # the curve up to the divergence
    assert [e.step for e in events.Scalars('train/loss')] == list(range(1, ckpt['step'] + 1))


def test_save_memory_trains_and_resumes_as_the_run_without_it(reference, toy_root, tmp_path,
                                                             capsys):
    """SAVE_MEMORY=True, from the start and resumed from a run without it (it may change mid-run:
    the arithmetic is the same), ends with the reference's weights, BatchNorm statistics, bases
    and momentum, bit for bit."""
    whole, part = str(tmp_path / 'whole'), str(tmp_path / 'part')
    run(args(toy_root, whole, SAVE_MEMORY=True, ITER_SAVE=3), capsys)
    for name in ('step_3.pth', 'final.pth'):
        assert_same_state(load(whole, name), load(reference[0], name))
    os.makedirs(os.path.join(part, 'models'))
    shutil.copy(os.path.join(reference[0], 'models', 'step_3.pth'),
                os.path.join(part, 'models', 'latest.pth'))
    out, _ = run(args(toy_root, part, SAVE_MEMORY=True), capsys)
    assert 'resuming from' in out and 'at step 3' in out
    assert_same_state(load(part, 'final.pth'), load(reference[0], 'final.pth'))


def test_save_memory_is_refused_where_it_cannot_be_exact(given, monkeypatch):
    given(SAVE_MEMORY=True, PRETRAINED='')
    runs.check_settings(1)
    runs.check_settings(2)  # processes on the CPU: plain BatchNorm, exact (see test_network.py)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    runs.check_settings(1)  # one GPU
    with pytest.raises(config.UserError, match=r'^SAVE_MEMORY=True with 2 processes on GPUs: '
                                               r'their SyncBatchNorm .* or pass '
                                               r'SAVE_MEMORY=False\.$'):
        runs.check_settings(2)
    given(COMPILE=True)
    with pytest.raises(config.UserError, match=r'^SAVE_MEMORY=True with COMPILE=True: .*; pass '
                                               r'COMPILE=False, or SAVE_MEMORY=False\.$'):
        runs.check_settings(1)
    given(SAVE_MEMORY=False)
    runs.check_settings(2)


@pytest.mark.parametrize('argv, message', [
    (['junk'], "unexpected argument 'junk'"),
    (['BATCH_SIZE=0'], 'BATCH_SIZE=0 must be at least 1'),
    (['LR=-1.0'], 'LR=-1.0 must be a positive finite number'),
    (['EM_MOM=1.5'], 'EM_MOM=1.5 must be in [0, 1]'),
    (['N_CLASSES=21'], 'classes.txt names 5 classes but N_CLASSES=21'),
    (['INIT_FROM=/no/such.pth'], 'the checkpoint /no/such.pth (INIT_FROM) do not exist'),
    (['NO_SUCH_KEY=1'], "unknown setting 'NO_SUCH_KEY'"),
    (['DATA_ROOT=/no/such/folder'], 'DATA_ROOT'),
    (['PRETRAINED=/no/such/weights.pth'], 'or pass PRETRAINED= to go without'),
    (['MODEL_DIR=/dev/null/models'], 'MODEL_DIR /dev/null/models cannot be made or written'),
    (['SAVE_MEMORY=True', 'COMPILE=True'], 'SAVE_MEMORY=True with COMPILE=True: torch.compile'),
    (['LOG_DIR=/dev/null/logdir'], 'LOG_DIR /dev/null/logdir cannot be made or written'),
])
def test_bad_input_is_one_sentence_and_exit_2(argv, message, toy_root, tmp_path, capsys):
    _, err = run(args(toy_root, str(tmp_path)) + argv, capsys, code=2)
    one_sentence(err, message)


# ---------------------------------------------------------------------------- scripts

def test_tensorboard_sh_serves_log_dir_on_localhost(tmp_path):
    fake = tmp_path / 'tensorboard'
    fake.write_text('#!/bin/sh\necho ARGS "$@"\n')
    fake.chmod(0o755)
    done = subprocess.run(['sh', os.path.join(ROOT, 'tensorboard.sh'), '7007'], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, 'PYTHON': sys.executable,
                               'PATH': f'{tmp_path}:{os.environ["PATH"]}'})
    assert done.returncode == 0, done.stderr
    log_dir = os.path.realpath(config.path(settings.LOG_DIR))
    assert f'ARGS --logdir {log_dir} --host 127.0.0.1 --port 7007' in done.stdout, done.stdout
    assert 'ssh -N -L 7007:127.0.0.1:7007' in done.stdout


# ---------------------------------------------------------------------------- compile

class Detached(torch.nn.Module):
    """A network whose backward gives nothing, as the miscompiled EMANet did: a finite loss,
    zero gradients."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, label):
        losses, out = self.net(x, label)
        return {k: v.detach() + 0 * v for k, v in losses.items()}, out


class OtherMasks(Detached):
    """A network right in every way whose dropout draws other masks than eager's."""

    def forward(self, x, label):
        torch.manual_seed(7)
        return self.net(x, label)


class Tripled(Detached):
    """A network whose gradients are three times eager's."""

    def forward(self, x, label):
        losses, out = self.net(x, label)
        return {k: 3 * v for k, v in losses.items()}, out


def test_the_compiled_network_is_checked_against_eager(toy_root, tiny_net):
    import dataset
    net = tiny_net(**TINY_RUN, DATA_ROOT=toy_root).train()
    data = dataset.TrainDataset()
    image, label = (torch.stack(t) for t in zip(data[0], data[1]))
    x = torch.nn.functional.pad(image.float(), (0, 0)) / 255
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert runs.compiled_gap(net, net, net, x, label) == 0
    compiled = torch.compile(net, backend='eager')  # dynamo's graph, eager kernels
    assert runs.compiled_gap(net, compiled, net, x, label) < 1e-5
    assert 0 < runs.compiled_gap(net, OtherMasks(net), net, x, label) < 1  # not a fault
    n = sum(p.requires_grad for p in net.parameters())  # every one of them lost its gradient
    with pytest.raises(config.UserError, match=r'COMPILE=True: the compiled network\'s gradients '
                                               r'differ from eager ones \(relative difference 1, '
                                               rf'tolerance [\d.]+; {n} parameters without '
                                               r'gradient, e.g. extractor.0.weight\).*pass '
                                               r'COMPILE=False'):
        runs.compiled_gap(net, Detached(net), net, x, label)
    with pytest.raises(config.UserError, match=r'\(relative difference 2, tolerance [\d.]+; 0 '
                                               r'parameters without gradient\)'):
        runs.compiled_gap(net, Tripled(net), net, x, label)
    for key, value in net.state_dict().items():  # statistics and bases as they were
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in net.parameters())


# ---------------------------------------------------------------------------- fine-tuning

def test_init_from_starts_a_new_run_from_another_runs_weights(reference, toy_root, tmp_path,
                                                               capsys):
    parent = os.path.join(reference[0], 'models', 'final.pth')
    tmp = str(tmp_path)
    out, _ = run(args(toy_root, tmp, INIT_FROM=parent, ITER_MAX=1, LR=1e-12, LOG_EVERY=1), capsys)
    assert f'initialised from {parent} (step 6)' in out
    child, mother = load(tmp, 'final.pth'), torch.load(parent, weights_only=True)
    assert child['init_from'] == parent and child['step'] == 1  # a new schedule
    for key in ('fc0.conv.weight', 'emau.conv1.weight', 'fc2.bias'):
        torch.testing.assert_close(child['net'][key], mother['net'][key], rtol=0, atol=1e-9)
    steps = {s['step'] for s in mother['optimizer']['state'].values()} if any(
        'step' in s for s in mother['optimizer']['state'].values()) else None
    assert steps is None  # SGD keeps no step count; its momentum starts afresh:
    key = next(iter(child['optimizer']['state']))
    assert not torch.equal(child['optimizer']['state'][key]['momentum_buffer'],
                           mother['optimizer']['state'][key]['momentum_buffer'])
    records = [f for f in os.listdir(os.path.join(tmp, 'logdir')) if f.startswith('train-')]
    record = json.load(open(os.path.join(tmp, 'logdir', records[0])))
    assert record['init_from'] == parent
    _, err = run(args(toy_root, str(tmp_path / 'other'), INIT_FROM=parent, N_LAYERS=34), capsys,
                 code=2)
    one_sentence(err, 'STEM=torchvision N_LAYERS=34: N_CLASSES=5', 'N_LAYERS=18 by its weights',
                 'or another INIT_FROM.')


# ---------------------------------------------------------------------------- the schedule

@pytest.mark.parametrize('decay, iters', [(1, 7), (10, 20), (10, 16)])
def test_every_iteration_trains_at_the_originals_learning_rate(toy_root, tmp_path, capsys, decay,
                                                              iters):
    """The original counts iterations from 1 and, before iteration i, sets the rate
    LR * (1 - i / ITER_MAX) ** POLY_POWER when i is a multiple of LR_DECAY (biases: twice
    that). Every iteration's rate as train.py logs it (the log line, metrics.jsonl, TensorBoard)
    is the one the original trains it at, and a run resumed mid-way continues the schedule."""
    def original(i):  # the original's loop, run up to iteration i
        rate = 0.01
        for j in range(1, i + 1):
            if j % decay == 0:
                rate = 0.01 * (1 - j / iters) ** 0.9
        return rate

    def logged(tmp):
        log = os.path.join(tmp, 'logdir')
        with open(os.path.join(log, 'metrics.jsonl')) as f:
            rates = {m['step']: m['lr'] for m in map(json.loads, f) if 'lr' in m}
        events = tensorboard_events(log)
        conv, bias = (events.Scalars(f'lr/{g}') for g in ('conv_weight', 'bias'))
        assert [e.step for e in conv] == sorted(rates) == [e.step for e in bias]
        assert [2 * e.value for e in conv] == pytest.approx([e.value for e in bias])
        assert [e.value for e in conv] == pytest.approx([rates[s] for s in sorted(rates)])
        return rates

    tmp = str(tmp_path / 'whole')
    resume = iters % decay != 0  # the run whose ITER_MAX is not a multiple: resumed too
    argv = args(toy_root, tmp, ITER_MAX=iters, LR_DECAY=decay, LOG_EVERY=1, LR=0.01,
                POLY_POWER=0.9, ITER_SAVE=13 if resume else 1000)
    out, _ = run(argv, capsys)
    rates = logged(tmp)
    assert sorted(rates) == list(range(1, iters + 1))
    assert [rates[i] for i in rates] == pytest.approx([original(i) for i in rates], abs=1e-12)
    assert f'step 1/{iters}  loss ' in out and f'  lr {original(1):.3e}  ' in out
    if resume:  # resumed after iteration 13: the same schedule from 14 on
        parts = str(tmp_path / 'parts')
        os.makedirs(os.path.join(parts, 'models'))
        shutil.copy(os.path.join(tmp, 'models', 'step_13.pth'),
                    os.path.join(parts, 'models', 'latest.pth'))
        run(args(toy_root, parts, ITER_MAX=iters, LR_DECAY=decay, LOG_EVERY=1, ITER_SAVE=13,
                 LR=0.01, POLY_POWER=0.9), capsys)
        resumed = logged(parts)
        assert sorted(resumed) == list(range(14, iters + 1))
        assert [resumed[i] for i in resumed] == pytest.approx([original(i) for i in resumed],
                                                              abs=1e-12)
        assert_same_state(load(parts, 'final.pth'), load(tmp, 'final.pth'))


def test_a_cpu_run_at_a_quarter_of_its_speed_says_what_to_try():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert runs.slower(30.0, 33.0, cpu) is None and runs.slower(8.0, 33.0, cuda) is None
    hint = runs.slower(2.0, 29.0, cpu)  # another job on the same two cores
    assert hint.startswith('note: 2.0 img/s, down from 29.0: if another job shares these cores')
    assert hint.endswith('run with OMP_NUM_THREADS set to the cores free (1 when in doubt).')


def test_a_new_run_never_writes_over_an_earlier_runs_checkpoints(reference, toy_root, tmp_path,
                                                                 capsys):
    """A MODEL_DIR holding checkpoints of an earlier run but no latest.pth (deleted, or the
    parent of a fine-tuning in its own folder) is refused; a broken latest.pth names the step
    checkpoint to copy over it; a finished run run again rewrites nothing."""
    tmp = str(tmp_path)
    models = os.path.join(tmp, 'models')
    shutil.copytree(os.path.join(reference[0], 'models'), models)
    os.remove(os.path.join(models, 'latest.pth'))
    before = {f: open(os.path.join(models, f), 'rb').read() for f in os.listdir(models)}
    parent = os.path.join(models, 'final.pth')
    for extra in ({}, {'INIT_FROM': parent}):  # the README's fine-tuning, in the same folder
        _, err = run(args(toy_root, tmp, **extra), capsys, code=2)
        one_sentence(err, f'MODEL_DIR {models} holds best.pth, final.pth, step_3.pth of an '
                          f'earlier run but no latest.pth to resume from', 'pass another MODEL_DIR')
    assert {f: open(os.path.join(models, f), 'rb').read() for f in os.listdir(models)} == before
    with open(os.path.join(models, 'latest.pth'), 'wb') as f:
        f.write(b'PK\x03\x04 half')  # cut short
    _, err = run(args(toy_root, tmp), capsys, code=2)
    one_sentence(err, 'latest.pth cannot be read', 'or copy step_6.pth over it to resume from '
                                                  'there.')
    shutil.copy(os.path.join(models, 'step_6.pth'), os.path.join(models, 'latest.pth'))
    out, _ = run(args(toy_root, tmp), capsys)
    assert out == f'finished already: {parent} holds all 6 steps.\n'
    assert open(parent, 'rb').read() == before['final.pth']  # not written again
    _, err = run(args(toy_root, tmp, ITER_MAX=12), capsys, code=2)
    one_sentence(err, 'ITER_MAX=6 (now 12)', 'to train on from it: INIT_FROM=<it> with another '
                                              'MODEL_DIR')
    _, err = run(args(toy_root, str(tmp_path / 'b'), INIT_FROM=tmp), capsys, code=2)
    one_sentence(err, f'the checkpoint {tmp} (INIT_FROM) are a folder; give the .pth file')
