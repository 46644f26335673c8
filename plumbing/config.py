"""What every script starts with: settings.py, which is also the schema (a constant's literal
gives its kind), KEY=VALUE overrides and their checks (ranges only where a setting needs one), the
short lists of settings that may differ at evaluation and mid-run, the settings files of other
folders, and what is said to the user (a mistake as a UserError, notes). Not here: how a script
ends (scripts.py), what a run writes (files.py, records.py) and the processes (processes.py)."""
import ast
import collections
import contextlib
import difflib
import math
import os
import re
import shlex
import sys
import traceback

from plumbing import reads

ROOT = reads.ROOT  # the project folder


def _broken_settings(e):
    """The one sentence for a settings.py that Python cannot run (an edit gone wrong)."""
    if isinstance(e, ModuleNotFoundError) and e.name == 'settings':
        return (f'{os.path.join(ROOT, "settings.py")} is missing; restore it (`git checkout '
                f'settings.py`) or copy it from the project you took this folder from.')
    if isinstance(e, SyntaxError):
        where, what = f'{e.filename} line {e.lineno}', e.msg
    else:
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if os.path.basename(f.filename) == 'settings.py']
        where = f'{frames[-1].filename} line {frames[-1].lineno}' if frames else 'settings.py'
        what = f'{type(e).__name__}: {e}'
    return (f'{where} is not a valid Python constant ({what}); fix that line (`git diff '
            f'settings.py` shows what changed).')


try:
    import settings
except Exception as e:  # nothing can run without it: one sentence, before any script starts
    print(f'error: {_broken_settings(e)}', file=sys.stderr, flush=True)
    sys.exit(2)


# ---------------------------------------------------------------------------- what is said

class UserError(Exception):
    """A mistake the user can fix (a setting, a path, a file): printed as one sentence."""


@contextlib.contextmanager
def as_user_error(*kinds, prefix='', fix=''):
    """Inside, an exception of `kinds` (whose message is one clause for the user, like
    network.WeightsError) becomes a UserError: `prefix` + its message + '; ' + `fix` + '.'. Its
    message may name settings as {name}, written out from its `settings` {name: {KEY: value}}."""
    try:
        yield
    except kinds as e:
        named = {k: text(v) or 'unknown settings' for k, v in getattr(e, 'settings', {}).items()}
        raise UserError(f'{prefix}{str(e).format(**named)}' + (f'; {fix}.' if fix else '')) \
            from None


def cut(text, limit):
    """`text`, or its start and end when longer than `limit` (for free text in a message)."""
    if len(text) <= limit:
        return text
    return f'{text[:limit // 2]}...{text[-limit // 4:]} ({len(text)} characters)'


def short(value):
    """A value for a message: a string (a path, a name) whole, since a cut path names no file,
    unless past 1000 characters; the repr of any other value cut at 80."""
    if isinstance(value, str) and len(value) <= 1000:
        return value
    return cut(value if isinstance(value, str) else repr(value), 80)


def say(line, once=None, times=1):
    """A note for the user on stderr, from the first process only (under torchrun). With `once`
    (a key: a file, a kind of note), said for its first `times` occasions in this process only,
    the last of several saying so (a dataset of such files is not said 10,000 times)."""
    if once is not None:
        _SAID[once] += 1
        if _SAID[once] > times:
            return
        if times > 1 and _SAID[once] == times:
            line = line.rstrip('.') + ' (and so every other file like it: not said again).'
    if os.environ.get('RANK', '0') == '0':
        if 'tqdm' in sys.modules:  # above a progress bar, not inside its line
            sys.modules['tqdm'].tqdm.write(f'note: {line}', file=sys.stderr)
        else:
            print(f'note: {line}', file=sys.stderr, flush=True)


_SAID = collections.Counter()  # {key: occasions} of the notes said `once` in this process


def no_effect(given, reasons):
    """One line for each setting or option the user gave (`given`: {name: value}) that has no
    effect in this run: `reasons` {name: why, or None where it takes effect}. A value that
    turns a thing off (PRETRAINED=, VAL_EVERY=0, COMPILE=False) is not said."""
    for name, why in reasons.items():
        if why and name in given and str(given[name]) not in ('', '0', '0.0', 'False', 'false'):
            value = given[name]
            shown = name if value is True else f'{name}={short(value)}'
            say(f'{shown} has no effect: {why}.')


