"""transforms.py: image and label stay aligned, padding rules, reproducibility; the
normalisation on the device (plumbing/inference.to_input)."""
import cv2
import numpy as np
import pytest
import torch

import inference
import transforms
from conftest import IGNORE, coded_pair, decode, interior
from plumbing import config

FILL = transforms.mean_colour((0.485, 0.456, 0.406))


def test_training_transform_keeps_image_and_label_aligned():
    image, label = coded_pair()
    t = transforms.train_transform((0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), 65, FILL, IGNORE)
    flipped = 0
    for seed in range(60):
        out_image, out_label = t(image, label, np.random.default_rng(seed))
        assert out_image.shape == (65, 65, 3) and out_image.dtype == np.uint8
        assert out_label.shape == (65, 65) and out_label.dtype == np.uint8
        inside = interior(out_label)
        assert inside.sum() > 200
        assert (decode(out_image)[inside] == out_label[inside]).all(), seed
        pad = (out_image == FILL).all(-1)  # padding: fill colour in the image, ignore in the label
        assert (out_label[pad] == IGNORE).all()
        flipped += not np.array_equal(t(image, label, np.random.default_rng(seed))[0], out_image)
    assert flipped == 0  # same rng seed, same sample


def test_flip_and_crop_move_image_and_label_together():
    image, label = coded_pair()
    flip = transforms.RandomFlip(1.0)
    fi, fl = flip(image, label)
    assert np.array_equal(fi, image[:, ::-1]) and np.array_equal(fl, label[:, ::-1])
    assert transforms.RandomFlip(0.0)(image, label)[1] is label
    crop = transforms.RandomCrop(33)
    ci, cl = crop(image, label, np.random.default_rng(3))
    ys, xs = [(i, j) for i in range(75 - 32) for j in range(100 - 32)
              if np.array_equal(label[i:i + 33, j:j + 33], cl)][0]
    assert np.array_equal(image[ys:ys + 33, xs:xs + 33], ci)
    with pytest.raises(ValueError):
        crop(image[:20], label[:20])


def test_random_scale_sizes_and_nearest_labels():
    image, label = coded_pair()
    for s in (0.5, 1.0, 1.5, 2.0):
        si, sl = transforms.RandomScale((s,))(image, label)
        assert sl.shape == (round(75 * s), round(100 * s)) == si.shape[:2]
        assert set(np.unique(sl)) <= set(np.unique(label))  # nearest: no new values
    si, sl = transforms.RandomScale((2.0,))(image, label)
    assert np.array_equal(sl[::2, ::2], label)  # 2x upscaling repeats each label pixel


def test_pad_to_crop_size_square_or_not():
    image, label = coded_pair(20, 30)
    pi, pl = transforms.PadTo(33, FILL, IGNORE)(image, label)
    assert pl.shape == (33, 33) and np.array_equal(pl[:20, :30], label)
    assert (pl[20:] == IGNORE).all() and (pi[:, 30:] == FILL).all()
    assert np.array_equal(pi[:20, :30], image)
    pi, pl = transforms.PadTo((17, 41), FILL, IGNORE)(image, label)  # (h, w): only w grows
    assert pl.shape == (20, 41) and pi.shape == (20, 41, 3) and (pl[:, 30:] == IGNORE).all()


def test_non_square_crops_keep_image_and_label_aligned():
    image, label = coded_pair()
    t = transforms.train_transform((0.5, 1.0, 2.0), (33, 65), FILL, IGNORE)
    for seed in range(20):
        out_image, out_label = t(image, label, np.random.default_rng(seed))
        assert out_image.shape == (33, 65, 3) and out_label.shape == (33, 65)
        inside = interior(out_label)
        assert (decode(out_image)[inside] == out_label[inside]).all(), seed
    ci, cl = transforms.RandomCrop((20, 50))(image, label, np.random.default_rng(0))
    assert cl.shape == (20, 50) and ci.shape == (20, 50, 3)


def test_normalize_batch_numbers():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.tensor([0, 255, 124], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    with config.applied({'MEAN': mean, 'STD': std}):
        y = inference.to_input(x)
        assert y.dtype == torch.float32 and y.shape == (2, 3, 4, 5)
        want = [(0 - mean[0]) / std[0], (1 - mean[1]) / std[1], (124 / 255 - mean[2]) / std[2]]
        assert torch.allclose(y[1, :, 3, 4], torch.tensor(want), atol=1e-5)
        fill = torch.tensor(FILL, dtype=torch.uint8).view(1, 3, 1, 1)
        assert inference.to_input(fill).abs().max() < 0.01  # padding ~ 0
    assert inference._mean_std(mean, std, y.device)[0] is inference._mean_std(
        mean, std, y.device)[0]  # made once per device, not at every batch


@pytest.mark.parametrize('scales', [(0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), (0.6, 1.1)])
def test_fast_scale_crop_equals_scale_pad_crop(scales):
    """RandomScaleCrop resizes only the crop window, yet gives the very same pixels."""
    slow = transforms.Compose(transforms.RandomScale(scales), transforms.PadTo(49, FILL, IGNORE),
                              transforms.RandomCrop(49))
    fast = transforms.RandomScaleCrop(scales, 49, FILL, IGNORE)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        image = rng.integers(0, 256, (rng.integers(20, 90), rng.integers(20, 90), 3), np.uint8)
        label = rng.integers(0, 256, image.shape[:2], np.uint8)
        a, b = slow(image, label, np.random.default_rng(seed))
        c, d = fast(image, label, np.random.default_rng(seed))
        assert np.array_equal(a, c) and np.array_equal(b, d), seed
    for h, w in [(375, 500), (333, 501), (27, 37), (40, 9)]:  # scale() is cv2.resize
        image = np.random.default_rng(h).integers(0, 256, (h, w, 3), np.uint8)
        for s in scales:
            want = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
            got = transforms.scale(image, np.zeros((h, w), np.uint8), s)[0]
            assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1


def test_pad_accepts_mirrored_views():
    image, label = coded_pair(20, 30)
    pi, pl = transforms.pad(image[:, ::-1], label[:, ::-1], 25, 33, FILL, IGNORE)
    assert np.array_equal(pi[:20, :30], image[:, ::-1]) and np.array_equal(pl[:20, :30],
                                                                            label[:, ::-1])


def test_to_tensors_of_views():
    image, label = coded_pair(20, 30)
    for a, b in ((image, label), (image[2:15, 3:20], label[2:15, 3:20]),
                 (image[:, ::-1], label[:, ::-1])):
        x, y = transforms.to_tensors(a, b)
        assert x.dtype == torch.uint8 and y.dtype == torch.uint8  # labels 8-bit to the device
        assert np.array_equal(x.numpy(), a.transpose(2, 0, 1)) and np.array_equal(y.numpy(), b)
