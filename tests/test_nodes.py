"""The ComfyUI nodes, called directly with ComfyUI-shaped tensors, without ComfyUI installed.

The repo root is loaded as a package under a hyphenated name, as ComfyUI does with a custom-node folder.
Most tests use a small stand-in network (bright pixels = foreground) behind the real ben_core predictor;
one slow test runs the real network with synthetic weights from a temporary models folder.
"""
from __future__ import annotations

import base64
import importlib
import importlib.util
import io
import json
import os
import sys
import types
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from comfy_stub import InterruptProcessingException, install_comfy, make_folder_paths
from helpers import PACK_NAME, load_pack, tiny_vitmatte

ROOT = Path(__file__).resolve().parents[1]
PACK = PACK_NAME
NODE_IDS = ["BEN2_LoadModel", "BEN2_RemoveBackground", "BEN2_ShowTrimap", "BEN2_RefineMask"]


def sub(name: str):
    load_pack()
    return importlib.import_module(f"{PACK}.{name}")


@pytest.fixture(autouse=True)
def _no_comfy(monkeypatch):
    """Each test starts outside ComfyUI with an empty model cache."""
    for name in ("folder_paths", "comfy", "comfy.model_management", "comfy.model_patcher", "comfy.utils"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sub("nodes.model_cache"), "_cache", OrderedDict())