# ---------------------------------------------------------------------------- settings

# What a run reads is found in the code (plumbing/reads.py); three short lists say the rest.
# Settings the network reads that evaluation sets itself: every other setting the network reads
# (reads.phase('network')) is taken from the checkpoint at evaluation, and only those.
EVALUATION = ('AMP', 'STAGE_NUM_EVAL')
# Settings that change how or where a run works, not what it computes: workers, folders, what
# it logs, draws and saves and how often, compiling, saving memory (the same step, recomputed).
HOW = ('NUM_WORKERS', 'LOG_DIR', 'MODEL_DIR', 'ATTN_IMAGES', 'SAVE_PRED', 'LOG_EVERY',
       'IMAGE_EVERY', 'ITER_SAVE', 'VAL_EVERY', 'COMPILE', 'SAVE_MEMORY')
# Settings training reads that may change between a run and its resume: HOW, where the data is,
# what it validates on, what a new run starts from. A resume refuses when any other setting
# training reads (reads.phase('training')) differs.
MID_RUN = HOW + ('DATA_ROOT', 'VAL_SPLIT', 'STAGE_NUM_EVAL', 'PRETRAINED', 'INIT_FROM')
# Settings that act on CUDA only: on the CPU no phase reads them.
CUDA_ONLY = ('AMP',)


def read_by(*phases, cuda=True):
    """The settings that the phases of a run read (see reads.phase), on CUDA or the CPU."""
    found = frozenset().union(*(reads.phase(p) for p in phases))
    return found if cuda else found - set(CUDA_ONLY)


def unread(given, phases, script, cuda, unless=None):
    """{name: why} for each setting of `given` that `phases` of a run of `script` do not read
    (see no_effect); `unless` (another phase, a run's validation) names where it would be read,
    and so why not here."""
    read, other = read_by(*phases, cuda=cuda), reads.phase(unless[0]) if unless else ()
    return {k: 'it acts on CUDA only' if k in CUDA_ONLY and not cuda else unless[1]
            if k in other else f'{script} does not read it' for k in given if k not in read}


def resolved():
    """All settings as a plain dict (upper-case names only), as they are now."""
    return {k: getattr(settings, k) for k in dir(settings) if k.isupper()}


def apply(values, owner=None):
    """Set the settings to `values` ({KEY: value}): the one place that writes them (overrides,
    a checkpoint's settings, the checks of another folder's, tests). `owner`: what fixes their
    values beyond the user's reach ('checkpoint <path>', whose weights they built), if anything
    (see fix)."""
    for key, value in values.items():
        setattr(settings, key, value)
        if owner:
            _OWNERS[key] = owner
        else:
            _OWNERS.pop(key, None)


_OWNERS = {}  # {KEY: what fixed its value now} (see apply)


def whose(key):
    """Setting `key` and its value as a clause: 'N_CLASSES=5', or 'checkpoint a.pth was trained
    with N_CLASSES=5' where the checkpoint fixed it."""
    now = f'{key}={short(getattr(settings, key))}'
    return f'{_OWNERS[key]} was trained with {now}' if key in _OWNERS else now


def fix(key, value, otherwise):
    """The fix of a mistake about setting `key`: 'set KEY=value', or `otherwise` (what the user
    can change: the data, another checkpoint) where a checkpoint fixed its value, which the
    user's setting would not change."""
    return otherwise if key in _OWNERS else f'set {key}={value}'


@contextlib.contextmanager
def applied(values=None):
    """Inside, the settings with `values` applied (see `apply`); afterwards exactly as before
    (values set inside included, settings added inside removed)."""
    saved, owners = resolved(), dict(_OWNERS)
    apply(values or {})
    try:
        yield
    finally:
        for key in set(resolved()) - set(saved):
            delattr(settings, key)
        apply(saved)
        _OWNERS.clear()
        _OWNERS.update(owners)


