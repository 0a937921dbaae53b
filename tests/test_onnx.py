"""BEN2 as an ONNX file (ben_core.model.export, ``python -m ben_core export-onnx``).

The network's export path against its fast kernels (eager, cheap), then the exported files run by
onnxruntime against ben_core's fp32 prediction on the same images (synthetic conformance weights): 512 and
1024, batch 1 and 3, fp16 within the docs' precision rule, and the ``--for rembg`` file through rembg's own
``ben_custom`` session on the lemur photo. Each export takes about a minute on two cores, so each file is
made once per module.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import onnx  # test requirements (optional at run time: the export imports them lazily)
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from helpers import load_lemur, small_model, synth_sd

from ben_core.model import BENBase, swin
from ben_core.model import ops as ops_module
from ben_core.model.ben2 import IMAGENET_MEAN, IMAGENET_STD, checkpoint_filter_fn
from ben_core.model.ops import export_path, instance_norm_gelu_, nearest_up2_conv3x3
from ben_core.predictor import BENPredictor

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def synthetic_net() -> BENBase:
    net = BENBase().eval().requires_grad_(False)
    net.load_state_dict(checkpoint_filter_fn(synth_sd(0)))
    return net


def sample_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """``[batch, 3, size, size]`` 0..1: the lemur photo first, then smooth random images."""
    photo = F.interpolate(load_lemur()[0], size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)
    g = torch.Generator().manual_seed(seed)
    rest = F.interpolate(torch.rand(batch - 1, 3, 12, 12, generator=g), size=(size, size), mode="bicubic")
    return torch.cat([photo, rest.clamp(0, 1)])[:batch]


def run(path, images: torch.Tensor, offset: float = 0.0) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": (images - offset).numpy()})[0]


def ben_core_alpha(net: BENBase, images: torch.Tensor) -> np.ndarray:
    """ben_core's fp32 prediction for images already at the working size: ``[B, 1, S, S]``."""
    predictor = BENPredictor(net, dtype=torch.float32, working_size=images.shape[-1], batch_size=len(images))
    return predictor.predict_alpha(images.permute(0, 2, 3, 1)).numpy()[:, None]


# ----------------------------------------------------------------------------- the export path, eagerly
def test_export_path_kernels_equal_the_fast_ones():
    """The export path's out-of-place, unchunked kernels compute what the fast ones do."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 13, 10, generator=g)
    w, b = torch.randn(5, 8, 3, 3, generator=g), torch.randn(5, generator=g)
    fast = nearest_up2_conv3x3(x, w, b, band_rows=4)
    with export_path():
        slow = nearest_up2_conv3x3(x, w, b)
    assert slow.shape == fast.shape == (2, 5, 26, 20)
    assert (slow - fast).abs().max().item() < 1e-5

    y = (torch.randn(2, 16, 40, 24, generator=g) * 3 + 1).contiguous(memory_format=torch.channels_last)
    kept = y.clone()
    with export_path():
        out = instance_norm_gelu_(y)
    assert torch.equal(y, kept), "the export path works out of place"
    with torch.inference_mode():
        assert (out - instance_norm_gelu_(y.clone())).abs().max().item() < 1e-5


@pytest.mark.parametrize("hw, shift", [((16, 20), 6), ((25, 13), 6), ((7, 30), 0)])
def test_one_image_window_layout_serves_a_batch(hw, shift):
    """The export path gathers windows per image with a one-image layout: a batch of 3 comes out as the fast
    path's batch layout gives it (padding, shift and every window group)."""
    h, w = hw
    g = torch.Generator().manual_seed(h * 100 + w)
    attn = swin.WindowAttention(dim=16, window_size=12, num_heads=2)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    y = torch.randn(3, h * w, 16, generator=g)
    batch_layout = swin.WindowLayout(hw, 12, shift, 3, y.device, y.dtype)
    one = swin.WindowLayout(hw, 12, shift, 1, y.device, y.dtype)
    win = one.to_windows_per_image(y)
    assert torch.equal(one.from_windows_per_image([win]), y)
    with torch.no_grad():
        fast = batch_layout.from_windows(attn(batch_layout.to_windows(y.reshape(-1, 16)), batch_layout))
        per_image = one.from_windows_per_image(attn(win, one))
    assert per_image.shape == (3, h * w, 16)
    assert (per_image.reshape(-1, 16) - fast).abs().max().item() < 1e-5


