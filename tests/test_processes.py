"""One sentence, once, whatever the processes: under `python train.py --nproc_per_node=2` (and
torchrun, which adds its report) a mistake that every process finds, one that rank 0 alone
finds and one that another rank alone finds end with one sentence and exit status 2; a process
that dies ends the run with one sentence naming it and how to go on, which the same command
does; one process's TensorBoard writer is closed before it exits (a full LOG_DIR)."""
import os
import signal
import subprocess
import sys

import pytest

import train
from conftest import ENV, ROOT, args, run_main, run_script


def launched(argv, **kwargs):
    """`python train.py --nproc_per_node=2 argv...` in a new process: its CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'),
                           '--nproc_per_node=2', *argv], capture_output=True, text=True,
                          timeout=300, env=ENV, **kwargs)


def the_end(done, code, *parts):
    """The run ended with exit status `code` and its one sentence, the last line of stderr and
    the only one that says `error:`, holding every part; no traceback."""
    said = [line for line in done.stderr.splitlines() if 'error:' in line]
    assert done.returncode == code and said == done.stderr.splitlines()[-1:], done.stderr
    assert 'Traceback' not in done.stderr, done.stderr
    for part in parts:
        assert part in said[0], said[0]


@pytest.mark.parametrize('mistake', ['every process', 'rank 0 alone', 'rank 1 alone'])
def test_a_mistake_is_one_sentence_said_once(mistake, toy_root, tmp_path, capsys):
    tmp = str(tmp_path)
    if mistake == 'every process':  # a resume with another recipe
        assert run_main(train.main, args(toy_root, tmp, ITER_MAX=2), capsys)[0] == 0
        os.remove(f'{tmp}/models/final.pth')
        argv = args(toy_root, tmp, ITER_MAX=2, LR=0.5)
        the_end(launched(argv), 2, f'error: {tmp}/models/latest.pth was trained with LR=0.009 '
                                   f'(now 0.5); change them back to resume')
        done = run_script('train.py', argv, torchrun=2, check=False)  # and what torchrun adds
        assert done.stderr.count('error:') == 1 and done.returncode == 1
        assert 'torch.distributed.elastic.multiprocessing.errors.ChildFailedError' in done.stderr
        assert 'exitcode  : 2' in done.stderr
    elif mistake == 'rank 0 alone':  # its lock on LOG_DIR, held by another run
        os.makedirs(f'{tmp}/logdir')
        holder = subprocess.Popen([sys.executable, '-c', 'import fcntl, sys\nf = open(sys.argv'
                                   '[1], "a")\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint(flush=True)'
                                   '\nsys.stdin.read()', f'{tmp}/logdir/train.log.lock'],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
        try:
            the_end(launched(args(toy_root, tmp)), 2, f'error: another train.py is writing '
                                                      f'into {tmp}/logdir; wait for it')
        finally:
            holder.communicate('')
    else:  # an image that rank 1 reads first
        data = tmp_path / 'data'
        subprocess.run(['cp', '-r', toy_root, str(data)], check=True)
        with open(data / 'ImageSets' / 'Segmentation' / 'trainaug.txt') as f:
            first = f.read().split()[20]  # rank 1's at the first step (SEED=0, BATCH_SIZE=2)
        (data / 'JPEGImages' / f'{first}.jpg').write_text('not an image')
        the_end(launched(args(str(data), tmp)), 2, f'error: rank 1 of 2: image '
                                                   f'{data}/JPEGImages/{first}.jpg cannot be read')


def test_a_process_that_dies_is_one_sentence_and_the_same_command_goes_on(toy_root, tmp_path):
    tmp = str(tmp_path)
    argv = args(toy_root, tmp, ITER_MAX=8, LOG_EVERY=1)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'),
                             '--nproc_per_node=2', *argv], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith('step 2/8'):  # latest.pth is written every step
            break
    ranks = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(proc.pid)], capture_output=True,
                           text=True).stdout.split()
    rank1 = next(pid for pid in ranks if b'\0RANK=1\0' in b'\0' + open(
        f'/proc/{pid}/environ', 'rb').read())
    os.kill(int(rank1), signal.SIGKILL)  # as the system does for want of memory
    out, err = proc.communicate(timeout=120)
    the_end(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 1,
            f'error: rank 1 of 2 ended without a word (killed by a signal, or by the system for '
            f'want of memory), so the run stopped; the same command resumes from '
            f'{tmp}/models/latest.pth when it was written.')
    done = launched(argv)
    assert done.returncode == 0 and 'resuming from' in done.stdout, done.stderr
    assert 'done: 8 steps' in done.stdout


# A script run with the writes of data below LOG_DIR refused as a full disk refuses them (those
# of its TensorBoard events alone with 'events'); files are made, as a full disk makes them.
FULL = '''import builtins, os, re, runpy, sys
what, script, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
log_dir = [a.split('=', 1)[1] for a in argv if a.startswith('LOG_DIR=')][-1]
real = builtins.open
def full(path, mode='r', *a, **k):
    name = str(path)
    if name.startswith(log_dir) and any(c in mode for c in 'wax') and (
            'events.out' in name or what == 'all' and re.search(r'\\.tmp\\d+', name)):
        return real('/dev/full', mode, *a, **k)
    return real(path, mode, *a, **k)
builtins.open, sys.argv = full, [script] + argv
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name='__main__')
'''


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full')
@pytest.mark.parametrize('what, says', [
    ('all', 'emanet_outputs.json could not be written (No space left on device)'),
    ('events', 'the TensorBoard events in {} could not be written (No space left on device)')])
def test_a_full_log_dir_is_one_sentence_and_its_writer_is_closed(what, says, toy_root,
                                                                  tmp_path):
    tmp = str(tmp_path)
    done = subprocess.run([sys.executable, '-c', FULL, what, os.path.join(ROOT, 'train.py'),
                           *args(toy_root, tmp)], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert done.returncode == 2 and done.stderr == (
        f'error: {tmp}/logdir/{says}' if what == 'all' else f'error: {says}'.format(
            f'{tmp}/logdir')) + '; the disk is full; make room or pass another LOG_DIR.\n', \
        done.stderr
