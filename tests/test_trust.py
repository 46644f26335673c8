"""What the README promises a user: clean.sh removes only what runs wrote, a stop by the scheduler
resumes, a full disk or a read-only folder is one sentence and loses nothing, bad checkpoints
are refused before they are used."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import prepare
import train
from conftest import ENV, ROOT, args, dead_pid, load, one_sentence, run_main
from plumbing import checkpoints, config, files, outputs, records, scripts

# ---------------------------------------------------------------------------- clean.sh


SH_ENV = {**os.environ, 'PYTHON': sys.executable}  # the shell scripts' Python: this one


def sh(script, *argv, cwd=None):
    return subprocess.run(['sh', str(script), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=SH_ENV)


def checkpoint(path, ours=True):
    """A checkpoint as train.py writes it (its keys), or another program's of the same name."""
    keys = {'net': {'w': torch.zeros(2)}, 'step': 4}
    torch.save({**keys, 'optimizer': {}, 'settings': {'LR': 0.1}} if ours else keys, path)


@pytest.fixture
def project(tmp_path):
    """A copy of the project's clean.sh and what it runs, with run outputs (as train.py, eval.py,
    predict.py and bench.py leave them) and the user's own files beside them."""
    project = tmp_path / 'project'
    for d in ('models', 'logdir/mine', 'logdir/predict_final-1a2b3c4d_ss', 'logdir/predict_mine',
              '__pycache__'):
        (project / d).mkdir(parents=True)
    for name in ('clean.sh', 'settings.py'):
        shutil.copy(os.path.join(ROOT, name), project)
    shutil.copytree(os.path.join(ROOT, 'plumbing'), project / 'plumbing',
                    ignore=shutil.ignore_patterns('__pycache__'))
    pid = dead_pid()  # of a killed write
    keep = ['models/resnet101-2a57e44d.pth', 'models/README.md', 'models/mine.pth',
            'models/step_x.pth', 'logdir/notes.txt', 'logdir/mine/a.png',
            'logdir/predict_final-1a2b3c4d_ss/results.md', 'logdir/predict_mine/holiday.jpg',
            'logdir/events.out.tfevents.1.host.77']  # another program's events
    claimed = {'logdir': ['train.log', 'train-20261122-101010-step0.json', 'metrics.jsonl',
                          'eval_final-1a2b3c4d_val_ss_T3.json', 'bench.json',
                          'eval_final-1a2b3c4d_val_ss_T3_confusion.png',
                          'eval_final-1a2b3c4d_val_ss_T3_pred/2007_000033.png'],
               'logdir/predict_final-1a2b3c4d_ss': ['cat.png', 'cat_overlay.jpg']}
    gone = ([f'{folder}/{name}' for folder, names in claimed.items() for name in names] +
            [f'models/latest.pth.tmp{pid}', 'models/train.lock', f'logdir/metrics.jsonl.tmp{pid}',
             'logdir/events.out.tfevents.1.host.emanet77', '__pycache__/a.pyc'])
    for name in keep + gone:
        os.makedirs(os.path.dirname(project / name), exist_ok=True)
        (project / name).write_text('x')
    for folder, names in claimed.items():
        outputs.claim(str(project / folder), dict.fromkeys(names))
    for name in ('latest.pth', 'final.pth', 'best.pth', 'step_2000.pth'):
        checkpoint(project / 'models' / name)
    return project, keep, gone + ['models/latest.pth', 'models/final.pth', 'models/best.pth',
                                  'models/step_2000.pth']


