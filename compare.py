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
the seeds. Unreadable records are named on stderr.
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

import config
import records
import runs

HIDDEN = ('LOG_DIR', 'MODEL_DIR')  # differ between folders by design
HEADS = {'wall_time_s': 'wall time', 'final_loss': 'final loss', 'git_sha': 'git',
         'from_folder': 'from', 'init_from': 'init from'}


@config.command
def main(argv):
    args = parse_args(argv)
    if not args.dirs:
        raise config.UserError('no folder given; pass experiment or log folders, like '
                               '`python compare.py EMANet101.*`.')
    found = name_runs([records.read_folder(d) for d in args.dirs])
    if args.plot:
        print(plot(found, args.plot))
        return
    columns, rows = table(found)
    text = (to_csv(columns, rows) if args.csv else to_json(columns, rows) if args.json
            else to_markdown(columns, rows))
    if not args.out:
        sys.stdout.write(text)
        return
    with runs.writing(args.out, '--out'), runs.atomic(args.out) as tmp:
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
    step = re.fullmatch(r'step_(\d+)', stem)
    rank = {'final': (0, 0), 'best': (1, 0)}.get(stem, (2, int(step[1])) if step else (3, 0))
    return rank, stem, split, not mode.startswith('ss'), mode, stages or 0


def name_runs(found):
    """Each run's name: its folder's (a log folder's with its parent), or, when two would be
    the same, the paths as given."""
    for run in found:
        parts = os.path.abspath(run['path']).split(os.sep)
        run['folder'] = os.path.join(*parts[-1 - run['log_folder']:])
    unique = len({run['folder'] for run in found}) == len(found)
    return [{**r, 'folder': r['folder'] if unique else os.path.normpath(r['path'])} for r in found]


# ---------------------------------------------------------------------------- table

def table(found):
    """(columns, rows): a row per run ('kind' 'run'), then for each group of runs that differ
    only in SEED three rows, 'seed mean', 'seed std' (sample, ddof=1) and 'seed n'."""
    known = [r['settings'] for r in found if r['settings']]
    keys = sorted({k for s in known for k in s} - set(HIDDEN))
    differ = [k for k in keys if len({json.dumps(s[k]) for s in known if k in s}) > 1]
    evals = sorted({k for r in found for k in r['evals']}, key=evaluation_order)
    scores = {f'{label(key)} {s}': (key, s) for key in evals for s in records.SCORES}
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
    for ax, key, title in zip(axes, records.CURVES, titles):
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
            records.problem(f'{run["folder"]}: no training curves in {run["log_dir"]}')
    fig.tight_layout()
    with runs.writing(out, '--plot'), runs.atomic(out, '.png') as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out


if __name__ == '__main__':
    main(sys.argv[1:])
