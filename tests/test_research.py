"""A researcher's change touches settings.py and the one file where the idea lives, and nothing
else: in a fresh copy of the project, each change below is made by editing those two files only,
then trained for 4 steps on tiny data, killed and resumed, and evaluated, with no refusal and
the change in effect (its first loss differs from the project's own run of the same settings).
(a) a new knob of the network, given on the command line, recorded and restored by eval.py;
(b) the auxiliary FCN head (AUX_WEIGHT, in the project itself); (c) another loss term (label
smoothing) with a misspelt constant beside it; (d) another normalisation of the bases; (e) a new
test-time augmentation (a vertical flip in inference.py), which training does not read: its
loss is the project's, a resume does not compare it, and its scores get a name of their own;
(f) a new term of the loss, logged by its name (log line, metrics.jsonl, TensorBoard) with no
change to train.py; (g) a knob that is off as `None`, given a number on the command line,
recorded, compared on resume and restored by eval.py."""
import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import experiment
import train
from conftest import ENV, args, as_in_a_new_process, tensorboard_events
from plumbing import config

# (the file of the idea, [(the code as it is, the code after)]), the settings.py lines added
CHANGES = {
    'knob': ('network.py', [
        ('ConvBNReLU(c, 256, 3), nn.Dropout2d', 'ConvBNReLU(c, settings.FC1_CHANNELS, 3), '
                                               'nn.Dropout2d'),
        ('self.fc2 = nn.Conv2d(256, n_classes, 1)',
         'self.fc2 = nn.Conv2d(settings.FC1_CHANNELS, n_classes, 1)')],
        ['FC1_CHANNELS = 256  # channels of fc1']),
    'aux': (None, [], ['AUX_WEIGHT = 0.4  # as mmsegmentation']),
    'smoothing': ('network.py', [
        ("reduction='none')", "reduction='none', label_smoothing=settings.LABEL_SMOOTHING)")],
        ['LABEL_SMOOTHING = 0.1  # of the cross-entropy', 'LR_DECY = 10  # misspelt']),
    'l1': ('network.py', [
        ('mu = l2norm(torch.bmm(x, z_), dim=1)',
         'mu = torch.bmm(x, z_)\n'
         '                mu = mu / (1e-6 + mu.abs().sum(1, keepdim=True)) if '
         "settings.BASES_NORM == 'l1' else l2norm(mu, dim=1)")],
        ["BASES_NORM = 'l1'  # 'l2' (the paper's) or 'l1'"]),
    'tta': ('inference.py', [
        ('    flips = [()] + [(-1,)] * settings.EVAL_FLIP  # the dimensions flipped: none, W '
         '(mirrored)\n',
         '    flips = [()] + [(-1,)] * settings.EVAL_FLIP  # the dimensions flipped: none, W '
         '(mirrored)\n    flips += [(-2,)] * settings.EVAL_VFLIP  # and H (upside down)\n')],
        ['EVAL_VFLIP = False  # also average the upside-down image']),
    'term': ('network.py', [
        ("        losses = {'main': criterion(out, label)}",
         "        losses = {'main': criterion(out, label)}\n"
         "        losses['logits'] = settings.LOGIT_PENALTY * out.float().square().mean()")],
        ["LOGIT_PENALTY = 1e-3  # weight of a penalty on the logits' size"]),
    'none': ('network.py', [
        ('nn.Dropout2d(p=0.1))',
         'nn.Dropout2d(\n'
         '            p=0.1 if settings.FC1_DROPOUT is None else settings.FC1_DROPOUT))')],
        ["FC1_DROPOUT = None  # dropout after fc1 (None: the original's 0.1)"]),
}
# In the copy with the vertical flip: a val image inferred with it against the average of the
# softmax of the image and that of the image upside down (flipped back), both without it.
VFLIP_PROBE = """
import sys
from plumbing import config
config.apply_overrides(['DATA_ROOT=' + sys.argv[1], 'NUM_WORKERS=0'])
import torch, dataset, inference, settings
net, _ = inference.load_net('run/models/final.pth', torch.device('cpu'))
image = dataset.ValDataset(settings.VAL_SPLIT)[0][0]
with inference.eval_mode(net):
    plain, upside_down = inference.infer(net, image), inference.infer(net, image.flip(-2))
    config.apply({'EVAL_VFLIP': True})
    both = inference.infer(net, image)
assert not torch.equal(plain, both)
print(float((both - (plain + upside_down.flip(-2)) / 2).abs().max()))
"""
GIVEN = {'knob': ['FC1_CHANNELS=48'], 'none': ['FC1_DROPOUT=0.5']}  # on the command line


