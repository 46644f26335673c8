"""experiment.py: `new` makes a folder beside a project (a git checkout made here, with ImageNet
weights and toy data inside) that differs from it in the settings given only, its inputs linked
and its origin recorded, and mistakes write nothing; `run` trains and evaluates folders in turn,
goes on past a failing one, resumes a killed one, skips finished ones, stops on SIGTERM with one
line, and ends with compare.py's table."""
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
import settings
from conftest import ENV, TINY, TINY_RUN, one_sentence, run_main
from plumbing import config

WEIGHTS = os.path.join('models', 'resnet18-tiny.pth')
GIT = ['git', '-c', 'user.name=test', '-c', 'user.email=test@example.com', '-c',
       'commit.gpgsign=false']
GO_ON = 'run the same command again to go on (finished folders are skipped, train.py resumes)'


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """This project copied into a git checkout of its own (tmp/emanet), set to the tiny run on
    toy data inside it (./toy/data) with ImageNet weights in ./models; an earlier run's
    checkpoint and log, and an untracked note."""
    import network
    import toy
    src = str(tmp_path_factory.mktemp('exp') / 'emanet')
    project = config.read_settings_file(os.path.join(config.ROOT, 'settings.py'))
    for rel in experiment.project_files(config.ROOT, project):
        os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
        shutil.copy2(os.path.join(config.ROOT, rel), os.path.join(src, rel))
    config.set_in_settings_file(os.path.join(src, 'settings.py'), {
        **TINY, **TINY_RUN, 'ITER_MAX': 4, 'DATA_ROOT': './toy/data', 'PRETRAINED': f'./{WEIGHTS}'})
    toy.make_toy(os.path.join(src, 'toy', 'data'), n_train=16, n_val=4)
    with config.applied(TINY):
        torch.manual_seed(0)
        extractor = network.EMANet(settings.N_CLASSES, settings.N_LAYERS).extractor.state_dict()
    weights = {network.imagenet_name(k): v for k, v in extractor.items()}
    torch.save(weights, os.path.join(src, WEIGHTS))
    with open(os.path.join(src, 'models', 'latest.pth'), 'w') as f:
        f.write('an earlier run')
    os.makedirs(os.path.join(src, 'logdir'))
    with open(os.path.join(src, 'logdir', 'train.log'), 'w') as f:
        f.write('an earlier run\n')
    subprocess.run(['git', 'init', '-q', src], check=True)
    subprocess.run(GIT + ['-C', src, 'add', '-A'], check=True)
    subprocess.run(GIT + ['-C', src, 'commit', '-qm', 'the project'], check=True)
    with open(os.path.join(src, 'notes.txt'), 'w') as f:
        f.write('untracked, not ignored: copied\n')
    return src


def new(source, *argv, cwd=None):
    """`python experiment.py new argv...` of the source project, from `cwd` (default: it)."""
    return subprocess.run([sys.executable, os.path.join(source, 'experiment.py'), 'new', *argv],
                          cwd=cwd or source, capture_output=True, text=True, env=ENV, timeout=60)


def line_of(folder, key):
    with open(os.path.join(folder, 'settings.py')) as f:
        return next(line.rstrip('\n') for line in f if line.startswith(f'{key} = '))


def head_sha(folder):
    return subprocess.run(['git', '-C', folder, 'rev-parse', 'HEAD'], capture_output=True,
                          text=True, check=True).stdout.strip()

# ---------------------------------------------------------------------------- new


