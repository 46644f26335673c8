"""Joint transforms of an image and its label, on HWC uint8 numpy arrays: the training
augmentation (scale, pad, crop, flip), and the arrays as tensors. Not here: reading files
(dataset.py), the settings (given as arguments: no settings are read here) and the
normalisation, which runs on the device (inference.to_input, for training and evaluation).

Every transform is `t(image, label, rng=None) -> (image, label)`: rng is a numpy Generator
(a fresh unseeded one when None), parameters are given at construction. Images stay uint8
until they reach the device.
"""
import math
from fractions import Fraction

import cv2
import numpy as np
import torch

from plumbing.config import pair


def _rng(rng):
    return np.random.default_rng() if rng is None else rng


# ---------------------------------------------------------------------------- transforms

class Compose:
    """Apply transforms in order, all drawing from the same rng."""

    def __init__(self, *transforms):
        self.transforms = transforms

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        for t in self.transforms:
            image, label = t(image, label, rng)
        return image, label


class RandomScale:
    """Resize by a factor drawn from `scales`: bilinear image, nearest label (same grid)."""

    def __init__(self, scales):
        self.scales = tuple(float(s) for s in scales)

    def __call__(self, image, label, rng=None):
        s = self.scales[_rng(rng).integers(len(self.scales))]
        return scale(image, label, s)


class PadTo:
    """Pad bottom/right to at least size (an int or (h, w)): image with `fill`, label with
    `ignore`."""

    def __init__(self, size, fill, ignore):
        self.size, self.fill, self.ignore = pair(size), fill, ignore

    def __call__(self, image, label, rng=None):
        (h, w), (ch, cw) = label.shape, self.size
        return pad(image, label, max(h, ch), max(w, cw), self.fill, self.ignore)


class RandomCrop:
    """A random window of size (an int or (h, w)); the input must be at least that large."""

    def __init__(self, size):
        self.size = pair(size)

    def __call__(self, image, label, rng=None):
        (h, w), (ch, cw) = label.shape, self.size
        if h < ch or w < cw:
            raise ValueError(f'RandomCrop({ch}x{cw}) got a {h}x{w} input; pad it first')
        rng = _rng(rng)
        y, x = rng.integers(h - ch + 1), rng.integers(w - cw + 1)
        win = (slice(y, y + ch), slice(x, x + cw))
        return image[win], label[win]