def test_whole_network_export_path_equals_fast_path():
    """BEN2 (synthetic weights, 512, batch 2) on its export path against the fast kernels: the same logits
    to float32 rounding (|logits| reach ~18 here)."""
    net = synthetic_net()
    x = (sample_images(2, 512) - MEAN) / STD
    with torch.no_grad():
        fast = net(x)
        with export_path():
            slow = net(x)
    assert (slow - fast).abs().max().item() < 5e-4
    assert (torch.sigmoid(slow) - torch.sigmoid(fast)).abs().max().item() < 2e-5


def test_caches_are_read_but_never_filled_while_tracing(monkeypatch):
    """A tracer's tensors must never land in the network's caches (they would be used by later eager
    calls); a window layout missing while tracing is a clear error, not a tracer's failure deep inside."""
    net = small_model()
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    with pytest.raises(RuntimeError, match="build_export_layouts"):
        net(torch.zeros(1, 3, 512, 512))
    assert all(not stage._layouts for stage in net.backbone.layers)
    mclm = net.multifieldcrossatt
    mclm._positions(8, 8, torch.device("cpu"), torch.float32)
    assert mclm._pos_cache == {}


# ----------------------------------------------------------------------------- exported files
@pytest.fixture(scope="module")
def net():
    return synthetic_net()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in synth_sd(0).items()}, str(path))
    return path


@pytest.fixture(scope="module")
def file_512(checkpoint, tmp_path_factory):
    """The 512 fp32 file, made by the command line with --verify."""
    from ben_core.__main__ import main

    out = tmp_path_factory.mktemp("onnx512") / "ben2-512.onnx"
    code = main(["export-onnx", "--checkpoint", str(checkpoint), "-o", str(out), "--working-size", "512",
                 "--verify", "-q"])
    assert code == 0 and out.is_file()
    return out


@pytest.fixture(scope="module")
def file_1024_rembg(checkpoint, tmp_path_factory):
    """The 1024 file for rembg, made by the command line with --verify (the input offset -0.5 is its only
    difference from the ben_core file: one export at 1024 serves both tests, an export takes minutes here)."""
    from ben_core.__main__ import main

    path = tmp_path_factory.mktemp("onnx1024") / "ben2-rembg.onnx"
    assert main(["export-onnx", "--checkpoint", str(checkpoint), "-o", str(path), "--for", "rembg", "--verify",
                 "-q"]) == 0
    return path


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_512_equals_ben_core(file_512, net, batch):
    images = sample_images(batch, 512, seed=batch)
    alpha = run(file_512, images)
    assert alpha.shape == (batch, 1, 512, 512) and alpha.dtype == np.float32
    assert np.abs(alpha - ben_core_alpha(net, images)).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_1024_equals_ben_core(file_1024_rembg, net, batch):
    images = sample_images(batch, 1024, seed=10 + batch)
    alpha = run(file_1024_rembg, images, offset=0.5)
    assert alpha.shape == (batch, 1, 1024, 1024)
    assert np.abs(alpha - ben_core_alpha(net, images)).max() <= 1e-4


