"""Image and label files read as the data path uses them, with every check: an image as RGB uint8
as a viewer shows it (EXIF orientation applied), what of the file is not used said, a file cut
short or not an image refused; a label as an index map of valid classes; an image and its label
of one size. Every reader of an image or label (training, evaluation, prediction, `dataset.py
check`, preparation's skip of what is done) reads or checks through here, so each applies the
same checks: a file cut short is refused where a file that cannot be read is (prediction skips
it and says so). Not here: where the files are (layout.py)."""
import os

import cv2
import numpy as np
from PIL import Image

from plumbing import config

cv2.setNumThreads(0)  # one sample per loader worker process: OpenCV's own threads only contend

SAY = 3  # files of one kind of unused part said in a process


def read_pair(image_path, label_path, n_classes, ignore):
    """(RGB uint8 (H, W, 3) image, uint8 (H, W) label) of one id, checked to be of one size."""
    image, label = read_image(image_path), read_label(label_path, n_classes, ignore)
    if image.shape[:2] != label.shape:
        raise config.UserError(
            f'label {label_path} is {label.shape[1]}x{label.shape[0]} but its image '
            f'{image_path} is {image.shape[1]}x{image.shape[0]}; they must be the same size.')
    return image, label


def read_image(path):
    """RGB uint8 (H, W, 3), as a viewer shows it (EXIF orientation applied); grayscale, 16-bit,
    CMYK and RGBA files become RGB. What of the file is not used (more frames or pages, an alpha
    channel, extra channels, bits beyond 8) is said in one line per file, for the first SAY
    files of each kind in a process (a dataset of such files is not said 10,000 times)."""
    if not os.path.isfile(path):  # checked here: OpenCV would print a warning of its own
        what = 'is a folder' if os.path.isdir(path) else 'does not exist'
        raise config.UserError(f'image {path} cannot be read: it {what}.')
    try:
        with Image.open(path) as img:  # the header only: what the pixels below leave out
            unused, orientation = _unused_parts(img), img.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):
        unused, orientation = None, 1  # OpenCV may read it still; it says when not
    if unused is not None:  # an image's header: decoders fill its data cut short with grey
        check_whole(path)
    rgb = getattr(cv2, 'IMREAD_COLOR_RGB', None)  # OpenCV >= 4.10 decodes straight to RGB
    image = cv2.imread(path, (rgb or cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise config.UserError(f'image {path} cannot be read: it is not an image file.')
    for kind, what in unused or ():
        config.say(f'image {path} {what}.', once=('image', kind), times=SAY)
    image = image if rgb else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(_orient(image, orientation))


def _unused_parts(img):
    """[(kind, what)] of what of an opened PIL image the decoded RGB pixels leave out."""
    parts, frames = [], getattr(img, 'n_frames', 1)
    if frames > 1:
        parts.append(('frames', f'holds {frames} frames or pages; only the first is used'))
    if 'A' in img.mode or img.mode == 'P' and 'transparency' in img.info:
        parts.append(('alpha', 'has an alpha channel (transparency), which is not used: its '
                               'colours are read as if opaque'))
    bits, bands = _depth(img), len(img.getbands())
    if bits > 8:
        parts.append(('depth', f'has {bits} bits per channel; it is read at 8 (the lower bits '
                               f'are not used)'))
    samples = img.tag_v2.get(277, bands) if hasattr(img, 'tag_v2') else bands  # TIFF
    if samples > bands:
        parts.append(('channels', f'has {samples} channels; only the colour ones are used'))
    return parts


def _depth(img):
    """Bits per channel of an opened PIL image (PNG and TIFF say it in their header)."""
    if img.format == 'PNG':
        with open(img.filename, 'rb') as f:
            header = f.read(26)
        return header[24] if len(header) == 26 else 8
    if hasattr(img, 'tag_v2'):
        bits = img.tag_v2.get(258, (8,))
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 16 if img.mode.startswith('I;16') or img.mode in ('I', 'F') else 8


def _orient(image, orientation):
    """An image as its EXIF orientation (1-8) says a viewer shows it (labels are drawn so)."""
    if orientation in (5, 6, 7, 8):  # the sides swap: transpose first
        image = image.transpose(1, 0, *range(2, image.ndim))
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    return {2: image[:, ::-1], 3: image[::-1, ::-1], 4: image[::-1]}.get(orientation, image)


def check_whole(path, what='image'):
    """One sentence when an image or label file ends before its data does (a copy or a download
    cut short), checked once per file in a process (the files found whole: _WHOLE)."""
    if path not in _WHOLE:
        problem = cut_short(path)
        if problem:
            raise config.UserError(f'{what} {path} is cut short ({problem}); copy it again.')
        _WHOLE.add(path)


_WHOLE = set()  # the files found whole in this process


def cut_short(path):
    """What shows that a file ends before its data does, or None: a JPEG without the end of its
    image after its last scan, a PNG without its end chunk (cheap: no decoding), another format
    that PIL cannot decode in full."""
    with open(path, 'rb') as f:
        data = f.read()
    if data.startswith(b'\xff\xd8'):  # JPEG: an entropy-coded scan holds no FF D9
        return None if data.find(b'\xff\xd9', data.rfind(b'\xff\xda')) >= 0 else \
            'no end of image after its last scan'
    if data.startswith(b'\x89PNG\r\n\x1a\n'):
        return None if b'IEND\xaeB`\x82' in data[-64:] else 'no end chunk'
    try:
        with Image.open(path) as img:
            img.load()
    except OSError as e:
        if 'truncated' in str(e):
            return str(e)
    return None


def read_label(path, n_classes, ignore):
    """A palette ('P') or grayscale ('L') PNG as uint8 class indices, values checked."""
    if os.path.isfile(path):
        check_whole(path, 'label')
    try:
        with Image.open(path, formats=['PNG']) as img:
            mode, frames = img.mode, getattr(img, 'n_frames', 1)
            label = np.array(img)  # writable: torch takes it as it is
    except (OSError, ValueError, SyntaxError) as e:
        raise config.UserError(f'label {path} cannot be read ({type(e).__name__}); it is '
                               f'missing or not a PNG file.') from None
    if frames > 1:  # which frame would be the label? taking the first could mislead
        raise config.UserError(f'label {path} holds {frames} frames (an animated PNG); a label '
                               f'is one index map, so save its frame as a PNG of its own.')
    if mode not in ('P', 'L', 'I', 'I;16'):
        raise config.UserError(f'label {path} is an image of mode {mode}, not an index PNG '
                               f'(palette or grayscale with class numbers as values); convert it '
                               f'(see "Your own dataset" in docs/datasets.md).')
    bad = (label >= n_classes) & (label != ignore)
    if bad.any():
        values = np.unique(label[bad])
        fix = config.fix('N_CLASSES', int(values.max()) + 1, 'give data of its classes or '
                                                             'another checkpoint')
        raise config.UserError(f'label {path} has values {values[:8].tolist()} outside '
                               f'[0, {n_classes}) and {ignore}; fix the file, or {fix}.')
    return label.astype(np.uint8, copy=False)
