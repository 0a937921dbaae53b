"""The ComfyUI nodes, called directly with ComfyUI-shaped tensors, without ComfyUI installed.

The repo root is loaded as a package under a hyphenated name, as ComfyUI does with a custom-node folder.
Most tests use a small stand-in network (bright pixels = foreground) behind the real ben_core predictor;
one slow test runs the real network with synthetic weights from a temporary models folder.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import json
import os
import re
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
#: The node ids, frozen: saved workflows store them, so none ever changes (a new node is added at the end).
#: Written here on purpose, as the contract nodes/catalogue.py is checked against.
NODE_IDS = ["BEN2_LoadModel", "BEN2_RemoveBackground", "BEN2_ShowTrimap", "BEN2_RefineMask", "BEN2_RefineMaskViTMatte",
            "BEN2_RemoveVideoBackground"]


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


def outputs(result):
    """The output tuple of a V3 node's execute() (``io.NodeOutput(*outputs, ui=...)``)."""
    return tuple(result.args)


def node_info(cls) -> dict:
    """What ComfyUI's server sends the browser for a V3 node (/object_info, V1 format)."""
    return cls.GET_NODE_INFO_V1()


def widget(cls, name: str):
    """``(type, options dict)`` of a node input as /object_info lists it."""
    for section in node_info(cls)["input"].values():
        if name in section:
            return section[name]
    raise KeyError(name)


def remove(image, model=None, **kw):
    node = sub("nodes.remove_background").BEN2RemoveBackground
    args = dict(output_mode="RGBA", background_colour="#FFFFFF", refine_foreground=False, invert_mask=False,
                batch_size=1, working_size="512")
    args.update(kw)
    return outputs(node.execute(model or standin_model(), image, **args))


def show(image, mask, *args, **kw):
    """Show Trimap's execute() -> ``(outputs, ui)``."""
    res = sub("nodes.show_trimap").BEN2ShowTrimap.execute(image, mask, *args, **kw)
    return outputs(res), res.ui


def refine(*args, **kw):
    return outputs(sub("nodes.refine_mask").BEN2RefineMask.execute(*args, **kw))


def load(*args, **kw):
    return outputs(sub("nodes.load_ben").BEN2LoadModel.execute(*args, **kw))


@pytest.fixture
def comfy_temp(tmp_path, monkeypatch):
    """A ComfyUI folder_paths with a temp folder (Show Trimap writes its preview files there); returns it."""
    fp = make_folder_paths(str(tmp_path / "models"))
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return Path(fp.get_temp_directory())


def read_ref(temp: Path, ref: dict) -> bytes:
    """The bytes of a preview file reference ``{"filename", "subfolder", "type": "temp"}``."""
    assert ref["type"] == "temp" and ref["subfolder"] == "" and "/" not in ref["filename"]
    return (temp / ref["filename"]).read_bytes()


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
        info = node_info(cls)
        assert node_id.startswith("BEN2_") and info["name"] == node_id
        assert info["display_name"] == pack.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        assert isinstance(info["description"], str) and len(info["description"]) > 40, node_id
        assert info["category"] == "image/BEN2"
        assert callable(cls.execute)
        assert len(info["output_tooltips"]) == len(info["output"]) == len(info["output_name"]), node_id
        assert all(isinstance(t, str) and t for t in info["output_tooltips"])
        assert all(n and n == n.lower() for n in info["output_name"])  # our names, never the type's
        for section in info["input"].values():
            for input_name, entry in section.items():
                assert len(entry) == 2 and entry[1].get("tooltip"), f"{node_id}.{input_name} has no tooltip"


def test_node_ids_and_names_are_written_once_in_the_catalogue():
    """nodes/catalogue.py is the one place a node's id and display name are written: the registration, every
    schema and the browser extension take them from there, and the ids stay those saved workflows hold
    (:data:`NODE_IDS`, frozen)."""
    pack = load_pack()
    catalogue = sub("nodes.catalogue")
    assert [n.node_id for n in catalogue.NODES] == NODE_IDS  # ids never change: saved workflows store them
    assert len({n.display_name for n in catalogue.NODES}) == len(NODE_IDS)
    assert len({(n.module, n.class_name) for n in catalogue.NODES}) == len(NODE_IDS)
    assert pack.NODE_DISPLAY_NAME_MAPPINGS == {n.node_id: n.display_name for n in catalogue.NODES}
    for n in catalogue.NODES:
        cls = pack.NODE_CLASS_MAPPINGS[n.node_id]
        assert (cls.__module__.rpartition(".")[2], cls.__name__) == (n.module, n.class_name)
        info = node_info(cls)
        assert (info["name"], info["display_name"]) == (n.node_id, n.display_name)
    # nowhere else in nodes/ as a literal (docs and example workflows: test_docs.py, test_nodes_packaging.py)
    for path in sorted((ROOT / "nodes").glob("*.py")):
        if path.name == "catalogue.py":
            continue
        text = path.read_text(encoding="utf-8")
        for n in catalogue.NODES:
            for literal in (n.node_id, n.display_name):
                assert f'"{literal}"' not in text and f"'{literal}'" not in text, (path.name, literal)
    # the browser extension names Show Trimap by its id (JavaScript cannot import it: checked here)
    js = (ROOT / "web" / "js" / "trimap_preview.js").read_text(encoding="utf-8")
    named = re.findall(r'export const NODE_NAME = "([^"]+)";', js)
    assert named == [catalogue.SHOW_TRIMAP.node_id]
    assert set(re.findall(r"\bBEN2_[A-Za-z]\w*", js)) <= set(NODE_IDS)


