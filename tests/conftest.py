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