class Bright(torch.nn.Module):
    """Stand-in for BENBase: logits = 40 * (mean brightness - 0.5) of the de-normalised input."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))
        self.seen = []
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        rgb = x.float() * self.std + self.mean
        return ((rgb.mean(1, keepdim=True) - 0.5) * 40.0 + self.bias).to(x.dtype)


def standin_model():
    mc = sub("nodes.model_cache")
    return mc.LoadedBEN("standin.pth", Bright().eval(), torch.device("cpu"), torch.float32)


def half_white(b=1, h=48, w=64, channels=3):
    """[B,H,W,C] image, left half white, right half black (alpha channel 1 if C == 4)."""
    img = torch.zeros(b, h, w, channels)
    img[:, :, : w // 2, :3] = 1.0
    if channels == 4:
        img[..., 3] = 1.0
    return img


def remove(image, model=None, **kw):
    node = sub("nodes.remove_background").BEN2RemoveBackground()
    args = dict(output_mode="RGBA", background_colour="#FFFFFF", refine_foreground=False, invert_mask=False,
                batch_size=1, working_size="512")
    args.update(kw)
    return node.remove_background(model or standin_model(), image, **args)


# ------------------------------------------------------------------------------------ packaging

def test_pack_imports_as_hyphenated_package_without_touching_top_level_nodes(monkeypatch):
    sentinel = types.ModuleType("nodes")  # ComfyUI's own top-level module
    monkeypatch.setitem(sys.modules, "nodes", sentinel)
    path_before = list(sys.path)
    name = "ComfyUI-BEN2-import-check"
    try:
        pack = load_pack(name)
        assert sys.modules["nodes"] is sentinel
        assert not hasattr(sentinel, "NODE_CLASS_MAPPINGS")
        assert sys.path == path_before
        assert sorted(pack.NODE_CLASS_MAPPINGS) == sorted(NODE_IDS)
        assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_IDS)
        assert pack.WEB_DIRECTORY == "./web" and (ROOT / "web").is_dir()
        for cls in pack.NODE_CLASS_MAPPINGS.values():
            assert cls.__module__.startswith(name + ".nodes.")
        # importing did no work: nothing loaded into the model cache
        assert len(importlib.import_module(name + ".nodes.model_cache")._cache) == 0
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def test_a_broken_node_module_does_not_take_the_pack_down(monkeypatch, caplog):
    name = "ComfyUI-BEN2-broken-check"
    monkeypatch.setitem(sys.modules, name + ".nodes.refine_mask", None)  # makes that import fail
    try:
        pack = load_pack(name)
        assert "BEN2_RefineMask" not in pack.NODE_CLASS_MAPPINGS
        assert {"BEN2_LoadModel", "BEN2_RemoveBackground", "BEN2_ShowTrimap"} <= set(pack.NODE_CLASS_MAPPINGS)
        assert any("BEN2_RefineMask" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            sys.modules.pop(key, None)


def test_every_node_documents_inputs_and_outputs():
    pack = load_pack()
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id.startswith("BEN2_")
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40, node_id
        assert cls.CATEGORY == "image/BEN2"
        assert callable(getattr(cls(), cls.FUNCTION))
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES), node_id
        assert all(isinstance(t, str) and t for t in cls.OUTPUT_TOOLTIPS)
        spec = cls.INPUT_TYPES()
        for section in spec.values():
            for input_name, entry in section.items():
                assert len(entry) == 2 and entry[1].get("tooltip"), f"{node_id}.{input_name} has no tooltip"


# --------------------------------------------------------------------------- folder registration

def test_model_folder_registered_without_clobbering_extra_model_paths(tmp_path, monkeypatch):
    models = tmp_path / "ComfyUI" / "models"
    shared = tmp_path / "shared" / "BEN"
    (models / "BEN" / "sub").mkdir(parents=True)
    shared.mkdir(parents=True)
    (models / "BEN" / "sub" / "a.safetensors").write_bytes(b"x")
    (shared / "BEN2_Base.pth").write_bytes(b"x")
    (shared / "notes.txt").write_text("not a model")
    fp = make_folder_paths(str(models))
    fp.add_model_folder_path("BEN", str(shared))  # what extra_model_paths.yaml did before our import
    yaml_list = fp.folder_names_and_paths["BEN"][0]
    monkeypatch.setitem(sys.modules, "folder_paths", fp)

    env = sub("nodes.comfy_env")
    env.register_model_folder()
    env.register_model_folder()  # idempotent
    paths, exts = fp.folder_names_and_paths["BEN"]
    assert paths is yaml_list
    assert paths == [str(shared), str(models / "BEN")]
    assert {".pth", ".safetensors"} <= set(exts) and ".txt" not in exts
    assert env.list_model_files() == ["BEN2_Base.pth", os.path.join("sub", "a.safetensors")]
    assert env.resolve_model_path("BEN2_Base.pth") == str(shared / "BEN2_Base.pth")
    assert env.download_folder() == str(shared)  # the user's configured folder comes first
    load = sub("nodes.load_ben").BEN2LoadModel
    choices = load.INPUT_TYPES()["required"]["model_name"][0]
    assert choices[:2] == ["BEN2_Base.pth", os.path.join("sub", "a.safetensors")]
    assert choices[-1] == "model.safetensors"  # downloadable, listed even though absent


def test_model_folder_registered_at_import_and_lowercase_yaml_key_merged(tmp_path, monkeypatch):
    models = tmp_path / "models"
    fp = make_folder_paths(str(models))
    fp.add_model_folder_path("ben", str(tmp_path / "lower"))
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    name = "ComfyUI-BEN2-register-check"
    try:
        load_pack(name)
        paths, exts = fp.folder_names_and_paths["BEN"]
        assert paths == [str(tmp_path / "lower"), str(models / "BEN")]
        assert fp.folder_names_and_paths["checkpoints"][0] == [str(models / "checkpoints")]  # untouched
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            sys.modules.pop(key, None)


def test_missing_model_and_opt_in_download(tmp_path, monkeypatch):
    fp = make_folder_paths(str(tmp_path / "models"))
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    load_ben = sub("nodes.load_ben")
    with pytest.raises(FileNotFoundError, match="download_official_weights"):
        load_ben.find_or_download("model.safetensors", download=False)
    with pytest.raises(FileNotFoundError, match="not in"):
        load_ben.find_or_download("other.pth", download=True)  # only the official file is downloadable

    calls = []

    def fake_download(local_dir=None, filename="model.safetensors"):
        calls.append(local_dir)
        p = Path(local_dir) / filename
        p.write_bytes(b"weights")
        return p

    fake_hub = types.ModuleType(f"{PACK}.ben_core.hub")
    fake_hub.download_official_weights = fake_download
    importlib.import_module(f"{PACK}.ben_core")
    monkeypatch.setitem(sys.modules, f"{PACK}.ben_core.hub", fake_hub)
    path = load_ben.find_or_download("model.safetensors", download=True)
    assert calls == [str(tmp_path / "models" / "BEN")]
    assert path == str(tmp_path / "models" / "BEN" / "model.safetensors")
    # present now: found without downloading again
    assert load_ben.find_or_download("model.safetensors", download=True) == path and len(calls) == 1


def test_load_ben_is_changed_follows_the_file_on_disk(tmp_path, monkeypatch):
    """ComfyUI reuses a node's cached output while IS_CHANGED stays equal: a replaced file must change it."""
    fp = make_folder_paths(str(tmp_path / "models"))
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    node = sub("nodes.load_ben").BEN2LoadModel
    assert node.IS_CHANGED("model.safetensors", "auto", "auto", False) == ""  # missing: no error
    f = tmp_path / "models" / "BEN" / "model.safetensors"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"1")
    first = node.IS_CHANGED("model.safetensors", "auto", "auto", False)
    assert first and first == node.IS_CHANGED("model.safetensors", "auto", "auto", False)
    f.write_bytes(b"22")
    assert node.IS_CHANGED("model.safetensors", "auto", "auto", False) != first


