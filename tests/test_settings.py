"""settings.py is the schema: KEY=VALUE overrides (types from the literals, unknown keys, bare
strings, bad literals, ranges), settings.py itself (broken, missing a setting the code reads,
a constant no code reads), and a new knob needing no entry anywhere else."""
import ast
import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest

import network
import settings
from conftest import ENV, run_main
from plumbing import config


def test_settings_file_holds_only_commented_constants():
    source = open(settings.__file__).read()
    tree = ast.parse(source)
    lines = source.splitlines()
    for node in tree.body:
        assert isinstance(node, ast.Assign), f'line {node.lineno} is not a constant'
        value = ast.literal_eval(node.value)
        assert type(value) in (int, float, str, bool, tuple), node.targets[0].id
        assert '#' in lines[node.lineno - 1], f'{node.targets[0].id} has no comment'
    assert max(len(line) for line in lines) <= 100


@pytest.mark.parametrize('arg,key,value', [
    ('LR=0.01', 'LR', 0.01),
    ('LR=1', 'LR', 1.0),  # an int where a float is expected
    ('ITER_MAX=100', 'ITER_MAX', 100),
    ('AMP=False', 'AMP', False),
    ('AMP=false', 'AMP', False),
    ('SCALES=(0.5,1)', 'SCALES', (0.5, 1.0)),
    ('SCALES=[0.75]', 'SCALES', (0.75,)),
    ('DATA_ROOT=/data/voc', 'DATA_ROOT', '/data/voc'),
    ("DATA_ROOT='/data/my voc'", 'DATA_ROOT', '/data/my voc'),
    ('DATA_ROOT=2012', 'DATA_ROOT', '2012'),
    ('PRETRAINED=', 'PRETRAINED', ''),
    ('STEM=torchvision', 'STEM', 'torchvision'),
])
def test_overrides_take_typed_values(arg, key, value, given):
    rest = config.apply_overrides(['models/final.pth', arg])
    assert rest == ['models/final.pth']
    assert getattr(settings, key) == value and type(getattr(settings, key)) is type(value)
    assert config.resolved()[key] == value


@pytest.mark.parametrize('arg,message', [
    ('LRR=0.1', r"unknown setting 'LRR' \(closest: LR"),
    ('lr=0.1', r"unknown setting 'lr' \(closest: LR"),
    ('ITER_MAX=1.5', 'ITER_MAX takes an int'),
    ('ITER_MAX=True', 'ITER_MAX takes an int'),
    ('AMP=1', 'AMP takes True or False'),
    ('LR=fast', "is not a Python literal; LR takes a number"),
    ('SCALES=(0.5,', 'is not a Python literal; SCALES takes a tuple'),
    ('SCALES=0.5', 'SCALES takes a tuple'),
    ("SCALES=('a',)", 'SCALES takes a tuple'),
])
def test_bad_overrides_fail_with_a_sentence(arg, message, given):
    before = config.resolved()
    with pytest.raises(config.UserError, match=message):
        config.apply_overrides([arg])
    assert config.resolved() == before