def path(p, base=ROOT):
    """A path from settings, a relative one taken from `base` (the project folder by default,
    another folder for its settings), ~ expanded."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(str(p))))


def pair(value):
    """A side or an (h, w) pair as (h, w)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def crop_size(value=None):
    """CROP_SIZE (or `value`) as (height, width)."""
    return pair(settings.CROP_SIZE if value is None else value)


def named_file(key):
    """The file that setting `key` (PRETRAINED, INIT_FROM) names, checked to be one: else one
    sentence."""
    target = path(getattr(settings, key))
    if not os.path.isfile(target):
        what = {'PRETRAINED': 'the ImageNet weights'}.get(key, 'the checkpoint')
        how = 'are a folder; give the .pth file' if os.path.isdir(target) else \
            'do not exist; put the file there'
        raise UserError(f'{what} {target} ({key}) {how}, or pass {key}= to go without.')
    return target


def text(values):
    """Settings as 'KEY=value KEY=value' (for messages)."""
    return ' '.join(f'{k}={short(v)}' for k, v in values.items())


def differ(saved, among):
    """The names of the settings `among` whose value now is not the one `saved` holds ({KEY:
    value}, as a checkpoint records them), a setting that only one of them has included, in
    order."""
    now = resolved()

    def same(k):
        was = convert(k, saved[k])
        return was == now[k] or k == 'CROP_SIZE' and was is not WRONG and \
            pair(was) == pair(now[k])
    return [k for k in sorted(set(among)) if (k in saved or k in now) and (
        k not in saved or k not in now or not same(k))]


# ---------------------------------------------------------------------------- ranges

def _ranges():
    """{KEY: (kinds, in_range, what the value must be)} of the settings that need a range or a
    second kind: `kinds` are examples of the types it takes (a tuple: of its items' type), and
    in_range(settings, key) whether its value (already of one of them) is in range. A setting
    not here takes the kind of its literal in settings.py, any value of it."""
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

    def counts(what):
        return (0, (0,)), lambda s, k: s[k] >= 0 if isinstance(s[k], int) else \
            len(s[k]) >= 1 and all(t >= 1 for t in s[k]), what

    scales = ((0.,),), lambda s, k: len(s[k]) >= 1 and all(0 < x <= 4 for x in s[k]), \
        'must be one or more scales in (0, 4], like (0.5, 1.0, 2.0)'
    side = 'of {side} to 8192 pixels (at least STRIDE + 1)'
    return {
        'MEAN': (((0.,),), lambda s, k: len(s[k]) == 3 and all(0 <= m <= 1 for m in s[k]),
                 'must be 3 values in [0, 1] (red, green, blue of images scaled to [0, 1])'),
        'STD': (((0.,),), lambda s, k: len(s[k]) == 3 and all(0 < v < math.inf for v in s[k]),
                'must be 3 positive values (red, green, blue)'),
        'SCALES': scales,
        'CROP_SIZE': ((0, (0,)), lambda s, k: len(pair(s[k])) == 2 and all(
            min_side(s) <= c <= 8192 for c in pair(s[k])),
            f'must be a side (or a (height, width) pair) {side}'),
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
        'STAGE_NUM_EVAL': counts('must be 0 (= STAGE_NUM), a count of at least 1, or a tuple '
                                 'of such counts'),
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
        'LOG_EVERY': at_least(1),
        'IMAGE_EVERY': at_least(0),
        'VAL_EVERY': at_least(0),
        'EVAL_SCALES': scales,
        'EVAL_MODE': one_of('whole', 'slide'),
        'SLIDE_CROP': ((0,), lambda s, k: min_side(s) <= s[k] <= 8192,
                       'must be in [{side}, 8192] (at least STRIDE + 1)'),
        'SLIDE_STEP': ((0,), lambda s, k: 1 <= s[k] <= s['SLIDE_CROP'],
                       'must be in [1, {SLIDE_CROP}] (at most SLIDE_CROP)'),
        'ATTN_IMAGES': at_least(0),
        'LOG_DIR': folder('./logdir'),
        'MODEL_DIR': folder('./models'),
    }


def min_side(s):
    """The smallest crop or window side for the STRIDE of resolved settings `s`: STRIDE + 1."""
    return s['STRIDE'] + 1 if s.get('STRIDE') in (8, 16) else 9