def test_node_names_in_descriptions_tooltips_and_errors_are_the_catalogues():
    """A node named in another node's text ("The network from Load BEN (BEN2).") is named as it is displayed."""
    pack = load_pack()
    names = set(pack.NODE_DISPLAY_NAME_MAPPINGS.values())
    mention = re.compile(r"\b([A-Z]\w*(?: (?:[A-Z]\w*|with))*) \(BEN2\)")
    texts = [(p.name, p.read_text(encoding="utf-8")) for p in sorted((ROOT / "nodes").glob("*.py"))]
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        info = node_info(cls)
        texts.append((node_id, info["description"]))
        texts += [(node_id, entry[1].get("tooltip", "")) for section in info["input"].values()
                  for entry in section.values()]
        texts += [(node_id, t) for t in info["output_tooltips"]]
    found = [(where, m + " (BEN2)") for where, text in texts for m in mention.findall(text)]
    assert found and [f for f in found if f[1] not in names] == []


def test_working_sizes_come_from_the_network():
    """working_size's options and default, and the nodes' own defaults, are BENBase's (no second copy)."""
    pack = load_pack()
    ben = importlib.import_module(f"{PACK}.ben_core.model.ben2").BENBase
    for node_id in ("BEN2_RemoveBackground", "BEN2_RemoveVideoBackground"):
        opts = widget(pack.NODE_CLASS_MAPPINGS[node_id], "working_size")[1]
        assert opts["options"] == [str(s) for s in ben.working_sizes] and opts["default"] == str(ben.native_size)
        assert opts["advanced"] is True
    refine_opts = widget(pack.NODE_CLASS_MAPPINGS["BEN2_RefineMask"], "mask_working_size")[1]
    assert refine_opts["options"] == ["auto"] + [str(s) for s in ben.working_sizes]
    mc = sub("nodes.model_cache")
    for method in (mc.LoadedBEN.prepare, mc.LoadedBEN.predictor):
        assert inspect.signature(method).parameters["working_size"].default == ben.native_size


def test_execute_defaults_are_the_widget_defaults():
    """A default is written once: each execute() parameter with a default has the schema's default."""
    pack = load_pack()
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        params = inspect.signature(cls.execute).parameters
        for section in node_info(cls)["input"].values():
            for name, entry in section.items():
                if "default" in entry[1] and name in params and params[name].default is not inspect.Parameter.empty:
                    assert params[name].default == entry[1]["default"], (node_id, name)


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
    choices = widget(load, "model_name")[1]["options"]
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

    fake_hub = types.ModuleType(f"{PACK}.ben_core.model.weights")
    fake_hub.download_official_weights = fake_download
    importlib.import_module(f"{PACK}.ben_core")
    monkeypatch.setitem(sys.modules, f"{PACK}.ben_core.model.weights", fake_hub)
    path = load_ben.find_or_download("model.safetensors", download=True)
    assert calls == [str(tmp_path / "models" / "BEN")]
    assert path == str(tmp_path / "models" / "BEN" / "model.safetensors")
    # present now: found without downloading again
    assert load_ben.find_or_download("model.safetensors", download=True) == path and len(calls) == 1


def test_load_ben_fingerprint_follows_the_file_on_disk(tmp_path, monkeypatch):
    """ComfyUI reuses a node's cached output while fingerprint_inputs stays equal: a replaced file must
    change it."""
    fp = make_folder_paths(str(tmp_path / "models"))
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    node = sub("nodes.load_ben").BEN2LoadModel
    assert node.fingerprint_inputs("model.safetensors", "auto", "auto", False) == ""  # missing: no error
    f = tmp_path / "models" / "BEN" / "model.safetensors"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"1")
    first = node.fingerprint_inputs("model.safetensors", "auto", "auto", False)
    assert first and first == node.fingerprint_inputs(model_name="model.safetensors", device="auto",
                                                      precision="auto", download_official_weights=False)
    f.write_bytes(b"22")
    assert node.fingerprint_inputs("model.safetensors", "auto", "auto", False) != first


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
    monkeypatch.setattr(sub("ben_core.devices"), "cpu_native_bf16", lambda: False)  # CPUs with it: test_devices.py
    assert lb.resolve_precision("auto", cpu) == torch.float32
    with pytest.warns(UserWarning, match="fp16 on the CPU"):
        assert lb.resolve_precision("fp16", cpu) == torch.float32
    with pytest.warns(UserWarning, match="bf16 on this CPU .no native bf16"):
        assert lb.resolve_precision("bf16", cpu) == torch.bfloat16  # kept as asked, with the warning
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
    comfy = install_comfy(monkeypatch, device="meta", core="0.3.64")  # meta: a GPU where nothing runs
    mc = sub("nodes.model_cache")
    net = Bright()
    model = mc.LoadedBEN("x.pth", net, torch.device("meta"), torch.float16, offload_device=torch.device("cpu"))
    assert len(comfy.patchers) == 1
    patcher = model.patcher
    assert patcher is comfy.patchers[0]
    assert patcher.load_device == torch.device("meta") and patcher.offload_device == torch.device("cpu")
    assert patcher.size == sum(t.numel() * t.element_size() for t in net.state_dict().values())
    assert patcher.model.net is net
    assert model.prepare(batch_size=2, working_size=1024) is net
    name, models, memory, full = [c for c in comfy.calls if c[0] == "load_models_gpu"][-1]
    assert name == "load_models_gpu" and models == [patcher] and full is True and memory > 0
    assert comfy.calls[-1] == ("partially_load", patcher, "meta")  # core loaded it


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