def test_without_comfyui_there_is_no_model_folder(tmp_path):
    """Outside ComfyUI the folder comes from nowhere: nothing is listed and a name gives a clear error
    (ben_core.load_ben takes a path instead); the official file is still offered for download."""
    env = sub("nodes.comfy_env")
    assert env.register_model_folder() is None
    assert env.list_model_files() == []
    with pytest.raises(FileNotFoundError, match="folder_paths"):
        env.resolve_model_path("x.safetensors")
    with pytest.raises(FileNotFoundError):
        env.resolve_model_path("../etc/passwd")
    assert sub("nodes.load_ben").model_choices() == ["model.safetensors"]


# ------------------------------------------------------------------------- devices, precision, cache

def test_precision_choices(monkeypatch):
    lb = sub("nodes.load_ben")
    cpu = torch.device("cpu")
    assert lb.resolve_precision("auto", cpu) == torch.float32
    with pytest.warns(UserWarning, match="fp16 on the CPU"):
        assert lb.resolve_precision("fp16", cpu) == torch.float32
    assert lb.resolve_precision("bf16", cpu) == torch.bfloat16
    assert lb.resolve_device("cpu") == cpu
    install_comfy(monkeypatch, device="cuda")
    assert lb.resolve_device("auto") == torch.device("cuda")
    assert lb.resolve_precision("auto", torch.device("cuda")) == torch.float16
    assert lb.resolve_precision("fp32", torch.device("cuda")) == torch.float32
    with pytest.raises(ValueError):
        lb.resolve_precision("fp8", cpu)


def test_cache_shares_one_network_per_file_device_precision(tmp_path):
    mc = sub("nodes.model_cache")
    f = tmp_path / "m.pth"
    f.write_bytes(b"1")
    loads = []

    def loader(path, device, dtype):
        loads.append((path, device, dtype))
        return Bright()

    a = mc.get_model(str(f), "cpu", torch.float32, loader=loader)
    b = mc.get_model(str(f), torch.device("cpu"), torch.float32, loader=loader)
    assert a is b and a.net is b.net and len(loads) == 1
    c = mc.get_model(str(f), "cpu", torch.bfloat16, loader=loader)
    assert c is not a and len(loads) == 2
    f.write_bytes(b"22")  # changed on disk -> reloaded
    d = mc.get_model(str(f), "cpu", torch.float32, loader=loader)
    assert d is not a and len(loads) == 3
    with pytest.raises(FileNotFoundError):
        mc.get_model(str(tmp_path / "nope.pth"), "cpu", torch.float32, loader=loader)


def test_model_patcher_wrapping_and_load_models_gpu(monkeypatch):
    comfy = install_comfy(monkeypatch, device="cuda")
    mc = sub("nodes.model_cache")
    net = Bright()
    model = mc.LoadedBEN("x.pth", net, torch.device("cuda"), torch.float16, offload_device=torch.device("cpu"))
    assert len(comfy.patchers) == 1
    patcher = model.patcher
    assert patcher is comfy.patchers[0]
    assert patcher.load_device == torch.device("cuda") and patcher.offload_device == torch.device("cpu")
    assert patcher.size == sum(t.numel() * t.element_size() for t in net.state_dict().values())
    assert patcher.model.net is net
    assert model.prepare(batch_size=2, working_size=1024) is net
    name, models, memory, full = comfy.calls[-1]
    assert name == "load_models_gpu" and models == [patcher] and full is True and memory > 0


# ------------------------------------------------------------------------------ remove background

def test_remove_background_shapes_and_polarity():
    img = half_white(2, 48, 64)
    out_img, mask = remove(img)
    assert out_img.shape == (2, 48, 64, 4) and mask.shape == (2, 48, 64)
    assert out_img.dtype == torch.float32 and mask.dtype == torch.float32
    assert mask.device.type == "cpu" and out_img.device.type == "cpu"
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    assert float(mask[:, :, :24].mean()) > 0.95  # white half = foreground = 1
    assert float(mask[:, :, 40:].mean()) < 0.05
    assert torch.allclose(out_img[..., 3], mask)
    assert torch.allclose(out_img[..., :3], img)  # no foreground estimation: colours kept