RANGES = _ranges()


# ---------------------------------------------------------------------------- kinds

# The settings whose literal in settings.py is None (a knob that is off): they take None or any
# plain constant (an int, a number, a string, True or False, a tuple of them).
OPEN = frozenset(k for k in dir(settings) if k.isupper() and getattr(settings, k) is None)
ANY = 'None or any constant (an int, a number, a quoted string, True or False, a tuple of them)'
WRONG = type('WrongKind', (), {'__repr__': lambda self: 'WRONG'})()  # what does not convert


def in_words(kind):
    """A kind (or a value) in words: 'a number', 'a tuple of ints'."""
    if isinstance(kind, (tuple, list)):
        return f'a tuple of {in_words(kind[0]).split(" ", 1)[1]}s' if kind else 'a tuple'
    names = {bool: 'True or False', int: 'an int', float: 'a number', str: 'a string'}
    return names.get(type(kind), f'a {type(kind).__name__}')


def kinds(key, value=None):
    """Examples of the types setting `key` takes: its ranges' (see RANGES), None for those of
    OPEN, else that of its value in settings.py (`value` when it has none yet)."""
    if key in RANGES:
        return RANGES[key][0]
    return (None,) if key in OPEN else (getattr(settings, key, value),)


def takes(key):
    """What setting `key` takes, in words: 'a number', 'an int or a tuple of ints'."""
    return ' or '.join(ANY if kind is None else in_words(kind) for kind in kinds(key))


