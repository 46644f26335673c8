"""compare.py: the table of experiment folders, from fabricated records of today's and older
forms (which settings show, the SEED summary, missing and broken records, resumed runs, CSV,
JSON, the plot), then end to end as a user: project copies trained, evaluated and compared."""
import csv
import io
import json
import os

import numpy as np
import pytest

import compare
from conftest import args, one_sentence, run_main

BASE = {'SEED': 0, 'LR': 0.009, 'STAGE_NUM': 3, 'SCALES': [0.5, 1.0], 'DATA_ROOT': '/data/voc',
        'LOG_DIR': './logdir', 'MODEL_DIR': './models'}


# ---------------------------------------------------------------------------- fabrication

def write(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(value if isinstance(value, str) else json.dumps(value))
    return path


def experiment(tmp_path, name, log_dir='./logdir', **over):
    """An experiment folder whose settings.py holds BASE with `over` (no records yet)."""
    folder = tmp_path / name
    lines = [f'{k} = {tuple(v) if isinstance(v, list) else v!r}'
             for k, v in {**BASE, 'LOG_DIR': log_dir, **over}.items()]
    write(str(folder / 'settings.py'), '\n'.join(lines) + '\n')
    return folder


def train_record(log, name, sha='0123456789abcdef', dirty=False, init_from=None, model_dir=None,
                 **over):
    write(str(log / name), {'settings': {**BASE, **over}, 'git_sha': sha, 'git_dirty': dirty,
                            'argv': ['train.py'], 'start_step': 0, 'init_from': init_from,
                            **({'model_dir': model_dir} if model_dir else {})})


def metrics(log, *entries):
    write(str(log / 'metrics.jsonl'), ''.join(
        e if isinstance(e, str) else json.dumps(e) + '\n' for e in entries))


def eval_result(log, ckpt, scores, split='val', mode='ss', stages=3, hexid='0a1b2c3d', **over):
    """A result file as eval.py writes it today, the run record inside."""
    name = f'eval_{ckpt}-{hexid}_{split}_{mode}_T{stages}.json'
    record = {'settings': {**BASE, **over}, 'git_sha': 'fedcba9876543210', 'git_dirty': True,
              'checkpoint': str(log.parent / 'models' / f'{ckpt}.pth'), 'step': 100, 'split': split,
              'mode': mode, 'stages': stages}
    write(str(log / name), {**dict(zip(compare.SCORES, scores)), 'fIoU': 0.5,
                            'per_class': {}, 'record': record})


def seeded(tmp_path, name, seed, miou, **over):
    """An experiment with a training record, a short metrics.jsonl and one evaluation."""
    folder = experiment(tmp_path, name, SEED=seed, **over)
    log = folder / 'logdir'
    train_record(log, 'train-20260101-000000-step0.json', SEED=seed, **over)
    metrics(log, {'step': 10, 'loss': 0.5, 'lr': 0.009, 'session': 's', 'elapsed': 3.0})
    eval_result(log, 'final', (miou, 0.9, 0.8), SEED=seed, **over)
    return folder


def run(capsys, *argv):
    """compare.py's main in this process: (stdout, stderr)."""
    compare.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return captured.out, captured.err


def rows(capsys, *argv):
    out, err = run(capsys, '--json', *argv)
    return json.loads(out)['rows'], err


# ---------------------------------------------------------------------------- unit level

def test_only_differing_settings_from_latest_record(tmp_path, capsys):
    a = experiment(tmp_path, 'a', STAGE_NUM=3)
    b = experiment(tmp_path, 'b', log_dir='./elsewhere', STAGE_NUM=3)
    train_record(a / 'logdir', 'train-20260101-000000-step0.json', STAGE_NUM=5)
    train_record(a / 'logdir', 'train-20260102-000000-step50.json', STAGE_NUM=2)
    train_record(a / 'logdir', 'train-20260102-000000-step50-2.json', STAGE_NUM=4)  # latest
    train_record(b / 'elsewhere', 'train-20260101-000000-step0.json', LOG_DIR='./elsewhere',
                 MODEL_DIR='/m')
    got, _ = rows(capsys, a, b)
    columns = list(got[0])
    assert 'STAGE_NUM' in columns
    assert not {'LR', 'SEED', 'SCALES', 'LOG_DIR', 'MODEL_DIR', 'DATA_ROOT'} & set(columns)
    assert [r['STAGE_NUM'] for r in got] == [4, 3]
    assert [r['folder'] for r in got] == ['a', 'b']
    assert [r['git_sha'] for r in got] == ['0123456789abcdef'] * 2
    out, _ = run(capsys, a, b)
    head = [c.strip() for c in out.splitlines()[0].split('|')[1:-1]]
    assert head[:3] == ['folder', 'STAGE_NUM', 'steps'] and '| 0123456 ' in out


def test_settings_py_read_never_run(tmp_path, capsys):
    """LOG_DIR comes from settings.py by ast: a file that would exit when run is still read."""
    folder = experiment(tmp_path, 'x', log_dir='runs')
    with open(folder / 'settings.py', 'a') as f:
        f.write('import sys\nsys.exit(3)\nEXTRA = len("abc")\n')
    eval_result(folder / 'runs', 'final', (0.6, 0.9, 0.7))
    got, _ = rows(capsys, folder)
    assert got[0]['final/val/ss/T3 mIoU'] == 0.6 and got[0]['note'] is None


def test_seed_group_mean_and_std(tmp_path, capsys):
    folders = [seeded(tmp_path, f's{seed}', seed, miou)
               for seed, miou in ((0, 0.70), (1, 0.72), (2, 0.77))]
    other = seeded(tmp_path, 'other', 0, 0.5, STAGE_NUM=2)  # differs in more than SEED
    got, _ = rows(capsys, *folders, other)
    assert [r['kind'] for r in got] == ['run'] * 4 + ['seed mean', 'seed std', 'seed n']
    mean, std, n = (r['final/val/ss/T3 mIoU'] for r in got[4:])
    assert mean == pytest.approx(0.73) and n == 3
    assert std == pytest.approx(np.sqrt((0.03 ** 2 + 0.01 ** 2 + 0.04 ** 2) / 2))
    assert got[5]['final/val/ss/T3 pAcc'] == pytest.approx(0)
    assert got[4]['SEED'] == '0, 1, 2' and got[4]['STAGE_NUM'] == 3
    out, _ = run(capsys, *folders, other)
    line = [x for x in out.splitlines() if 'mean ± std' in x]
    assert len(line) == 1 and '73.00 ± 3.61' in line[0] and '(n=3)' in line[0]


def test_a_score_belongs_to_the_run_whose_checkpoint_was_evaluated(tmp_path, capsys):
    """A run's row shows the evaluations of its own checkpoints (in its MODEL_DIR, as its
    training record says), not another folder's final.pth scored into the same LOG_DIR."""
    run_a = seeded(tmp_path, 'a', 0, 0.156)
    log = run_a / 'logdir'
    train_record(log, 'train-20260101-000000-step0.json', model_dir=str(run_a / 'models'))
    os.utime(log / 'eval_final-0a1b2c3d_val_ss_T3.json', (1, 1))  # its own: older
    eval_result(log, 'final', (0.8627, 0.9, 0.8), hexid='99999999')  # the demo's, newer
    with open(log / 'eval_final-99999999_val_ss_T3.json') as f:
        other = json.load(f)
    other['record']['checkpoint'] = str(tmp_path / 'demo' / 'models' / 'final.pth')
    write(str(log / 'eval_final-99999999_val_ss_T3.json'), other)
    got, err = rows(capsys, run_a)
    assert got[0]['final/val/ss/T3 mIoU'] == 0.156
    assert f'1 evaluation(s) of checkpoints from elsewhere, not of this run\'s {run_a}/models, ' \
           f'left out (first: {tmp_path}/demo/models/final.pth)' in err
    out, _ = run(capsys, '--csv', run_a)
    assert '0.156' in out and '0.8627' not in out


def test_folders_without_results_are_listed(tmp_path, capsys):
    done = seeded(tmp_path, 'done', 0, 0.7)
    fresh = experiment(tmp_path, 'fresh')
    empty = tmp_path / 'empty'
    empty.mkdir()
    got, _ = rows(capsys, done, fresh, empty)
    assert [r['folder'] for r in got[:2]] == ['done', 'fresh']
    assert got[2]['folder'] == os.path.join(tmp_path.name, 'empty')  # a log folder: 2 parts
    assert got[0]['note'] is None
    assert got[1]['note'].startswith('no results in') and got[1]['steps'] is None
    assert got[2]['note'].startswith('no results in')
    out, _ = run(capsys, done, fresh, empty)
    assert out.count('no results in') == 2


def test_unreadable_record_reported_rest_shown(tmp_path, capsys):
    folder = seeded(tmp_path, 'a', 0, 0.7)
    write(str(folder / 'logdir' / 'eval_best-00000000_val_ss_T3.json'), '{"mIoU": 0.')
    write(str(folder / 'logdir' / 'train-20260105-000000-step5.json'), '[1, 2]')
    got, err = rows(capsys, folder)
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all('cannot be read' in x for x in lines)
    assert 'eval_best-00000000_val_ss_T3.json' in err and 'train-20260105' in err
    assert got[0]['final/val/ss/T3 mIoU'] == 0.7 and got[0]['steps'] == 10


def test_resumed_run_later_step_wins(tmp_path, capsys):
    folder = experiment(tmp_path, 'r')
    log = folder / 'logdir'
    train_record(log, 'train-20260101-000000-step0.json')
    train_record(log, 'train-20260101-010000-step4.json', init_from='/p/models/final.pth')
    first, second = 'train-20260101-000000-step0.json', 'train-20260101-010000-step4.json'
    metrics(log, *[{'step': s, 'loss': 1.0 / s, 'lr': 0.01, 'session': first, 'elapsed': 2.0 * s}
                   for s in (2, 4, 6)],  # killed after step 6; latest.pth was at step 4
            {'step': 6, 'val_mIoU': 0.1, 'session': first, 'elapsed': 12.5},
            {'step': 6, 'loss': 0.25, 'lr': 0.008, 'session': second, 'elapsed': 4.0},
            {'step': 8, 'loss': 0.2, 'lr': 0.007, 'session': second, 'elapsed': 8.0},
            {'step': 6, 'val_mIoU': 0.3, 'session': second, 'elapsed': 9.0},
            '{"step": 10, "lo')  # a killed write
    got, err = rows(capsys, folder)
    assert 'metrics.jsonl: 1 unreadable lines skipped' in err
    run_ = compare.read_folder(str(folder))
    assert run_['curves']['loss'] == {2: 0.5, 4: 0.25, 6: 0.25, 8: 0.2}
    assert run_['curves']['val_mIoU'] == {6: 0.3}
    assert got[0]['steps'] == 8 and got[0]['final_loss'] == 0.2
    assert got[0]['wall_time_s'] == pytest.approx(12.5 + 9.0)
    assert got[0]['init_from'] == '/p/models/final.pth'


def test_old_format_records(tmp_path, capsys):
    """train-*.json without init_from, train.log instead of metrics.jsonl, eval scores and
    their record in two files (with and without _T<n>)."""
    log = tmp_path / 'old' / 'logdir'
    write(str(log / 'train-20190801-120000-step0.json'),
          {'settings': {**BASE, 'STAGE_NUM_EVAL': 0}, 'git_sha': 'abcdef0123', 'git_dirty': True})
    write(str(log / 'train.log'), 'git abcdef0123 (dirty)\nsettings: ...\n'
          'step 20/40  loss 0.6743  lr 8.913e-02  47.8 img/s  eta 0:01:47  peak mem -\n'
          'step 20  val (T=3) mIoU 40.50%  pAcc 80.00%  mAcc 50.00%\n'
          'step 40/40  loss 0.9999  lr 1.000e-02  47.8 img/s  eta 0:00:00  peak mem -\n'
          'step 40/40  loss 0.5000  lr 1.000e-02  47.8 img/s  eta 0:00:00  peak mem -\n')
    for tag, scores in (('ss', (0.61, 0.91, 0.71)), ('ms0.5-0.75-1_flip_T2', (0.63, 0.93, 0.73))):
        write(str(log / f'eval_step_40_{tag}.json'), dict(zip(compare.SCORES, scores)))
        write(str(log / f'eval_step_40_{tag}_record.json'),
              {'settings': BASE, 'git_sha': 'abcdef0123', 'checkpoint': '/x/step_40.pth',
               'step': 40, 'scores': dict(zip(compare.SCORES, scores))})
    got, err = rows(capsys, log)
    assert err == ''
    row = got[0]
    assert row['folder'] == os.path.join('old', 'logdir')
    assert row['steps'] == 40 and row['final_loss'] == 0.5 and row['wall_time_s'] is None
    assert row['step_40/val/ss/T3 mIoU'] == 0.61 and row['step_40/val/ss/T3 mAcc'] == 0.71
    assert row['step_40/val/ms0.5-0.75-1_flip/T2 pAcc'] == 0.93
    assert row['git_sha'] == 'abcdef0123' and row['git_dirty'] is True
    assert compare.read_folder(str(log))['curves']['val_mIoU'] == {20: pytest.approx(0.405)}
    out, _ = run(capsys, log)
    assert 'step_40 ms3_flip T2' in out and 'abcdef0 (dirty)' in out


def test_every_evaluation_a_column(tmp_path, capsys):
    """Checkpoints, modes, stage counts and splits each get their columns, in order; the same
    evaluation done twice shows the newer file."""
    log = tmp_path / 'e' / 'logdir'
    flip = 'ms0.5-0.75-1-1.25-1.5-1.75_flip'
    for ckpt, split, mode, t in (('step_200', 'val', 'ss', 3), ('step_1000', 'val', 'ss', 3),
                                 ('final', 'val', flip, 3), ('final', 'val', 'ss', 4),
                                 ('final', 'test', 'ss', 3), ('best', 'val', 'ss', 3)):
        eval_result(log, ckpt, (0.5, 0.6, 0.7), split, mode, t)
    eval_result(log, 'final', (0.1, 0.2, 0.3), 'val', 'ss', 3, hexid='11111111')
    os.utime(log / 'eval_final-11111111_val_ss_T3.json', (1, 1))  # older
    eval_result(log, 'final', (0.52, 0.6, 0.7), 'val', 'ss', 3)
    got, _ = rows(capsys, log)
    names = [c[:-5] for c in got[0] if c.endswith(' mIoU')]
    assert names == ['final/test/ss/T3', 'final/val/ss/T3', 'final/val/ss/T4',
                     f'final/val/{flip}/T3', 'best/val/ss/T3', 'step_200/val/ss/T3',
                     'step_1000/val/ss/T3']
    assert got[0]['final/val/ss/T3 mIoU'] == 0.52
    out, _ = run(capsys, log)
    assert 'final val ms6_flip T3' in out and 'final test ss T3' in out


def test_scale_lists_of_one_length_written_out(tmp_path, capsys):
    log = tmp_path / 'm' / 'logdir'
    for mode in ('ms0.5-1-2_flip', 'ms0.75-1-1.25_flip'):
        eval_result(log, 'final', (0.5, 0.6, 0.7), mode=mode)
    out, _ = run(capsys, log)
    assert '| final val ms0.5-1-2_flip T3 | final val ms0.75-1-1.25_flip T3 |' in out


def test_csv_json_and_out_file(tmp_path, capsys):
    folders = [seeded(tmp_path, f's{seed}', seed, miou) for seed, miou in ((0, 0.7), (1, 0.8))]
    out, _ = run(capsys, '--csv', *folders)
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r['kind'] for r in table] == ['run', 'run', 'seed mean', 'seed std', 'seed n']
    assert [float(r['final/val/ss/T3 mIoU']) for r in table[:3]] == [0.7, 0.8, 0.75]
    assert float(table[0]['final/val/ss/T3 pAcc']) == 0.9 and table[1]['SEED'] == '1'
    target = tmp_path / 'table.json'
    out, _ = run(capsys, '--json', '--out', target, *folders)
    assert out.strip() == str(target)
    saved = json.loads(target.read_text())
    assert saved['rows'][1]['final/val/ss/T3 mAcc'] == 0.8 and saved['rows'][1]['steps'] == 10
    assert saved['columns'][:3] == ['kind', 'folder', 'SEED']
    out, _ = run(capsys, '--csv', '--out', target, *folders)  # its own file: written again
    assert target.read_text().startswith('kind,folder,SEED')
    mine = tmp_path / 'mine.csv'
    mine.write_text('a table of my own\n')
    with pytest.raises(SystemExit) as e:
        run(capsys, '--csv', '--out', mine, *folders)
    assert e.value.code == 2 and mine.read_text() == 'a table of my own\n'
    one_sentence(capsys.readouterr().err, f'--out {mine} exists and was not written by this '
                                          f'project\'s scripts, so it is left as it is; give a '
                                          f'new file name.')