def test_remove_background_rgb_composite_invert_and_rgba_input():
    img = half_white(1, 40, 40)
    out_img, mask = remove(img, output_mode="RGB", background_colour="#00FF00")
    assert out_img.shape == (1, 40, 40, 3)
    right = out_img[0, :, 30:]
    assert torch.allclose(right, torch.tensor([0.0, 1.0, 0.0]).expand_as(right), atol=0.02)  # over green
    assert torch.allclose(out_img[0, :, :10], torch.ones(40, 10, 3), atol=0.02)
    out_inv, mask_inv = remove(img, invert_mask=True)
    assert torch.allclose(mask_inv, 1.0 - mask)
    assert torch.allclose(out_inv[..., 3], mask)  # the IMAGE keeps the foreground
    rgba = half_white(1, 40, 40, channels=4)
    rgba[..., 3] = 0.0  # an alpha channel on the input is ignored
    _, mask_rgba = remove(rgba)
    assert torch.allclose(mask_rgba, mask)


def test_remove_background_does_not_modify_inputs():
    img = half_white(2, 32, 32)
    img[0, 0, 0] = torch.tensor([0.2, 0.4, 0.6])
    before = img.clone()
    remove(img, refine_foreground=True, output_mode="RGB", background_colour="10,20,30")
    assert torch.equal(img, before)


def test_remove_background_every_image_in_chunks_with_progress(monkeypatch):
    comfy = install_comfy(monkeypatch)
    model = standin_model()
    img = half_white(5, 24, 32)
    img[3] = 1.0 - img[3]  # one image with the opposite layout: must get its own mask
    _, mask = remove(img, model=model, batch_size=2)
    assert [s[0] for s in model.net.seen] == [2, 2, 1]
    assert all(s[2:] == (512, 512) for s in model.net.seen)
    assert mask.shape == (5, 24, 32)
    assert float(mask[3, :, :12].mean()) < 0.05 and float(mask[4, :, :12].mean()) > 0.95
    assert comfy.progress and comfy.progress[-1] == (5, 5)
    assert comfy.checks >= 3  # an interruption check before every chunk


def test_remove_background_stops_when_interrupted(monkeypatch):
    install_comfy(monkeypatch, interrupt_after=2)
    model = standin_model()
    with pytest.raises(InterruptProcessingException):
        remove(half_white(6, 16, 16), model=model, batch_size=1)
    assert len(model.net.seen) < 6


def test_remove_background_bad_inputs():
    with pytest.raises(TypeError, match="float"):
        remove((half_white() * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"\[B,H,W,C\]"):
        remove(torch.rand(1, 3, 32, 32))  # channels-first is not a ComfyUI IMAGE
    with pytest.raises(ValueError, match="colour"):
        remove(half_white(), output_mode="RGB", background_colour="greenish")
    with pytest.raises(TypeError, match="Load BEN"):
        sub("nodes.remove_background").BEN2RemoveBackground().remove_background("not a model", half_white())
    with pytest.raises(ValueError, match="working_size"):
        remove(half_white(), working_size="300")


# ----------------------------------------------------------------------------------- batch rules

def test_mask_broadcast_resize_and_shape_errors():
    t = sub("nodes.image_mask")
    img = torch.rand(3, 20, 30, 3)
    m1 = torch.rand(1, 20, 30)
    out = t.match_mask(m1, img)
    assert out.shape == (3, 20, 30) and torch.equal(out[2], m1[0])
    small = torch.zeros(3, 10, 15)
    small[:, :, :7] = 1.0
    out = t.match_mask(small, img)
    assert out.shape == (3, 20, 30) and float(out[:, :, :12].min()) > 0.99 and float(out[:, :, 18:].max()) < 0.01
    assert t.match_mask(torch.rand(20, 30), img).shape == (3, 20, 30)  # a single [H,W] mask
    with pytest.raises(ValueError) as err:
        t.match_mask(torch.rand(2, 20, 30), img)
    assert "2x20x30" in str(err.value) and "3x20x30x3" in str(err.value)
    with pytest.raises(TypeError):
        t.match_mask(np.zeros((1, 20, 30)), img)
    tri = torch.zeros(1, 4, 4)
    tri[:, :, 2:] = 0.5
    assert set(t.match_mask(tri, torch.rand(1, 9, 9, 3), mode="nearest").unique().tolist()) <= {0.0, 0.5}


# --------------------------------------------------------------------------------------- trimap

def soft_disc(h=64, w=96, b=1):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    d = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2).sqrt()
    p = torch.sigmoid((min(h, w) / 3 - d) / 3.0)
    return p.expand(b, h, w).contiguous()


