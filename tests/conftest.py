"""Shared test fixtures: paths to the copied conformance data and synthetic BEN2 weights."""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"


@lru_cache(maxsize=None)
def _synth_module():
    spec = importlib.util.spec_from_file_location("ben2_synth_weights", DATA_DIR / "synth_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synth_sd(seed: int = 0):
    """The 535-key synthetic BEN2 state dict (official key names), fresh tensors on every call."""
    return _synth_module().synth_state_dict(seed)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR
