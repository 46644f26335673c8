"""Pictures of labels and results: index PNGs in a palette (labels and predictions), label maps
in colour, the image with its prediction blended over it and a legend, the bases' attention
grid, and the confusion matrix. Every function takes uint8 RGB arrays (H, W, 3) or label maps
(H, W) and the dataset's class names and colours (VOC's colour map by default). Not here:
reading labels (dataset.py)."""
import math
import os

import cv2
import numpy as np
from PIL import Image

from plumbing import files


def voc_colours():
    """The VOC colour map: 256 RGB rows (class 1 = (128, 0, 0), ..., 255 = (224, 224, 192))."""
    i, rgb = np.arange(256), np.zeros((256, 3), np.int64)
    for bit in range(8):
        for c in range(3):
            rgb[:, c] |= ((i >> (3 * bit + c)) & 1) << (7 - bit)
    return rgb


def _palette(colours):
    """`colours` (a flat list of 768 ints, as layout.palette() gives) or VOC's."""
    return colours or voc_colours().ravel().tolist()


def write_label(label, target, colours=None):
    """A label map or prediction (H, W) as an index PNG in `colours` (a layout.palette(); VOC's
    by default): decoding it gives the map back exactly. Written atomically."""
    image = Image.fromarray(np.asarray(label, np.uint8), 'L').convert('P')
    image.putpalette(_palette(colours))
    with files.atomic(target, '.png') as tmp:
        image.save(tmp)


def colorize(label, colours=None):
    """RGB uint8 (H, W, 3) of a label map in `colours` (a layout.palette(); VOC's by default)."""
    table = np.array(_palette(colours), np.uint8).reshape(256, 3)
    return table[np.clip(np.asarray(label), 0, 255).astype(np.uint8)]


def overlay(image, pred, names, colours=None, alpha=0.5):
    """The image with the coloured prediction blended over it, and on its right a legend of
    the classes present (largest first)."""
    blend = cv2.addWeighted(image, 1 - alpha, colorize(pred, colours), alpha, 0)
    present = np.bincount(pred.ravel(), minlength=len(names))[:len(names)]
    order = [c for c in np.argsort(-present, kind='stable') if present[c] > 0]
    row, width = 22, 12 + 14 + 9 * max([len(names[c]) for c in order] + [6])
    height = max(blend.shape[0], row * len(order) + 8)
    legend = np.full((height, width, 3), 255, np.uint8)
    for k, c in enumerate(order):
        y = 6 + k * row
        cv2.rectangle(legend, (6, y), (20, y + 14), colorize(c, colours).tolist(), cv2.FILLED)
        cv2.putText(legend, names[c], (26, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    out = np.full((height, blend.shape[1] + width, 3), 255, np.uint8)
    out[:blend.shape[0], :blend.shape[1]] = blend
    out[:, blend.shape[1]:] = legend
    return out


def attention_tiles(image, z, pred, colours=None):
    """RGB uint8 tiles (h, w, 3): the image (h, w, 3), the coloured prediction (h, w), then
    one per map of z (K, h, w), each stretched from its minimum (blue) to its maximum (red)."""
    maps = [(m - m.min()) / max(float(m.max() - m.min()), 1e-12) for m in z]
    maps = [np.round(255 * m).astype(np.uint8) for m in maps]
    maps = [cv2.applyColorMap(m, cv2.COLORMAP_JET)[..., ::-1] for m in maps]
    return [np.ascontiguousarray(image), colorize(pred, colours)] + maps


def grid(tiles, gap=4):
    """Equal-sized tiles in a near-square grid on white, row by row."""
    h, w = tiles[0].shape[:2]
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return out


def confusion_matrix(conf, names, title=''):
    """The confusion matrix as an RGB uint8 picture: rows (true classes) normalised to sum to
    100%, class names on both axes, the share in each cell when there are few classes."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    conf = np.asarray(conf, np.float64)
    n = len(conf)
    with np.errstate(invalid='ignore', divide='ignore'):
        share = np.nan_to_num(100 * conf / conf.sum(1, keepdims=True))
    side = min(24.0, max(5.0, 0.32 * n + 2.5))  # inches: 2400 pixels at most
    fig, ax = plt.subplots(figsize=(side + 1, side), dpi=100)
    im = ax.imshow(share, cmap='Blues', vmin=0, vmax=100)
    size = 8 if n <= 60 else 5
    ax.set_xticks(range(n), names, rotation=90, fontsize=size)
    ax.set_yticks(range(n), names, fontsize=size)
    ax.set_xlabel('predicted class')
    ax.set_ylabel('true class')
    ax.set_title(title or 'confusion matrix (% of each true class)', fontsize=9)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if share[i, j] >= 0.5:
                    ax.text(j, i, f'{share[i, j]:.0f}', ha='center', va='center', fontsize=6,
                            color='white' if share[i, j] > 50 else 'black')
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return picture


def confused_most(conf, names, top=10):
    """The largest off-diagonal cells of a confusion matrix: [{'true', 'predicted', 'share'}]
    where share is the fraction of the true class's pixels given to the predicted class."""
    conf = np.asarray(conf, np.float64)
    with np.errstate(invalid='ignore', divide='ignore'):
        share = np.nan_to_num(conf / conf.sum(1, keepdims=True))
    np.fill_diagonal(share, 0)
    cells = np.argsort(-share, axis=None, kind='stable')[:top]
    return [{'true': names[i], 'predicted': names[j], 'share': float(share[i, j])}
            for i, j in zip(*np.unravel_index(cells, share.shape)) if share[i, j] > 0]


def save_rgb(picture, target):
    """An RGB uint8 picture in the format of target's extension (.png, .jpg), atomically."""
    with files.atomic(target, os.path.splitext(target)[1]) as tmp:
        Image.fromarray(picture).save(tmp, quality=90)
