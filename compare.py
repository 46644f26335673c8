"""Compare experiment folders: one table with a row per folder, from what train.py and eval.py
recorded in each folder's LOG_DIR.

    python compare.py DIR...                     # a Markdown table on the terminal
    python compare.py --csv DIR... [--out FILE]  # or --json: every score, as fractions
    python compare.py --plot curves.png DIR...   # train loss, LR and val mIoU against step

A DIR is an experiment folder (its LOG_DIR read from its settings.py, never run) or a log
folder. Columns: the settings that differ between the folders (from the latest training
record, else settings.py), steps trained, wall time (all sessions), final train loss, every
evaluation's mIoU (pAcc and mAcc too in CSV and JSON), git SHA and dirty flag, the folder that
`experiment.py new` made it from, and the parent checkpoint of a fine-tuned run. Folders that
differ only in SEED get one more row: the mean and sample standard deviation of each score over
the seeds. Records are read without running anything and without torch (records of older
versions of this code too); an unreadable one is named in one line on stderr and the rest read.
"""
import argparse
import csv
import io
import json
import math
import os
import re
import sys

import numpy as np

from plumbing import config, files, outputs, records, scripts  # first: settings.py checked

HIDDEN = ('LOG_DIR', 'MODEL_DIR')  # differ between folders by design
HEADS = {'wall_time_s': 'wall time', 'final_loss': 'final loss', 'git_sha': 'git',
         'from_folder': 'from', 'init_from': 'init from'}


@scripts.command
def main(argv):
    args = parse_args(argv)
    if not args.dirs:
        raise config.UserError('no folder given; pass experiment or log folders, like '
                               '`python compare.py EMANet101.*`.')
    found = name_runs([read_folder(d) for d in args.dirs])
    if args.plot:
        print(plot(found, args.plot))
        return
    columns, rows = table(found)
    text = (to_csv(columns, rows) if args.csv else to_json(columns, rows) if args.json
            else to_markdown(columns, rows))
    if not args.out:
        sys.stdout.write(text)
        return
    outputs.claim_file(args.out, '--out')  # never over a file of yours
    with files.writing(args.out, '--out'), files.atomic(args.out) as tmp:
        with open(tmp, 'w') as f:
            f.write(text)
    print(args.out)


