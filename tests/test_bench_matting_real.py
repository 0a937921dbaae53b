"""The real-photo matting benchmark's metrics and its run on a small folder (no real data is committed: the
test writes two synthetic pairs)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks import bench_matting_real as bmr


def test_metrics_of_known_differences():
    gt = np.zeros((40, 50))
    gt[10:30, 10:40] = 1.0
    assert bmr.sad(gt, gt) == bmr.mse(gt, gt) == bmr.grad_error(gt, gt) == 0.0
    pred = gt.copy()
    pred[0, 0] = 0.5  # one pixel off by 0.5
    assert bmr.sad(pred, gt) == pytest.approx(0.5 / 1000)
    assert bmr.mse(pred, gt) == pytest.approx(0.25 / gt.size)
    region = np.zeros_like(gt, dtype=bool)
    region[20:, :] = True
    assert bmr.sad(pred, gt, region) == 0.0 and bmr.mse(pred, gt, region) == 0.0
    assert bmr.grad_error(pred, gt) > 0
    # a constant offset has no gradient error
    assert bmr.grad_error(np.full_like(gt, 0.3), np.full_like(gt, 0.7)) == pytest.approx(0.0, abs=1e-12)
    pytest.importorskip("scipy")
    assert bmr.conn_error(gt, gt) == 0.0 and bmr.conn_error(np.clip(gt - 0.4, 0, 1), gt) > 0


def test_runs_on_a_folder_and_prints_the_tables(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for sub in ("image", "alpha"):
        (tmp_path / sub).mkdir()
    for name in ("a", "b"):
        h, w = 90, 120
        yy, xx = np.mgrid[0:h, 0:w]
        alpha = np.clip((45 - np.hypot(yy - h / 2, xx - w / 2)) / 6 + 0.5, 0, 1)
        fg, bg = np.array([220, 170, 140.0]), rng.uniform(0, 90, (h, w, 3))
        img = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
        Image.fromarray(img.astype(np.uint8)).save(tmp_path / "image" / f"{name}.png")
        Image.fromarray((alpha * 255).astype(np.uint8)).save(tmp_path / "alpha" / f"{name}.png")
    bmr.main([str(tmp_path), "--methods", "coarse", "guided", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert "## Averages" in out and "| model | guided | 2 |" in out and "| hard | coarse | 2 |" in out
    import json

    recs = json.loads((tmp_path / "r.json").read_text())["records"]
    assert {(r["image"], r["variant"], r["method"]) for r in recs} == {
        (i, v, m) for i in ("a", "b") for v in ("model", "hard") for m in ("coarse", "guided")}
