"""Experiment folders in one command: `new` makes a copy of this project beside it, named after
its settings; `run` trains and evaluates folders one after another and prints their table. Not
here: training, scoring and the table themselves (train.py, eval.py, compare.py, run as they are).

    python experiment.py new [NAME] [KEY=VALUE ...]
    python experiment.py run DIR... [--eval KEY=VALUE ...] [--nproc N] [--python PY]

new: makes ../NAME (an absolute NAME as it is; without NAME, EMANet<N_LAYERS>.<KEY><value>...
from the settings given, like EMANet101.STRIDE16.STAGE_NUM4) holding this folder's code, tests
and README as they are now (with git: the files it tracks, and the untracked ones it does not
ignore), each KEY=VALUE written into its settings.py in place: `diff -r` shows only those lines.
Checkpoints, logs, caches, data and .git are not copied. A relative DATA_ROOT, PRETRAINED or
INIT_FROM here becomes a link to the file or folder here; one outside this folder that would
name another place from NAME is written as an absolute path. LOG_DIR/experiment.json records the
source folder, git SHA and dirty flag (compare.py's `from`). A KEY=VALUE that a script would
refuse, and an existing NAME, are refused before anything is written.

run: in each DIR in turn its own train.py (skipped when MODEL_DIR/final.pth exists; a stopped run
resumes from latest.pth), then its eval.py with the --eval settings (skipped when LOG_DIR holds a
result of that final.pth, not older than it, made with them), under torchrun with --nproc N > 1.
A folder that fails is named at the end and the queue goes on. It ends with a line per folder
and compare.py's table; exit status 1 when one failed. Ctrl-C or SIGTERM stops the running
script; the same command then goes on where it stopped.
"""
import argparse
import codecs
import datetime
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

from plumbing import config, files, records, scripts  # first: settings.py checked
import settings

PATHS = ('DATA_ROOT', 'PRETRAINED', 'INIT_FROM')  # what a run reads: linked, or made absolute
OUTPUTS = ('LOG_DIR', 'MODEL_DIR')  # what a run writes: never copied, never shared
JUNK = {'.git', '__pycache__', '.pytest_cache', '.venv'}


@scripts.command
def main(argv):
    args = parse_args(argv)
    new(args.items) if args.command == 'new' else run(args)


def parse_args(argv):
    """The command line: `new` and its NAME and settings, or `run` and its folders and options."""
    head, rest = __doc__.split('\n\n', 1)
    parser = argparse.ArgumentParser(prog='experiment.py', description=head, epilog=rest,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True, metavar='{new,run}')
    make = sub.add_parser('new', help='make an experiment folder beside this one')
    make.add_argument('items', nargs='*', metavar='NAME | KEY=VALUE')
    queue = sub.add_parser('run', help='train and evaluate folders in turn, then compare them')
    queue.add_argument('dirs', nargs='*', metavar='DIR', help='experiment folders')
    queue.add_argument('--eval', nargs='+', action='extend', default=[], metavar='KEY=VALUE',
                       help="eval.py's settings, like EVAL_FLIP=True")
    queue.add_argument('--nproc', type=int, default=1,
                       help='processes per script (more than 1: under torchrun)')
    queue.add_argument('--python', default=sys.executable, help='the Python that runs them')
    return parser.parse_args(argv)


def say(line):
    print(f'experiment.py: {line}', flush=True)


# ---------------------------------------------------------------------------- new


def new(items):
    """Make the experiment folder (see the module's doc) and say what it made."""
    source, names = config.ROOT, [item for item in items if not config.is_setting(item)]
    given = {k: config.parse(k, text) for k, _, text in
             (item.partition('=') for item in items if config.is_setting(item))}
    if len(names) > 1:
        raise config.UserError(f'new takes one NAME, not {len(names)} '
                               f'({config.short(" ".join(names))}); settings go as KEY=VALUE.')
    base = config.read_settings_file(os.path.join(source, 'settings.py'))
    config.check_with(given, base)
    values = {**config.resolved(), **base, **given}
    name = names[0] if names else default_name(values, given)
    target = config.path(name, os.path.dirname(source))
    refuse(source, target, {**config.resolved(), **base}, values)
    copied = project_files(source, base, values)
    tmp = files.temporary(target)  # renamed into place at the end: never half a folder at NAME
    try:
        with files.writing(tmp, 'NAME'):
            made = make(source, tmp, target, copied, base, given, values)
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # links are removed, never followed
        raise
    report(source, target, len(copied), values, *made)


