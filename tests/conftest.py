"""Shared test fixtures: paths to the copied conformance data and synthetic BEN2 weights."""
from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-BEN2"


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


def load_pack(name: str = PACK_NAME):
    """Import the repo root as a package called ``name`` (what ComfyUI's custom-node loader does).

    The name may contain a hyphen, so only relative imports inside the pack can work.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