def test_remove_background_temporal_modes_steady_the_batch_as_a_clip():
    """temporal_stabilize on a batch of frames: temporal_mode picks causal or bidirectional, the mask is
    ben_core's stabiliser over the whole batch (the batch is the clip), the image carries that mask."""
    from ben_core.matting.temporal import stabilize_alpha

    img = half_white(6, 40, 48)
    img[:, :, 20:28] = torch.linspace(0.3, 0.7, 6).view(6, 1, 1, 1)  # an unsure band whose answer changes
    per_frame = remove(img)[1]
    for mode in ("causal", "bidirectional"):
        out_img, mask = remove(img, temporal_stabilize=True, temporal_mode=mode)
        want = stabilize_alpha(img.permute(0, 3, 1, 2), per_frame, mode=mode)
        assert torch.equal(mask, want), mode
        assert torch.allclose(out_img[..., 3], mask)
    assert not torch.equal(want, per_frame)
    assert torch.equal(remove(img, temporal_stabilize=False, temporal_mode="bidirectional")[1], per_frame)
    with pytest.raises(ValueError, match="temporal_mode"):
        remove(img, temporal_stabilize=True, temporal_mode="both")


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
        sub("nodes.remove_background").BEN2RemoveBackground.execute("not a model", half_white())
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


def test_show_trimap_outputs_and_payload(comfy_temp):
    img = torch.rand(2, 64, 96, 3)
    probs = soft_disc(64, 96)
    before = (img.clone(), probs.clone())
    (trimap, vis), ui = show(img, probs, 0.1, 0.9, 0.03, 0.97, 0.05)
    assert torch.equal(img, before[0]) and torch.equal(probs, before[1])
    assert trimap.shape == (2, 64, 96) and vis.shape == (2, 64, 96, 3)
    assert set(trimap.unique().tolist()) <= {0.0, 0.5, 1.0}
    fg = trimap[0] == 1.0
    assert torch.equal(vis[0][fg], img[0][fg])  # foreground drawn unchanged
    payloads = ui["ben2_trimap"]
    assert len(payloads) == 2
    assert len(json.dumps(ui)) < 2 * 1024  # the history entry holds references, not pixels
    p = payloads[0]
    assert (p["width"], p["height"], p["full_width"], p["full_height"]) == (96, 64, 96, 64)
    assert (p["probs_encoding"], p["image_format"]) == ("zlib-uint16le", "jpeg")
    q = np.frombuffer(zlib.decompress(read_ref(comfy_temp, p["probs"])), dtype="<u2").reshape(64, 96)
    assert np.array_equal(q, np.round(probs[0].double().numpy() * 65535).astype(np.uint16))
    from PIL import Image

    jpg = Image.open(io.BytesIO(read_ref(comfy_temp, p["image"])))
    assert jpg.format == "JPEG" and jpg.size == (96, 64) and jpg.mode == "RGB"
    assert len({p["image"]["filename"], p["probs"]["filename"], payloads[1]["image"]["filename"]}) == 3
    assert not [f for f in os.listdir(comfy_temp) if f.startswith(".")]  # no half-written file left
    # thresholds/unknown count are those of the full-resolution computation
    from importlib import import_module

    conf = import_module(f"{PACK}.ben_core.matting.trimap").confidence_trimap
    ref, lo, hi = conf(probs, 0.1, 0.9, 0.03, 0.97, 0.001, int(round(0.05 * 64 * 96)))
    assert torch.equal(trimap[0], ref[0])
    assert (p["final_t_low"], p["final_t_high"]) == (float(lo[0]), float(hi[0]))
    assert p["unknown_count"] == int((ref[0] == 0.5).sum())
    assert (p["t_low"], p["t_high"], p["t_min"], p["t_max"], p["step"], p["min_unknown_fraction"]) == \
        (0.1, 0.9, 0.03, 0.97, 0.001, 0.05)