@pytest.fixture(scope='module')
def base(tmp_path_factory, toy_root):
    """This project's files as `experiment.py new` copies them, and the step-1 loss of the
    project's own run of the tiny settings."""
    folder = tmp_path_factory.mktemp('research')
    project = str(folder / 'project')
    for rel in experiment.project_files(config.ROOT, config.read_settings_file(
            os.path.join(config.ROOT, 'settings.py'))):
        os.makedirs(os.path.dirname(os.path.join(project, rel)), exist_ok=True)
        shutil.copy2(os.path.join(config.ROOT, rel), os.path.join(project, rel))
    with as_in_a_new_process():
        train.main(args(toy_root, str(folder / 'own'), ITER_MAX=1, LOG_EVERY=1))
    return project, first_loss(str(folder / 'own'))


def first_loss(tmp):
    with open(os.path.join(tmp, 'logdir', 'metrics.jsonl')) as f:
        return next(m['loss'] for m in map(json.loads, f) if m.get('step') == 1 and 'loss' in m)


def make_change(base, tmp, name):
    """A copy of the project with change `name` made; returns (folder, the files that differ
    from the project, the lines changed)."""
    folder = str(tmp / name)
    shutil.copytree(base, folder)
    file, edits, lines = CHANGES[name]
    for old, new in edits:
        with open(os.path.join(folder, file)) as f:
            text = f.read()
        assert text.count(old) == 1, old
        with open(os.path.join(folder, file), 'w') as f:
            f.write(text.replace(old, new))
    with open(os.path.join(folder, 'settings.py'), 'a') as f:
        f.write(''.join(f'{line}\n' for line in lines if not line.startswith('AUX_WEIGHT')))
    if name == 'aux':  # the project has the knob: its value only
        config.set_in_settings_file(os.path.join(folder, 'settings.py'), {'AUX_WEIGHT': 0.4})
    differ = []
    for top, _, names in os.walk(folder):
        for n in names:
            rel = os.path.relpath(os.path.join(top, n), folder)
            if not filecmp.cmp(os.path.join(folder, rel), os.path.join(base, rel), shallow=False):
                differ.append(rel)
    return folder, sorted(differ), len(lines) + sum(new.count('\n') - old.count('\n') + 1
                                                    for old, new in edits)