def test_new_differs_from_its_source_in_the_settings_given_only(source):
    done = new(source, 'STRIDE=8', 'STAGE_NUM=4')
    assert done.returncode == 0 and done.stderr == '', done.stderr
    copy = os.path.join(os.path.dirname(source), 'EMANet18.STRIDE8.STAGE_NUM4')  # the name
    excluded = ['-x', '.git', '-x', 'logdir', '-x', 'models', '-x', '__pycache__']
    diff = subprocess.run(['diff', '-r', *excluded, source, copy], capture_output=True,
                          text=True)
    assert diff.returncode == 1 and diff.stderr == ''
    lines = diff.stdout.splitlines()
    old = [line_of(source, 'STRIDE'), line_of(source, 'STAGE_NUM')]
    new_lines = [old[0].replace('STRIDE = 16  #', 'STRIDE = 8  #'),
                 old[1].replace('STAGE_NUM = 3  #', 'STAGE_NUM = 4  #')]
    assert [x for x in lines if x.startswith(('<', '>'))] == [
        f'< {old[0]}', f'> {new_lines[0]}', f'< {old[1]}', f'> {new_lines[1]}']
    assert [x for x in lines if x.startswith('diff ')] == [
        ' '.join(['diff', '-r', *excluded, f'{source}/settings.py', f'{copy}/settings.py'])]
    assert all(re.fullmatch(r'diff .*|\d+c\d+|---|[<>] .*', x) for x in lines)
    # the weights linked, the toy data reached through a link, nothing of git or of runs
    link = os.path.join(copy, WEIGHTS)
    assert os.path.islink(link) and os.readlink(link) == os.path.join(source, WEIGHTS)
    data = os.path.normpath(os.path.join(copy, './toy/data'))  # as config.path takes it there
    assert os.path.samefile(data, os.path.join(source, 'toy', 'data'))
    assert os.path.islink(os.path.join(copy, 'toy', 'data'))
    for top, dirs, files in os.walk(copy):
        assert '.git' not in dirs + files and '__pycache__' not in dirs
        assert all(os.path.islink(os.path.join(top, f)) for f in files if f.endswith('.pth'))
    assert not os.path.lexists(os.path.join(copy, 'models', 'latest.pth'))
    assert os.listdir(os.path.join(copy, 'logdir')) == ['experiment.json']
    assert os.path.isfile(os.path.join(copy, 'notes.txt'))
    assert os.path.isfile(os.path.join(copy, 'tests', 'test_experiment.py'))
    assert os.path.isfile(os.path.join(copy, 'models', 'README.md'))
    with open(os.path.join(copy, 'logdir', 'experiment.json')) as f:
        record = json.load(f)
    sha = head_sha(source)
    assert record['source'] == source and record['git_sha'] == sha
    assert record['git_dirty'] is False and record['settings_given'] == {'STRIDE': 8,
                                                                         'STAGE_NUM': 4}
    assert record['created'][:4].isdigit() and record['argv'][1:] == ['new', 'STRIDE=8',
                                                                      'STAGE_NUM=4']
    out = done.stdout.splitlines()
    assert out[0].startswith(f'experiment.py: made {copy} from {source} (git {sha[:7]}): ')
    assert out[1:3] == ['--- emanet/settings.py', '+++ EMANet18.STRIDE8.STAGE_NUM4/settings.py']
    assert f'-{old[0]}' in out and f'+{new_lines[0]}' in out and f'+{new_lines[1]}' in out
    assert f'linked {WEIGHTS} -> {source}/{WEIGHTS}' in out
    assert f'linked toy/data -> {source}/toy/data' in out
    assert out[-1] == 'next: python experiment.py run ../EMANet18.STRIDE8.STAGE_NUM4'