def test_clean_sh_removes_what_runs_wrote_and_nothing_else(project, tmp_path):
    project, keep, gone = project
    other = tmp_path / 'other'  # a folder shared with another program
    other.mkdir()
    checkpoint(other / 'latest.pth')  # a run of this project wrote it
    checkpoint(other / 'final.pth', ours=False)  # the other program's, of the same names
    (other / 'best.pth').write_text('not even a checkpoint')
    done = sh(project / 'clean.sh', 'MODEL_DIR=../other', 'DATA_ROOT=/')
    assert done.returncode == 2 and "'DATA_ROOT' is not LOG_DIR" in done.stderr
    assert (other / 'latest.pth').exists()  # nothing removed
    done = sh(project / 'clean.sh', 'MODEL_DIR=../other')
    assert done.returncode == 0 and sorted(os.listdir(other)) == ['best.pth', 'final.pth']
    assert f'removed 1 from {other}; left 2 it did not write: best.pth, final.pth' in done.stdout
    assert (project / 'models' / 'latest.pth').exists()  # only the MODEL_DIR given
    for _ in range(2):  # from another folder, twice in a row
        done = sh(project / 'clean.sh', cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr
    assert all((project / name).exists() for name in keep), done.stdout
    assert [name for name in gone if (project / name).exists()] == []
    assert ('left 5 it did not write: events.out.tfevents.1.host.77, mine/, notes.txt, '
            'predict_final-1a2b3c4d_ss/, predict_mine/') in done.stdout
    assert os.listdir(project / 'logdir' / 'predict_final-1a2b3c4d_ss') == ['results.md']
    assert not (project / 'logdir' / 'eval_final-1a2b3c4d_val_ss_T3_pred').exists()


@pytest.mark.parametrize('key, folder, what', [('MODEL_DIR', '.', 'the project'),
                                               ('MODEL_DIR', '/', 'the project'),
                                               ('MODEL_DIR', 'data', 'DATA_ROOT'),
                                               ('MODEL_DIR', '~', 'your home folder'),
                                               ('LOG_DIR', '~', 'your home folder')])
def test_clean_sh_refuses_a_model_dir_holding_the_project_home_or_data(project, tmp_path, key,
                                                                       folder, what):
    project, keep, gone = project
    (project / 'data' / 'JPEGImages').mkdir(parents=True)
    with open(project / 'settings.py', 'a') as f:
        f.write("DATA_ROOT = './data'\n")
    (tmp_path / 'home').mkdir()
    checkpoint(tmp_path / 'home' / 'final.pth')  # in the home folder of this test
    before = sorted(str(p) for p in tmp_path.rglob('*'))
    done = subprocess.run(['sh', str(project / 'clean.sh'), f'{key}={folder}'], text=True,
                          capture_output=True, env={**SH_ENV, 'HOME': str(tmp_path / 'home')})
    assert done.returncode == 2 and f'{key}=' in done.stderr and f'holds {what}' in \
        done.stderr and 'nothing removed' in done.stderr, done.stderr
    assert sorted(str(p) for p in tmp_path.rglob('*')) == before


@pytest.mark.parametrize('log_dir, what', [('./models', 'PRETRAINED'), ('.', 'the project'),
                                           ('..', 'the project'), ('data', 'DATA_ROOT')])
def test_clean_sh_refuses_a_log_dir_holding_weights_data_or_the_project(project, log_dir, what):
    project, keep, gone = project
    (project / 'data' / 'JPEGImages').mkdir(parents=True)
    (project / 'data' / 'JPEGImages' / 'a.jpg').write_text('x')
    with open(project / 'settings.py', 'a') as f:
        f.write("DATA_ROOT = './data'\n")
    before = sorted(str(p) for p in project.rglob('*'))
    done = sh(project / 'clean.sh', f'LOG_DIR={log_dir}')
    assert done.returncode != 0 and f'holds {what}' in done.stderr and 'nothing removed' in \
        done.stderr, done.stderr
    assert sorted(str(p) for p in project.rglob('*')) == before


def test_sigterm_stops_a_run_that_clean_sh_left_alone_and_the_run_resumes(project, toy_root,
                                                                           tmp_path, capsys):
    """While a run holds its folders clean.sh refuses; SIGTERM (what a cluster scheduler sends)
    stops the run with one line; the same command resumes it; then clean.sh removes it all."""
    argv = args(toy_root, str(tmp_path), ITER_MAX=16, LOG_EVERY=1, ITER_SAVE=20, NUM_WORKERS=2)
    clean = ['sh', str(project[0] / 'clean.sh'), f'MODEL_DIR={tmp_path}/models',
             f'LOG_DIR={tmp_path}/logdir']
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), *argv], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith('step 2/16'):
            done = subprocess.run(clean, capture_output=True, text=True, env=SH_ENV)
            assert done.returncode != 0 and 'a train.py is running in' in done.stderr, done.stderr
        if line.startswith('step 4/16'):  # latest.pth is written every 2 steps
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and 'Traceback' not in err, err
    assert err.strip().splitlines()[-1] == (f'interrupted; the same command resumes from '
                                            f'{tmp_path}/models/latest.pth when it was written')
    step = load(str(tmp_path), 'latest.pth')['step']  # the log line comes first
    assert step % 2 == 0 and 2 <= step < 16
    code, out, err = run_main(train.main, argv, capsys)
    assert code == 0 and f'resuming from {tmp_path}/models/latest.pth at step {step}' in out, err
    assert load(str(tmp_path), 'final.pth')['step'] == 16
    done = subprocess.run(clean, capture_output=True, text=True, env=SH_ENV)
    assert done.returncode == 0 and os.listdir(tmp_path / 'models') == [], done.stderr


