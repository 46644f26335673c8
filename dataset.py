"""Reading a prepared dataset for training and evaluation, and the order training takes it in.
Every dataset (VOC, the others prepare.py makes, toy.py's, your own) has this layout under
DATA_ROOT:

    JPEGImages/<id>.jpg (or .png, .jpeg, .bmp, .webp)   the images (files or links)
    SegmentationClassAug/<id>.png                       labels: class index per pixel
    ImageSets/Segmentation/<split>.txt                  the ids of a split, one per line
    classes.txt                                         class names, one per line (optional)
    palette.txt                                         "R G B" per class (optional)

    python dataset.py check [DATA_ROOT] [--workers N]   # verify it, with class statistics

The training order is the original's loader's, from SEED and the step alone. Not here: finding
and reading the files with their checks (plumbing/layout.py, plumbing/images.py), writing the
layout (prepare.py, toy.py).
"""
import functools
import hashlib
import sys

import numpy as np
import torch

from plumbing import config, images, layout, scripts  # first: settings.py checked
import settings
import transforms

# ---------------------------------------------------------------------------- datasets


class _Split:
    """The ids of one split (ImageSets/Segmentation/<split>.txt), their files, and the reading
    of one (image, label) pair. root: DATA_ROOT by default."""

    def __init__(self, split, root=None):
        self.root = layout.data_root(root)
        self.files = layout.split_files(self.root, split)  # [(id, image, label)], all there
        self.ids = [id_ for id_, _, _ in self.files]
        self.classes = layout.class_names(self.root)  # as many as N_CLASSES

    def __len__(self):
        return len(self.ids)

    def load(self, i):
        """(RGB uint8 HWC image, uint8 HW label) of ids[i]."""
        _, image, label = self.files[i]
        return images.read_pair(image, label, settings.N_CLASSES, settings.IGNORE_LABEL)


class TrainDataset(_Split):
    """ds[index] for any index >= 0: ids[index % len] with augmentation drawn from
    (SEED, epoch = index // len, index % len) only -> (uint8 (3, h, w), uint8 (h, w)) of
    CROP_SIZE (h, w)."""

    def __init__(self, split='trainaug', root=None):
        super().__init__(split, root)
        self.seed = settings.SEED
        self.transform = transforms.train_transform(
            settings.SCALES, config.crop_size(), transforms.mean_colour(settings.MEAN),
            settings.IGNORE_LABEL)

    def __getitem__(self, index):
        if index < 0:
            raise IndexError(f'TrainDataset index {index} is negative')
        epoch, i = divmod(int(index), len(self.ids))
        rng = np.random.default_rng([self.seed % 2**63, epoch, i])
        return transforms.to_tensors(*self.transform(*self.load(i), rng))


class ValDataset(_Split):
    """ds[i] -> (uint8 (3, H, W) image, uint8 (H, W) label, id): the whole image, as it is
    (evaluation pads it, see inference.infer)."""

    def __init__(self, split='val', root=None):
        super().__init__(split, root)

    def __getitem__(self, i):
        return (*transforms.to_tensors(*self.load(i)), self.ids[i])


# ---------------------------------------------------------------------------- the order

def seed_of(*parts):
    """A 63-bit seed that depends on every part (no collisions between (1, 23) and (12, 3))."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], 'little') >> 1


@functools.lru_cache(maxsize=2)
def permutation(seed, epoch, n):
    generator = torch.Generator().manual_seed(seed_of('epoch', seed, epoch))
    return torch.randperm(n, generator=generator).tolist()


def step_indices(step, n, rank, world):
    """The dataset indices that 0-based `step` takes on `rank`, as the original's loader orders
    them (shuffled anew every epoch, the last incomplete batch dropped), from SEED and the step
    alone: epoch e = step // (n // BATCH_SIZE) orders the n images by permutation(SEED, e, n)
    and cuts n // BATCH_SIZE global batches from it; rank r takes the r-th BATCH_SIZE / world of
    its batch. Index e * n + i is image i of epoch e (TrainDataset draws its augmentation
    from both)."""
    epoch, k = divmod(step, n // settings.BATCH_SIZE)
    b = settings.BATCH_SIZE // world
    first = k * settings.BATCH_SIZE + rank * b
    order = permutation(settings.SEED, epoch, n)
    return [epoch * n + order[j] for j in range(first, first + b)]


@scripts.command
def main(argv):
    """`python dataset.py check [DATA_ROOT] [--workers N]` (see plumbing/layout.check)."""
    layout.check_command(argv, __doc__)


if __name__ == '__main__':
    main(sys.argv[1:])