def test_mask_follows_the_image_device():
    """--gpu-only: masks from our nodes come on the GPU, Load Image's images on the CPU (and vice versa);
    the nodes combine them, so a fitted mask must sit on the image's device ('meta' stands in for the GPU)."""
    t = sub("nodes.image_mask")
    image = torch.empty(2, 8, 6, 3, device="meta")
    for mask in (torch.rand(1, 8, 6), torch.rand(2, 4, 3)):
        m = t.match_mask(mask, image)
        assert m.device.type == "meta" and m.shape == (2, 8, 6)


def test_show_trimap_outputs_and_payload():
    st = sub("nodes.show_trimap")
    img = torch.rand(2, 64, 96, 3)
    probs = soft_disc(64, 96)
    before = (img.clone(), probs.clone())
    res = st.BEN2ShowTrimap().show(img, probs, 0.1, 0.9, 0.03, 0.97, 0.05)
    assert torch.equal(img, before[0]) and torch.equal(probs, before[1])
    trimap, vis = res["result"]
    assert trimap.shape == (2, 64, 96) and vis.shape == (2, 64, 96, 3)
    assert set(trimap.unique().tolist()) <= {0.0, 0.5, 1.0}
    fg = trimap[0] == 1.0
    assert torch.equal(vis[0][fg], img[0][fg])  # foreground drawn unchanged
    payloads = res["ui"]["ben2_trimap"]
    assert len(payloads) == 2
    json.dumps(res["ui"])
    p = payloads[0]
    assert (p["width"], p["height"], p["full_width"], p["full_height"]) == (96, 64, 96, 64)
    assert (p["probs_encoding"], p["image_format"]) == ("zlib-uint16le", "jpeg")
    q = np.frombuffer(zlib.decompress(base64.b64decode(p["probs"])), dtype="<u2").reshape(64, 96)
    assert np.array_equal(q, np.round(probs[0].double().numpy() * 65535).astype(np.uint16))
    from PIL import Image

    jpg = Image.open(io.BytesIO(base64.b64decode(p["image"])))
    assert jpg.format == "JPEG" and jpg.size == (96, 64) and jpg.mode == "RGB"
    # thresholds/unknown count are those of the full-resolution computation
    from importlib import import_module

    conf = import_module(f"{PACK}.ben_core.trimap").confidence_trimap
    ref, lo, hi = conf(probs, 0.1, 0.9, 0.03, 0.97, 0.001, int(round(0.05 * 64 * 96)))
    assert torch.equal(trimap[0], ref[0])
    assert (p["final_t_low"], p["final_t_high"]) == (float(lo[0]), float(hi[0]))
    assert p["unknown_count"] == int((ref[0] == 0.5).sum())
    assert (p["t_low"], p["t_high"], p["t_min"], p["t_max"], p["step"], p["min_unknown_fraction"]) == \
        (0.1, 0.9, 0.03, 0.97, 0.001, 0.05)


def test_show_trimap_visualisation_colours():
    st = sub("nodes.show_trimap")
    rgb = torch.rand(3, 3, 5, 7)
    tri = torch.tensor([0.0, 0.5, 1.0]).repeat_interleave(35).view(3, 5, 7)[torch.randperm(3)]
    vis = st.visualise(rgb, tri)
    assert vis.shape == (3, 5, 7, 3) and vis.dtype == torch.float32
    x = rgb.permute(0, 2, 3, 1)
    tint = torch.tensor(st.UNKNOWN_TINT)
    for i in range(3):
        level = float(tri[i, 0, 0])
        want = {1.0: x[i], 0.0: st.BACKGROUND_DIM * x[i], 0.5: 0.4 * x[i] + 0.6 * tint}[level]
        assert torch.allclose(vis[i], want, atol=1e-6), level


