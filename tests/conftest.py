"""Shared test fixtures: the project folder on sys.path, and settings restored after
every test (tests change settings the way KEY=VALUE overrides do)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import config  # noqa: E402
import settings  # noqa: E402


@pytest.fixture(autouse=True)
def restore_settings():
    saved = config.resolved()
    yield
    for key, value in saved.items():
        setattr(settings, key, value)


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory):
    """A small toy dataset (toy.make_toy) in a tmp dir: 24 trainaug + 8 val images,
    5 classes; returns its path (set settings.DATA_ROOT/N_CLASSES yourself)."""
    import toy
    root = tmp_path_factory.mktemp('toy')
    toy.make_toy(str(root), seed=0, n_train=24, n_val=8)
    return str(root)