def test_names_literals_and_paths_outside_the_project(source):
    parent = os.path.dirname(source)
    os.makedirs(os.path.join(parent, 'data'), exist_ok=True)
    done = new(source, 'LR=0.02', 'SCALES=(0.5,1)', 'EVAL_SCALES=[0.75]')
    copy = os.path.join(parent, 'EMANet18.LR0.02.SCALES0.5-1.0.EVAL_SCALES0.75')
    assert done.returncode == 0, done.stderr
    assert line_of(copy, 'LR') == 'LR = 0.02  # base learning rate (biases use twice this)'
    assert line_of(copy, 'SCALES') == 'SCALES = (0.5, 1.0)  # random training scales'
    assert line_of(copy, 'EVAL_SCALES').startswith('EVAL_SCALES = (0.75,)  # inference scales')
    # a relative path outside the project stays as it is beside it, and is made absolute where
    # it would name another folder
    assert new(source, 'beside', 'DATA_ROOT=../data').returncode == 0
    assert line_of(os.path.join(parent, 'beside'), 'DATA_ROOT').startswith("DATA_ROOT = '../data'")
    deeper = os.path.join(parent, 'runs', 'deeper')
    done = new(source, deeper, 'DATA_ROOT=../data', cwd=parent)
    assert done.returncode == 0, done.stderr
    assert line_of(deeper, 'DATA_ROOT').startswith(f"DATA_ROOT = '{parent}/data'  # ")
    assert f"DATA_ROOT written as '{parent}/data' ('../data' would name another place" in \
        done.stdout
    assert done.stdout.splitlines()[-1] == 'next: python emanet/experiment.py run runs/deeper'


def test_outside_git_every_file_but_runs_data_caches_and_weights(source, tmp_path):
    plain = str(tmp_path / 'plain')
    shutil.copytree(source, plain, symlinks=True, ignore=shutil.ignore_patterns('.git'))
    os.makedirs(os.path.join(plain, '__pycache__'), exist_ok=True)
    with open(os.path.join(plain, 'old.pth'), 'w') as f:
        f.write('a checkpoint kept by hand')
    done = new(plain, 'SEED=2')
    assert done.returncode == 0, done.stderr
    copy = str(tmp_path / 'EMANet18.SEED2')
    assert '(no git)' in done.stdout.splitlines()[0]
    found = {os.path.relpath(os.path.join(top, f), copy) for top, dirs, files in os.walk(copy)
             for f in files + dirs}
    assert {'notes.txt', 'settings.py', 'tests/test_experiment.py', WEIGHTS, 'toy/data'} <= found
    assert not {'old.pth', 'models/latest.pth', 'logdir/train.log', '__pycache__'} & found
    assert os.path.islink(os.path.join(copy, WEIGHTS))
    assert os.path.islink(os.path.join(copy, 'toy', 'data'))
    with open(os.path.join(copy, 'logdir', 'experiment.json')) as f:
        assert json.load(f)['git_sha'] == 'unknown'


def test_mistakes_write_nothing(source):
    parent = os.path.dirname(source)
    os.makedirs(os.path.join(parent, 'taken'))
    open(os.path.join(parent, 'a_file'), 'w').close()
    before = sorted(os.listdir(parent))
    for argv, says in (
            (['STRIDEE=16'], "unknown setting 'STRIDEE' (closest: STRIDE"),
            (['STRIDE=fast'], 'STRIDE takes an int'),
            (['EM_MOM=1.5'], 'EM_MOM=1.5 must be in [0, 1]'),
            (['taken', 'SEED=1'], 'taken already exists; give a new NAME'),
            (['a_file'], 'a_file already exists'),
            (['emanet/inner'], 'lies inside this project folder'),
            (['one', 'two'], 'new takes one NAME, not 2'),
            (['x', 'MODEL_DIR=../emanet/models'], 'would be the same folder')):
        done = new(source, *argv)
        assert done.returncode == 2 and done.stdout == '', argv
        one_sentence(done.stderr, says)
    assert sorted(os.listdir(parent)) == before
    assert os.listdir(os.path.join(parent, 'taken')) == []


def test_a_copy_stopped_halfway_leaves_nothing(source, monkeypatch, capsys):
    copied, copy2 = [], shutil.copy2

    def copy_then_stop(src, dst):
        if len(copied) == 5:
            raise KeyboardInterrupt  # Ctrl-C
        copied.append(copy2(src, dst))
    monkeypatch.setattr(config, 'ROOT', source)
    monkeypatch.setattr(experiment.shutil, 'copy2', copy_then_stop)
    code, out, err = run_main(experiment.main, ['new', 'halfway'], capsys)
    assert code == 130 and err == 'interrupted\n' and len(copied) == 5
    assert not [n for n in os.listdir(os.path.dirname(source)) if n.startswith('halfway')]