def test_checkpoints_of_one_name_from_two_folders_are_shown_each(tmp_path, capsys):
    """A log folder holding evaluations of a/final.pth and c/final.pth and no training record of
    its own: each is a column of its own, named with its folder."""
    log = tmp_path / 'logs'
    for folder, miou, hexid in (('a', 0.61, '0a0a0a0a'), ('c', 0.72, '0c0c0c0c')):
        eval_result(log, 'final', (miou, 0.9, 0.8), hexid=hexid)
        name = log / f'eval_final-{hexid}_val_ss_T3.json'
        result = json.loads(name.read_text())
        result['record']['checkpoint'] = str(tmp_path / folder / 'final.pth')
        write(str(name), result)
    got, _ = rows(capsys, log)
    assert got[0]['final (a)/val/ss/T3 mIoU'] == 0.61 and got[0]['final (c)/val/ss/T3 mIoU'] == 0.72
    out, _ = run(capsys, log)
    assert 'final (a) ss T3' in out and 'final (c) ss T3' in out


def test_plot_three_panels(tmp_path, capsys, monkeypatch):
    import matplotlib.image
    import matplotlib.pyplot as plt
    a, b = experiment(tmp_path, 'a'), experiment(tmp_path, 'b', LR=0.01)
    for folder, steps in ((a, (2, 4, 6)), (b, (3, 6))):
        metrics(folder / 'logdir', *[{'step': s, 'loss': 1 / s, 'lr': 0.01} for s in steps],
                {'step': 6, 'val_mIoU': 0.4})
    figures = []
    monkeypatch.setattr(plt, 'close', figures.append)
    target = tmp_path / 'curves.png'
    out, _ = run(capsys, '--plot', target, a, b)
    assert out.strip() == str(target) and os.path.getsize(target) > 10000
    assert matplotlib.image.imread(str(target)).shape[:2] == (450, 1600)
    axes = figures[0].axes
    assert [ax.get_title() for ax in axes] == ['train loss', 'learning rate', 'val mIoU (%)']
    assert [list(line.get_xdata()) for line in axes[0].lines] == [[2, 4, 6], [3, 6]]
    assert [line.get_label() for line in axes[1].lines] == ['a', 'b']
    assert list(axes[2].lines[0].get_ydata()) == [pytest.approx(40)]
    assert not axes[2].texts
    metrics(tmp_path / 'c' / 'logdir', {'step': 2, 'loss': 0.5, 'lr': 0.01})  # VAL_EVERY=0
    figures.clear()
    run(capsys, '--plot', tmp_path / 'c.png', tmp_path / 'c' / 'logdir')
    assert [t.get_text() for t in figures[0].axes[2].texts] == ['none logged']