def test_a_script_reports_a_bad_override_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(config.ROOT, 'experiment.py'), 'new',
                             str(tmp_path / 'x'), 'N_LAYER=50'], capture_output=True, text=True,
                            env=ENV)
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown setting 'N_LAYER' (closest: N_LAYERS")
    assert 'Traceback' not in result.stderr


def test_relative_paths_are_taken_from_the_project_folder():
    assert config.path('./logdir') == config.ROOT + '/logdir'
    assert config.path('/abs/dir') == '/abs/dir'


@pytest.mark.parametrize('arg,message', [
    ('SCALES=()', 'SCALES=() must be one or more scales in (0, 4]'),
    ('SCALES=(0.5,-1.0)', 'SCALES=(0.5, -1.0) must be one or more scales'),
    ('SCALES=(1.0,1000.0)', 'SCALES=(1.0, 1000.0) must be one or more scales'),
    ('CROP_SIZE=0', 'CROP_SIZE=0 must be a side'),
    ('CROP_SIZE=-5', 'CROP_SIZE=-5 must be a side'),
    ('CROP_SIZE=1', 'CROP_SIZE=1 must be a side (or a (height, width) pair) of 9 to 8192'),
    ('CROP_SIZE=(513,513,3)', 'CROP_SIZE=(513, 513, 3) must be a side'),
    ('MEAN=(0.5,0.5)', 'MEAN=(0.5, 0.5) must be 3 values in [0, 1]'),
    ('STD=(0.2,0.0,0.2)', 'STD=(0.2, 0.0, 0.2) must be 3 positive values'),
    ('EM_MOM=1.5', 'EM_MOM=1.5 must be in [0, 1]; set it in settings.py or pass EM_MOM='),
    ('BN_MOM=-0.1', 'BN_MOM=-0.1 must be in [0, 1]'),
    ('EVAL_SCALES=(0.0,)', 'EVAL_SCALES=(0.0,) must be one or more scales'),
    ('STAGE_NUM_EVAL=(1,0)', 'STAGE_NUM_EVAL=(1, 0) must be 0'),
    ('N_CLASSES=300', 'N_CLASSES=300 must be in [1, 255]'),
    ('IGNORE_LABEL=3', 'IGNORE_LABEL=3 must be in [N_CLASSES, 255]'),
    ('STRIDE=32', 'STRIDE=32 must be one of 8, 16'),
    ('N_LAYERS=42', 'N_LAYERS=42 must be one of 18, 34, 50, 101, 152'),
    ("EVAL_MODE='tiles'", "EVAL_MODE=tiles must be one of 'whole', 'slide'"),
    ('SLIDE_STEP=600', 'SLIDE_STEP=600 must be in [1, 513]'),
    ('LR=0.0', 'LR=0.0 must be a positive finite number'),
    ('LR=' + '9' * 400, 'LR=inf must be a positive finite number'),  # an int beyond floats
    ("LOSS='focal'", "LOSS=focal must be one of 'ce', 'ohem'"),
    ('SEED=' + '9' * 20, 'SEED=' + '9' * 20 + ' must be in [0, 9223372036854775807]'),
    ('NUM_WORKERS=1000', 'NUM_WORKERS=1000 must be in [0, 256]'),
])
def test_out_of_range_settings_are_refused_before_anything_runs(arg, message, given):
    before = config.resolved()
    with pytest.raises(config.UserError, match=re.escape(message)):
        config.apply_overrides([arg])
    assert config.resolved() != before  # applied, then refused: the script stops here
    given(**before)
    config.check()  # settings.py itself is in range


def test_second_forms_long_values_paths_and_help(capsys, given):
    assert config.apply_overrides(['CROP_SIZE=(512,1024)', 'STAGE_NUM_EVAL=(1,2,3)']) == []
    assert settings.CROP_SIZE == (512, 1024) and config.crop_size() == (512, 1024)
    assert network.stage_counts() == (1, 2, 3)
    given(CROP_SIZE=33, STAGE_NUM_EVAL=0)
    assert config.crop_size() == (33, 33) and network.stage_counts() == (settings.STAGE_NUM,)
    with pytest.raises(config.UserError) as e:  # a huge value is shortened in the message
        config.apply_overrides(['LR=' + '9' * 200000 + 'x'])
    assert len(str(e.value)) < 300 and '(200001 characters)' in str(e.value)
    deep = '/tmp/' + 'a-long-folder-name/' * 20 + 'final.pth'  # a path in a message is whole
    assert config.short(deep) == deep and config.short(tuple(range(100))).endswith(
        '97, 98, 99) (390 characters)')
    # an experiment folder named like a setting is a path, not a setting
    assert config.apply_overrides(['lr=0.1/final.pth', 'EMANet.T=3/x.pth']) == [
        'lr=0.1/final.pth', 'EMANet.T=3/x.pth']
    with pytest.raises(config.UserError, match="unknown setting 'lr'"):
        config.apply_overrides(['lr=0.1'])
    with pytest.raises(SystemExit) as e:
        config.apply_overrides(['--help'], 'usage: a script\n  more')
    assert e.value.code == 0 and capsys.readouterr().out == 'usage: a script\n  more\n'


@pytest.mark.parametrize('script', ['train.py', 'eval.py', 'predict.py', 'compare.py', 'bench.py',
                                    'prepare.py', 'toy.py', 'dataset.py', 'experiment.py',
                                    'plumbing/clean.py'])
def test_every_script_prints_its_usage(script, capsys):
    module = importlib.import_module(script[:-3].replace('/', '.'))
    code, out, err = run_main(module.main, ['--help'], capsys)
    assert code == 0 and err == '', err
    assert module.__doc__.splitlines()[0] in out  # what it is for
    run = 'sh clean.sh ' if script == 'plumbing/clean.py' else f'python {script} '
    assert run in out  # and how to run it


def line_of(text):
    """The line number of `text` in settings.py."""
    return open(settings.__file__).read().split(text)[0].count('\n') + 1


@pytest.mark.parametrize('edit, message', [
    (lambda s: s.replace('N_BASES = 64', 'N_BASES = (64'),
     f"line {line_of('N_BASES = 64')} is not a valid Python constant ('(' was never closed)"),
    (lambda s: s.replace('LR = 9e-3', 'LR = 9e-3 * FACTOR'),
     f"line {line_of('LR = 9e-3')} is not a valid Python constant (NameError: name 'FACTOR'"),
    (lambda s: None, 'settings.py is missing; restore it (`git checkout settings.py`)'),
])
def test_a_settings_py_python_cannot_run_is_one_sentence(tmp_path, edit, message):
    """Every script starts with plumbing/config.py, which imports settings.py: a broken file is
    named with its line before anything runs (compare.py here: it starts without torch)."""
    shutil.copytree(os.path.join(config.ROOT, 'plumbing'), tmp_path / 'plumbing',
                    ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(os.path.join(config.ROOT, 'compare.py'), tmp_path)
    text = edit(open(os.path.join(config.ROOT, 'settings.py')).read())
    if text is not None:
        (tmp_path / 'settings.py').write_text(text)
    done = subprocess.run([sys.executable, 'compare.py', '.'], cwd=tmp_path, capture_output=True,
                          text=True, env=ENV)
    assert done.returncode == 2 and done.stderr.startswith('error: ') and \
        done.stderr.count('\n') == 1, done.stderr
    assert message in done.stderr and 'git ' in done.stderr, done.stderr


def test_a_settings_py_missing_a_setting_the_code_reads_or_holding_a_wrong_kind_is_one_sentence(
        given):
    del settings.LR_DECAY  # a line deleted while editing an experiment copy
    with pytest.raises(config.UserError, match=r'settings.py lacks the setting LR_DECAY \(a line '
                                               r'deleted while editing\?\); `git diff settings.py'
                                               r'` shows what changed'):
        config.apply_overrides(['LR=0.1'])
    given(LR_DECAY=10, LR='0.01')  # a string where a number is expected
    line = line_of('LR = ')
    with pytest.raises(config.UserError, match=f'settings.py line {line}: LR = 0.01 is a string, '
                                               f'but LR takes a number; fix the line'):
        config.apply_overrides([])
    given(LR=1, CROP_SIZE=513.0)
    with pytest.raises(config.UserError, match=r'CROP_SIZE = 513.0 is a number, but CROP_SIZE '
                                               r'takes an int or a tuple of ints'):
        config.apply_overrides([])
    given(CROP_SIZE=[33, 49])  # a list is taken as a tuple, an int as a number
    config.apply_overrides([])
    assert settings.LR == 1.0 and type(settings.LR) is float and settings.CROP_SIZE == (33, 49)
    given(STEM=None)  # a kind no setting takes
    with pytest.raises(config.UserError, match=r'STEM = None is a NoneType, but STEM takes a '
                                               r'string; fix the line'):
        config.apply_overrides([])


def test_a_constant_no_code_reads_is_one_note_and_the_script_goes_on(given, capsys):
    """A misspelt name (or an idea whose code is not written yet) is said with the nearest name;
    every constant of the project's own settings.py is read by its code."""
    capsys.readouterr()
    config.apply_overrides([])
    assert capsys.readouterr().err == ''  # settings.py as it is: every constant read somewhere
    given(LR_DECY=10)
    assert config.apply_overrides(['LR=0.02']) == [] and settings.LR == 0.02
    err = capsys.readouterr().err
    assert err == ('note: settings.py line ? defines LR_DECY, which no code of this project reads '
                   '(did you mean LR_DECAY?); it has no effect until code reads '
                   'settings.LR_DECY.\n').replace('settings.py', settings.__file__, 1), err
    config.apply_overrides([])
    assert capsys.readouterr().err == ''  # said once
    with pytest.raises(config.UserError, match=r"unknown setting 'LR_DECYY' \(closest: LR_DECY, "
                                               r"LR_DECAY"):
        config.apply_overrides(['LR_DECYY=3'])  # a misspelt KEY=VALUE: refused


def test_a_new_constant_takes_the_kind_of_its_literal(given):
    """A knob added to settings.py needs no entry anywhere: its kind comes from its literal."""
    given(MY_KNOB=0.5, MY_COUNT=3, MY_NAME='a', MY_FLAG=False, MY_SIZES=(1, 2))
    config.apply_overrides(['MY_KNOB=1', 'MY_COUNT=4', 'MY_NAME=b c', 'MY_FLAG=true',
                            'MY_SIZES=(3,4,5)'])
    assert (settings.MY_KNOB, settings.MY_COUNT, settings.MY_NAME, settings.MY_FLAG,
            settings.MY_SIZES) == (1.0, 4, 'b c', True, (3, 4, 5))
    assert type(settings.MY_KNOB) is float
    for arg, message in (('MY_COUNT=0.5', r'MY_COUNT takes an int, like MY_COUNT=4 \(write '
                                          r'MY_COUNT = 4.0 in settings.py to make it a number\)'),
                         ('MY_FLAG=1', 'MY_FLAG takes True or False'),
                         ('MY_SIZES=(1,0.5)', 'MY_SIZES takes a tuple of ints'),
                         ('MY_KNOB=fast', 'is not a Python literal; MY_KNOB takes a number')):
        with pytest.raises(config.UserError, match=message):
            config.apply_overrides([arg])


def test_a_setting_given_twice_counts_once_and_an_empty_folder_is_refused(given):
    assert config.apply_overrides(['LR=0.1', 'BATCH_SIZE=8', 'LR=0.2']) == []
    assert settings.LR == 0.2  # the last one, as a pasted settings line then your own
    for key in ('LOG_DIR', 'MODEL_DIR'):
        with pytest.raises(config.UserError, match=f'{key}= must name a folder'):
            config.apply_overrides([f'{key}='])
        given(**{key: f'./{key.lower()}'})
    with pytest.raises(config.UserError, match='TRAIN_SPLIT=../train must be the name of a list'):
        config.apply_overrides(['TRAIN_SPLIT=../train'])


def test_spaces_around_a_word_are_shown_and_tensorboard_sh_checks_its_arguments(tmp_path,
                                                                                 given):
    with pytest.raises(config.UserError, match=r"LOSS='ce ' must be one of 'ce', 'ohem'"):
        config.apply_overrides(["LOSS='ce '"])
    for argv, message in ((['LOG_DIR=/tmp/x'], 'PORT LOG_DIR=/tmp/x is not a number'),
                          (['80'], 'PORT 80 is not in 1024-65535'),
                          (['6006', 'HOST=0.0.0.0'], 'HOST HOST=0.0.0.0 is not a host')):
        done = subprocess.run(['sh', os.path.join(config.ROOT, 'tensorboard.sh'), *argv],
                              capture_output=True, text=True, env={**ENV, 'PYTHON': sys.executable})
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_what_the_code_reads_is_found_anew_when_a_file_changes(tmp_path, monkeypatch):
    """plumbing/reads.py keeps each file's part in plumbing/__pycache__ until the file changes
    (where Python keeps its own caches: not with PYTHONDONTWRITEBYTECODE or `python -B`)."""
    from plumbing import reads

    def found():  # as a new process finds them
        for cached in (reads._code, reads.anywhere):
            cached.cache_clear()
        return reads.anywhere(str(tmp_path))
    (tmp_path / 'plumbing').mkdir()
    code, kept = tmp_path / 'idea.py', tmp_path / 'plumbing' / '__pycache__' / 'reads.json'
    code.write_text('import settings\n\n\ndef f():\n    return settings.ONE\n')
    monkeypatch.setattr(sys, 'dont_write_bytecode', True)
    assert found() == {'ONE'} and not kept.exists()
    monkeypatch.setattr(sys, 'dont_write_bytecode', False)
    assert found() == {'ONE'} and kept.is_file()
    code.write_text('import settings\n\n\ndef f():\n    return settings.TWO + 1\n')
    assert found() == {'TWO'}
