"""`python tests/deterministic.py SCRIPT [ARGS ...]`: the script with deterministic algorithms, so
that two runs of it on the same machine give the same numbers bit for bit, on CUDA too (a test's
mode: nothing of the project asks for it). PyTorch's deterministic algorithms
(torch.use_deterministic_algorithms, which stops at any operation that has none), cuBLAS with a
fixed workspace (CUBLAS_WORKSPACE_CONFIG, before CUDA starts), cuDNN off (its timing-based choice
of algorithms, train.py's benchmark=True, may choose otherwise in another run), and the logits'
bilinear upsample as two matmuls with fixed interpolation matrices (on CUDA its backward adds
with atomics in no fixed order, and PyTorch has no deterministic version of it). The project
folder must be on PYTHONPATH."""
import os
import runpy
import sys

import torch

import network


def interpolation(n_out, n_in):
    """(n_out, n_in) weights of a linear interpolation with aligned corners, as
    F.interpolate(mode='bilinear', align_corners=True) takes each axis."""
    position = torch.arange(n_out, dtype=torch.float64) * ((n_in - 1) / max(n_out - 1, 1))
    low = position.floor().long().clamp(max=n_in - 1)
    high = (low + 1).clamp(max=n_in - 1)
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    weights.index_put_((rows, low), 1 - (position - low), accumulate=True)
    weights.index_put_((rows, high), position - low, accumulate=True)
    return weights.float()


def upsample(x, size):
    """network.upsample (float32 logits to `size`) as rows then columns: matmuls both ways."""
    rows = interpolation(size[0], x.shape[-2]).to(x.device)
    columns = interpolation(size[1], x.shape[-1]).to(x.device)
    return rows @ x.float() @ columns.T


def main(argv):
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # read when cuBLAS starts
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.enabled = False
    network.upsample = upsample
    sys.argv = argv
    runpy.run_path(argv[0], run_name='__main__')


if __name__ == '__main__':
    main(sys.argv[1:])