def test_preview_files_are_written_with_ben_cores_atomic_output(comfy_temp, monkeypatch):
    """Show Trimap's preview files go through ben_core.io.files.atomic_output (one implementation of
    temp-then-rename): a failed write leaves nothing in the temp folder, neither the file nor its partial."""
    env = sub("nodes.comfy_env")
    files = importlib.import_module(f"{PACK}.ben_core.io.files")
    assert env.atomic_output is files.atomic_output
    used = []

    def spy(dst):
        used.append(Path(dst))
        return files.atomic_output(dst)

    monkeypatch.setattr(env, "atomic_output", spy)
    ref = env.save_temp_file(b"abc", "ben2_trimap", "u16.zlib")
    assert used == [comfy_temp / ref["filename"]] and read_ref(comfy_temp, ref) == b"abc"
    with pytest.raises(TypeError):
        env.save_temp_file("not bytes", "ben2_trimap", "u16.zlib")  # fails while writing
    assert sorted(os.listdir(comfy_temp)) == [ref["filename"]]


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


def test_show_trimap_preview_is_downsampled_and_capped(comfy_temp):
    img = torch.rand(9, 300, 600, 3)
    (trimap, _), ui = show(img, soft_disc(300, 600), 0.1, 0.9, 0.03, 0.97, 0.0572)
    payloads = ui["ben2_trimap"]
    assert len(payloads) == 8  # the first 8 of a batch of 9
    p = payloads[0]
    assert (p["width"], p["height"]) == (512, 256) and (p["full_width"], p["full_height"]) == (600, 300)
    assert len(zlib.decompress(read_ref(comfy_temp, p["probs"]))) == 512 * 256 * 2
    assert trimap.shape == (9, 300, 600)
    assert len(os.listdir(comfy_temp)) == 16  # an image and a map per preview, nothing else


def test_show_trimap_outside_comfyui_has_outputs_but_no_preview():
    """No ComfyUI: no temp folder to serve previews from, so no ui payload; the outputs are the same."""
    (trimap, vis), ui = show(torch.rand(1, 32, 48, 3), soft_disc(32, 48))
    assert trimap.shape == (1, 32, 48) and vis.shape == (1, 32, 48, 3)
    assert ui == {"ben2_trimap": []}


def test_show_trimap_preview_files_are_small_and_exact(comfy_temp):
    """A BEN2-like mask (saturated, soft edge, sigmoid tails) and a smooth photo-like image at 512x512:
    probs stay exact uint16 codes, the zlib/JPEG files are a fraction of the raw/PNG ones, the image close."""
    from PIL import Image

    yy, xx = torch.meshgrid(torch.linspace(0, 1, 512), torch.linspace(0, 1, 512), indexing="ij")
    d = ((yy - 0.5) ** 2 + (xx - 0.45) ** 2).sqrt()
    wobble = 0.02 * torch.sin(xx * 37) * torch.cos(yy * 23)
    probs = torch.sigmoid((0.3 + wobble - d) * 400.0)[None]  # p ~ 1e-50 .. 1 - 1e-20, edge ~ 10 px wide
    img = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + 2 * yy), 0.3 + 0.3 * yy, 0.6 - 0.4 * xx * yy], -1)[None]
    p = show(img, probs)[1]["ben2_trimap"][0]
    raw = np.round(probs[0].double().numpy() * 65535).astype("<u2")
    probs_file = read_ref(comfy_temp, p["probs"])
    assert np.array_equal(np.frombuffer(zlib.decompress(probs_file), "<u2").reshape(512, 512), raw)
    assert len(probs_file) < raw.nbytes / 8, (len(probs_file), raw.nbytes)
    rgb8 = (img[0].numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgb8).save(png, format="PNG", compress_level=4)
    image_file = read_ref(comfy_temp, p["image"])
    assert len(image_file) < len(png.getvalue()) / 3
    jpg = np.asarray(Image.open(io.BytesIO(image_file)), np.float64)
    err = np.abs(jpg - rgb8)
    assert err.mean() < 2.0 and err.max() < 16, (err.mean(), err.max())


def test_show_trimap_bad_thresholds_and_shapes():
    img = torch.rand(1, 16, 16, 3)
    with pytest.raises(ValueError):
        show(img, torch.rand(1, 16, 16), 0.9, 0.1, 0.03, 0.97, 0.05)
    with pytest.raises(ValueError, match="3x16x16"):
        show(torch.rand(2, 16, 16, 3), torch.rand(3, 16, 16), 0.1, 0.9, 0.03, 0.97, 0.05)
    with pytest.raises(ValueError, match="min_unknown_fraction"):
        show(img, torch.rand(1, 16, 16), 0.1, 0.9, 0.03, 0.97, 1.5)


# ----------------------------------------------------------------------------------- refine mask

def edge_scene(h=64, w=64):
    """Image with a bright square on a dark background and a hard mask of the square."""
    img = torch.full((1, h, w, 3), 0.1)
    img[:, 16:48, 16:48] = torch.tensor([0.9, 0.8, 0.7])
    mask = torch.zeros(1, h, w)
    mask[:, 18:46, 18:46] = 1.0  # slightly off: refinement has something to do
    return img, mask


