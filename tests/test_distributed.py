"""The Ray Data stage (ben_core.apps.distributed): planning, the stage on its own, and a real local Ray with two
actors and synthetic weights whose files must equal the single-process CLI's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ben_core.apps.cli import UsageError
from ben_core.io.writers import OutputFormat

from test_cli import REPO, rand_image

ray = pytest.importorskip("ray")
from ben_core.apps import distributed  # noqa: E402  (imports pyarrow through ray's dependencies)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from safetensors.torch import save_file

    from helpers import synth_sd

    path = tmp_path_factory.mktemp("weights") / "synth.safetensors"
    save_file(synth_sd(0), str(path))
    return path


def _folder(root: Path) -> Path:
    src = root / "in"
    (src / "sub").mkdir(parents=True)
    for i, (w, h) in enumerate([(40, 30), (17, 23), (32, 32)]):
        rand_image(src / f"{i}.png", w, h, i)
    rand_image(src / "sub" / "deep.png", 12, 9, 7)
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (src / ".hidden.png").write_bytes(b"")
    (src / "clip.mp4").write_bytes(b"")
    (src / "notes.txt").write_text("x")
    return src


def test_plan_names_like_the_cli_and_refuses_clashes(tmp_path):
    src = _folder(tmp_path)
    fmt = OutputFormat()
    plan = distributed.plan(str(src), str(tmp_path / "out"), fmt)
    names = [os.path.relpath(o, tmp_path / "out") for o in plan.outputs]
    assert names == ["0.png", "1.png", "2.png", "broken.png"]  # not recursive, no hidden file
    assert any("video" in w for w in plan.warnings) and any("ignored 1" in w for w in plan.warnings)
    deep = distributed.plan(str(src), str(tmp_path / "out"), fmt, recursive=True)
    assert "sub/deep.png" in [os.path.relpath(o, tmp_path / "out") for o in deep.outputs]
    rand_image(src / "0.jpg", 8, 8, 9)
    with pytest.raises(UsageError, match="would both be written"):
        distributed.plan(str(src), str(tmp_path / "out"), fmt)
    with pytest.raises(UsageError, match="would replace an input"):
        distributed.plan(str(src / "1.png"), str(src), fmt)
    with pytest.raises(UsageError, match="under a file"):
        distributed.plan(str(src / "1.png"), str(src / "1.png" / "x"), OutputFormat(image_format="webp"))
    with pytest.raises(UsageError, match="not found"):
        distributed.plan(str(tmp_path / "nope"), str(tmp_path / "out"), fmt)


@pytest.mark.slow
def test_stage_turns_a_batch_of_files_into_rows(tmp_path, checkpoint):
    """The map_batches contract without Ray: bytes + paths in, files and one row per input out."""
    src = _folder(tmp_path)
    stage = distributed.BEN2Stage(str(tmp_path / "out"), str(src), str(checkpoint), device="cpu", working_size=512)
    paths = [str(src / "0.png"), str(src / "broken.jpg"), str(src / "sub" / "deep.png")]
    batch = {"path": np.array(paths, dtype=object),
             "bytes": np.array([Path(p).read_bytes() for p in paths], dtype=object)}
    rows = stage(batch)
    assert set(rows) == {"input", "output", "status", "error", "seconds"}
    by_input = {i: (o, s, e) for i, o, s, e in zip(rows["input"], rows["output"], rows["status"], rows["error"])}
    assert by_input[paths[0]][:2] == (str(tmp_path / "out" / "0.png"), "ok")
    assert by_input[paths[2]][:2] == (str(tmp_path / "out" / "sub" / "deep.png"), "ok")
    assert by_input[paths[1]][1] == "failed" and "not an image file" in by_input[paths[1]][2]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["0.png", "deep.png"]


@pytest.mark.slow
def test_local_ray_two_actors_write_what_the_cli_writes(tmp_path, checkpoint):
    src = _folder(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS="")
    # fp32: 1-CPU actors run torch on one thread, the CLI on two; fp32 gives the same bytes either way, bf16
    # (what auto picks on CPUs with native bf16) does not
    common = ["--checkpoint", str(checkpoint), "--working-size", "512", "--dtype", "fp32", "-q"]
    r = subprocess.run([sys.executable, "-m", "ben_core.apps.distributed", str(src), "-o", str(tmp_path / "ray"),
                        "--actors", "2", "--report", str(tmp_path / "r.jsonl"), *common],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-3000:]  # the broken file
    assert "broken.jpg" in r.stderr
    c = subprocess.run([sys.executable, "-m", "ben_core", str(src), "-o", str(tmp_path / "cli"), *common],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert c.returncode == 1, c.stderr
    ray_files = {p.name: p.read_bytes() for p in (tmp_path / "ray").iterdir()}
    cli_files = {p.name: p.read_bytes() for p in (tmp_path / "cli").iterdir()}
    assert sorted(ray_files) == ["0.png", "1.png", "2.png"] and ray_files == cli_files
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted((Path(d["input"]).name, d["status"]) for d in lines) == [
        ("0.png", "ok"), ("1.png", "ok"), ("2.png", "ok"), ("broken.jpg", "failed")]
    # resumed: everything done is skipped without starting Ray or loading a model
    again = subprocess.run([sys.executable, "-m", "ben_core.apps.distributed", str(src), "-o", str(tmp_path / "ray"),
                            "--skip-existing", "--checkpoint", str(tmp_path / "absent.pth")],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 3, again.stderr  # broken.jpg is still to do: the (absent) model is needed
    assert "absent.pth" in again.stderr and "Traceback" not in again.stderr


def test_without_ray_the_message_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError, match=r'pip install "ray\[data\]"'):
        distributed._import_ray()