def script(folder, name, argv, check=True):
    done = subprocess.run([sys.executable, os.path.join(folder, name), *argv],
                          capture_output=True, text=True, env=ENV, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def killed_and_resumed(folder, argv):
    """train.py of `folder` killed after its second step (latest.pth written at every step),
    then resumed to its end: (the killed run's stderr, the resumed run's stdout)."""
    proc = subprocess.Popen([sys.executable, os.path.join(folder, 'train.py'), *argv], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    for line in proc.stdout:
        if line.startswith('step 2/4'):
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert not os.path.exists(os.path.join(folder, 'run', 'models', 'final.pth'))
    resumed = script(folder, 'train.py', argv)
    assert 'resuming from' in resumed.stdout and 'done: 4 steps' in resumed.stdout
    return err, resumed.stdout


def evaluate(folder, toy_root, *given):
    done = script(folder, 'eval.py', [os.path.join(folder, 'run', 'models', 'final.pth'),
                                      f'DATA_ROOT={toy_root}', 'NUM_WORKERS=0', 'ATTN_IMAGES=0',
                                      f'LOG_DIR={folder}/eval', *given])
    return done.stdout, json.load(open(done.stdout.split('scores: ')[1].split()[0]))


def metrics(folder):
    with open(os.path.join(folder, 'run', 'logdir', 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize('name', list(CHANGES))
def test_a_research_change_in_two_files_trains_resumes_and_evaluates(base, toy_root, tmp_path,
                                                                     name):
    project, own_loss = base
    folder, differ, lines = make_change(project, tmp_path, name)
    assert differ == sorted({'settings.py', CHANGES[name][0] or 'settings.py'}), differ
    assert lines <= 3
    argv = args(toy_root, os.path.join(folder, 'run'), ITER_MAX=4, ITER_SAVE=2, LOG_EVERY=1) + \
        GIVEN.get(name, [])  # a new knob given on the command line
    err, resumed = killed_and_resumed(folder, argv)
    ckpt = torch.load(os.path.join(folder, 'run', 'models', 'final.pth'), weights_only=True)
    if name == 'tta':  # training does not read it: the project's own loss
        assert first_loss(os.path.join(folder, 'run')) == own_loss
    else:  # the change is in effect
        assert first_loss(os.path.join(folder, 'run')) != own_loss
    out, scores = evaluate(folder, toy_root)
    assert 'mIoU' in out
    if name == 'knob':  # recorded, and restored by eval.py whatever settings.py says now
        assert ckpt['settings']['FC1_CHANNELS'] == 48
        assert ckpt['net']['fc1.0.conv.weight'].shape[0] == 48
        config.set_in_settings_file(os.path.join(folder, 'settings.py'), {'FC1_CHANNELS': 64})
        again, rescored = evaluate(folder, toy_root)
        assert 'from the checkpoint: ' in again and 'FC1_CHANNELS=48' in again
        assert rescored['confusion'] == scores['confusion']  # the trained network, scored
    if name == 'aux':  # the head trained (its weights moved), in the checkpoint, not at eval
        aux = {k for k in ckpt['net'] if k.startswith('aux.')}
        assert {'aux.0.conv.weight', 'aux.2.weight', 'aux.2.bias'} <= aux
        assert ckpt['settings']['AUX_WEIGHT'] == 0.4
    if name == 'tta':  # evaluation reads it: other scores under a name of their own
        flipped, _ = evaluate(folder, toy_root, 'EVAL_VFLIP=True')
        probe = subprocess.run([sys.executable, '-c', VFLIP_PROBE, toy_root], cwd=folder,
                               capture_output=True, text=True, env=ENV, timeout=300)
        assert probe.returncode == 0, probe.stderr
        assert float(probe.stdout.split()[-1]) < 1e-6  # (p(x) + flipped p(flipped x)) / 2
        assert re.search(r'_val_ss_[0-9a-f]{6}_T3\.json', flipped) and '_val_ss_T3.json' in out
        again = script(folder, 'train.py', argv + ['EVAL_VFLIP=True'])  # finished, not refused
        assert again.stdout.startswith('finished already') and 'note: EVAL_VFLIP=True has no ' \
            'effect: VAL_EVERY=0 never validates.' in again.stderr
    if name == 'term':  # logged by its name where the loss is, with no change to train.py
        logged = [m for m in metrics(folder) if 'loss' in m]
        assert logged and all(m['loss'] == pytest.approx(m['loss_main'] + m['loss_logits'])
                              and m['loss_logits'] > 0 for m in logged)
        assert re.search(r'step 4/4  loss [\d.]+ .*  loss_main [\d.]+  loss_logits [\d.]+',
                         resumed)
        events = tensorboard_events(os.path.join(folder, 'run', 'logdir'))
        assert [e.step for e in events.Scalars('train/loss_logits')] == [1, 2, 3, 4]
    if name == 'none':  # None in settings.py; a number on the command line, kept and compared
        assert ckpt['settings']['FC1_DROPOUT'] == 0.5 and ckpt['net']['fc1.0.conv.weight'] \
            .shape[0] == 256
        assert 'from the checkpoint: ' in out and 'FC1_DROPOUT=0.5' in out
        changed = script(folder, 'train.py', argv[:-1] + ['FC1_DROPOUT=0.2'], check=False)
        assert changed.returncode == 2 and 'was trained with FC1_DROPOUT=0.5 (now 0.2); change ' \
            'them back' in changed.stderr
        assert script(folder, 'train.py', argv[:-1] + ['FC1_DROPOUT={1: 2}'], check=False) \
            .stderr.startswith('error: FC1_DROPOUT={1: 2} has the wrong type; FC1_DROPOUT takes '
                               'None or any constant')
    if name == 'smoothing':  # the misspelt constant is said and the run goes on
        assert 'defines LR_DECY, which no code of this project reads (did you mean ' \
               'LR_DECAY?); it has no effect' in err
        typo = script(folder, 'train.py', argv + ['LABEL_SMOOTHNG=0.2'], check=False)
        assert typo.returncode == 2 and typo.stderr.splitlines()[-1].startswith(
            "error: unknown setting 'LABEL_SMOOTHNG' (closest: LABEL_SMOOTHING")