def default_name(values, given):
    """EMANet<N_LAYERS>.<KEY><value>... in the original's style: EMANet101.STRIDE16.STAGE_NUM4,
    EMANet101.LR0.02, EMANet101.SCALES0.5-1.0 (N_LAYERS given: in the first part only)."""
    def text(value):
        if isinstance(value, tuple):
            return '-'.join(map(text, value))
        return re.sub(r'[^\w.+-]+', '_', str(value)).strip('._')
    return f'EMANet{values["N_LAYERS"]}' + ''.join(f'.{k}{text(v)}' for k, v in given.items()
                                                   if k != 'N_LAYERS')


def refuse(source, target, here, there):
    """One sentence when NAME exists, lies in this folder, or would share LOG_DIR or MODEL_DIR
    (`here`: this folder's settings, `there`: the new one's)."""
    if os.path.lexists(target):
        raise config.UserError(f'{target} already exists; give a new NAME (an experiment folder '
                               f'is made afresh, never merged into).')
    if files.inside(os.path.realpath(target), os.path.realpath(source)) is not None:
        raise config.UserError(f'{target} lies inside this project folder {source}; give a NAME '
                               f'beside it, like {os.path.basename(target)}.')
    for key in OUTPUTS:
        if config.path(here[key], source) == config.path(there[key], target):
            ours = config.path(here[key], source)
            raise config.UserError(f'{key}={there[key]!r} would be the same folder {ours} for '
                                   f'this project and the new one; pass a relative one, like '
                                   f'{key}=./{os.path.basename(ours)}.')


def project_files(source, *all_settings):
    """The files here that belong to the project, relative: in a git checkout those git tracks
    and the untracked ones it does not ignore, else every file. Never .git, caches, *.pth
    (checkpoints, weights), what lies in DATA_ROOT, PRETRAINED or INIT_FROM (linked instead), or
    what runs wrote into LOG_DIR and MODEL_DIR (files there that git tracks are copied)."""
    tracked, others = git_files(source)
    linked, written = [], []
    for values in all_settings:
        for key in PATHS + OUTPUTS:
            rel = files.inside(config.path(values[key], source), source) if values.get(key) \
                else None
            (linked if key in PATHS else written).extend([rel] if rel not in (None, '.') else [])

    def under(rel, folders):
        return any(rel == f or rel.startswith(f + os.sep) for f in folders)
    return [rel for rel in sorted(tracked | others)
            if not JUNK & set(rel.split(os.sep)) and not rel.endswith(('.pth', '.pyc'))
            and '.pth.tmp' not in os.path.basename(rel) and not under(rel, linked)
            and not (rel not in tracked and under(rel, written))
            and os.path.lexists(os.path.join(source, rel))]


def git_files(source):
    """(tracked, untracked and not ignored) paths when `source` is in a git checkout, else
    (nothing, every file and link below it but those in JUNK)."""
    def ls(*how):
        done = subprocess.run(['git', '-C', source, 'ls-files', '-z', *how],
                              capture_output=True, timeout=60)
        return None if done.returncode else {os.fsdecode(p) for p in done.stdout.split(b'\0') if p}
    try:
        tracked = ls('--cached')
        if tracked is not None:
            return tracked, ls('--others', '--exclude-standard') or set()
    except (OSError, subprocess.SubprocessError):
        pass  # no git
    found = set()
    for top, dirs, names in os.walk(source):
        links = [d for d in dirs if os.path.islink(os.path.join(top, d))]
        dirs[:] = [d for d in dirs if d not in JUNK and d not in links]
        found |= {os.path.relpath(os.path.join(top, f), source) for f in names + links}
    return set(), found


