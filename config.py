"""The plumbing under every script: KEY=VALUE overrides of settings.py and their checks, the
start of a script (a mistake the user can fix ends it as one sentence, exit status 2), and the
processes (torchrun set-up, a pool of threads). Not here: what a run writes (runs.py)."""
import ast
import concurrent.futures
import contextlib
import difflib
import functools
import math
import os
import re
import shlex
import signal
import sys

import settings

ROOT = os.path.dirname(os.path.abspath(__file__))


class UserError(Exception):
    """A mistake the user can fix (a setting, a path, a file): printed as one sentence."""


def command(fn):
    """Decorate a script's main(argv): a UserError ends it with its sentence and exit status 2;
    SIGTERM (what cluster schedulers send) ends it like Ctrl-C, with exit status 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            message = str(e)
            if 'Original Traceback' in message:  # raised in a DataLoader worker: the sentence
                message = message.strip().splitlines()[-1].split('UserError: ', 1)[-1]
            print(f'error: {message}', file=sys.stderr, flush=True)
            sys.exit(2)
        except KeyboardInterrupt:
            print('interrupted', file=sys.stderr, flush=True)
            sys.exit(130)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return wrapper


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def as_user_error(*kinds):
    """Inside, an exception of `kinds` (whose message is already one sentence for the user, like
    network.WeightsError) becomes a UserError."""
    try:
        yield
    except kinds as e:
        raise UserError(str(e)) from None


# forked data loader workers die quietly on SIGTERM, as they would without us
os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def short(value, limit=80):
    """repr(value), or its start and end when longer than `limit` (for messages)."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f'{text[:limit // 2]}...{text[-limit // 4:]} ({len(text)} characters)'


# ---------------------------------------------------------------------------- overrides

# Settings that also take a second form besides their default's type: an example of it.
ALSO = {'CROP_SIZE': (513, 513), 'STAGE_NUM_EVAL': (1, 2, 3)}


def resolved():
    """All settings as a plain dict (upper-case names only), as they are now."""
    return {k: getattr(settings, k) for k in dir(settings) if k.isupper()}


def path(p):
    """A path from settings, relative ones taken from the project folder."""
    return os.path.normpath(os.path.join(ROOT, os.path.expanduser(p)))


def _kind(v):
    return {bool: 'True or False', int: 'an int', float: 'a number', str: 'a string',
            tuple: 'a tuple'}[type(v)]


