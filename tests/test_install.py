"""ben_core where pipelines live: `pip install <repo>` gives the package and the `ben2` command (tested in a
fresh virtual environment, run from another folder). The documented snippets run in tests/test_docs.py."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth_checkpoint(tmp_path_factory):
    from helpers import synth_sd
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_file(synth_sd(0), str(path))
    return path


@pytest.mark.slow
def test_pip_install_gives_the_ben2_command_outside_the_clone(tmp_path, synth_checkpoint):
    """A fresh venv, `pip install --no-deps <repo>` (torch and the rest come from this environment through a
    .pth file, so CI downloads nothing big), then `ben2` from an unrelated folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(REPO)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "outer_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([str(py), "-c", "import ben_core, os; print(ben_core.__file__)"], cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout.strip()
    assert installed.startswith(site) and "nodes" not in os.listdir(Path(site))  # ben_core only, not the nodes
    work = tmp_path / "elsewhere"
    work.mkdir()
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(work / "p.png")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    help_ = subprocess.run([str(venv / "bin" / "ben2"), "--help"], cwd=work, env=env, capture_output=True,
                           text=True, timeout=120)
    assert help_.returncode == 0 and "--skip-existing" in help_.stdout and "eval" in help_.stdout
    run = subprocess.run([str(venv / "bin" / "ben2"), "p.png", "-o", "out", "--checkpoint", str(synth_checkpoint),
                          "--working-size", "512", "-q"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    with Image.open(work / "out" / "p.png") as im:
        assert im.mode == "RGBA" and im.size == (30, 20)