# ---------------------------------------------------------------------------- run


def run_queue(source, *argv):
    """`python experiment.py run argv...` from the folder around the source, to its end."""
    return subprocess.run([sys.executable, os.path.join(source, 'experiment.py'), 'run', *argv],
                          cwd=os.path.dirname(source), capture_output=True, text=True, env=ENV,
                          timeout=300)


def test_the_queue_goes_on_past_a_failure_resumes_a_killed_run_and_skips_finished_ones(
        source, tmp_path):
    parent = os.path.dirname(source)
    for argv in (['A'], ['B', 'SEED=1', 'ITER_MAX=6', 'LOG_EVERY=1'], ['C', 'N_CLASSES=7']):
        assert new(source, *argv).returncode == 0
    argv = ['A', 'B', 'C', '--eval', 'EVAL_FLIP=True']
    with open(tmp_path / 'stderr', 'w') as err:  # 1: killed with its scripts while B trains
        proc = subprocess.Popen([sys.executable, os.path.join(source, 'experiment.py'), 'run',
                                 *argv], cwd=parent, env=ENV, stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True)
        seen, in_b = [], False
        for line in proc.stdout:
            seen.append(line)
            in_b = in_b or line == 'experiment.py: [2/3] B: train.py\n'
            if in_b and line.startswith('step 2/'):
                break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    out = ''.join(seen)
    assert f'ImageNet tensors from {parent}/A/{WEIGHTS}' in out  # through the link
    assert 'experiment.py: [1/3] A: eval.py EVAL_FLIP=True' in out
    models = os.path.join(parent, 'B', 'models')
    assert os.path.isfile(os.path.join(parent, 'A', 'models', 'final.pth'))
    assert os.path.isfile(os.path.join(models, 'latest.pth'))
    assert not os.path.exists(os.path.join(models, 'final.pth'))

    done = run_queue(source, *argv)  # 2: A finished, B resumes, C fails, and the table
    out = done.stdout
    assert done.returncode == 1, done.stderr[-2000:]
    assert 'experiment.py: [1/3] A: finished (final.pth and its evaluation exist)' in out
    assert 'experiment.py: [2/3] B: train.py (resumes from latest.pth)' in out
    assert f'resuming from {models}/latest.pth at step' in out
    assert os.path.isfile(os.path.join(models, 'final.pth'))
    summary = out[out.index('experiment.py: 3 folders, 1 failed:'):].splitlines()
    assert summary[1:3] == ['  A  skipped (finished)', '  B  done']
    assert summary[3].startswith('  C  failed: train.py exit status 2: error: ')
    assert 'N_CLASSES=7' in summary[3] and 'N_CLASSES=7' in done.stderr
    table = summary[4:]
    assert table[0].startswith('| folder') and all(x.startswith('|') for x in table[1:-2])
    assert table[-2:] == ['', '(mIoU in % per evaluation: checkpoint, mode, T = EM stages; pAcc '
                          'and mAcc with --csv or --json)']
    rows = {x.split('|')[1].strip(): x for x in table[2:-2]}
    head = [c.strip() for c in table[0].split('|')[1:-1]]
    assert {'A', 'B', 'C'} <= set(rows) and 'final ss_flip T3' in head and 'from' in head
    assert f'emanet@{head_sha(source)[:7]}' in rows['A'] and 'no results in' in rows['C']
    assert re.search(r'\| +\d+\.\d\d \|', rows['B'])  # B's mIoU

    done = run_queue(source, 'A', 'B', '--eval', 'EVAL_FLIP=True')  # 3: nothing to do
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('finished (final.pth and its evaluation exist)') == 2
    assert 'step ' not in done.stdout and 'scores:' not in done.stdout
    assert '| A ' in done.stdout and '| B ' in done.stdout
    # clean.sh removes the run, not the record of where the folder came from, nor the weights
    cleaned = subprocess.run(['sh', os.path.join(parent, 'A', 'clean.sh')], capture_output=True,
                             text=True, env={**ENV, 'PYTHON': sys.executable}, check=True)
    assert 'left 1 it did not write: experiment.json' in cleaned.stdout
    assert sorted(os.listdir(os.path.join(parent, 'A', 'logdir'))) == ['experiment.json']
    assert os.path.islink(os.path.join(parent, 'A', WEIGHTS))