def test_show_trimap_preview_is_downsampled_and_capped():
    st = sub("nodes.show_trimap")
    img = torch.rand(9, 300, 600, 3)
    res = st.BEN2ShowTrimap().show(img, soft_disc(300, 600), 0.1, 0.9, 0.03, 0.97, 0.0572)
    payloads = res["ui"]["ben2_trimap"]
    assert len(payloads) == 8  # the first 8 of a batch of 9
    p = payloads[0]
    assert (p["width"], p["height"]) == (512, 256) and (p["full_width"], p["full_height"]) == (600, 300)
    assert len(zlib.decompress(base64.b64decode(p["probs"]))) == 512 * 256 * 2
    assert res["result"][0].shape == (9, 300, 600)


def test_show_trimap_payload_is_small_and_exact():
    """A BEN2-like mask (saturated, soft edge, sigmoid tails) and a smooth photo-like image at 512x512:
    probs stay exact uint16 codes, the zlib/JPEG payload is a fraction of the raw/PNG one, the image close."""
    st = sub("nodes.show_trimap")
    from PIL import Image

    yy, xx = torch.meshgrid(torch.linspace(0, 1, 512), torch.linspace(0, 1, 512), indexing="ij")
    d = ((yy - 0.5) ** 2 + (xx - 0.45) ** 2).sqrt()
    wobble = 0.02 * torch.sin(xx * 37) * torch.cos(yy * 23)
    probs = torch.sigmoid((0.3 + wobble - d) * 400.0)[None]  # p ~ 1e-50 .. 1 - 1e-20, edge ~ 10 px wide
    img = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + 2 * yy), 0.3 + 0.3 * yy, 0.6 - 0.4 * xx * yy], -1)[None]
    p = st.BEN2ShowTrimap().show(img, probs)["ui"]["ben2_trimap"][0]
    raw = np.round(probs[0].double().numpy() * 65535).astype("<u2")
    assert np.array_equal(np.frombuffer(zlib.decompress(base64.b64decode(p["probs"])), "<u2").reshape(512, 512), raw)
    legacy_probs = len(base64.b64encode(raw.tobytes()))
    assert len(p["probs"]) < legacy_probs / 8, (len(p["probs"]), legacy_probs)
    rgb8 = (img[0].numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgb8).save(png, format="PNG", compress_level=4)
    assert len(p["image"]) < len(base64.b64encode(png.getvalue())) / 3
    jpg = np.asarray(Image.open(io.BytesIO(base64.b64decode(p["image"]))), np.float64)
    err = np.abs(jpg - rgb8)
    assert err.mean() < 2.0 and err.max() < 16, (err.mean(), err.max())


def test_show_trimap_bad_thresholds_and_shapes():
    st = sub("nodes.show_trimap").BEN2ShowTrimap()
    img = torch.rand(1, 16, 16, 3)
    with pytest.raises(ValueError):
        st.show(img, torch.rand(1, 16, 16), 0.9, 0.1, 0.03, 0.97, 0.05)
    with pytest.raises(ValueError, match="3x16x16"):
        st.show(torch.rand(2, 16, 16, 3), torch.rand(3, 16, 16), 0.1, 0.9, 0.03, 0.97, 0.05)
    with pytest.raises(ValueError, match="min_unknown_fraction"):
        st.show(img, torch.rand(1, 16, 16), 0.1, 0.9, 0.03, 0.97, 1.5)


# ----------------------------------------------------------------------------------- refine mask

def edge_scene(h=64, w=64):
    """Image with a bright square on a dark background and a hard mask of the square."""
    img = torch.full((1, h, w, 3), 0.1)
    img[:, 16:48, 16:48] = torch.tensor([0.9, 0.8, 0.7])
    mask = torch.zeros(1, h, w)
    mask[:, 18:46, 18:46] = 1.0  # slightly off: refinement has something to do
    return img, mask


def test_refine_mask_keeps_sure_regions_and_polarity():
    rm = sub("nodes.refine_mask")
    img, mask = edge_scene()
    img2 = torch.cat([img, img * 0.5])
    before = (img2.clone(), mask.clone())
    refined, out = rm.BEN2RefineMask().refine(img2, mask, "guided", 0, 0.0, "band", 4, True, "RGBA", "#FFFFFF")
    assert torch.equal(img2, before[0]) and torch.equal(mask, before[1])
    assert refined.shape == (2, 64, 64) and out.shape == (2, 64, 64, 4)  # mask of 1 broadcast over 2 images
    assert float(refined.min()) >= 0 and float(refined.max()) <= 1
    tri = importlib.import_module(f"{PACK}.ben_core.trimap").make_trimap(mask, "band", 4)
    sure_fg, sure_bg = tri[0] == 1.0, tri[0] == 0.0
    assert torch.all(refined[:, sure_fg] == 1.0) and torch.all(refined[:, sure_bg] == 0.0)
    assert float(refined[0, 32, 32]) == 1.0 and float(refined[0, 2, 2]) == 0.0
    assert torch.allclose(out[..., 3], refined)


