"""Reading what runs recorded in an experiment folder or a log folder, without running anything
and without torch: the settings (the training records', else settings.py's), the curves of
metrics.jsonl, the wall time, the evaluations of the run's own checkpoints, the git state and
where the folder was made from. Records of older versions of this code are read too; an
unreadable one is said in one line on stderr and the rest read. Not here: the table (compare.py).
"""
import json
import os
import re
import sys

import config
import runs

SCORES = ('mIoU', 'pAcc', 'mAcc')
CURVES = ('loss', 'lr', 'val_mIoU')
TRAIN_RECORD = re.compile(r'train-(\d{8}-\d{6})-step(\d+)(?:-(\d+))?\.json')
NEW_EVAL = re.compile(r'eval_(.+)-[0-9a-f]{8}_(.+?)_((?:ss|ms[\d.-]+).*)_T(\d+)\.json')
OLD_EVAL = re.compile(r'eval_(.+?)_((?:ss|ms[\d.-]+).*?)(?:_T(\d+))?\.json')
NUMBER = r'(-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))'
LOG_LINE = re.compile(rf'step (\d+)/\d+\s+loss {NUMBER}\s+lr {NUMBER}')  # older train.log
VAL_LINE = re.compile(rf'step (\d+)\s+val .*?mIoU {NUMBER}%')


def problem(message):
    """A record that cannot be used: one line on stderr, and the comparison goes on."""
    print(f'note: {message}', file=sys.stderr, flush=True)


def read_folder(given):
    """What one folder recorded: settings, curves, wall time, evaluations, git state."""
    if not os.path.isdir(given):
        raise config.UserError(f'{given} is not a folder; give experiment folders (holding '
                               f'settings.py) or their log folders.')
    try:
        defined = config.read_settings_file(os.path.join(given, 'settings.py'))
    except config.UserError as e:
        problem(f'{str(e)[:-1]}; LOG_DIR taken as ./logdir')
        defined = {}
    log_dir = given if defined is None else os.path.normpath(os.path.join(
        given, os.path.expanduser(str(defined.get('LOG_DIR', './logdir')))))
    names = sorted(os.listdir(log_dir)) if os.path.isdir(log_dir) else []
    sessions = sorted((m[1], int(m[2]), int(m[3] or 1), m[0])  # -2, -3: names taken
                      for m in map(TRAIN_RECORD.fullmatch, names) if m)
    records = [r for r in (read_json(os.path.join(log_dir, s[-1]), 'settings') for s in sessions)
               if r]
    curves, wall = read_curves(log_dir)
    model_dir = next((r['model_dir'] for r in records[::-1] if r.get('model_dir')), None)
    if model_dir is None and defined is not None:  # a record of before model_dir was recorded
        model_dir = os.path.join(given, os.path.expanduser(str(defined.get('MODEL_DIR',
                                                                           './models'))))
    evals, newest = read_evaluations(log_dir, names, model_dir)
    last = records[-1] if records else newest or {}
    settings = records and records[-1].get('settings') or defined or last.get('settings')
    origin = os.path.join(log_dir, runs.ORIGIN)  # where experiment.py made the folder from
    origin = os.path.isfile(origin) and read_json(origin) or {}
    return {'path': given, 'log_dir': log_dir, 'log_folder': defined is None,
            'settings': json.loads(json.dumps(settings or {})),  # tuples as lists, as in records
            'curves': curves, 'wall': wall, 'evals': evals,
            'results': bool(sessions or any(curves.values()) or evals),
            'git_sha': last.get('git_sha'), 'git_dirty': last.get('git_dirty'),
            'init_from': next((r['init_from'] for r in records[::-1] if r.get('init_from')), None),
            'origin': {'from_folder': origin['source'], 'from_git_sha': origin.get('git_sha'),
                       'from_git_dirty': origin.get('git_dirty')} if origin.get('source') else None}


def read_json(path, *objects):
    """A JSON object from a file whose keys `objects` (where present) hold objects too, or None,
    said in one line on stderr."""
    try:
        with open(path) as f:
            value = json.load(f)
        why = f'a {type(value).__name__}, not an object'
    except (OSError, ValueError) as e:
        value, why = None, f'{type(e).__name__}: {config.short(str(e), 100)}'
    bad = [k for k in objects if isinstance(value, dict) and not isinstance(value.get(k, {}),
                                                                            dict)]
    if isinstance(value, dict) and not bad:
        return value
    why = f'its {bad[0]!r} is not an object' if bad else why
    problem(f'{path} cannot be read ({why}); skipped')


def read_curves(log_dir):
    """({'loss'|'lr'|'val_mIoU': {step: value}}, wall time in seconds or None): a step logged
    twice (a resumed run redoes the steps after its last checkpoint) keeps its later value; the
    wall time is each session's last 'elapsed', summed."""
    curves, elapsed = {k: {} for k in CURVES}, {}
    for entry in log_entries(log_dir):
        for key in CURVES:
            if isinstance(entry.get(key), (int, float)):
                curves[key][entry['step']] = float(entry[key])
        if isinstance(entry.get('elapsed'), (int, float)):
            session = entry.get('session')
            elapsed[session] = max(elapsed.get(session, 0), entry['elapsed'])
    return curves, sum(elapsed.values()) if elapsed else None