def test_a_signal_inside_the_tensorboard_writer_waits_for_the_call_to_end(tmp_path, given):
    """Ctrl-C or SIGTERM in the middle of a tensorboardX call (its queue and writer thread) left
    the process waiting forever at exit, now and then; the signal now waits for the call's
    end, then stops the script as always; a second one does not wait."""
    given(LOG_DIR=str(tmp_path))
    calls = []

    class Writer:  # a signal arrives in the middle of a call
        def add_scalar(self, tag, value, step):
            if not calls:
                os.kill(os.getpid(), signal.SIGTERM)
            calls.append(tag)

        def flush(self):
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGINT)
                calls.append('flush')

    @scripts.command
    def main(method, *values):
        log = records.Log(0, 0, 'test')
        log.tb.close()
        log.tb = Writer()
        getattr(log, method)(*values)
        calls.append('after')

    for method, values, seen in (('scalars', (1, {'a': 1.0, 'b': 2.0}), ['a', 'b']),
                                 ('flush', (), ['flush'])):
        calls.clear()
        with pytest.raises(SystemExit) as e:
            main(method, *values)
        assert e.value.code == 130 and calls == seen
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------------------- writes


def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_half_file(tmp_path, monkeypatch):
    target = str(tmp_path / 'latest.pth')
    checkpoints.save_atomic({'step': 1}, target)
    real = torch.save
    monkeypatch.setattr(torch, 'save', lambda obj, path: real(obj, '/dev/full'))
    with pytest.raises(config.UserError, match=r'latest.pth could not be written \(the write '
                                               r'failed\); the disk is full; make room or '
                                               r'pass another MODEL_DIR'):
        checkpoints.save_atomic({'step': 2, 'x': torch.zeros(100000)}, target)
    assert os.listdir(tmp_path) == ['latest.pth']
    assert torch.load(target, weights_only=True) == {'step': 1}

    def no_room(*a, **k):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(json, 'dump', no_room)
    with pytest.raises(config.UserError, match=r'run.json could not be written \(No space left '
                                               r'on device\); the disk is full'):
        records.write_record({'a': 1}, str(tmp_path), 'run.json')
    assert os.listdir(tmp_path) == ['latest.pth']  # no 0-byte JSON behind


def test_a_read_only_folder_is_one_sentence_naming_it(tmp_path, monkeypatch, given):
    (tmp_path / 'ro').mkdir()
    given(LOG_DIR=str(tmp_path / 'ro'))
    real = open

    def read_only(path, *a, **k):
        if str(path).startswith(str(tmp_path / 'ro')) and 'w' in (a[0] if a else k.get('mode')):
            raise OSError(errno.EROFS, 'Read-only file system')
        return real(path, *a, **k)
    monkeypatch.setattr('builtins.open', read_only)  # root ignores file modes: simulate it
    with pytest.raises(config.UserError, match=f'LOG_DIR {tmp_path}/ro cannot be made or written '
                                               f'\\(Read-only file system\\); pass a folder'):
        files.folder('LOG_DIR')
    with pytest.raises(config.UserError, match='its folder is not writable; pass another LOG_DIR'):
        records.write_record({}, str(tmp_path / 'ro'), 'x.json')