def test_refine_mask_keeps_sure_regions_and_polarity():
    img, mask = edge_scene()
    img2 = torch.cat([img, img * 0.5])
    before = (img2.clone(), mask.clone())
    refined, out = refine(img2, mask, "guided", 0, 0.0, "band", 4, True, "RGBA", "#FFFFFF")
    assert torch.equal(img2, before[0]) and torch.equal(mask, before[1])
    assert refined.shape == (2, 64, 64) and out.shape == (2, 64, 64, 4)  # mask of 1 broadcast over 2 images
    assert float(refined.min()) >= 0 and float(refined.max()) <= 1
    tri = importlib.import_module(f"{PACK}.ben_core.matting.trimap").make_trimap(mask, "band", 4)
    sure_fg, sure_bg = tri[0] == 1.0, tri[0] == 0.0
    assert torch.all(refined[:, sure_fg] == 1.0) and torch.all(refined[:, sure_bg] == 0.0)
    assert float(refined[0, 32, 32]) == 1.0 and float(refined[0, 2, 2]) == 0.0
    assert torch.allclose(out[..., 3], refined)


def test_refine_mask_uses_a_given_trimap():
    img, mask = edge_scene()
    trimap = torch.zeros(1, 32, 32)  # half size: resized with nearest, values kept
    trimap[:, 6:26, 6:26] = 0.5
    trimap[:, 10:22, 10:22] = 1.0
    refined, _ = refine(img, mask, "guided", 0, 0.0, "auto", 0, False, "RGB", "#000000", trimap=trimap)
    big = sub("nodes.image_mask").match_mask(trimap, img, mode="nearest")
    assert torch.all(refined[big == 1.0] == 1.0) and torch.all(refined[big == 0.0] == 0.0)


def test_refine_mask_working_size_sets_the_fit_scale():
    """mask_working_size (advanced, optional, the last widget): auto measures the mask's softness; a size
    fits the colour models at image side / size, as ben_core.refine_alpha(working_size=) does."""
    synthetic = importlib.import_module("benchmarks.synthetic_matting")
    refine_alpha = sub("ben_core.matting.refine").refine_alpha
    make_trimap = sub("ben_core.matting.trimap").make_trimap
    s = synthetic.make_synthetic_matte(450, 600, seed=2, model_size=96)  # soft: measured scale ~6
    img, mask = s["image"].permute(0, 2, 3, 1).contiguous(), s["coarse"]
    rgb = img.permute(0, 3, 1, 2)
    tri = make_trimap(mask)
    got = {size: refine(img, mask, "guided", 0, 0.0, "auto", 0, False, "RGBA", "#FFFFFF",
                        mask_working_size=size)[0] for size in ("auto", "512")}
    torch.testing.assert_close(got["auto"], refine_alpha(rgb, mask, tri), atol=0, rtol=0)
    torch.testing.assert_close(got["512"], refine_alpha(rgb, mask, tri, working_size=512), atol=0, rtol=0)
    assert not torch.allclose(got["auto"], got["512"], atol=1e-4)
    # the default is auto: a workflow saved without the widget refines as before
    torch.testing.assert_close(refine(img, mask, "guided", 0, 0.0, "auto", 0, False, "RGBA", "#FFFFFF")[0],
                               got["auto"], atol=0, rtol=0)
    cls = sub("nodes.refine_mask").BEN2RefineMask
    opts = widget(cls, "mask_working_size")[1]
    assert opts["options"] == ["auto", "1024", "768", "512"] and opts["default"] == "auto" and opts["advanced"]
    info = node_info(cls)
    assert "mask_working_size" in info["input"]["optional"]
    assert list(info["input_order"]["optional"])[-1] == "mask_working_size"
    with pytest.raises(ValueError, match="mask_working_size"):
        refine(img, mask, "guided", 0, 0.0, "auto", 0, False, "RGBA", "#FFFFFF", mask_working_size="2048")


# ---------------------------------------------------------------- real network, synthetic weights

@pytest.mark.slow
def test_load_ben_and_remove_background_with_synthetic_checkpoint(tmp_path, monkeypatch):
    from helpers import synth_sd
    from safetensors.torch import save_file

    models = tmp_path / "models"
    (models / "BEN").mkdir(parents=True)
    save_file(synth_sd(0), str(models / "BEN" / "synth.safetensors"))
    monkeypatch.setitem(sys.modules, "folder_paths", make_folder_paths(str(models)))
    pack = load_pack()
    # auto is fp32 on a CPU without native bf16 (bf16 where it has it: tests/test_devices.py)
    monkeypatch.setattr(sub("ben_core.devices"), "cpu_native_bf16", lambda: False)
    loader = pack.NODE_CLASS_MAPPINGS["BEN2_LoadModel"]
    assert "synth.safetensors" in widget(loader, "model_name")[1]["options"]
    model, bg_model = outputs(loader.execute("synth.safetensors", "cpu", "auto", False))
    again, _ = outputs(loader.execute("synth.safetensors", "cpu", "auto", False))
    assert bg_model is model  # the same network feeds core's Remove Background
    assert again is model and model.dtype == torch.float32 and model.device == torch.device("cpu")
    img = torch.rand(2, 40, 56, 3)
    before = img.clone()
    node = pack.NODE_CLASS_MAPPINGS["BEN2_RemoveBackground"]
    out, mask = outputs(node.execute(model, img, "RGBA", "#FFFFFF", True, False, 2, "512"))
    assert torch.equal(img, before)
    assert out.shape == (2, 40, 56, 4) and mask.shape == (2, 40, 56)
    assert torch.isfinite(out).all() and torch.isfinite(mask).all()
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    assert torch.allclose(out[..., 3], mask)