def _convert(default, value):
    """`value` as the type of `default`, or None when it does not fit."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else None
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(default, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        try:
            return float(value)
        except OverflowError:  # an int beyond any float: infinite, refused by the range check
            return math.inf if value > 0 else -math.inf
    if isinstance(default, str):
        return value if isinstance(value, str) else None
    if isinstance(default, tuple):
        if not isinstance(value, (tuple, list)):
            return None
        if not default:
            return tuple(value)
        items = [_convert(default[0], v) for v in value]
        return None if any(v is None for v in items) else tuple(items)
    raise TypeError(f'settings of type {type(default).__name__} are not supported')


def parse(key, text):
    """The value of `KEY=text`, checked against the type of the default in settings.py."""
    names = list(resolved())
    if key not in names:
        close = difflib.get_close_matches(key.upper(), names, n=3, cutoff=0.5)
        hint = f' (closest: {", ".join(close)})' if close else ''
        raise UserError(f'unknown setting {short(key)!r}{hint}; the settings are the '
                        f'upper-case names in settings.py.')
    default = getattr(settings, key)
    if isinstance(default, bool) and text in ('true', 'false'):
        text = text.capitalize()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if not isinstance(default, str):
            raise UserError(f'{key}={short(text)} is not a Python literal; {key} takes '
                            f'{_kind(default)}, like {key}={default!r}.') from None
        value = text  # a bare word where a string is expected: DATA_ROOT=/data/voc
    if isinstance(default, str) and not isinstance(value, str):
        value = text  # DATA_ROOT=2012 is the folder '2012'
    converted = _convert(default, value)
    if converted is None and key in ALSO:
        converted = _convert(ALSO[key], value)
    if converted is None:
        also = f' or {_kind(ALSO[key])} like {ALSO[key]!r}' if key in ALSO else ''
        raise UserError(f'{key}={short(text)} has the wrong type; {key} takes '
                        f'{_kind(default)}{also}, like {key}={default!r}.')
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


def apply_overrides(argv, usage=None):
    """Apply every KEY=VALUE of argv to settings, check them all (see `check`), and return the
    other arguments in order. -h or --help prints `usage` (the script's docstring) and exits."""
    if usage and any(a in ('-h', '--help') for a in argv):
        print(usage.strip())
        sys.exit(0)
    rest = []
    for arg in argv:
        if is_setting(arg):
            key, _, text = arg.partition('=')
            setattr(settings, key, parse(key, text))
        else:
            rest.append(arg)
    check()
    return rest


def crop_size(value=None):
    """CROP_SIZE (or `value`) as (height, width)."""
    value = settings.CROP_SIZE if value is None else value
    return tuple(value) if isinstance(value, tuple) else (value, value)


def _rules(s):
    """(key, holds, what the value must be) for every setting that has a range."""
    def within(key, low, high):
        return key, low <= s[key] <= high, f'must be in [{low}, {high}]'

    def at_least(key, low):
        return key, s[key] >= low, f'must be at least {low}'

    def one_of(key, values):
        return key, s[key] in values, f'must be one of {", ".join(map(repr, values))}'

    def scales(key):
        v = s[key]
        return key, len(v) >= 1 and all(0 < x <= 4 for x in v), \
            'must be one or more scales in (0, 4], like (0.5, 1.0, 2.0)'

    side = s['STRIDE'] + 1 if s['STRIDE'] in (8, 16) else 9
    crop = crop_size(s['CROP_SIZE'])
    stages = s['STAGE_NUM_EVAL']
    return [
        ('MEAN', len(s['MEAN']) == 3 and all(0 <= m <= 1 for m in s['MEAN']),
         'must be 3 values in [0, 1] (red, green, blue of images scaled to [0, 1])'),
        ('STD', len(s['STD']) == 3 and all(0 < v < math.inf for v in s['STD']),
         'must be 3 positive values (red, green, blue)'),
        scales('SCALES'),
        ('CROP_SIZE', len(crop) == 2 and all(side <= c <= 8192 for c in crop),
         f'must be a side (or a (height, width) pair) of {side} to 8192 pixels '
         f'(at least STRIDE + 1)'),
        within('N_CLASSES', 1, 255),
        ('IGNORE_LABEL', s['N_CLASSES'] <= s['IGNORE_LABEL'] <= 255,
         'must be in [N_CLASSES, 255] (labels are 8-bit; no class may be ignored)'),
        one_of('N_LAYERS', (18, 34, 50, 101, 152)),
        one_of('STRIDE', (8, 16)),
        one_of('STEM', ('deep', 'torchvision')),
        within('BN_MOM', 0, 1),
        at_least('EMA_CHANNELS', 1),
        at_least('N_BASES', 1),
        within('EM_MOM', 0, 1),
        at_least('STAGE_NUM', 1),
        ('STAGE_NUM_EVAL', stages >= 0 if isinstance(stages, int) else
         len(stages) >= 1 and all(t >= 1 for t in stages),
         'must be 0 (= STAGE_NUM), a count of at least 1, or a tuple of such counts'),
        at_least('BATCH_SIZE', 1),
        at_least('ITER_MAX', 1),
        at_least('ITER_SAVE', 1),
        at_least('LR_DECAY', 1),
        ('LR', 0 < s['LR'] < math.inf, 'must be a positive finite number'),
        within('LR_MOM', 0, 1),
        ('POLY_POWER', 0 <= s['POLY_POWER'] < math.inf, 'must be a finite number >= 0'),
        ('WEIGHT_DECAY', 0 <= s['WEIGHT_DECAY'] < math.inf, 'must be a finite number >= 0'),
        one_of('LOSS', ('ce', 'ohem')),
        ('OHEM_THRESH', 0 < s['OHEM_THRESH'] <= 1, 'must be in (0, 1]'),
        at_least('OHEM_MIN_KEPT', 0),
        at_least('SEED', 0),
        at_least('NUM_WORKERS', 0),
        at_least('LOG_EVERY', 1),
        at_least('IMAGE_EVERY', 0),
        at_least('VAL_EVERY', 0),
        scales('EVAL_SCALES'),
        one_of('EVAL_MODE', ('whole', 'slide')),
        within('SLIDE_CROP', side, 8192),
        within('SLIDE_STEP', 1, s['SLIDE_CROP']),
        at_least('ATTN_IMAGES', 0),
    ]


def check():
    """Refuse, in one sentence, the first setting that is out of its range."""
    s = resolved()
    try:
        rules = _rules(s)
    except TypeError:  # a value of the wrong type in settings.py itself
        rules = None
    for key, holds, need in rules or []:
        if not holds:
            raise UserError(f'{key}={short(s[key])} {need}; set it in settings.py or pass '
                            f'{key}=<value>.')
    if rules is None:
        raise UserError('settings.py holds a value of the wrong type (compare it with the '
                        'comments there); fix it, or pass the key as KEY=VALUE.')


# ---------------------------------------------------------------------------- processes

def init_distributed():
    """(rank, world_size, device): torchrun's environment when present, else one process.
    NCCL on CUDA, gloo on the CPU; one GPU per process, chosen by LOCAL_RANK."""
    import torch
    import torch.distributed as dist
    world = int(os.environ.get('WORLD_SIZE', '1'))
    local = int(os.environ.get('LOCAL_RANK', '0'))
    if torch.cuda.is_available():
        device = torch.device('cuda', local)
        torch.cuda.set_device(device)
    else:
        device = torch.device('cpu')
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return *rank_world(), device


def rank_world():
    """(rank, world size) of this process: (0, 1) outside torch.distributed."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(value, world):
    """[value of rank 0, value of rank 1, ...] on every process (any picklable value)."""
    import torch.distributed as dist
    values = [None] * world
    dist.all_gather_object(values, value)
    return values


def end_distributed():
    """Leave torch.distributed, when in it (the end of every script that may run under torchrun)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def parallel(fn, jobs, workers=None, desc=None):
    """[fn(job) for job in jobs], in order, on `workers` threads (default: every core), with a
    progress bar named `desc`. Threads, not processes: the work here (decoding and encoding
    images, reading files) releases the GIL, and no process is forked after torch has started
    its threads (unsafe) or started afresh without the KEY=VALUE overrides (forkserver, spawn)."""
    from tqdm import tqdm
    jobs = list(jobs)
    n = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=len(jobs), desc=desc, unit='file', disable=desc is None or not jobs)
    with bar, concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()  # the first error stops the rest
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [future.result() for future in futures]


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
    """Rewrite the line `KEY = <literal>  # comment` of the settings file `path` for each of
    `values` ({KEY: value}, written as Python writes it: 0.02, (0.5, 1.0), (0.5,), 'a/b'); the
    comment and every other character of the file stay as they were."""
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
        node = node.value  # columns count UTF-8 bytes
        first, end = lines[node.lineno - 1].encode(), lines[node.end_lineno - 1].encode()
        lines[node.lineno - 1:node.end_lineno] = [
            (first[:node.col_offset] + text.encode() + end[node.end_col_offset:]).decode()]
    with open(f'{path}.tmp{os.getpid()}', 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    os.replace(f.name, path)


def _assignments(path):
    """(the lines of a settings file, {KEY: its last `KEY = ...` node}), or one sentence."""
    try:
        with open(path, encoding='utf-8', newline='') as f:
            text = f.read()
        tree = ast.parse(text, path)
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f'{path} cannot be read as a settings file ({type(e).__name__}: '
                        f'{short(str(e), 100)}).') from None
    last = {}
    for node in tree.body:
        name = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else 0
        if isinstance(name, ast.Name) and name.id.isupper():
            last[name.id] = node
    return text.split('\n'), last


def check_with(values, base=None):
    """`check` with the live settings replaced by `base` (a settings file's constants), then by
    `values`; afterwards the live settings are as they were, refused or not."""
    saved = resolved()
    try:
        for key, value in {**(base or {}), **values}.items():
            if key in saved:
                setattr(settings, key, value)
        check()
    finally:
        for key, value in saved.items():
            setattr(settings, key, value)
