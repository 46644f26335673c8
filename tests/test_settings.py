"""KEY=VALUE overrides: types, unknown keys, bare strings, bad literals; settings.py itself."""
import ast
import subprocess
import sys

import pytest

import config
import settings


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
def test_overrides_take_typed_values(arg, key, value):
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
def test_bad_overrides_fail_with_a_sentence(arg, message):
    before = config.resolved()
    with pytest.raises(config.UserError, match=message):
        config.apply_overrides([arg])
    assert config.resolved() == before


def test_a_script_reports_a_bad_override_without_traceback():
    result = subprocess.run([sys.executable, 'network.py', 'N_LAYER=50'], cwd=config.ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown setting 'N_LAYER' (closest: N_LAYERS")
    assert 'Traceback' not in result.stderr


def test_relative_paths_are_taken_from_the_project_folder():
    assert config.path('./logdir') == config.ROOT + '/logdir'
    assert config.path('/abs/dir') == '/abs/dir'