def test_where_a_folder_was_made_from(tmp_path, capsys):
    """experiment.json (written by experiment.py new) shows as a `from` column: the source
    folder's name, short SHA and dirty flag; the full values in JSON; no column without one."""
    a, b = seeded(tmp_path, 'a', 0, 0.7), seeded(tmp_path, 'b', 0, 0.6, LR=0.01)
    assert 'from_folder' not in json.loads(run(capsys, '--json', a, b)[0])['columns']
    write(str(b / 'logdir' / 'experiment.json'), {
        'source': '/work/emanet', 'git_sha': '0123456789abcdef', 'git_dirty': True,
        'settings_given': {'LR': 0.01}})
    got, _ = rows(capsys, a, b)
    assert [r['from_folder'] for r in got] == [None, '/work/emanet']
    assert got[1]['from_git_sha'] == '0123456789abcdef' and got[1]['from_git_dirty'] is True
    out, _ = run(capsys, a, b)
    head = [c.strip() for c in out.splitlines()[0].split('|')[1:-1]]
    assert head[-2:] == ['git', 'from'] and '| emanet@0123456 (dirty) |' in out
    assert compare.read_folder(str(b))['results']  # not a result by itself
    fresh = experiment(tmp_path, 'fresh')
    write(str(fresh / 'logdir' / 'experiment.json'), {'source': '/x/src', 'git_sha': 'unknown'})
    got, _ = rows(capsys, fresh)
    assert got[0]['note'].startswith('no results in') and got[0]['from_folder'] == '/x/src'
    assert '| src  |' in run(capsys, fresh)[0]  # no SHA outside git