def make(source, tmp, target, copied, base, given, values):
    """Fill `tmp` (to become `target`): the files `copied`, the settings given, the paths that
    must keep naming what they name here, the record. Returns (links, paths made absolute,
    record path, git SHA, dirty flag)."""
    for rel in copied:
        src, dst = os.path.join(source, rel), os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        elif os.path.isdir(src):  # a git submodule
            shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns(*JUNK))
        else:
            shutil.copy2(src, dst)
    settings_py = os.path.join(tmp, 'settings.py')
    config.set_in_settings_file(settings_py, {  # a value as it is there keeps its text
        k: v for k, v in given.items() if not (k in base and repr(base[k]) == repr(v))})
    found, absolute = {}, {}
    for key in PATHS:
        text = values.get(key)
        if not text or os.path.isabs(os.path.expanduser(text)):
            continue
        here = config.path(text, source)
        if not os.path.exists(here):
            continue  # the scripts say what is missing when they run
        rel = files.inside(here, source)
        if rel not in (None, '.'):
            found[rel] = here
        elif config.path(text, target) != here:
            absolute[key] = here
    links = {rel: here for rel, here in found.items()  # what lies in a linked folder: through it
             if not any(rel.startswith(other + os.sep) for other in found)}
    for rel, here in links.items():
        os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
        os.symlink(here, os.path.join(tmp, rel))
    if absolute:
        config.set_in_settings_file(settings_py, absolute)
    sha, dirty = records.git_state()
    record = {'source': source, 'git_sha': sha, 'git_dirty': dirty, 'settings_given': given,
              'created': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
              'argv': sys.argv, 'linked': links, 'made_absolute': absolute}
    log_dir = config.path(values['LOG_DIR'], target)
    rel = os.path.relpath(log_dir, target)
    where = log_dir if rel.startswith('..') else os.path.normpath(os.path.join(tmp, rel))
    records.write_record(record, where, records.ORIGIN)
    return links, absolute, os.path.join(log_dir, records.ORIGIN), sha, dirty


def report(source, target, n_files, values, links, absolute, record, sha, dirty):
    """What `new` made: the diff of settings.py, the links, the paths made absolute, the next
    command."""
    def short(path):
        rel = os.path.relpath(path)
        return rel if len(rel) <= len(path) else path
    state = f'git {sha[:7]}{" (dirty)" * bool(dirty)}' if sha != 'unknown' else 'no git'
    say(f'made {target} from {source} ({state}): {n_files} files copied')
    a, b = (os.path.basename(p) for p in (source, target))
    with open(os.path.join(source, 'settings.py')) as f, \
            open(os.path.join(target, 'settings.py')) as g:
        diff = list(difflib.unified_diff(f.read().splitlines(), g.read().splitlines(),
                                         f'{a}/settings.py', f'{b}/settings.py', n=0, lineterm=''))
    print('\n'.join(diff or [f'settings.py: as in {a}']))
    for rel, here in links.items():
        print(f'linked {rel} -> {here}')
    for key, here in absolute.items():
        print(f'{key} written as {here!r} ({values[key]!r} would name another place from {b})')
    print(f'recorded in {short(record)}')
    print(f'next: python {short(os.path.join(config.ROOT, "experiment.py"))} run {short(target)}',
          flush=True)

# ---------------------------------------------------------------------------- run


def run(args):
    """Train and evaluate each folder in turn (see the module's doc), then print the table."""
    dirs = args.dirs + [a for a in args.eval if not config.is_setting(a)]  # run --eval X=1 A B
    evals = [a for a in args.eval if config.is_setting(a)]
    if not dirs:
        raise config.UserError('no folder given; pass experiment folders, like `python '
                               'experiment.py run ../EMANet101.*`.')
    folders = [experiment_folder(d) for d in dirs]
    wanted = {a.partition('=')[0]: config.parse(*a.split('=', 1)) for a in evals}
    config.check_with(wanted, config.read_settings_file(os.path.join(config.ROOT, 'settings.py')))
    if args.nproc < 1:
        raise config.UserError(f'--nproc {args.nproc} must be 1 or more (processes per script).')
    if shutil.which(args.python) is None:
        raise config.UserError(f'--python {args.python} cannot be run; give the Python that has '
                               f'the requirements installed.')
    launcher = [args.python] + ['-m', 'torch.distributed.run', '--standalone',
                                f'--nproc_per_node={args.nproc}'] * (args.nproc > 1)
    state = {'folder': None, 'child': None, 'reader': None, 'term': False}

    def terminate(signum, frame):  # scripts.command puts its own handler back at the end
        state['term'] = True
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)
    try:
        outcomes = []
        for i, folder in enumerate(folders, 1):
            state['folder'] = folder['given']
            where = f'[{i}/{len(folders)}] {folder["given"]}'
            outcomes.append(run_folder(folder, where, launcher, evals, wanted, state))
        failed = sum(o.startswith('failed') for o in outcomes)
        say(f'{len(folders)} folder{"s" * (len(folders) > 1)}, {failed} failed:')
        width = max(len(f['given']) for f in folders)
        for folder, outcome in zip(folders, outcomes):
            print(f'  {folder["given"]:<{width}}  {outcome}')
        sys.stdout.flush()
        table = subprocess.run([args.python, os.path.join(config.ROOT, 'compare.py'), *dirs])
    except KeyboardInterrupt:
        stop(state)
        print(f'interrupted in {state["folder"]}; run the same command again to go on '
              f'(finished folders are skipped, train.py resumes)', file=sys.stderr, flush=True)
        sys.exit(130)
    if failed or table.returncode:
        sys.exit(1)