def test_refine_mask_uses_a_given_trimap():
    rm = sub("nodes.refine_mask")
    img, mask = edge_scene()
    trimap = torch.zeros(1, 32, 32)  # half size: resized with nearest, values kept
    trimap[:, 6:26, 6:26] = 0.5
    trimap[:, 10:22, 10:22] = 1.0
    refined, _ = rm.BEN2RefineMask().refine(img, mask, "guided", 0, 0.0, "auto", 0, False, "RGB", "#000000",
                                            trimap=trimap)
    big = sub("nodes.image_mask").match_mask(trimap, img, mode="nearest")
    assert torch.all(refined[big == 1.0] == 1.0) and torch.all(refined[big == 0.0] == 0.0)


# ---------------------------------------------------------------- real network, synthetic weights

@pytest.mark.slow
def test_load_ben_and_remove_background_with_synthetic_checkpoint(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from helpers import synth_sd

    models = tmp_path / "models"
    (models / "BEN").mkdir(parents=True)
    save_file(synth_sd(0), str(models / "BEN" / "synth.safetensors"))
    monkeypatch.setitem(sys.modules, "folder_paths", make_folder_paths(str(models)))
    pack = load_pack()
    loader = pack.NODE_CLASS_MAPPINGS["BEN2_LoadModel"]
    assert "synth.safetensors" in loader.INPUT_TYPES()["required"]["model_name"][0]
    (model,) = loader().load("synth.safetensors", "cpu", "auto", False)
    (again,) = loader().load("synth.safetensors", "cpu", "auto", False)
    assert again is model and model.dtype == torch.float32 and model.device == torch.device("cpu")
    img = torch.rand(2, 40, 56, 3)
    before = img.clone()
    node = pack.NODE_CLASS_MAPPINGS["BEN2_RemoveBackground"]()
    out, mask = node.remove_background(model, img, "RGBA", "#FFFFFF", True, False, 2, "512")
    assert torch.equal(img, before)
    assert out.shape == (2, 40, 56, 4) and mask.shape == (2, 40, 56)
    assert torch.isfinite(out).all() and torch.isfinite(mask).all()
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    assert torch.allclose(out[..., 3], mask)


def test_show_trimap_default_minimum_is_the_papers():
    st = sub("nodes.show_trimap")
    default = st.BEN2ShowTrimap.INPUT_TYPES()["required"]["min_unknown_fraction"][1]["default"]
    assert round(default * 1024 * 1024) == 60000
    probs = soft_disc(256, 256)
    res = st.BEN2ShowTrimap().show(torch.rand(1, 256, 256, 3), probs)  # every widget at its default
    tri, p = res["result"][0], res["ui"]["ben2_trimap"][0]
    ref, lo2, hi2 = importlib.import_module(f"{PACK}.ben_core.trimap").confidence_trimap(probs)  # paper defaults
    assert torch.equal(tri, ref) and (p["final_t_low"], p["final_t_high"]) == (float(lo2[0]), float(hi2[0]))


def test_load_ben_reports_a_bad_checkpoint(tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "BEN").mkdir(parents=True)
    (models / "BEN" / "broken.safetensors").write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "folder_paths", make_folder_paths(str(models)))
    loader = sub("nodes.load_ben").BEN2LoadModel()
    with pytest.raises(ValueError):  # ben_core's CheckpointError
        loader.load("broken.safetensors", "cpu", "fp32", False)
    with pytest.raises(FileNotFoundError, match="not in"):
        loader.load("gone.pth", "cpu", "fp32", False)
    assert len(sub("nodes.model_cache")._cache) == 0