def _convert(kind, value):
    """`value` as the type of example `kind` (None: any plain constant or None), or WRONG when
    it does not fit."""
    if kind is None:
        value = _tuples(value)
        return value if value is None or _plain(value) else WRONG
    if isinstance(kind, bool):
        return value if isinstance(value, bool) else WRONG
    if isinstance(kind, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else WRONG
    if isinstance(kind, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return WRONG
        try:
            return float(value)
        except OverflowError:  # an int beyond any float: infinite, refused by the range check
            return math.inf if value > 0 else -math.inf
    if isinstance(kind, str):
        return value if isinstance(value, str) else WRONG
    if not isinstance(kind, tuple) or not isinstance(value, (tuple, list)):
        return WRONG
    if not kind:  # () in settings.py: a tuple of plain constants
        return tuple(value) if all(_plain(v) for v in value) else WRONG
    items = [_convert(kind[0], v) for v in value]
    return WRONG if any(v is WRONG for v in items) else tuple(items)


def _plain(value):
    return isinstance(value, (bool, int, float, str)) or isinstance(value, tuple) and all(
        _plain(v) for v in value)


def _tuples(value):
    """`value` with its lists as tuples (a list given for a tuple)."""
    return tuple(map(_tuples, value)) if isinstance(value, (list, tuple)) else value


def convert(key, value):
    """`value` as setting `key` takes it (an int where a float is expected becomes a float, a
    list a tuple), or WRONG when it is of another kind."""
    for kind in kinds(key, value):
        converted = _convert(kind, value)
        if converted is not WRONG:
            return converted
    return WRONG


# ---------------------------------------------------------------------------- overrides

def parse(key, text):
    """The value of `KEY=text`, checked against the kind of setting `key`."""
    known = resolved()
    if key not in known:
        close = difflib.get_close_matches(key.upper(), list(known), n=3, cutoff=0.5)
        hint = f' (closest: {", ".join(close)})' if close else ''
        raise UserError(f'unknown setting {short(key)!r}{hint}; the settings are the '
                        f'upper-case names in settings.py.')
    example = f', like {key}={known[key]!r}'
    kind = kinds(key)[0]
    if isinstance(kind, bool) and text in ('true', 'false'):
        text = text.capitalize()
    if kind is None:
        example = f', like {key}=None'
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if not isinstance(kind, str):
            raise UserError(f'{key}={short(text)} is not a Python literal; {key} takes '
                            f'{takes(key)}{example}.') from None
        value = text  # a bare word where a string is expected: DATA_ROOT=/data/voc
    if isinstance(kind, str) and not isinstance(value, str):
        value = text  # DATA_ROOT=2012 is the folder '2012'
    converted = convert(key, value)
    if converted is WRONG:
        hint = (f' (write {key} = {float(known[key])!r} in settings.py to make it a number)'
                if type(kind) is int and key not in RANGES and isinstance(value, float) else '')
        raise UserError(f'{key}={short(text)} has the wrong type; {key} takes '
                        f'{takes(key)}{example}{hint}.')
    return converted


def as_arguments(values):
    """{KEY: value} as one line of KEY=VALUE arguments for a shell (tuples as 1,2,3)."""
    text = {k: ','.join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in values.items()}
    return ' '.join(f'{k}={shlex.quote(v)}' for k, v in text.items())


def is_setting(arg):
    """KEY=VALUE is a setting; a path that exists, or a lower-case 'name=value/...' (an
    experiment folder like lr=0.1/final.pth), is not."""
    key, eq, text = arg.partition('=')
    if not eq or not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', key) or os.path.exists(arg):
        return False
    return key.isupper() or '/' not in text


def one_argument(rest, script, what):
    """The one argument of `rest` (those that are not settings; see apply_overrides), or None:
    one sentence for an option or more than one."""
    options = [a for a in rest if a.startswith('-')]
    if options:
        raise UserError(f'unknown option {short(options[0])}; {script} takes {what} as its one '
                        f'argument and settings as KEY=VALUE.')
    if len(rest) > 1:
        raise UserError(f'{script} takes one argument ({what}), not {len(rest)} '
                        f'({short(" ".join(rest))}); settings go as KEY=VALUE.')
    return rest[0] if rest else None


def given(argv):
    """{KEY: text} of the KEY=VALUE arguments in argv (the last of a key given twice)."""
    return {k: t for k, _, t in (a.partition('=') for a in argv if is_setting(a))}


def apply_overrides(argv, usage=None):
    """Check settings.py (see `check_file`), apply every KEY=VALUE of argv to settings (the last
    of a key given twice counts), check them all (see `check`), and return the other arguments
    in order. -h or --help prints `usage` (the script's docstring) and exits."""
    if usage and any(a in ('-h', '--help') for a in argv):
        print(usage.strip())
        sys.exit(0)
    check_file()
    apply({key: parse(key, text) for key, text in given(argv).items()})
    check()
    return [arg for arg in argv if not is_setting(arg)]


# ---------------------------------------------------------------------------- checks

def check_file():
    """Check settings.py as Python read it: a setting the code reads that it lacks, or a value
    of a kind no setting takes (or not the kind RANGES asks), is refused in one sentence naming
    the line; a constant that no code of the project reads (a misspelt name, or an idea not yet
    read) is one note with the nearest name, and the script goes on. An int where a number is
    expected becomes a float, a list a tuple."""
    file = settings.__file__
    nodes = _assignments(file)[1]
    values, read = resolved(), reads.anywhere()
    for key in sorted(read - set(values)):
        raise UserError(f'{file} lacks the setting {key} (a line deleted while editing?); `git '
                        f'diff settings.py` shows what changed, so put it back.')
    fixed = {}
    for key, value in values.items():
        where = f'{file} line {nodes[key].lineno if key in nodes else "?"}'
        if key not in reads.anywhere(strings=True):
            close = difflib.get_close_matches(key, sorted(read), n=1, cutoff=0.5)
            hint = f' (did you mean {close[0]}?)' if close else ''
            say(f'{where} defines {key}, which no code of this project reads{hint}; it has no '
                f'effect until code reads settings.{key}.', once=(file, key))
        converted = convert(key, value)
        if converted is WRONG or not _plain(converted) and converted is not None:
            what = takes(key) if key in RANGES else 'an int, a number, a string, True or ' \
                'False, or a tuple of them'
            raise UserError(f'{where}: {key} = {short(value)} is {in_words(value)}, but {key} '
                            f'takes {what}; fix the line.')
        if isinstance(converted, str) and converted != converted.strip():
            say(f'{where}: {key} = {converted!r} begins or ends with a space, taken as written.',
                once=(file, key, converted))
        if converted is not value:
            fixed[key] = converted
    apply(fixed)


def check():
    """Refuse, in one sentence, the first setting that is out of its range."""
    s = resolved()
    for key, (_, in_range, need) in RANGES.items():
        if key in s and not in_range(s, key):
            need = need.format(side=min_side(s), **s)
            value = s[key] if not isinstance(s[key], str) or s[key] == s[key].strip() else \
                repr(s[key])  # spaces around a word made visible
            raise UserError(f'{key}={short(value)} {need}; set it in settings.py or pass '
                            f'{key}=<value>.')


def check_save_memory(world):
    """SAVE_MEMORY only where the backward's second run of the backbone is the same step bit for
    bit (network.run): refused with COMPILE and with several processes on GPUs (SyncBatchNorm),
    each in one sentence."""
    if not settings.SAVE_MEMORY:
        return
    import torch
    if settings.COMPILE:
        raise UserError('SAVE_MEMORY=True with COMPILE=True: torch.compile cannot trace the '
                        'recomputation that leaves the BatchNorm statistics as the first run '
                        'left them; pass COMPILE=False, or SAVE_MEMORY=False.')
    if world > 1 and torch.cuda.is_available():
        raise UserError(f'SAVE_MEMORY=True with {world} processes on GPUs: their SyncBatchNorm '
                        f'would gather the batch\'s statistics again in the recomputation, '
                        f'which this code does not keep exact; train on one GPU, where it is '
                        f'exact, or pass SAVE_MEMORY=False.')


# ---------------------------------------------------------------------------- settings files

def read_settings_file(path):
    """The upper-case constants of a settings.py (another folder's), read with ast and never
    run: {KEY: value} (what is not a plain literal left out); None without the file."""
    if not os.path.isfile(path):
        return None
    values = {}
    for key, node in _assignments(path)[1].items():
        with contextlib.suppress(ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            values[key] = ast.literal_eval(node.value)
    return values


def set_in_settings_file(path, values):
    """Rewrite the line `KEY = <literal>  # comment` of the settings file `path` (of a folder
    being made) for each of `values` ({KEY: value}, written as Python writes it: 0.02,
    (0.5, 1.0), (0.5,), 'a/b'); the comment and every other character stay as they were."""
    lines, last = _assignments(path)
    for key in sorted(values, key=lambda k: -last[k].lineno if k in last else 0):  # bottom up
        node, text = last.get(key), repr(values[key])
        try:
            fits = node is not None and ast.literal_eval(text) == values[key]
        except ValueError:  # nan, inf
            fits = False
        if not fits:
            raise UserError(f'{key}={short(values[key])} cannot be written into {path} (no line '
                            f'`{key} = ...` there, or not a finite literal).')
        node = node.value  # columns count UTF-8 bytes (of the line, after a byte-order mark)
        first, end = lines[node.lineno - 1].encode(), lines[node.end_lineno - 1].encode()
        lines[node.lineno - 1:node.end_lineno] = [
            (first[:node.col_offset] + text.encode() + end[node.end_col_offset:]).decode()]
    with open(path, encoding='utf-8', newline='') as f:
        bom = '\ufeff' if f.read(1) == '\ufeff' else ''
    with open(path, 'w', encoding='utf-8', newline='') as f:  # a folder being made: no one
        f.write(bom + '\n'.join(lines))                      # reads it yet


def _assignments(path):
    """(the lines of a settings file, {KEY: its last `KEY = ...` node}), read as Python reads
    it (a byte-order mark, Windows line endings), or one sentence."""
    try:
        with open(path, encoding='utf-8-sig', newline='') as f:
            text = f.read()
        tree = ast.parse(text, path)
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f'{path} cannot be read as a settings file ({type(e).__name__}: '
                        f'{cut(str(e), 100)}).') from None
    last = {}
    for node in tree.body:
        name = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else 0
        if isinstance(name, ast.Name) and name.id.isupper():
            last[name.id] = node
    return text.split('\n'), last


def check_with(values, base=None):
    """`check` of the settings `base` (a settings file's constants) with `values` over them;
    afterwards the live settings are as they were, refused or not."""
    with applied():
        known = resolved()
        apply({k: v for k, v in {**(base or {}), **values}.items() if k in known})
        check()