def experiment_folder(given):
    """{'given', 'path', 'model_dir', 'log_dir'} of an experiment folder, or one sentence."""
    path = os.path.abspath(given)
    if not all(os.path.isfile(os.path.join(path, f)) for f in ('settings.py', 'train.py',
                                                                'eval.py')):
        raise config.UserError(f'{given} is not an experiment folder (a folder holding '
                               f'settings.py, train.py and eval.py); make one with `python '
                               f'experiment.py new`.')
    values = config.read_settings_file(os.path.join(path, 'settings.py'))
    return {'given': given, 'path': path, **{
        k.lower(): config.path(values.get(k, getattr(settings, k)), path) for k in OUTPUTS}}


def run_folder(folder, where, launcher, evals, wanted, state):
    """One folder: its train.py unless MODEL_DIR/final.pth exists, then its eval.py unless that
    evaluation exists. Returns 'done', 'skipped (finished)' or 'failed: <why>'."""
    final = os.path.join(folder['model_dir'], 'final.pth')
    ran = False
    if not os.path.isfile(final):
        resumes = os.path.isfile(os.path.join(folder['model_dir'], 'latest.pth'))
        say(f'{where}: train.py' + ' (resumes from latest.pth)' * resumes)
        if code := child(launcher + ['train.py'], folder['path'], state):
            return f'failed: train.py {code}'
        ran = True
    if not evaluated(final, folder['log_dir'], wanted):
        say(f'{where}: ' + ' '.join(['eval.py', *evals]))
        if code := child(launcher + ['eval.py', *evals], folder['path'], state):
            return f'failed: eval.py {code}'
        ran = True
    elif not ran:
        say(f'{where}: finished (final.pth and its evaluation exist)')
    return 'done' if ran else 'skipped (finished)'


def evaluated(final, log_dir, wanted):
    """Whether LOG_DIR holds a result of eval.py for this final.pth, not older than it, whose
    settings hold the `wanted` values (any result of it when none are wanted)."""
    if not os.path.isfile(final) or not os.path.isdir(log_dir):
        return False
    for name in (n for n in os.listdir(log_dir) if n.endswith('.json')):
        path = os.path.join(log_dir, name)
        try:
            with open(path) as f:
                record = json.load(f)['record']
            saved = record.get('settings') or {}
            mine = os.path.realpath(record['checkpoint']) == os.path.realpath(final)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # not a result of eval.py
        if mine and os.path.getmtime(path) >= os.path.getmtime(final) and all(
                json.dumps(saved.get(k)) == json.dumps(v) for k, v in wanted.items()):
            return True
    return False


def child(command, cwd, state):
    """Run `command` in `cwd`, its output passed on as it comes: None when it succeeds, else its
    exit status and the last line it wrote on stderr."""
    sys.stdout.flush()
    tail = ['']
    proc = state['child'] = subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE)
    state['reader'] = threading.Thread(target=pass_on, args=(proc.stderr, tail), daemon=True)
    state['reader'].start()
    code = proc.wait()
    state['reader'].join(timeout=10)
    state['child'] = None
    lines = [line.strip() for line in re.split(r'[\r\n]', tail[0]) if line.strip()]
    how = f'exit status {code}' if code > 0 else f'killed by signal {-code}'
    return f'{how}: {lines[-1] if lines else "nothing on stderr"}' if code else None


def pass_on(stream, tail):
    """Copy a child's stderr to ours as it comes (progress bars included), its end in tail[0]."""
    decoder = codecs.getincrementaldecoder('utf-8')('replace')
    for chunk in iter(lambda: os.read(stream.fileno(), 1 << 16), b''):
        text = decoder.decode(chunk)
        sys.stderr.write(text)
        sys.stderr.flush()
        tail[0] = (tail[0] + text)[-4000:]


def stop(state):
    """Stop the running script: Ctrl-C reached it from the terminal too, so it gets 3 s to end;
    then (at once after our SIGTERM) SIGTERM, a minute to save and end, and SIGKILL."""
    proc = state['child']
    if proc is None:
        return
    try:
        try:
            proc.wait(timeout=0.1 if state['term'] else 3)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()
    state['reader'].join(timeout=5)  # its last lines: how it stopped


if __name__ == '__main__':
    main(sys.argv[1:])
