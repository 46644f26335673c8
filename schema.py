"""What every setting takes: its kind (an int, a number, a string, True or False, a tuple) and
its range, as one table, and a value converted to its kind. Not here: reading settings.py and
KEY=VALUE overrides, or refusing a value (config.py does both, with this table)."""
import math
import re


def pair(value):
    """A side or an (h, w) pair as (h, w)."""
    return tuple(value) if isinstance(value, tuple) else (value, value)


def _rules():
    """{key: (kinds, in_range, what the value must be)} of every setting: `kinds` are examples of
    the types it takes (a tuple: of its items' type), in_range(settings, key) whether its value
    (of one of them, as all others) is in range."""
    def any_(kind):
        return (kind,), lambda s, k: True, ''

    def within(low, high, kind=0):
        return (kind,), lambda s, k: low <= s[k] <= high, f'must be in [{low}, {high}]'

    def at_least(low):
        return (0,), lambda s, k: s[k] >= low, f'must be at least {low}'

    def one_of(*values):
        return (type(values[0])(),), lambda s, k: s[k] in values, \
            f'must be one of {", ".join(map(repr, values))}'

    def finite(low, what):
        return (0.,), lambda s, k: low <= s[k] < math.inf, what

    def split(example):
        return ('',), lambda s, k: re.fullmatch(r'[^/\\\s]+', s[k]) is not None, \
            f'must be the name of a list in ImageSets/Segmentation, like {example}'

    def folder(example):
        return ('',), lambda s, k: s[k].strip() != '', f'must name a folder, like {example}'

    scales = ((0.,),), lambda s, k: len(s[k]) >= 1 and all(0 < x <= 4 for x in s[k]), \
        'must be one or more scales in (0, 4], like (0.5, 1.0, 2.0)'
    return {
        'DATA_ROOT': any_(''),
        'MEAN': (((0.,),), lambda s, k: len(s[k]) == 3 and all(0 <= m <= 1 for m in s[k]),
                 'must be 3 values in [0, 1] (red, green, blue of images scaled to [0, 1])'),
        'STD': (((0.,),), lambda s, k: len(s[k]) == 3 and all(0 < v < math.inf for v in s[k]),
                'must be 3 positive values (red, green, blue)'),
        'SCALES': scales,
        'CROP_SIZE': ((0, (0,)), lambda s, k: len(pair(s[k])) == 2 and all(
            min_side(s) <= c <= 8192 for c in pair(s[k])), 'must be a side (or a (height, '
            'width) pair) of {side} to 8192 pixels (at least STRIDE + 1)'),
        'TRAIN_SPLIT': split('trainaug'),
        'VAL_SPLIT': split('val'),
        'N_CLASSES': within(1, 255),
        'IGNORE_LABEL': ((0,), lambda s, k: s['N_CLASSES'] <= s[k] <= 255,
                         'must be in [N_CLASSES, 255] (labels are 8-bit; no class may be '
                         'ignored)'),
        'N_LAYERS': one_of(18, 34, 50, 101, 152),
        'STRIDE': one_of(8, 16),
        'STEM': one_of('deep', 'torchvision'),
        'BN_MOM': within(0, 1, 0.),
        'EMA_CHANNELS': at_least(1),
        'N_BASES': at_least(1),
        'EM_MOM': within(0, 1, 0.),
        'STAGE_NUM': at_least(1),
        'STAGE_NUM_EVAL': ((0, (0,)), lambda s, k: s[k] >= 0 if isinstance(s[k], int) else
                           len(s[k]) >= 1 and all(t >= 1 for t in s[k]),
                           'must be 0 (= STAGE_NUM), a count of at least 1, or a tuple of such '
                           'counts'),
        'PRETRAINED': any_(''),
        'INIT_FROM': any_(''),
        'BATCH_SIZE': at_least(1),
        'ITER_MAX': at_least(1),
        'ITER_SAVE': at_least(1),
        'LR_DECAY': at_least(1),
        'LR': ((0.,), lambda s, k: 0 < s[k] < math.inf, 'must be a positive finite number'),
        'LR_MOM': within(0, 1, 0.),
        'POLY_POWER': finite(0, 'must be a finite number >= 0'),
        'WEIGHT_DECAY': finite(0, 'must be a finite number >= 0'),
        'LOSS': one_of('ce', 'ohem'),
        'OHEM_THRESH': ((0.,), lambda s, k: 0 < s[k] <= 1, 'must be in (0, 1]'),
        'OHEM_MIN_KEPT': at_least(0),
        'SEED': within(0, 2 ** 63 - 1),
        'NUM_WORKERS': within(0, 256),
        'AMP': any_(False),
        'COMPILE': any_(False),
        'LOG_EVERY': at_least(1),
        'IMAGE_EVERY': at_least(0),
        'VAL_EVERY': at_least(0),
        'EVAL_SCALES': scales,
        'EVAL_FLIP': any_(False),
        'EVAL_MODE': one_of('whole', 'slide'),
        'SLIDE_CROP': ((0,), lambda s, k: min_side(s) <= s[k] <= 8192,
                       'must be in [{side}, 8192] (at least STRIDE + 1)'),
        'SLIDE_STEP': ((0,), lambda s, k: 1 <= s[k] <= s['SLIDE_CROP'],
                       'must be in [1, {SLIDE_CROP}] (at most SLIDE_CROP)'),
        'SAVE_PRED': any_(False),
        'ATTN_IMAGES': at_least(0),
        'LOG_DIR': folder('./logdir'),
        'MODEL_DIR': folder('./models'),
    }


def min_side(s):
    """The smallest crop or window side for the STRIDE of resolved settings `s`: STRIDE + 1."""
    return s['STRIDE'] + 1 if s['STRIDE'] in (8, 16) else 9


RULES = _rules()


def describe(kind):
    """A kind (or a value) in words: 'a number', 'a tuple of ints'."""
    if isinstance(kind, (tuple, list)):
        return f'a tuple of {describe(kind[0]).split(" ", 1)[1]}s' if kind else 'a tuple'
    names = {bool: 'True or False', int: 'an int', float: 'a number', str: 'a string'}
    return names.get(type(kind), f'a {type(kind).__name__}')


def _convert(kind, value):
    """`value` as the type of example `kind`, or None when it does not fit."""
    if isinstance(kind, bool):
        return value if isinstance(value, bool) else None
    if isinstance(kind, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(kind, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        try:
            return float(value)
        except OverflowError:  # an int beyond any float: infinite, refused by the range check
            return math.inf if value > 0 else -math.inf
    if isinstance(kind, str):
        return value if isinstance(value, str) else None
    if not isinstance(value, (tuple, list)):
        return None
    items = [_convert(kind[0], v) for v in value]
    return None if any(v is None for v in items) else tuple(items)


def convert(key, value):
    """`value` as setting `key` takes it (an int where a float is expected becomes a float, a
    list a tuple), or None when it is of another kind."""
    for kind in RULES[key][0]:
        converted = _convert(kind, value)
        if converted is not None:
            return converted
    return None


def takes(key):
    """What setting `key` takes, in words: 'a number', 'an int or a tuple of ints'."""
    return ' or '.join(describe(kind) for kind in RULES[key][0])