def test_only_the_leftovers_of_killed_writes_are_removed(tmp_path):
    dead, alive = dead_pid(), os.getpid()
    for name in (f'a.pth.tmp{dead}', f'b.png.tmp{dead}.png', f'c.json.tmp{alive}', 'd.tmp',
                 'notes.txt', f'e.tmp{dead}x'):
        (tmp_path / name).write_text('x')
    assert files.remove_leftovers(str(tmp_path)) == 2
    assert sorted(os.listdir(tmp_path)) == [f'c.json.tmp{alive}', 'd.tmp', f'e.tmp{dead}x',
                                            'notes.txt']  # a running write's stays
    with files.atomic(str(tmp_path / 'f.txt')) as tmp:
        assert tmp == str(tmp_path / f'f.txt.tmp{alive}') == files.temporary(str(tmp_path /
                                                                                 'f.txt'))
        assert not files.is_leftover(os.path.basename(tmp))
        open(tmp, 'w').close()


def test_run_records_never_overwrite_each_other(tmp_path):
    (tmp_path / 'train-x-step0.json').write_text('{}')
    assert files.unique_name(str(tmp_path), 'train-x-step0', '.json') == 'train-x-step0-2.json'
    assert files.unique_name(str(tmp_path), 'train-y-step0', '.json') == 'train-y-step0.json'

# ---------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize('problem, message', [
    ('nan', "holds non-finite values (nan or inf) in 'fc2.bias'"),
    ('empty', 'is empty (0 bytes'),
])
def test_a_resume_refuses_a_broken_latest_checkpoint(toy_root, tmp_path, capsys, problem,
                                                     message):
    argv = args(toy_root, str(tmp_path), ITER_MAX=2)
    assert run_main(train.main, argv, capsys)[0] == 0
    target = tmp_path / 'models' / 'latest.pth'
    if problem == 'nan':
        ckpt = torch.load(target, weights_only=True)
        ckpt['net']['fc2.bias'][0] = float('inf')
        torch.save(ckpt, target)
    else:
        target.write_bytes(b'')
    code, _, err = run_main(train.main, argv, capsys)
    assert code == 2
    one_sentence(err, message)


def test_prepare_says_how_to_fix_an_rgb_voc_label(tmp_path):
    from downloads import fake_voc_sbd
    voc, sbd, _ = fake_voc_sbd(tmp_path)
    label = os.path.join(voc, 'SegmentationClass', 'v_tr.png')
    Image.fromarray(np.zeros((13, 19, 3), np.uint8)).save(label)  # an "edited" colour label
    with pytest.raises(config.UserError, match=r'v_tr.png is an image of mode RGB, not an index '
                                               r"PNG .*; VOC's own SegmentationClass labels are "
                                               r'palette PNGs of class indices, so download VOC '
                                               r'2012 again\.$'):
        prepare.prepare_voc(voc, sbd, workers=1)


def test_a_log_line_after_a_killed_write_starts_on_its_own_line(tmp_path, given):
    (tmp_path / 'metrics.jsonl').write_text('{"step": 2, "loss": 1.0}\n{"step": 4, "lo')
    given(LOG_DIR=str(tmp_path))
    log = records.Log(1, 4, 'session')  # rank 1: no TensorBoard
    log.on = True
    log.metrics(step=6, loss=0.5)
    log.metrics(step=8, loss=0.25)
    lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
    assert lines[1] == '{"step": 4, "lo' and [json.loads(x)['step'] for x in lines[2:]] == [6, 8]

# ---------------------------------------------------------------------------- whose files


