"""The plumbing under every script: KEY=VALUE overrides of settings.py and their checks, the
start of a script (a mistake the user can fix ends it as one sentence, exit status 2), and the
processes (torchrun set-up, a pool of threads). Not here: what a run writes (runs.py)."""
import ast
import concurrent.futures
import contextlib
import difflib
import functools
import os
import re
import shlex
import signal
import sys
import traceback

import schema

ROOT = os.path.dirname(os.path.abspath(__file__))


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


# ---------------------------------------------------------------------------- settings

def resolved():
    """All settings as a plain dict (upper-case names only), as they are now."""
    return {k: getattr(settings, k) for k in dir(settings) if k.isupper()}


def path(p):
    """A path from settings, relative ones taken from the project folder."""
    return os.path.normpath(os.path.join(ROOT, os.path.expanduser(p)))


def crop_size(value=None):
    """CROP_SIZE (or `value`) as (height, width)."""
    return schema.pair(settings.CROP_SIZE if value is None else value)


def parse(key, text):
    """The value of `KEY=text`, checked against the kind of setting `key`."""
    if key not in schema.RULES:
        close = difflib.get_close_matches(key.upper(), list(schema.RULES), n=3, cutoff=0.5)
        hint = f' (closest: {", ".join(close)})' if close else ''
        raise UserError(f'unknown setting {short(key)!r}{hint}; the settings are the '
                        f'upper-case names in settings.py.')
    example = f', like {key}={getattr(settings, key)!r}' if hasattr(settings, key) else ''
    kind = schema.RULES[key][0][0]
    if isinstance(kind, bool) and text in ('true', 'false'):
        text = text.capitalize()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if not isinstance(kind, str):
            raise UserError(f'{key}={short(text)} is not a Python literal; {key} takes '
                            f'{schema.takes(key)}{example}.') from None
        value = text  # a bare word where a string is expected: DATA_ROOT=/data/voc
    if isinstance(kind, str) and not isinstance(value, str):
        value = text  # DATA_ROOT=2012 is the folder '2012'
    converted = schema.convert(key, value)
    if converted is None:
        raise UserError(f'{key}={short(text)} has the wrong type; {key} takes '
                        f'{schema.takes(key)}{example}.')
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
    """Check settings.py (see `check_file`), apply every KEY=VALUE of argv to settings (the last
    of a key given twice counts), check them all (see `check`), and return the other arguments
    in order. -h or --help prints `usage` (the script's docstring) and exits."""
    if usage and any(a in ('-h', '--help') for a in argv):
        print(usage.strip())
        sys.exit(0)
    check_file()
    rest = []
    for arg in argv:
        if is_setting(arg):  # a key given twice: the last one counts, as in a shell
            key, _, text = arg.partition('=')
            setattr(settings, key, parse(key, text))
        else:
            rest.append(arg)
    check()
    return rest


def check_file():
    """Refuse, in one sentence naming the line, a settings.py that lacks a setting, defines one
    that no script reads, or holds a value of the wrong kind; an int where a number is expected
    becomes a float."""
    lines = {key: node.lineno for key, node in _assignments(settings.__file__)[1].items()}
    for key in schema.RULES:
        if not hasattr(settings, key):
            raise UserError(f'{settings.__file__} lacks the setting {key} (a line deleted while '
                            f'editing?); `git diff settings.py` shows what changed, so put it '
                            f'back.')
    for key, value in resolved().items():
        where = f'{settings.__file__} line {lines.get(key, "?")}'
        if key not in schema.RULES:
            close = difflib.get_close_matches(key, list(schema.RULES), n=1, cutoff=0.5)
            hint = f' (did you mean {close[0]}?)' if close else ''
            raise UserError(f'{where} defines {key}, which no script reads{hint}; rename or '
                            f'delete it.')
        converted = schema.convert(key, value)
        if converted is None:
            raise UserError(f'{where}: {key} = {short(value)} is {schema.describe(value)}, but '
                            f'{key} takes {schema.takes(key)}; fix the line.')
        setattr(settings, key, converted)


def check():
    """Refuse, in one sentence, the first setting that is out of its range."""
    s = resolved()
    for key, (_, in_range, need) in schema.RULES.items():
        if not in_range(s, key):
            need = need.format(side=schema.min_side(s), **s)
            value = s[key] if not isinstance(s[key], str) or s[key] == s[key].strip() else \
                repr(s[key])  # spaces around a word made visible
            raise UserError(f'{key}={short(value)} {need}; set it in settings.py or pass '
                            f'{key}=<value>.')


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
        node = node.value  # columns count UTF-8 bytes
        first, end = lines[node.lineno - 1].encode(), lines[node.end_lineno - 1].encode()
        lines[node.lineno - 1:node.end_lineno] = [
            (first[:node.col_offset] + text.encode() + end[node.end_col_offset:]).decode()]
    with open(path, 'w', encoding='utf-8') as f:  # a folder being made: no one reads it yet
        f.write('\n'.join(lines))


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
