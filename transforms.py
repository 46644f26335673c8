"""Joint transforms of an image and its label, on HWC uint8 numpy arrays.

Every transform is `t(image, label, rng=None) -> (image, label)`: rng is a numpy Generator
(a fresh unseeded one when None), parameters are given at construction and no settings are
read here. Images stay uint8 until `normalize_batch` runs on the device in train.py/eval.py.
"""
import cv2
import numpy as np
import torch


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
    """Pad bottom/right to at least size x size: image with `fill`, label with `ignore`."""

    def __init__(self, size, fill, ignore):
        self.size, self.fill, self.ignore = size, fill, ignore

    def __call__(self, image, label, rng=None):
        h, w = label.shape
        return pad(image, label, max(h, self.size), max(w, self.size), self.fill, self.ignore)


class PadModulo:
    """Pad bottom/right so that H and W are `remainder` modulo `multiple` (1 mod 8 by default),
    the evaluation rule of the original."""

    def __init__(self, fill, ignore, multiple=8, remainder=1):
        self.fill, self.ignore = fill, ignore
        self.multiple, self.remainder = multiple, remainder

    def __call__(self, image, label, rng=None):
        h, w = label.shape
        m, r = self.multiple, self.remainder
        return pad(image, label, h + (r - h) % m, w + (r - w) % m, self.fill, self.ignore)


class RandomCrop:
    """A random size x size window (the input must be at least that large: pad first)."""

    def __init__(self, size):
        self.size = size

    def __call__(self, image, label, rng=None):
        h, w = label.shape
        if h < self.size or w < self.size:
            raise ValueError(f'RandomCrop({self.size}) got a {h}x{w} input; pad it first')
        rng = _rng(rng)
        y, x = rng.integers(h - self.size + 1), rng.integers(w - self.size + 1)
        win = (slice(y, y + self.size), slice(x, x + self.size))
        return image[win], label[win]


class RandomFlip:
    """Mirror left-right with probability p."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, label, rng=None):
        if _rng(rng).random() < self.p:
            return image[:, ::-1], label[:, ::-1]
        return image, label


def train_transform(scales, crop_size, fill, ignore):
    """The training augmentation of the original: scale, pad, crop, flip (uint8 throughout)."""
    return Compose(RandomScale(scales), PadTo(crop_size, fill, ignore),
                   RandomCrop(crop_size), RandomFlip(0.5))


# ---------------------------------------------------------------------------- helpers

def scale(image, label, s):
    """Resize both by factor s; the label is sampled at the pixel centres the image uses."""
    if s == 1.0:
        return image, label
    h, w = label.shape
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST_EXACT)
    return image, label


def pad(image, label, height, width, fill, ignore):
    """Pad bottom/right to height x width (image with colour `fill`, label with `ignore`)."""
    h, w = label.shape
    if (h, w) == (height, width):
        return image, label
    out_image = np.empty((height, width, image.shape[2]), image.dtype)
    out_image[...] = np.asarray(fill, image.dtype)
    out_image[:h, :w] = image
    out_label = np.full((height, width), ignore, label.dtype)
    out_label[:h, :w] = label
    return out_image, out_label


def mean_colour(mean):
    """The uint8 RGB colour of a mean given in [0, 1] (what padding fills images with, so
    that padding is ~0 after normalisation, as in the original)."""
    return tuple(int(round(255 * m)) for m in mean)


def to_tensors(image, label):
    """(uint8 (3, H, W), int64 (H, W)) torch tensors from HWC uint8 / HW arrays."""
    image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return image, torch.from_numpy(label.astype(np.int64))


def normalize_batch(x, mean, std):
    """uint8 images (..., 3, H, W) on any device -> float32 (x / 255 - mean) / std."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(3, 1, 1) * 255
    return (x.float() - m) / s