def test_a_file_is_the_runs_that_wrote_it(toy_root, tmp_path, capsys):
    """Who owns a checkpoint or a log is the run that wrote it (its identity in the checkpoint,
    the event files' names and LOG_DIR's list): clean.sh leaves, and names, a checkpoint copied
    from another run (a backup, a parent for INIT_FROM), in a run's MODEL_DIR or a folder of its
    own, and one of before identities copied into a run's MODEL_DIR; a run whose LOG_DIR holds
    another run's logs (another MODEL_DIR, a fine-tuning from it, its events alone) is refused
    in one sentence before it writes; a resume from a latest.pth of before identities goes on
    as the same run, whose checkpoints clean.sh then removes."""
    import plumbing.clean
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    assert run_main(train.main, args(toy_root, a, ITER_MAX=2), capsys)[0] == 0
    assert run_main(train.main, args(toy_root, b, ITER_MAX=2, ITER_SAVE=1), capsys)[0] == 0
    ids = {load(d, 'final.pth')['run'] for d in (a, b)}
    assert len(ids) == 2 and all(len(i) == 12 for i in ids)
    parent = os.path.join(a, 'models', 'final.pth')
    legacy = {k: v for k, v in load(a, 'latest.pth').items() if k != 'run'}
    shutil.copy(parent, os.path.join(b, 'models', 'step_100.pth'))   # a backup of another run
    torch.save(legacy, os.path.join(b, 'models', 'step_200.pth'))    # one of before identities
    os.makedirs(tmp_path / 'ft')
    shutil.copy(parent, tmp_path / 'ft' / 'final.pth')               # a parent for INIT_FROM

    def clean(model_dir, log_dir):
        code, out, err = run_main(plumbing.clean.main, [f'MODEL_DIR={model_dir}',
                                                        f'LOG_DIR={log_dir}'], capsys)
        assert code == 0, err
        return out
    out = clean(f'{b}/models', f'{b}/logdir')
    assert f'removed 4 from {b}/models; left 2 it did not write: step_100.pth, step_200.pth' in out
    assert sorted(os.listdir(f'{b}/models')) == ['step_100.pth', 'step_200.pth']
    out = clean(tmp_path / 'ft', tmp_path / 'ft')
    assert f'removed 0 from {tmp_path}/ft; left 1 it did not write: final.pth' in out

    logs = {n: open(f'{a}/logdir/{n}', 'rb').read() for n in os.listdir(f'{a}/logdir')}
    for other, over in (('e', {}), ('f', {'INIT_FROM': parent}), ('g', {})):
        other = str(tmp_path / other)
        code, _, err = run_main(train.main, args(toy_root, other, LOG_DIR=f'{a}/logdir', **over),
                                capsys)
        assert code == 2
        one_sentence(err, f'LOG_DIR {a}/logdir holds ', 'of another training run (run ',
                     f'MODEL_DIR {a}/models), with whose logs this run\'s would mix; pass '
                     f'another LOG_DIR.')
        assert {n: open(f'{a}/logdir/{n}', 'rb').read() for n in os.listdir(f'{a}/logdir')} == \
            logs
        for name in ('train.log', 'metrics.jsonl'):  # then the events alone
            if os.path.exists(f'{a}/logdir/{name}'):
                os.remove(f'{a}/logdir/{name}')
                del logs[name]
                break
    assert 'events.out.tfevents' in err

    d = str(tmp_path / 'd')  # a run of before identities, resumed
    os.makedirs(f'{d}/models')
    for name in ('latest.pth', 'step_1.pth'):
        torch.save({**legacy, 'step': 1}, f'{d}/models/{name}')
    code, out, err = run_main(train.main, args(toy_root, d, ITER_MAX=2), capsys)
    assert code == 0 and 'resuming from' in out, err
    run = load(d, 'final.pth')['run']
    assert load(d, 'latest.pth')['run'] == run and len(run) == 12
    out = clean(f'{d}/models', f'{d}/logdir')
    assert f'removed 3 from {d}/models' in out and os.listdir(f'{d}/models') == []