def log_entries(log_dir):
    """The lines of metrics.jsonl as dicts with an int 'step' (unreadable ones, like the last of
    a killed write, counted on stderr), else those of an older train.log in the same form."""
    path, entries = os.path.join(log_dir, 'metrics.jsonl'), []
    if os.path.isfile(path):
        with open(path, errors='replace') as f:
            lines = [line for line in f if line.strip()]
        for line in lines:
            try:
                entry = json.loads(line)
                entries += [entry] if isinstance(entry['step'], int) else []
            except (ValueError, TypeError, KeyError):
                pass
        if len(entries) < len(lines):
            problem(f'{path}: {len(lines) - len(entries)} unreadable lines skipped')
    elif os.path.isfile(path := os.path.join(log_dir, 'train.log')):
        with open(path, errors='replace') as f:
            for line in f:
                if m := LOG_LINE.match(line):
                    entries.append({'step': int(m[1]), 'loss': float(m[2]), 'lr': float(m[3])})
                elif m := VAL_LINE.match(line):
                    entries.append({'step': int(m[1]), 'val_mIoU': float(m[2]) / 100})
    return entries


def read_evaluations(log_dir, names, model_dir=None):
    """({(checkpoint, split, mode, stages): {score: value}}, the newest eval record) from the
    eval_*.json files of today (the record inside) and older ones (scores in
    eval_<stem>_<tag>.json, the record in ..._record.json). One evaluation done twice: the
    newer file wins. Evaluations of checkpoints outside `model_dir` (the run's, when known) are
    another run's: left out, and said on stderr."""
    found, newest, elsewhere = {}, (-1, None), []
    for name in names:
        if not name.startswith('eval_') or not name.endswith('.json') or \
                name.endswith('_record.json'):
            continue
        path = os.path.join(log_dir, name)
        beside = path[:-5] + '_record.json'
        if (data := read_json(path, 'record', 'scores')) is None:
            continue
        record = data.get('record') or os.path.isfile(beside) and read_json(
            beside, 'settings', 'scores') or {}
        if not isinstance(record.get('settings', {}), dict):
            record = {k: v for k, v in record.items() if k != 'settings'}
        if (key := evaluation_key(name, record)) is None:
            problem(f'{path} is not named as eval.py names its results; skipped')
            continue
        if not ours(record.get('checkpoint'), model_dir):
            elsewhere.append(record['checkpoint'])
            continue
        scores, mtime = data if 'mIoU' in data else record.get('scores') or {}, \
            os.path.getmtime(path)
        numbers = {s: v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
                   for s, v in ((s, scores.get(s)) for s in SCORES)}
        if any(v is None and scores.get(s) is not None for s, v in numbers.items()):
            problem(f'{path} holds a score that is not a number; shown as -')
        if mtime >= found.get(key, {}).get('mtime', -1):
            found[key] = {**numbers, 'mtime': mtime}
        newest = max(newest, (mtime, record), key=lambda p: p[0])
    if elsewhere:
        problem(f'{log_dir}: {len(elsewhere)} evaluation(s) of checkpoints from elsewhere, not '
                f'of this run\'s {os.path.normpath(model_dir)}, left out (first: '
                f'{sorted(elsewhere)[0]})')
    return found, newest[1]


def ours(checkpoint, model_dir):
    """Whether an evaluated checkpoint (its path as eval.py records it) is one of the run whose
    checkpoints are in `model_dir` (True when either is unknown: older records)."""
    if not checkpoint or not model_dir:
        return True
    folder = os.path.realpath(model_dir)
    return os.path.realpath(os.path.dirname(checkpoint)) == folder


def evaluation_key(name, record):
    """(checkpoint stem, split, mode, EM stages) of an eval file, from its record where it says,
    else from its name (older names without _T<n>: STAGE_NUM_EVAL or STAGE_NUM)."""
    if m := NEW_EVAL.fullmatch(name):
        stem, split, mode, stages = m[1], m[2], m[3], int(m[4])
    elif m := OLD_EVAL.fullmatch(name):
        saved = record.get('settings') or {}
        stem, split, mode = m[1], saved.get('VAL_SPLIT', 'val'), m[2]
        default = saved.get('STAGE_NUM_EVAL') or saved.get('STAGE_NUM')
        stages = int(m[3]) if m[3] else default if isinstance(default, int) else None
    else:
        return None
    if record.get('checkpoint'):
        stem = os.path.splitext(os.path.basename(record['checkpoint']))[0]
    return (stem, record.get('split', split), record.get('mode', mode),
            record.get('stages', stages))
