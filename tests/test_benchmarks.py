"""The benchmarks (``benchmarks/``, not shipped): the cheap parts of ``python -m benchmarks.bench`` and the
loader of a user-supplied upstream ``BEN2.py``. The 1024² network rows are too slow for the suite."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# python -m benchmarks.bench and the upstream loader (cheap parts only; the 1024² network rows are slow)
# --------------------------------------------------------------------------------------------------

def test_bench_foreground_rows(tmp_path):
    import json

    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--no-network", "--device", "cpu",
                        "--fg-sizes", "1024²", "--fg-repeats", "2", "--json", str(tmp_path / "b.json")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "Foreground estimator" in r.stdout and "1024x1024" in r.stdout
    res = json.loads((tmp_path / "b.json").read_text())["foreground"]
    assert len(res) == 1 and len(res[0]["times_s"]) == 2 and res[0]["median_s"] > 0
    assert res[0]["peak_rss_mb"] >= res[0]["rss_before_mb"] > 0


FAKE_UPSTREAM = '''
import torch, torch.nn as nn
from einops import rearrange
from timm.layers import DropPath, to_2tuple, trunc_normal_
from torchvision import transforms
import cv2
torch.manual_seed(9)  # upstream seeds at import: must stay inside the worker process
img_transform32 = transforms.Compose([transforms.ToTensor(), transforms.ConvertImageDtype(torch.float32),
                                      transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
class BEN_Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = DropPath(0.2)
        self.hw = to_2tuple(12)
        self.w = nn.Parameter(torch.empty(3))
        trunc_normal_(self.w, std=0.02)
    def forward(self, x):
        return rearrange(self.drop(x), "b c h w -> b c (h w)") * 2
'''

UPSTREAM_CHECK = '''
import sys, torch, numpy as np
from PIL import Image
from benchmarks.upstream_loader import load_upstream
m = load_upstream(sys.argv[1])  # einops too is stood in for when missing
net = m.BEN_Base().eval()
x = torch.arange(24.0).view(1, 2, 3, 4)
assert torch.equal(net(x), x.view(1, 2, 12) * 2)
assert net.hw == (12, 12) and float(net.w.abs().max()) <= 0.04
t = m.img_transform32(Image.fromarray(np.full((5, 7, 3), 255, np.uint8)))
assert t.shape == (3, 5, 7) and abs(float(t[0, 0, 0]) - (1 - 0.485) / 0.229) < 1e-5
import cv2
try:
    cv2.imread
except AttributeError as e:
    assert "OpenCV" in str(e)
else:
    assert not getattr(cv2, "__ben_bench_stub__", False)
print("OK")
'''


def test_upstream_loader_stand_ins(tmp_path):
    fake = tmp_path / "BEN2.py"
    fake.write_text(FAKE_UPSTREAM)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", UPSTREAM_CHECK, str(fake)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK"


def test_upstream_missing_file_is_clear(tmp_path):
    from benchmarks.upstream_loader import load_upstream

    with pytest.raises(FileNotFoundError, match="PramaLLC/BEN2"):
        load_upstream(tmp_path / "nope.py")
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--upstream", str(tmp_path / "nope.py")],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2 and "nope.py" in r.stderr


def test_rearrange_stand_in_does_upstreams_patterns():
    """The einops stand-in (for the bare GPU machine) against explicit reshapes/permutes."""
    import torch

    from benchmarks.upstream_loader import rearrange

    x = torch.arange(2 * 3 * 4 * 6.0).view(2, 3, 4, 6)
    quads = rearrange(x, "b c (hg h) (wg w) -> (hg wg b) c h w", hg=2, wg=2)
    ref = x.view(2, 3, 2, 2, 2, 3).permute(2, 4, 0, 1, 3, 5).reshape(8, 3, 2, 3)
    assert torch.equal(quads, ref)
    assert torch.equal(rearrange(quads, "(hg wg b) c h w -> b c (hg h) (wg w)", hg=2, wg=2), x)
    assert torch.equal(rearrange(x, "b c h w -> (h w) b c"), x.permute(2, 3, 0, 1).reshape(24, 2, 3))
    t = rearrange(x, "b c h w -> (h w) b c")
    assert torch.equal(rearrange(t, "(h w) b c -> b c h w", h=4, w=6), x)
    y = torch.arange(4 * 6 * 2 * 3.0).view(4, 6, 2, 3)
    got = rearrange(y, "(ng h) (nw w) b c -> (h w) (ng nw b) c", ng=2, nw=2)
    assert torch.equal(got, y.view(2, 2, 2, 3, 2, 3).permute(1, 3, 0, 2, 4, 5).reshape(6, 8, 3))
    assert rearrange(x, "nl c h w -> nl (h w) 1 c").shape == (2, 24, 1, 3)
    assert torch.equal(rearrange(x, "nl c h w -> nl (h w) 1 c")[:, :, 0], x.permute(0, 2, 3, 1).reshape(2, 24, 3))
    try:
        import einops
    except ImportError:
        return
    for pattern, kw in [("b c (hg h) (wg w) -> (hg wg b) c h w", dict(hg=2, wg=2)), ("b c h w -> (h w) b c", {}),
                        ("nl c h w -> nl (h w) 1 c", {})]:
        assert torch.equal(rearrange(x, pattern, **kw), einops.rearrange(x, pattern, **kw)), pattern


def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    """The prepared device check, small and on the CPU (where there is no GPU): every section runs,
    the JSON and the tables are written, and the checks it makes pass."""
    import json

    # the wrapper runs `python3`: this interpreter's, as on the GPU machine its own python3
    env = dict(os.environ, OUT=str(tmp_path / "out"),
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run(["sh", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick"],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res["errors"] == []
    assert res["correctness"]["fp32_vs_stored"]["512"]["ok"]
    assert res["correctness"]["nan_fallback"]["ok"] and res["correctness"]["nan_fallback"]["fallback_count"] == 1
    sites = {row["site"] for row in res["attention"]}
    assert sites == {"swin.WindowAttention.forward", "ops.attention"}  # the decoder calls SDPA through ops.attention
    assert sum(row["calls_per_forward"] for row in res["attention"]) > 0
    assert all(row["backends"]["math"]["ok"] for row in res["attention"])
    eager = [row for row in res["throughput"] if row.get("mode") == "eager"]
    assert eager and all(row["images_per_s"] > 0 for row in eager)
    assert res["remove_background"]["alpha_vs_direct_chunk_max_abs_diff"] == 0.0
    assert res["remove_background"]["image_shape"] == [2, 540, 960, 4]
    dv = res["dynamic_vram"]  # on the CPU core's rule gives the plain ModelPatcher: the smoke test of the GPU path
    assert dv["ok"] and dv["patcher"] == "ModelPatcher" and dv["masks_identical"]
    assert [row["node"] for row in dv["cancel"]] == ["Remove Background", "Remove Video Background",
                                                     "Refine Mask (guided)", "Refine Mask (ViTMatte tiles)"]
    assert all(row["interrupted"] and row["files_left"] == [] for row in dv["cancel"])
    assert [row["vram"] for row in dv["vram_states"]] == ["gpu-only", "highvram", "normal", "lowvram", "novram"]
    assert all(row["ok"] and row["masks_identical"] for row in dv["vram_states"])  # (no CUDA-graph rows on the CPU)
    st = res["stabilizer"]
    assert [row["mode"] for row in st] == ["causal", "bidirectional"]
    assert all(row["frames_out"] == row["frames"] == 5 and row["ms_per_frame"] > 0 for row in st)
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "## Correctness" in md and "## Attention" in md and "## Remove Background path" in md
    assert "## Dynamic VRAM and Cancel" in md and "## Video stabiliser" in md


def test_bench_temporal_prints_the_segment_table_and_its_targets(tmp_path):
    """python -m benchmarks.bench_temporal on tiny clips: a row per shot, segment and metric for the four methods,
    the flicker-free floor and the flicker above it, the targets of both modes, and the tracking shot's strip
    (the figures themselves are the benchmark's business)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    strip = tmp_path / "strip.png"
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench_temporal", "--seeds", "0", "--size", "160x90",
                        "--frames-per-segment", "5", "--no-cost", "--shots", "classic,tracking",
                        "--strip", str(strip)],
                       capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert r.returncode in (0, 1), r.stderr  # 1: a target not met at this toy size
    out = r.stdout
    assert "| shot | segment | metric | per-frame | no flow | causal | bidirectional |" in out
    for seg in ("still", "pan3", "pan8", "subject4", "cut", "clip"):
        assert f"| classic | {seg} | dtSSD |" in out, seg
    for seg in ("track3", "track8", "counter"):
        assert f"| tracking | {seg} | flicker above the floor |" in out, seg
    assert "flicker-free floor" in out and "| causal: classic pan8 dtSSD ≤ 0.5× |" in out
    assert "| bidirectional: tracking track8 flicker above the floor ≤ 0.5× |" in out
    assert "| bidirectional: tracking clip MSE ≤ 0.9× |" in out and "| causal: tracking still dtSSD ≤ 0.4× |" in out
    from PIL import Image

    assert Image.open(strip).size[0] > 100
    bad = subprocess.run([sys.executable, "-m", "benchmarks.bench_temporal", "--shots", "nope", "--no-cost"],
                         capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert bad.returncode == 2 and "unknown shot" in bad.stderr


def test_the_memory_formula_bounds_the_measured_peaks():
    """python -m benchmarks.bench_node_memory --quick: BEN2's activations on meta (512, batch 1, fp32 and fp16),
    the pipeline and the refinement on a small image, a ViTMatte tile: no measured peak above ben_core.memory's
    figure (before its margin)."""
    from benchmarks import bench_node_memory

    assert bench_node_memory.main(["--quick"]) == 0


def test_bench_forward_ops_prints_the_floor_and_the_operator_groups(capsys):
    """The forward's breakdown runs end to end (512: the blocked attention is not used there, so both
    interleaved medians come from the same kernels) and prints the floor table and the groups."""
    from benchmarks import bench_forward_ops

    assert bench_forward_ops.main(["--size", "512", "--repeats", "1", "--ab", "1"]) == 0
    out = capsys.readouterr().out
    assert "| bf16 |" in out and "| fp32 |" in out and "× floor" in out
    groups = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and " s | " in line
              and "%" in line]
    assert {"attention", "linear (GEMM)", "convolution"} <= set(groups)
    assert "interleaved bf16 forwards, median of 1" in out
    from ben_core.model import ops

    assert ops._BLOCKED_MIN_SCORES == 1 << 24  # the benchmark put the threshold back


def test_gpu_check_onnxruntime_section_on_the_cpu(tmp_path):
    """Section 8 of the device check (skipped by --quick) on the CPU provider with a narrow network: the
    export, a session per provider, the timing and the agreement with torch, and its table."""
    import torch
    from helpers import small_model

    from benchmarks import gpu_check

    rows = gpu_check.bench_onnxruntime(small_model(), torch.device("cpu"), 512, iters=1, warmup=0, out=tmp_path,
                                       log=lambda msg: None, dtypes=("fp32",))  # an export takes a minute here
    assert [(r["provider"], r["dtype"]) for r in rows] == [("CPUExecutionProvider", "fp32")]
    assert rows[0]["max_abs_diff"] <= 1e-4
    assert all(r["ms_per_image"] > 0 for r in rows) and list(tmp_path.iterdir()) == []
    md = gpu_check.report({"environment": {"date": "d", "device_name": "cpu", "torch": "t", "cuda": None,
                                           "python": "p", "command": "c"}, "onnxruntime": rows, "errors": [],
                           "seconds": 1.0})
    assert "## onnxruntime" in md and "| CPUExecutionProvider | fp32 |" in md