@pytest.mark.slow
def test_the_file_states_its_contract(file_512):
    model = onnx.load(str(file_512), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["ben2.working_size"] == "512" and meta["ben2.dtype"] == "fp32" and meta["ben2.target"] == "ben_core"
    assert "float32 [batch, 3, 512, 512]" in meta["ben2.input"] and "0..1" in meta["ben2.input"]
    assert "[batch, 1, 512, 512]" in meta["ben2.output"]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "image" and out.name == "alpha"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [3, 512, 512], "the batch is a named dynamic dimension"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.slow
def test_fp16_file_within_the_precision_rule(net, checkpoint, tmp_path):
    from ben_core.__main__ import main

    path = tmp_path / "ben2-fp16.onnx"
    assert main(["export-onnx", "--checkpoint", str(checkpoint), "-o", str(path), "--working-size", "512",
                 "--dtype", "fp16", "--verify", "-q"]) == 0
    assert path.stat().st_size < 0.6 * 4 * sum(p.numel() for p in net.parameters())
    images = sample_images(3, 512, seed=7)
    alpha = run(path, images)
    assert alpha.dtype == np.float32, "the contract stays float32 in and out"
    ref = ben_core_alpha(net, images)
    for a, r in zip(alpha, ref, strict=True):  # the rule holds for the worst image
        assert np.abs(a - r).mean() <= 0.01
        assert ((a > 0.5) == (r > 0.5)).mean() >= 0.98


@pytest.mark.slow
def test_rembg_cuts_out_as_ben_core(net, file_1024_rembg):
    """rembg's ben_custom session (its own normalisation, 8-bit alpha and min-max stretch) with the --for rembg
    file against ben_core's fp32 prediction on the lemur photo at 1024 x 1024, so that both see the same pixels:
    at the photo's own size the two programs' resize filters differ (rembg: Lanczos on 8-bit pixels), which is
    the host program's choice, not the file's (docs/onnx.md gives that figure too)."""
    import rembg  # a test requirement; its import is slow (numba), so here
    from PIL import Image

    from ben_core.io.inputs import resize

    path = file_1024_rembg
    photo = resize(load_lemur()[0], (1024, 1024)).clamp(0, 1)
    square = Image.fromarray((photo[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    session = rembg.new_session("ben_custom", model_path=str(path), providers=["CPUExecutionProvider"])
    mask = np.asarray(rembg.remove(square, session=session, only_mask=True), dtype=np.float64) / 255
    ref = BENPredictor(net, working_size=1024).predict_alpha(square)[0].numpy()
    assert mask.shape == ref.shape == (1024, 1024)
    assert np.abs(mask - ref).mean() <= 0.01
    assert ((mask > 0.5) == (ref > 0.5)).mean() >= 0.98
    # the graph itself, fed exactly what rembg feeds, is ben_core's network: test_onnxruntime_1024_equals_ben_core


# ----------------------------------------------------------------------------- bad input
def test_bad_working_size_dtype_and_target_are_named():
    from ben_core.model.export import export_onnx

    net = small_model()
    with pytest.raises(ValueError, match="512, 768, 1024"):
        export_onnx(net, "x.onnx", working_size=640)
    with pytest.raises(ValueError, match="fp32, fp16"):
        export_onnx(net, "x.onnx", working_size=512, dtype="int8")
    with pytest.raises(ValueError, match="ben_core, rembg"):
        export_onnx(net, "x.onnx", working_size=512, target="onnxruntime")
    with pytest.raises(ValueError, match="1024"):
        export_onnx(net, "x.onnx", working_size=512, target="rembg")
    with pytest.raises(ValueError, match="float32 network"):
        export_onnx(small_model().half(), "x.onnx", working_size=512)


def test_cli_refuses_what_it_cannot_do(tmp_path, capsys):
    from ben_core.__main__ import main

    existing = tmp_path / "ben2.onnx"
    existing.write_bytes(b"keep me")
    assert main(["export-onnx", "-o", str(existing)]) == 2
    assert "--force" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    assert main(["export-onnx", "-o", str(tmp_path / "a.onnx"), "--working-size", "640"]) == 2
    assert "invalid choice: 640" in capsys.readouterr().err
    assert main(["export-onnx", "-o", str(tmp_path / "a.onnx"), "--for", "rembg", "--working-size", "512"]) == 2
    assert "--working-size 1024" in capsys.readouterr().err
    assert main(["export-onnx", "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err

    not_ben = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(4, 4)}, str(not_ben))
    assert main(["export-onnx", "--checkpoint", str(not_ben), "-o", str(tmp_path / "a.onnx")]) == 3
    assert "BEN2" in capsys.readouterr().err
    assert not (tmp_path / "a.onnx").exists()


def test_cli_never_downloads(tmp_path, capsys, monkeypatch):
    """No --checkpoint and nothing cached: an error naming both fixes, and no network call."""
    from ben_core.__main__ import main
    from ben_core.model import weights

    monkeypatch.setattr(weights, "find_cached_weights", lambda *a, **k: None)
    monkeypatch.setattr(weights, "download_official_weights",
                        lambda *a, **k: pytest.fail("export-onnx must never download"))
    assert main(["export-onnx", "-o", str(tmp_path / "a.onnx")]) == 3
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "never downloads" in err


def test_missing_onnx_packages_are_named(monkeypatch, tmp_path):
    from ben_core.model.export import export_onnx

    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match="pip install onnx onnxscript"):
        export_onnx(small_model(), tmp_path / "a.onnx", working_size=512)
    assert os.listdir(tmp_path) == []


class _FakeProgram:
    """What ``torch.onnx.export`` returns, as far as ``export_onnx`` uses it (the real export takes a minute)."""

    def __init__(self, graph):
        self.graph = graph
        self.model = type("Model", (), {"metadata_props": {}})()

    def save(self, destination, **kw):
        with open(destination, "wb") as f:
            f.write(b"onnx bytes")


def test_an_interrupted_export_leaves_no_file(monkeypatch, tmp_path):
    """Ctrl-C while the file is being written: nothing under the final name, no temporary left behind, and
    an older file at that name (with --force) is kept as it was."""
    from ben_core.model import export as export_module

    def interrupted(self, destination, **kw):
        with open(destination, "wb") as f:  # a whole file under the temporary name, then the stop
            f.write(b"onnx bytes")
        assert os.path.getsize(destination) > 0 and ".ben2-partial" in os.fspath(destination)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.onnx, "export", lambda graph, *a, **k: _FakeProgram(graph))
    monkeypatch.setattr(_FakeProgram, "save", interrupted)
    old = tmp_path / "ben2.onnx"
    old.write_bytes(b"older")
    with pytest.raises(KeyboardInterrupt):
        export_module.export_onnx(small_model(), old, working_size=512, force=True)
    assert old.read_bytes() == b"older"
    assert sorted(os.listdir(tmp_path)) == ["ben2.onnx"]


def test_fp16_export_leaves_the_callers_network_float32(monkeypatch, tmp_path):
    """The fp16 graph is built on a copy: the caller's network stays bit-identical and float32, and the metadata
    says fp16."""
    from ben_core.model.export import export_onnx

    traced = []
    monkeypatch.setattr(torch.onnx, "export", lambda graph, *a, **k: traced.append(graph) or _FakeProgram(graph))
    net = small_model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    export_onnx(net, tmp_path / "small-fp16.onnx", working_size=512, dtype="fp16")
    after = net.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert next(traced[0].net.parameters()).dtype == torch.float16 and traced[0].net is not net


def test_small_network_exports_with_a_dynamic_batch(tmp_path):
    """The export of any BENBase under the official names' structure (a narrow one here, quick): one file runs
    batches of 1, 2 and 5 and matches the network."""
    from ben_core.model.export import export_onnx

    net = small_model()
    path = export_onnx(net, tmp_path / "small.onnx", working_size=512)
    for batch in (1, 2, 5):
        images = sample_images(batch, 512, seed=batch)
        with torch.no_grad():
            ref = torch.sigmoid(net((images - MEAN) / STD)).numpy()
        assert np.abs(run(path, images) - ref).max() <= 1e-4


def test_export_switch_is_off_by_default_nests_and_restores():
    """The export switch (a thread-local counter) is off by default, nests, and is restored."""
    assert not ops_module.exporting()
    with export_path():
        with export_path():
            assert ops_module.exporting()
        assert ops_module.exporting()
    assert not ops_module.exporting()