def test_show_trimap_default_minimum_is_the_papers(comfy_temp):
    default = widget(sub("nodes.show_trimap").BEN2ShowTrimap, "min_unknown_fraction")[1]["default"]
    assert round(default * 1024 * 1024) == 60000
    probs = soft_disc(256, 256)
    (tri, _), ui = show(torch.rand(1, 256, 256, 3), probs)  # every widget at its default
    p = ui["ben2_trimap"][0]
    trimap = importlib.import_module(f"{PACK}.ben_core.matting.trimap")
    ref, lo2, hi2 = trimap.confidence_trimap(probs)  # paper defaults
    assert torch.equal(tri, ref) and (p["final_t_low"], p["final_t_high"]) == (float(lo2[0]), float(hi2[0]))


def test_load_ben_reports_a_bad_checkpoint(tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "BEN").mkdir(parents=True)
    (models / "BEN" / "broken.safetensors").write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "folder_paths", make_folder_paths(str(models)))
    with pytest.raises(ValueError):  # ben_core's CheckpointError
        load("broken.safetensors", "cpu", "fp32", False)
    with pytest.raises(FileNotFoundError, match="not in"):
        load("gone.pth", "cpu", "fp32", False)
    assert len(sub("nodes.model_cache")._cache) == 0


def test_refine_mask_vitmatte_with_a_tiny_random_network(monkeypatch):
    pytest.importorskip("transformers")
    net = tiny_vitmatte(layers=1)
    monkeypatch.setattr(sub("nodes.model_cache"), "vitmatte_model", lambda device, image_hw=None: net)
    img, mask = edge_scene()
    refined, out = refine(img, mask, "vitmatte", 0, 0.0, "band", 4, False, "RGBA", "#FFFFFF")
    tri = importlib.import_module(f"{PACK}.ben_core.matting.trimap").make_trimap(mask, "band", 4)
    assert refined.shape == (1, 64, 64) and torch.isfinite(refined).all()
    assert torch.all(refined[tri == 1.0] == 1.0) and torch.all(refined[tri == 0.0] == 0.0)


def test_vitmatte_node_is_experimental_and_matches_refine_mask(monkeypatch):
    pytest.importorskip("transformers")
    net = tiny_vitmatte(layers=1)
    monkeypatch.setattr(sub("nodes.model_cache"), "vitmatte_model", lambda device, image_hw=None: net)
    rm = sub("nodes.refine_mask")
    info, plain = node_info(rm.BEN2RefineMaskViTMatte), node_info(rm.BEN2RefineMask)
    assert info["experimental"] is True and plain["experimental"] is False
    assert info["output"] == plain["output"] and info["output_name"] == plain["output_name"]
    img, mask = edge_scene()
    got = outputs(rm.BEN2RefineMaskViTMatte.execute(img, mask, "band", 4, False, "RGBA", "#FFFFFF"))
    want = refine(img, mask, "vitmatte", 0, 0.0, "band", 4, False, "RGBA", "#FFFFFF")
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    sized = refine(img, mask, "vitmatte", 0, 0.0, "band", 4, False, "RGBA", "#FFFFFF", mask_working_size="1024")
    assert all(torch.equal(a, b) for a, b in zip(sized, want, strict=True))  # not used by vitmatte (as radius and eps)


def test_vitmatte_is_loaded_once_and_handed_to_comfy_model_management(monkeypatch):
    """Inside ComfyUI the ViTMatte weights must go through a ModelPatcher + load_models_gpu (offloadable),
    not be pinned on the GPU by a module-level cache."""
    comfy = install_comfy(monkeypatch, device="cpu")
    mc = sub("nodes.model_cache")
    vm = importlib.import_module(f"{PACK}.ben_core.matting.vitmatte")
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
        out, mask = outputs(pack.NODE_CLASS_MAPPINGS["BEN2_RemoveBackground"].execute(
            model, img, "RGB", "#000000", True, False, 1, "512"))
        trimap, _ = outputs(pack.NODE_CLASS_MAPPINGS["BEN2_ShowTrimap"].execute(img, mask, 0.1, 0.9, 0.03, 0.97,
                                                                                 0.05))
        refined, _ = outputs(pack.NODE_CLASS_MAPPINGS["BEN2_RefineMask"].execute(
            img, mask, "guided", 0, 0.0, "auto", 0, True, "RGBA", "#FFFFFF", trimap=trimap))
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
        lb.BEN2LoadModel.execute("m.pth", "cpu", "fp32", False, compile="turbo")