def test_user_mistakes_and_help(tmp_path, capsys):
    for argv, says in (([], 'no folder given'), ([tmp_path / 'nope'], 'is not a folder')):
        with pytest.raises(SystemExit) as exit_:
            run(capsys, *argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith('error: ') and says in err
        assert len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        run(capsys, '--help')
    assert exit_.value.code == 0 and '--plot' in capsys.readouterr().out


# ---------------------------------------------------------------------------- end to end

def test_end_to_end_two_seeds(tmp_path, toy_root, capsys):
    """Two experiment folders (SEED 0 and 1, the second logging into ./runs) trained by train.py
    and scored by eval.py at two EM stage counts, then compared."""
    import eval as evaluation
    import train
    folders = []
    for seed, log_dir in ((0, 'logdir'), (1, 'runs')):
        folder = experiment(tmp_path, f'EMANet18.seed{seed}', f'./{log_dir}', SEED=seed)
        out = [f'MODEL_DIR={folder}/models', f'LOG_DIR={folder}/{log_dir}']
        argv = args(toy_root, str(folder), SEED=seed, ITER_MAX=4, ITER_SAVE=4, VAL_EVERY=4,
                    LOG_DIR=f'{folder}/{log_dir}')
        assert run_main(train.main, argv, capsys)[0] == 0
        code, _, err = run_main(evaluation.main, [f'{folder}/models/final.pth', *out,
                                                  f'DATA_ROOT={toy_root}', 'NUM_WORKERS=0',
                                                  'ATTN_IMAGES=0', 'STAGE_NUM_EVAL=(1,3)'], capsys)
        assert code == 0, err
        folders.append(str(folder))
    got = rows(capsys, *folders)[0]
    columns = json.loads(run(capsys, '--json', *folders)[0])['columns']
    assert [r['kind'] for r in got] == ['run', 'run', 'seed mean', 'seed std', 'seed n']
    assert [r['folder'] for r in got[:2]] == ['EMANet18.seed0', 'EMANet18.seed1']
    settings = [c for c in columns[2:] if c.isupper()]
    assert settings == ['SEED'] and [r['SEED'] for r in got[:2]] == [0, 1]
    for folder, log_dir, row in zip(folders, ('logdir', 'runs'), got):
        log = os.path.join(folder, log_dir)
        assert row['steps'] == 4 and row['wall_time_s'] > 0
        with open(os.path.join(log, 'metrics.jsonl')) as f:
            losses = [json.loads(line) for line in f if '"loss"' in line]
        assert row['final_loss'] == losses[-1]['loss']
        results = sorted(n for n in os.listdir(log) if n.startswith('eval_') and
                         n.endswith('.json'))
        assert len(results) == 2
        for name in results:
            with open(os.path.join(log, name)) as f:
                result = json.load(f)
            label = f'final/val/ss/T{result["record"]["stages"]}'
            for score in compare.SCORES:
                assert row[f'{label} {score}'] == result[score]
                assert got[2][f'{label} {score}'] == pytest.approx(
                    np.mean([r[f'{label} {score}'] for r in got[:2]]))
    out, _ = run(capsys, *folders)
    assert 'final ss T1' in out and 'final ss T3' in out and 'EMANet18.seed1' in out
    out, _ = run(capsys, '--plot', tmp_path / 'curves.png', *folders)
    assert os.path.getsize(tmp_path / 'curves.png') > 10000


def test_records_of_the_wrong_shape_are_named_and_left_out(tmp_path, capsys):
    run_a = seeded(tmp_path, 'a', 0, 0.7)
    log = run_a / 'logdir'
    write(str(log / 'train-20260102-000000-step0.json'), {'settings': [1], 'git_sha': 'x'})
    eval_result(log, 'best', ('high', 0.9, 0.8))
    got, err = rows(capsys, run_a)
    assert "train-20260102-000000-step0.json cannot be read (its 'settings' is not an object)" \
        in err and 'eval_best-0a1b2c3d_val_ss_T3.json holds a score that is not a number' in err
    assert got[0]['final/val/ss/T3 mIoU'] == 0.7 and got[0]['best/val/ss/T3 mIoU'] is None
    out, _ = run(capsys, run_a)
    assert '70.00' in out