def test_refine_mask_vitmatte_with_a_tiny_random_network(monkeypatch):
    pytest.importorskip("transformers")
    net = tiny_vitmatte(layers=1)
    rm = sub("nodes.refine_mask")
    monkeypatch.setattr(sub("nodes.model_cache"), "vitmatte_model", lambda device: net)
    img, mask = edge_scene()
    refined, out = rm.BEN2RefineMask().refine(img, mask, "vitmatte", 0, 0.0, "band", 4, False, "RGBA", "#FFFFFF")
    tri = importlib.import_module(f"{PACK}.ben_core.trimap").make_trimap(mask, "band", 4)
    assert refined.shape == (1, 64, 64) and torch.isfinite(refined).all()
    assert torch.all(refined[tri == 1.0] == 1.0) and torch.all(refined[tri == 0.0] == 0.0)


def test_vitmatte_is_loaded_once_and_handed_to_comfy_model_management(monkeypatch):
    """Inside ComfyUI the ViTMatte weights must go through a ModelPatcher + load_models_gpu (offloadable),
    not be pinned on the GPU by a module-level cache."""
    comfy = install_comfy(monkeypatch, device="cpu")
    mc = sub("nodes.model_cache")
    vm = importlib.import_module(f"{PACK}.ben_core.vitmatte")
    loads = []

    def fake_load(device="cpu", **kw):
        loads.append(torch.device(device))
        return torch.nn.Linear(2, 2)

    monkeypatch.setattr(vm, "load_vitmatte", fake_load)
    a = mc.vitmatte_model(torch.device("cpu"))
    b = mc.vitmatte_model(torch.device("cpu"))
    assert a is b and loads == [torch.device("cpu")]
    assert len(comfy.patchers) == 1 and comfy.patchers[0].model.net is a
    gpu_loads = [c for c in comfy.calls if c[0] == "load_models_gpu"]
    assert len(gpu_loads) == 2 and all(c[1] == [comfy.patchers[0]] for c in gpu_loads)


def test_nodes_never_import_a_top_level_ben_core(monkeypatch):
    """Inside ComfyUI only '<pack>.ben_core' exists: block the top-level name and run every node."""
    monkeypatch.setitem(sys.modules, "ben_core", None)  # `import ben_core...` now raises ImportError
    for key in [k for k in sys.modules if k.startswith("ben_core.")]:
        monkeypatch.setitem(sys.modules, key, None)
    name = "ComfyUI-BEN2-no-toplevel"
    try:
        pack = load_pack(name)
        mc = importlib.import_module(name + ".nodes.model_cache")
        model = mc.LoadedBEN("standin.pth", Bright().eval(), torch.device("cpu"), torch.float32)
        img = half_white(1, 32, 48)
        out, mask = pack.NODE_CLASS_MAPPINGS["BEN2_RemoveBackground"]().remove_background(
            model, img, "RGB", "#000000", True, False, 1, "512")
        res = pack.NODE_CLASS_MAPPINGS["BEN2_ShowTrimap"]().show(img, mask, 0.1, 0.9, 0.03, 0.97, 0.05)
        refined, _ = pack.NODE_CLASS_MAPPINGS["BEN2_RefineMask"]().refine(
            img, mask, "guided", 0, 0.0, "auto", 0, True, "RGBA", "#FFFFFF", trimap=res["result"][0])
        assert refined.shape == (1, 32, 48)
        assert sys.modules["ben_core"] is None
        assert not [k for k in sys.modules if k.startswith("ben_core.") and sys.modules[k] is not None]
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            sys.modules.pop(key, None)


def test_compile_option_reaches_the_predictor_and_stays_compiled(tmp_path):
    """Load BEN's compile widget: its own cache entry, and one predictor per (batch, size) kept across runs
    so a compiled network is compiled once (nothing is compiled here: torch.compile is lazy)."""
    mc = sub("nodes.model_cache")
    lb = sub("nodes.load_ben")
    f = tmp_path / "m.pth"
    f.write_bytes(b"1")
    plain = mc.get_model(str(f), "cpu", torch.float32, loader=lambda *a: Bright())
    compiled = mc.get_model(str(f), "cpu", torch.float32, lb.COMPILE_CHOICES["torch.compile"],
                            loader=lambda *a: Bright())
    assert compiled is not plain and plain.compile is None and compiled.compile == "default"
    p = compiled.predictor(batch_size=2, working_size=512)
    assert p.compile == "default" and compiled.predictor(batch_size=2, working_size=512) is p
    assert compiled.predictor(batch_size=1, working_size=512) is not p
    assert plain.predictor(1, 512).compile is None
    with pytest.raises(ValueError, match="compile"):
        lb.BEN2LoadModel().load("m.pth", "cpu", "fp32", False, compile="turbo")