def parse_args(argv):
    """The command line: folders, and one of --csv, --json, --plot."""
    parser = argparse.ArgumentParser(prog='compare.py', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('dirs', nargs='*', metavar='DIR', help='experiment or log folders')
    how = parser.add_mutually_exclusive_group()
    how.add_argument('--csv', action='store_true', help='CSV instead of Markdown')
    how.add_argument('--json', action='store_true', help='JSON instead of Markdown')
    how.add_argument('--plot', metavar='OUT.png', help='draw the curves into OUT.png')
    parser.add_argument('--out', metavar='FILE', help='write the table to FILE, not stdout')
    return parser.parse_args(argv)


def evaluation_order(key):
    """final, best, step_<N> by N, then the other checkpoints; single scale first; T up."""
    stem, split, mode, stages = key
    name = stem.split(' (')[0]  # 'final (a)': the final.pth of folder a
    step = re.fullmatch(r'step_(\d+)', name)
    rank = {'final': (0, 0), 'best': (1, 0)}.get(name, (2, int(step[1])) if step else (3, 0))
    return rank, stem, split, not mode.startswith('ss'), mode, stages or 0


def name_runs(found):
    """Each run's name: its folder's (a log folder's with its parent), or, when two would be
    the same, the paths as given."""
    for run in found:
        parts = os.path.abspath(run['path']).split(os.sep)
        run['folder'] = os.path.join(*parts[-1 - run['log_folder']:])
    unique = len({run['folder'] for run in found}) == len(found)
    return [{**r, 'folder': r['folder'] if unique else os.path.normpath(r['path'])} for r in found]


# ---------------------------------------------------------------------------- reading

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
    trained = [r for r in (read_json(os.path.join(log_dir, s[-1]), 'settings') for s in sessions)
               if r]
    curves, wall = read_curves(log_dir)
    model_dir = next((r['model_dir'] for r in trained[::-1] if r.get('model_dir')), None)
    if model_dir is None and defined is not None:  # a record of before model_dir was recorded
        model_dir = os.path.join(given, os.path.expanduser(str(defined.get('MODEL_DIR',
                                                                           './models'))))
    evals, newest = read_evaluations(log_dir, names, model_dir)
    last = trained[-1] if trained else newest or {}
    settings = trained and trained[-1].get('settings') or defined or last.get('settings')
    origin = os.path.join(log_dir, records.ORIGIN)  # where experiment.py made the folder from
    origin = os.path.isfile(origin) and read_json(origin) or {}
    return {'path': given, 'log_dir': log_dir, 'log_folder': defined is None,
            'settings': json.loads(json.dumps(settings or {})),  # tuples as lists, as in records
            'curves': curves, 'wall': wall, 'evals': evals,
            'results': bool(sessions or any(curves.values()) or evals),
            'git_sha': last.get('git_sha'), 'git_dirty': last.get('git_dirty'),
            'init_from': next((r['init_from'] for r in trained[::-1] if r.get('init_from')), None),
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
        value, why = None, f'{type(e).__name__}: {config.cut(str(e), 100)}'
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
    another run's: left out, and said on stderr. Checkpoints of one name in other folders
    (a/final.pth, c/final.pth, evaluated into a log folder without a training record) are shown
    each, named with their folder ('final (a)')."""
    found, newest, elsewhere, files_of = {}, (-1, None), [], {}
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
        files_of.setdefault(key, set()).add(record.get('checkpoint'))
        key = (record.get('checkpoint'), *key)
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
    shown = {}
    for (checkpoint, stem, *rest), scores in found.items():
        if len(files_of[(stem, *rest)]) > 1:  # two files of one name: each with its folder
            folder = os.path.basename(os.path.dirname(checkpoint)) if checkpoint else '?'
            stem = f'{stem} ({folder})'
        shown[(stem, *rest)] = scores
    return shown, newest[1]


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


# ---------------------------------------------------------------------------- table

def table(found):
    """(columns, rows): a row per run ('kind' 'run'), then for each group of runs that differ
    only in SEED three rows, 'seed mean', 'seed std' (sample, ddof=1) and 'seed n'."""
    known = [r['settings'] for r in found if r['settings']]
    keys = sorted({k for s in known for k in s} - set(HIDDEN))
    differ = [k for k in keys if len({json.dumps(s[k]) for s in known if k in s}) > 1]
    evals = sorted({k for r in found for k in r['evals']}, key=evaluation_order)
    scores = {f'{label(key)} {s}': (key, s) for key in evals for s in SCORES}
    origins = ['from_folder', 'from_git_sha', 'from_git_dirty'] * any(r['origin'] for r in found)
    columns = ['kind', 'folder', *differ, 'steps', 'wall_time_s', 'final_loss', *scores,
               'git_sha', 'git_dirty', *origins, 'init_from', 'note']
    rows = []
    for run in found:
        loss = run['curves']['loss']
        rows.append({'kind': 'run', 'folder': run['folder'],
                     **{k: run['settings'].get(k) for k in differ},
                     'steps': max(loss) if loss else None, 'wall_time_s': run['wall'],
                     'final_loss': loss[max(loss)] if loss else None,
                     **{c: run['evals'].get(key, {}).get(s) for c, (key, s) in scores.items()},
                     'git_sha': run['git_sha'], 'git_dirty': run['git_dirty'],
                     'init_from': run['init_from'], **(run['origin'] or {}),
                     'note': None if run['results'] else f'no results in {run["log_dir"]}'})
    for group in seed_groups(found):
        seeds = ', '.join(str(r['settings']['SEED']) for r in group)
        shared = {'folder': f'mean ± std, SEED {seeds} (n={len(group)})',
                  **{k: group[0]['settings'].get(k) for k in differ}, 'SEED': seeds}
        values = {c: [v for r in group if (v := r['evals'].get(key, {}).get(s)) is not None]
                  for c, (key, s) in scores.items()}
        for kind, stat, least in (('mean', lambda v: float(np.mean(v)), 1),
                                  ('std', lambda v: float(np.std(v, ddof=1)), 2), ('n', len, 0)):
            rows.append({'kind': f'seed {kind}', **shared, **{
                c: stat(v) if len(v) >= least else None for c, v in values.items()}})
    return columns, [{c: row.get(c) for c in columns} for row in rows]


def label(key):
    """An evaluation's name in CSV and JSON columns: 'final/val/ss/T3'."""
    stem, split, mode, stages = key
    return f'{stem}/{split}/{mode}' + (f'/T{stages}' if stages is not None else '')


def seed_groups(found):
    """The groups of evaluated runs whose settings differ in SEED only (two seeds at least)."""
    groups = {}
    for run in found:
        if run['evals'] and 'SEED' in run['settings']:
            rest = {k: v for k, v in run['settings'].items() if k not in HIDDEN + ('SEED',)}
            groups.setdefault(json.dumps(rest, sort_keys=True), []).append(run)
    return [g for g in groups.values() if len({json.dumps(r['settings']['SEED']) for r in g}) > 1]


# ---------------------------------------------------------------------------- output

def to_markdown(columns, rows):
    """The table for the terminal: mIoU only per evaluation (in %), a SEED group in one row
    (mean ± std), times as h:mm:ss."""
    hidden = (' pAcc', ' mAcc', 'git_dirty', 'from_git_sha')  # git_dirty: in the git cell
    shown = [c for c in columns[1:] if not c.endswith(hidden) and
             (c not in ('init_from', 'note') or any(r[c] for r in rows))]
    evals = [c[:-5] for c in shown if c.endswith(' mIoU')]
    split = len({e.split('/')[1] for e in evals}) > 1
    short = [short_label(e, split) for e in evals]
    full = len(set(short)) < len(short)  # two scale lists of one length: write them out
    head = {**HEADS, **{f'{e} mIoU': e.replace('/', ' ') if full else s
                        for e, s in zip(evals, short)}}
    cells = [[head.get(c, c) for c in shown]] + [
        [cell(c, row, rows[i + 1][c] if row['kind'] == 'seed mean' else None) for c in shown]
        for i, row in enumerate(rows) if row['kind'] in ('run', 'seed mean')]
    widths = [max(len(row[i]) for row in cells) for i in range(len(shown))]
    left = [any(not re.fullmatch(r'[-+\d.,:eE ±]*', row[i]) for row in cells[1:])
            for i in range(len(shown))]
    lines = ['| ' + ' | '.join(x.ljust(w) if l else x.rjust(w)
                               for x, w, l in zip(row, widths, left)) + ' |' for row in cells]
    lines.insert(1, '|' + '|'.join('-' * (w + 1) + '-:'[not l] for w, l in zip(widths, left)) + '|')
    if evals:
        lines.append('\n(mIoU in % per evaluation: checkpoint, mode, T = EM stages; pAcc and '
                     'mAcc with --csv or --json)')
    return '\n'.join(lines) + '\n'


def short_label(evaluation, with_split):
    """'final ss T3' for 'final/val/ss/T3'; scale lists shortened to their count (ms6_flip)."""
    stem, split, mode, *stages = evaluation.split('/')
    mode = re.sub(r'^ms([\d.]+(?:-[\d.]+)*)', lambda m: f'ms{m[1].count("-") + 1}', mode)
    return ' '.join([stem] + [split] * with_split + [mode] + stages)


def cell(column, row, std=None):
    """A Markdown cell: scores in % (a SEED group's as mean ± std), '-' for nothing."""
    value = row[column]
    if value is None:
        return '-'
    if column.endswith(' mIoU'):
        return f'{100 * value:.2f}' + (f' ± {100 * std:.2f}' if std is not None else '')
    if column == 'wall_time_s':
        return '{}:{:02}:{:02}'.format(int(value) // 3600, int(value) // 60 % 60, int(value) % 60)
    if column == 'final_loss':
        return f'{value:.4f}'
    if column == 'git_sha':
        return value[:7] + (' (dirty)' if row['git_dirty'] else '')
    if column == 'from_folder':  # the folder's name, its git SHA and dirty flag
        sha = row['from_git_sha'] if row['from_git_sha'] not in (None, 'unknown') else None
        return os.path.basename(os.path.normpath(value)) + (f'@{sha[:7]}' if sha else '') + \
            (' (dirty)' if row['from_git_dirty'] else '')
    return setting_text(value)


def setting_text(value):
    """A setting as in settings.py: tuples in brackets, '' for the empty string."""
    if isinstance(value, list):
        return '(' + ', '.join(map(setting_text, value)) + (',)' if len(value) == 1 else ')')
    return repr(value) if value == '' else str(value)


def to_csv(columns, rows):
    """Every column, scores as fractions; tuple settings as in settings.py."""
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator='\n')
    writer.writeheader()
    writer.writerows({k: setting_text(v) if isinstance(v, list) else v for k, v in row.items()}
                     for row in rows)
    return out.getvalue()


def to_json(columns, rows):
    """{'columns': [...], 'rows': [{column: value}]}, NaN written as null."""
    clean = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
             for row in rows]
    return json.dumps({'columns': columns, 'rows': clean}, indent=1) + '\n'


# ---------------------------------------------------------------------------- plot

def plot(found, out):
    """Train loss, learning rate and val mIoU against step, a line per run, into `out`."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    if not any(any(r['curves'].values()) for r in found):
        raise config.UserError('none of the folders holds training curves (metrics.jsonl or '
                               'train.log in LOG_DIR); train first, or give other folders.')
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    titles = ('train loss', 'learning rate', 'val mIoU (%)')
    for ax, key, title in zip(axes, CURVES, titles):
        for run in found:
            if points := sorted(run['curves'][key].items()):
                steps, values = zip(*points)
                values = [100 * v for v in values] if key == 'val_mIoU' else values
                ax.plot(steps, values, label=run['folder'], marker='.' * (len(steps) < 40))
        ax.set(xlabel='step', title=title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize='small')
        else:  # val mIoU of runs trained with VAL_EVERY=0
            ax.text(0.5, 0.5, 'none logged', ha='center', transform=ax.transAxes)
    for run in found:
        if not any(run['curves'].values()):
            problem(f'{run["folder"]}: no training curves in {run["log_dir"]}')
    fig.tight_layout()
    outputs.claim_file(out, '--plot')
    with files.writing(out, '--plot'), files.atomic(out, '.png') as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out


if __name__ == '__main__':
    main(sys.argv[1:])
