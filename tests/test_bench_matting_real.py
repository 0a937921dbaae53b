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
    # the saved run prints the same tables again, without the data folder
    bmr.main(["--from-json", str(tmp_path / "r.json"), "--no-per-image"])
    again = capsys.readouterr().out
    per_image = "## Per image, coarse variant `model`, every"
    assert again.split("## Averages")[1] == out.split("## Averages")[1].split(per_image)[0]


def test_ratio_table_counts_and_medians():
    def rec(image, method, band_mse, img_sad):
        return {"image": image, "variant": "model", "method": method, "size": [10, 20], "band_mse": band_mse,
                "img_sad": img_sad}
    recs = [rec("a", "coarse", 0.02, 4.0), rec("a", "guided", 0.01, 3.0),
            rec("b", "coarse", 0.04, 2.0), rec("b", "guided", 0.032, 2.2)]
    t = bmr.ratio_table(recs, "model", ["coarse", "guided"])
    assert "| a | 20x10 | 0.02000 | x0.50 | x0.75 |" in t
    assert "| b | 20x10 | 0.04000 | x0.80 | x1.10 |" in t
    assert "| **median** | | | x0.65 | x0.93 |" in t and "| **worst** | | | x0.80 | x1.10 |" in t
    assert "1/2 <= x0.6" in t and "1/2 <= x1" in t


def test_model_side_palette_mattes_and_working_size_model(tmp_path, monkeypatch):
    gt = np.zeros((60, 90), np.float32)
    gt[15:45, 20:70] = 1
    import torch

    from benchmarks.synthetic_matting import coarsen_alpha
    g = torch.from_numpy(gt)[None]
    assert torch.equal(bmr.coarse_alpha(g, "model", model_side=24), coarsen_alpha(g, model_size=24, blur_sigma=1.0))
    # a palette PNG is read as its grey levels, not as palette indices
    for sub in ("image", "alpha"):
        (tmp_path / sub).mkdir()
    pal = Image.fromarray((gt * 255).astype(np.uint8)).convert("P", palette=Image.ADAPTIVE, colors=2)
    assert pal.mode == "P"
    pal.save(tmp_path / "alpha" / "p.png")
    Image.fromarray(np.full((60, 90, 3), 128, np.uint8)).save(tmp_path / "image" / "p.png")
    (_, _, a), = bmr.load_pairs(tmp_path)
    assert torch.equal(a[0], torch.from_numpy(gt))
    seen = []
    real = bmr.refine_alpha

    def spy(*args, **kw):
        seen.append(kw.get("working_size"))
        return real(*args, **kw)

    monkeypatch.setattr(bmr, "refine_alpha", spy)
    recs = bmr.evaluate(bmr.load_pairs(tmp_path), ["coarse", "guided:working_size=model"], ["model"], model_side=24,
                        conn=False)
    assert seen == [24]  # the spec's "model" became this image's model map side
    assert all(np.isnan(r["img_conn"]) for r in recs)


def test_guided_spec_with_trimap_thresholds():
    """t_low/t_high/t_min/t_max in a guided spec make the confidence trimap (Show Trimap's sliders) that
    refine_alpha gets; the other keys still go to refine_alpha."""
    import torch

    from ben_core.matting.refine import refine_alpha
    from ben_core.matting.trimap import confidence_trimap
    from benchmarks.synthetic_matting import make_synthetic_matte
    s = make_synthetic_matte(90, 120, seed=3, model_size=24)
    img, c = s["image"], s["coarse"]
    got = bmr.resolve_method("guided:t_low=0.1,t_high=0.9,working_size=40")(img, c)
    want = refine_alpha(img, c, confidence_trimap(c, t_low=0.1, t_high=0.9)[0], working_size=40)
    assert torch.equal(got, want)
    assert not torch.equal(got, bmr.resolve_method("guided:working_size=40")(img, c))  # the trimap mattered


def test_fullres_composite_contracts():
    from benchmarks import fullres_composite as fc
    rng = np.random.default_rng(1)
    img_lr = rng.uniform(0, 1, (20, 30, 3)).astype(np.float32)
    a_lr = np.zeros((20, 30), np.float32)
    a_lr[5:15, 8:22] = 1
    a_hr = np.kron(a_lr, np.ones((4, 4), np.float32))
    copies = [x.copy() for x in (img_lr, a_lr, a_hr)]
    out = fc.make_image(img_lr, a_lr, a_hr, noise=0.01, seed=3)
    assert out.shape == (80, 120, 3) and out.dtype == np.uint8
    assert np.array_equal(out, fc.make_image(img_lr, a_lr, a_hr, noise=0.01, seed=3))  # seeded
    assert not np.array_equal(out, fc.make_image(img_lr, a_lr, a_hr, noise=0.01, seed=4))
    up = fc.make_image(img_lr, a_lr, a_hr, mode="upsampled")
    assert up.shape == (80, 120, 3)
    for x, c in zip((img_lr, a_lr, a_hr), copies, strict=True):
        assert np.array_equal(x, c)
    with pytest.raises(ValueError, match="mode"):
        fc.make_image(img_lr, a_lr, a_hr, mode="nope")


def test_timing_children_take_every_method_spec():
    """--time-size runs each method in a fresh process; working_size=model there is the 1024 map the timed
    coarse alpha is made from (it failed with 'model' before)."""
    import torch

    g = torch.Generator().manual_seed(0)
    pair = ("x", torch.rand(1, 3, 48, 64, generator=g), (torch.rand(1, 48, 64, generator=g) > 0.5).float())
    rows = bmr.time_4k(pair, ["coarse", "guided:working_size=model"], H=60, W=80)
    assert [r["method"] for r in rows] == ["coarse", "guided:working_size=model"]
    assert all(r["size"] == [60, 80] and r["time_s"] >= 0 and r["peak_rss_mb"] > 0 for r in rows)