def test_more_compiled_shapes_than_dynamo_compiles_are_said(tmp_path, caplog):
    """Every (batch_size, working_size) pair of one compiled network is one more compilation of the same code;
    past dynamo's recompile limit torch runs the new shape uncompiled without a word: the pack says so."""
    import torch._dynamo

    mc = sub("nodes.model_cache")
    f = tmp_path / "m.pth"
    f.write_bytes(b"1")
    compiled = mc.get_model(str(f), "cpu", torch.float32, "default", loader=lambda *a: Bright())
    with torch._dynamo.config.patch(recompile_limit=2), caplog.at_level("WARNING", logger="ComfyUI-BEN2"):
        compiled.predictor(1, 512)
        compiled.predictor(2, 512)
        compiled.predictor(1, 512)
        assert "recompile_limit" not in caplog.text
        compiled.predictor(1, 768)
    assert "3 batch_size/working_size pairs" in caplog.text and "uncompiled" in caplog.text


# ------------------------------------------------------------------- errors name the node's inputs

def test_errors_name_the_nodes_own_inputs():
    """A NaN mask / trimap is reported under the input's name (not an internal 'probs'), before any work."""
    img, mask = edge_scene()
    bad = mask.clone()
    bad[0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"^mask: .*NaN"):
        refine(img, bad, "guided", 0, 0.0, "auto", 0, False, "RGBA", "#FFFFFF")
    with pytest.raises(ValueError, match=r"^trimap: .*NaN"):
        refine(img, mask, "guided", 0, 0.0, "auto", 0, False, "RGBA", "#FFFFFF", trimap=bad)
    with pytest.raises(ValueError, match=r"^mask: .*NaN"):
        show(img, bad)
    inf = mask.clone()
    inf[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"^mask: .*infinite"):
        show(img, inf)
    assert torch.isnan(bad).sum() == 1  # the caller's tensor untouched


def test_float_images_far_outside_0_1_are_refused_not_clamped_to_white():
    img = half_white(1, 16, 16)
    with pytest.raises(ValueError, match=r"^image: .*0\.\.255.*divide by 255"):
        remove(img * 255.0)
    with pytest.raises(ValueError, match=r"^image: .*spans -3"):
        refine(img - 3.0, torch.ones(1, 16, 16), "guided", 0, 0.0, "auto", 0, False, "RGBA", "#FFFFFF")
    nan = img.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^image: .*NaN"):
        show(nan, torch.ones(1, 16, 16))
    # resampling overshoot (Lanczos/bicubic upscales) is fine: read clamped, as before
    over = img.clone()
    over[0, 0, 0] = torch.tensor([1.04, -0.03, 0.5])
    _, mask = remove(over)
    assert torch.isfinite(mask).all() and mask.shape == (1, 16, 16)


# --------------------------------------------------------------- core's Remove Background node

class CoreRemoveBackground:
    """Stand-in for core's ``RemoveBackground`` node (comfy_extras/nodes_bg_removal.py, 2026 cores): its
    execute, verbatim in behaviour - ``resolution`` 256..4096 step 32, default 1024 - and its socket type."""

    INPUT_TYPE = "BACKGROUND_REMOVAL"

    @classmethod
    def execute(cls, bg_removal_model, image, resolution=1024):
        return bg_removal_model.encode_image(image, image_size=resolution)


def test_load_ben_feeds_core_remove_background(monkeypatch, caplog):
    comfy = install_comfy(monkeypatch, intermediate_dtype=torch.float16)
    model = standin_model()
    info = node_info(sub("nodes.load_ben").BEN2LoadModel)
    assert info["output"] == ["BEN_MODEL", CoreRemoveBackground.INPUT_TYPE]
    assert info["output_name"] == ["ben_model", "bg_removal_model"]
    img = torch.cat([half_white(1, 37, 53), 1.0 - half_white(1, 37, 53), half_white(1, 37, 53) * 0.0])
    before = img.clone()
    mask = CoreRemoveBackground.execute(model, img)  # core's default resolution: BEN2's native 1024
    assert torch.equal(img, before)
    assert mask.shape == (3, 37, 53) and mask.dtype == torch.float16 and mask.device.type == "cpu"
    assert float(mask[0, :, :20].float().mean()) > 0.95 and float(mask[0, :, 33:].float().mean()) < 0.05
    assert float(mask[1, :, :20].float().mean()) < 0.05 and float(mask[1, :, 33:].float().mean()) > 0.95
    assert float(mask[2].float().max()) < 0.05  # all dark: all background, and still one mask per image
    assert model.net.seen[-1][2:] == (1024, 1024) and comfy.progress[-1] == (3, 3)
    # the same mask as our own node at the same size (both fp16 intermediates now)
    _, ours = remove(img, model=model, working_size="1024")
    assert ours.dtype == torch.float16 and torch.equal(mask, ours)
    for resolution, used in ((768, 768), (512, 512), (1000, 1024), (256, 512), (4096, 1024), (640, 768)):
        caplog.clear()
        CoreRemoveBackground.execute(model, img[:1], resolution)
        assert model.net.seen[-1][2:] == (used, used), resolution
        warned = any("resolution" in r.getMessage() for r in caplog.records)
        assert warned == (resolution != used), resolution