FAKE_TRAIN = '''import os, signal, sys, time
def stop(signum, frame):
    print('train.py got SIGTERM', file=sys.stderr, flush=True)
    sys.exit(130)
signal.signal(signal.SIGTERM, stop)
with open('pid', 'w') as f:
    f.write(str(os.getpid()))
print('working', flush=True)
time.sleep(60)
'''


def test_sigterm_stops_the_running_script_with_one_line(source, tmp_path):
    folder = tmp_path / 'slow'
    folder.mkdir()
    (folder / 'settings.py').write_text("LOG_DIR = './logdir'  # logs\n")
    (folder / 'train.py').write_text(FAKE_TRAIN)
    (folder / 'eval.py').write_text('')
    proc = subprocess.Popen([sys.executable, os.path.join(source, 'experiment.py'), 'run',
                             str(folder)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line == 'working\n':
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.splitlines()[-2:] == ['train.py got SIGTERM', f'interrupted in {folder}; {GO_ON}']
    with pytest.raises(ProcessLookupError):
        os.kill(int((folder / 'pid').read_text()), 0)


def test_an_evaluation_counts_when_it_scored_that_final_pth_with_those_settings(tmp_path):
    final, logs = tmp_path / 'models' / 'final.pth', tmp_path / 'logdir'
    final.parent.mkdir()
    final.write_text('weights')
    assert not experiment.evaluated(str(final), str(logs), {})
    logs.mkdir()
    (logs / 'train-20260101-000000-step0.json').write_text('{"settings": {}}')
    (logs / 'metrics.jsonl').write_text('{"step": 1}\n')
    record = {'checkpoint': str(final), 'settings': {'EVAL_FLIP': True, 'EVAL_SCALES': [1.0]}}
    (logs / 'eval_final-01234567_val_ss_flip_T3.json').write_text(json.dumps({'record': record}))
    assert experiment.evaluated(str(final), str(logs), {})
    assert experiment.evaluated(str(final), str(logs), {'EVAL_FLIP': True,
                                                        'EVAL_SCALES': (1.0,)})
    assert not experiment.evaluated(str(final), str(logs), {'EVAL_FLIP': False})
    assert not experiment.evaluated(str(final), str(logs), {'EVAL_SCALES': (0.5, 1.0)})
    os.utime(final, (2e9, 2e9))  # final.pth written again after the evaluation
    assert not experiment.evaluated(str(final), str(logs), {})


def test_run_refuses_what_it_cannot_run(tmp_path, capsys):
    for argv, says in (
            ([], 'no folder given'),
            ([str(tmp_path)], 'is not an experiment folder (a folder holding settings.py'),
            ([config.ROOT, '--nproc', '0'], '--nproc 0 must be 1 or more'),
            (['--eval', 'EVAL_SCALES=()', config.ROOT], 'EVAL_SCALES=() must be one or more'),
            ([config.ROOT, '--eval', 'EVAL_FLIPP=1'], "unknown setting 'EVAL_FLIPP'"),
            ([config.ROOT, '--python', str(tmp_path / 'python')], 'cannot be run')):
        code, out, err = run_main(experiment.main, ['run', *argv], capsys)
        assert code == 2 and out == '', argv
        one_sentence(err, says)
