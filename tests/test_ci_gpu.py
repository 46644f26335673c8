""".ci/gpu, the checks of the CUDA path, on the CPU: a part that fails or outlasts its limit fails
the run (a pipeline's status kept), with the one-line summary; without a GPU it stops at once.
And tests/deterministic.py's upsample, which the CUDA resume test trains with, is the network's
bilinear upsample in value and gradient."""
import os
import subprocess
import sys

import pytest
import torch

import deterministic
import network
from conftest import ENV, ROOT

GPU = os.path.join(ROOT, '.ci', 'gpu')


def test_a_part_that_fails_or_outlasts_its_limit_fails_the_run(tmp_path):
    # a python that fails in bench.py (behind `| tee`), hangs in pytest, passes elsewhere at once
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\ncase "$1 $2" in\n'
                    '    "bench.py cuda") echo "bench: a made failure"; exit 7 ;;\n'
                    '    "-m pytest") exec sleep 30 ;;\n'
                    'esac\n')
    fake.chmod(0o755)
    out = tmp_path / 'out'
    done = subprocess.run(['bash', GPU], capture_output=True, text=True, timeout=60, env={
        **ENV, 'EMANET_DRY_RUN': '1', 'PYTHON': str(fake), 'OUT': str(out),
        'PARTS': 'check bench tests', 'LIMIT_tests': '1'})
    summary = done.stdout.splitlines()[-1]
    assert done.returncode == 1, done.stdout + done.stderr
    assert summary.startswith('gpu: passed: check (') and '; failed: bench (exit status 7 after' \
        in summary and summary.endswith(', tests (stopped at its limit of 1 s)'), summary
    assert (out / 'summary.txt').read_text() == summary + '\n'
    assert (out / 'bench.log').read_text() == 'bench: a made failure\n'


def test_every_part_passing_passes_and_an_unknown_part_is_one_line(tmp_path):
    env = {**ENV, 'EMANET_DRY_RUN': '1', 'PYTHON': 'true', 'OUT': str(tmp_path)}
    done = subprocess.run(['bash', GPU], capture_output=True, text=True, timeout=60,
                          env={**env, 'PARTS': 'bench tests'})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].endswith('; failed: none')
    done = subprocess.run(['bash', GPU], capture_output=True, text=True, timeout=60,
                          env={**env, 'PARTS': 'bench tset'})
    assert done.returncode == 3 and done.stdout.splitlines()[-1] == (
        "gpu: unknown part 'tset'; PARTS takes check, bench, tests, slow, train, profile.")


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is visible')
def test_without_a_gpu_it_stops_at_once_in_one_line(tmp_path):
    env = {k: v for k, v in ENV.items() if k != 'EMANET_DRY_RUN'}
    done = subprocess.run(['bash', GPU], capture_output=True, text=True, timeout=60, env={
        **env, 'PYTHON': sys.executable, 'OUT': str(tmp_path)})
    assert done.returncode == 3 and done.stdout == '', done.stdout
    assert done.stderr == ('gpu: no CUDA device is visible; run this on a GPU, or set '
                           'EMANET_DRY_RUN=1 for a dry run on the CPU.\n')
    assert os.listdir(tmp_path) == []  # no part ran


@pytest.mark.parametrize('size', [(57, 57), (33, 80), (1, 7)])
def test_the_deterministic_upsample_is_the_bilinear_one(size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 11, requires_grad=True)
    weights = torch.randn(2, 3, *size)
    ours = deterministic.upsample(x, size)
    theirs = network.upsample(x, size)
    assert torch.allclose(ours, theirs, atol=1e-5)
    grads = [torch.autograd.grad((y * weights).sum(), x)[0] for y in (ours, theirs)]
    assert torch.allclose(*grads, atol=1e-4)