def test_core_remove_background_bad_image_is_named():
    with pytest.raises(ValueError, match=r"^image: "):
        CoreRemoveBackground.execute(standin_model(), torch.rand(1, 3, 16, 16))


# ------------------------------------------------------------------- model management, 2026 cores

def _synthetic_checkpoint(tmp_path) -> Path:
    from helpers import synth_sd
    from safetensors.torch import save_file

    path = tmp_path / "synth.safetensors"
    save_file(synth_sd(0), str(path))
    return path


def test_load_ben_uses_core_model_patcher_where_it_exists(monkeypatch):
    install_comfy(monkeypatch, core="0.3.64")  # ModelPatcher only
    env = sub("nodes.comfy_env")
    plain = env.make_patcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    assert type(plain).__name__ == "ModelPatcher" and not env.is_dynamic(plain)
    install_comfy(monkeypatch, dynamic=True)  # 2026: CoreModelPatcher (swapped at start-up)
    dyn = env.make_patcher(torch.nn.Linear(2, 2), torch.device("meta"), torch.device("cpu"))  # meta: a GPU
    assert type(dyn).__name__ == "ModelPatcherDynamic" and env.is_dynamic(dyn)
    assert not env.is_dynamic(None)
    # (on a CPU load device core itself hands out the plain patcher: tests/test_core_rules.py)


def test_no_fp16_on_gpus_core_marks_fp16_broken(monkeypatch, caplog):
    """GTX 16xx-like: core's should_use_fp16 says no (BEN2 gives blank masks there in fp16). We ask core,
    so auto never picks fp16 and an explicit fp16 becomes fp32 with a warning."""
    lb = sub("nodes.load_ben")
    cuda = torch.device("cuda")
    install_comfy(monkeypatch, device="cuda", fp16_ok=lambda d: False, bf16_ok=lambda d: False)
    assert lb.resolve_precision("auto", cuda) == torch.float32
    assert lb.resolve_precision("fp16", cuda) == torch.float32
    assert any("fp16" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    with pytest.warns(UserWarning, match="bf16 is not supported"):
        assert lb.resolve_precision("bf16", cuda) == torch.float32  # no bf16 there either (core says so)
    install_comfy(monkeypatch, device="cuda", fp16_ok=lambda d: False, bf16_ok=lambda d: True)
    assert lb.resolve_precision("auto", cuda) == torch.bfloat16
    assert lb.resolve_precision("bf16", cuda) == torch.bfloat16  # what the user asked for, not fp16
    install_comfy(monkeypatch, device="cuda")
    assert lb.resolve_precision("auto", cuda) == torch.float16
    assert lb.resolve_precision("fp16", cuda) == torch.float16


# ------------------------------------------------------------------------- V3 API of both cores

def _load_pack_with(monkeypatch, name: str, newer: bool):
    from comfy_stub.comfy_api import make_comfy_api

    for key, mod in make_comfy_api(newer=newer).items():
        monkeypatch.setitem(sys.modules, key, mod)
    return load_pack(name)


@pytest.mark.parametrize("newer", [False, True], ids=["0.3.64", "2026"])
def test_v3_schema_on_both_cores(monkeypatch, newer):
    """The same node definitions on a 0.3.64-like comfy_api (no search_aliases, no Input(advanced=)) and
    a 2026-like one (aliases, advanced, io.BackgroundRemoval): same ids, inputs and outputs."""
    name = f"ComfyUI-BEN2-api-{'2026' if newer else '0364'}"
    try:
        pack = _load_pack_with(monkeypatch, name, newer)
        assert sorted(pack.NODE_CLASS_MAPPINGS) == sorted(NODE_IDS)
        io_mod = sys.modules["comfy_api.latest"].io
        env = importlib.import_module(name + ".nodes.comfy_env")
        assert (env.BACKGROUND_REMOVAL is getattr(io_mod, "BackgroundRemoval", None)) == newer
        infos = {k: cls.GET_NODE_INFO_V1() for k, cls in pack.NODE_CLASS_MAPPINGS.items()}
        load_info = infos["BEN2_LoadModel"]
        assert load_info["output"] == ["BEN_MODEL", "BACKGROUND_REMOVAL"]
        assert load_info["input"]["optional"]["compile"][1]["advanced"] is True
        assert infos["BEN2_RemoveBackground"]["input"]["required"]["batch_size"][1]["advanced"] is True
        assert "advanced" not in infos["BEN2_RemoveBackground"]["input"]["required"]["output_mode"][1]
        if newer:
            aliases = infos["BEN2_RemoveBackground"]["search_aliases"]
            assert {"rembg", "matting", "cut out", "background"} <= set(aliases)
        else:
            assert all("search_aliases" not in i for i in infos.values())
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            sys.modules.pop(key, None)


def test_without_comfy_api_the_pack_says_which_comfyui_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "comfy_api", None)
    monkeypatch.setitem(sys.modules, "comfy_api.latest", None)
    name = "ComfyUI-BEN2-no-v3"
    try:
        pack = load_pack(name)
        assert pack.NODE_CLASS_MAPPINGS == {}  # logged per node, the import itself does not fail
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            sys.modules.pop(key, None)