class RandomFlip:
    """Mirror left-right with probability p."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, label, rng=None):
        if _rng(rng).random() < self.p:
            return cv2.flip(_positive(image), 1), label[:, ::-1]
        return image, label


class RandomScaleCrop:
    """RandomScale, PadTo and RandomCrop in one, with the same random draws and the same
    pixels, but only the crop window is resized (2-3x less work at scales above 1)."""

    def __init__(self, scales, size, fill, ignore):
        self.scales, self.size = tuple(float(s) for s in scales), pair(size)
        self.fill, self.ignore = fill, ignore

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        s = self.scales[rng.integers(len(self.scales))]
        (h, w), (ch, cw) = scaled_size(label.shape, s), self.size
        y = rng.integers(max(h, ch) - ch + 1)
        x = rng.integers(max(w, cw) - cw + 1)
        y1, x1 = min(y + ch, h), min(x + cw, w)
        win_image, win_label = scaled_window(image, label, s, (y, y1), (x, x1))
        return pad(win_image, win_label, ch, cw, self.fill, self.ignore)


def train_transform(scales, crop_size, fill, ignore):
    """The training augmentation of the original: random scale, pad, random crop of crop_size
    (an int or (h, w)), flip (uint8 throughout); equal to Compose(RandomScale, PadTo,
    RandomCrop, RandomFlip)."""
    return Compose(RandomScaleCrop(scales, crop_size, fill, ignore), RandomFlip(0.5))


# ---------------------------------------------------------------------------- helpers

def scale(image, label, s):
    """Resize both by factor s: bilinear image, nearest label, on the same pixel grid."""
    if s == 1.0:
        return image, label
    h, w = scaled_size(label.shape, s)
    return scaled_window(image, label, s, (0, h), (0, w))


def scaled_size(shape, s):
    """(H, W) of an image of shape (h, w, ...) scaled by s (as cv2.resize(fx=s) rounds)."""
    return tuple(max(1, round(n * s)) for n in shape[:2])


def scaled_window(image, label, s, rows, cols):
    """scale(image, label, s)[rows[0]:rows[1], cols[0]:cols[1]], resizing only that region
    and a margin when s is a simple binary fraction (the region then starts where its offset
    scales to a whole number, so the pixels are the very same as resizing everything)."""
    n_rows, n_cols = label.shape
    q = Fraction(s).limit_denominator(64)
    a, b, c, d, A, C = 0, n_rows, 0, n_cols, 0, 0
    if float(q) == s:
        (a, b), (c, d) = (_source_range(*r, s, q.denominator, n)
                          for r, n in ((rows, n_rows), (cols, n_cols)))
        A, C = a * q.numerator // q.denominator, c * q.numerator // q.denominator  # a*s, c*s
    part = image[a:b, c:d]
    if b == n_rows or d == n_cols:  # repeat the last row/column, so that rounding the size
        extra = math.ceil(1 / s) + 1  # never cuts the last row (this is cv2's edge rule)
        part = cv2.copyMakeBorder(part, 0, extra * (b == n_rows), 0, extra * (d == n_cols),
                                  cv2.BORDER_REPLICATE)
    part = cv2.resize(part, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
    part = part[rows[0] - A:rows[1] - A, cols[0] - C:cols[1] - C]
    return part, label.take(_nearest(*rows, s, n_rows), 0).take(_nearest(*cols, s, n_cols), 1)


def _source_range(j0, j1, s, step, n):
    """Source pixels [a, b) that scaled pixels [j0, j1) read, 2 to spare on each side;
    a is a multiple of step, so that a * s is a whole number."""
    a = max(0, math.floor((j0 + 0.5) / s - 0.5) - 2)
    return a - a % step, min(n, math.ceil((j1 - 0.5) / s - 0.5) + 3)


def _nearest(j0, j1, s, n):
    """Source index of each scaled pixel in [j0, j1): the one whose centre is nearest."""
    return np.minimum(((np.arange(j0, j1) + 0.5) / s).astype(np.intp), n - 1)


def pad(image, label, height, width, fill, ignore):
    """Pad bottom/right to height x width (image with colour `fill`, label with `ignore`)."""
    h, w = label.shape
    if (h, w) == (height, width):
        return image, label
    border = (0, height - h, 0, width - w)
    return (cv2.copyMakeBorder(_positive(image), *border, cv2.BORDER_CONSTANT, value=tuple(fill)),
            cv2.copyMakeBorder(_positive(label), *border, cv2.BORDER_CONSTANT, value=ignore))


def _positive(a):
    """`a`, copied when a stride is negative (mirrored views), which OpenCV cannot take."""
    return a if min(a.strides) > 0 else a.copy()


def mean_colour(mean):
    """The uint8 RGB colour of a mean given in [0, 1] (what padding fills images with, so
    that padding is ~0 after normalisation, as in the original)."""
    return tuple(int(round(255 * m)) for m in mean)


def to_tensors(image, label):
    """(uint8 (3, H, W), uint8 (H, W)) torch tensors from HWC uint8 / HW arrays (labels stay
    8-bit until the device: a quarter of the bytes of int64 to copy)."""
    out = torch.empty((image.shape[2], *image.shape[:2]), dtype=torch.uint8)
    cv2.split(_positive(image), [plane.numpy() for plane in out])  # HWC -> CHW, 3x numpy's speed
    return out, torch.from_numpy(np.ascontiguousarray(label, np.uint8))
