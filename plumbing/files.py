"""Files written so that nothing is lost and read as they are written: a folder checked to be
writable, every file written atomically through a temporary name, the leftovers of killed writes
told apart from a running process's, a failed write as one sentence, paths inside folders, and
the one reader of the text files a user gives (id lists, image lists, class names, palettes).
Not here: what the scripts write (records.py, checkpoints.py, outputs.py)."""
import contextlib
import errno
import os
import re

import settings
from plumbing import config

def folder(key):
    """The folder that setting `key` names, made if needed and checked to be writable, or one
    sentence on why it cannot be."""
    target = config.path(getattr(settings, key))
    probe = os.path.join(target, f'.write-test.{os.getpid()}')
    try:
        os.makedirs(target, exist_ok=True)
        open(probe, 'w').close()
        os.remove(probe)
    except OSError as e:
        raise config.UserError(f'{key} {target} cannot be made or written ({e.strerror}); pass '
                               f'a folder you can write, like {key}=/tmp/emanet.') from None
    return target


LEFTOVER = re.compile(r'\.tmp(\d+)(\.\w+)?$')  # the end of a temporary name: .tmp<pid>[.ext]


def temporary(target, suffix=''):
    """The temporary name beside `target` that this process writes before a rename onto it:
    <target>.tmp<pid><suffix> (`suffix` keeps an extension a writer reads the format from)."""
    return f'{target}.tmp{os.getpid()}{suffix}'


def is_leftover(name):
    """Whether `name` is a temporary file (see `temporary`) that a process no longer running
    left when it was killed (a running process's may still be written)."""
    m = LEFTOVER.search(name)
    return m is not None and not _running(int(m[1]))


def remove_leftovers(folder):
    """Remove the leftovers (see `is_leftover`) in `folder`; returns how many went."""
    removed = 0
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if is_leftover(name) and (os.path.isfile(path) or os.path.islink(path)):
            os.remove(path)
            removed += 1
    return removed


def _running(pid):
    """Whether process `pid` runs on this machine (then its temporary file may be in use)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        return True
    return True


@contextlib.contextmanager
def atomic(target, suffix=''):
    """A temporary path beside `target` to write (see `temporary`): renamed onto `target` when
    the block ends without error, removed otherwise, so a kill never leaves half a file at
    `target` and the file there before stays as it was until the rename."""
    tmp = temporary(target, suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def writing(target, key):
    """A failed write of `target` (a full disk, a read-only folder) as one sentence naming it
    and the setting or argument `key` that chose the folder."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and 'write' not in str(e) and 'pos' not in str(e):
            raise  # not a failed write (torch.save says "file write failed", "unexpected pos")
        code = e.errno if isinstance(e, OSError) else errno.ENOSPC  # torch: a short write
        if code in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f'its folder is not writable; pass another {key}'
        elif code in (errno.ENOSPC, errno.EDQUOT):
            fix = f'the disk is full; make room or pass another {key}'
        else:
            fix = f'pass another {key}'
        why = e.strerror if isinstance(e, OSError) and e.strerror else 'the write failed'
        raise config.UserError(f'{target} could not be written ({why}); {fix}.') from None


def write_text(path, lines):
    """Write lines of text atomically, only when the file does not hold them already."""
    text = ''.join(f'{line}\n' for line in lines)
    if os.path.isfile(path):
        with open(path, encoding='utf-8', errors='replace') as f:
            if f.read() == text:
                return
    with atomic(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)


def unique_name(folder, stem, ext=''):
    """stem+ext, or stem-2+ext, stem-3+ext, ...: the first name not yet in `folder`."""
    name, n = stem + ext, 1
    while os.path.exists(os.path.join(folder, name)):
        n += 1
        name = f'{stem}-{n}{ext}'
    return name


def inside(path, folder):
    """`path` relative to `folder` ('.' for the folder itself) when it lies in it, else None;
    both as they are written (resolve links first where they matter: os.path.realpath)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    return None if rel == '..' or rel.startswith('..' + os.sep) else rel


def near(path, extensions):
    """A file that exists where `path` (which does not) was likely meant: in its folder, or the
    nearest one above it that exists (a folder named twice), a file of the same name in another
    case, or without the extensions of `extensions` that it carries or with others. None when
    there is none."""
    def stem(name):
        name = name.lower()
        while os.path.splitext(name)[1] in extensions:
            name = os.path.splitext(name)[0]
        return name
    folder, name = os.path.split(os.path.abspath(path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return None
    found = [n for n in sorted(os.listdir(folder)) if stem(n) == stem(name)]
    return next((os.path.join(folder, n) for n in found
                 if os.path.isfile(os.path.join(folder, n))), None)

# ---------------------------------------------------------------------------- text inputs

def read_lines(path, what):
    """The non-blank lines of a text file a user gives, as written: [(line number, text)], each
    without its line ending (a Windows one too). What is not taken as written is said once in
    one note naming the lines: a byte-order mark (skipped; UTF-16 read as such), spaces or tabs
    at a line's start or end (removed), blank lines between lines (skipped; those at the end
    are left out without a word). Text that is not UTF-8: one sentence."""
    with open(path, 'rb') as f:
        data = f.read()
    changes = []
    if data.startswith((b'\xff\xfe', b'\xfe\xff')):
        encoding, changes = 'utf-16', ['it is UTF-16 with a byte-order mark (read as such)']
    elif data.startswith(b'\xef\xbb\xbf'):
        encoding, changes = 'utf-8-sig', ['it begins with a byte-order mark (skipped)']
    else:
        encoding = 'utf-8'
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise config.UserError(f'{what} {path} is not UTF-8 text (byte {e.start}); save it as '
                               f'UTF-8.') from None
    rows = text.split('\n')
    while rows and not rows[-1].strip():
        rows.pop()  # the last line's ending, and blank lines after the last one
    lines, padded, blank = [], [], []
    for number, row in enumerate(rows, 1):
        row = row[:-1] if row.endswith('\r') else row
        line = row.strip(' \t\r\f\v')
        if not line:
            blank.append(number)
            continue
        if line != row:
            padded.append(number)
        lines.append((number, line))
    if padded:
        changes.append(f'{_numbers(padded)} begin or end with spaces or tabs (removed)')
    if blank:
        changes.append(f'{_numbers(blank)} blank (skipped)')
    if changes:
        config.say(f'{what} {path}: ' + '; '.join(changes) + '; every other line as written.',
                   once=('lines', os.path.abspath(path)))
    return lines


def _numbers(numbers, show=5):
    """'line 3', 'lines 3, 9, 12', 'lines 3, 9, 12, 15, 17 and 4 more'."""
    head = ', '.join(map(str, numbers[:show]))
    more = f' and {len(numbers) - show} more' if len(numbers) > show else ''
    return f'line {head}' if len(numbers) == 1 else f'lines {head}{more}'
