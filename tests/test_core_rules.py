"""The nodes against stand-ins that follow 2026 cores' rules (tests/comfy_stub; issue #19): dynamic VRAM as
``ModelPatcherDynamic`` really moves weights, Cancel as a BaseException (and 0.3.64's Exception), what
third-party consumers read from a BACKGROUND_REMOVAL model, and models declared in ``extra_paths.yaml``.

"The GPU" of these tests is torch's ``meta`` device: a non-CPU load device (core gives a CPU load device a
plain ModelPatcher) on which nothing is computed, so they check where every weight is and what core
accounts for; compute runs on the CPU. benchmarks/gpu_check.py (section "dynamic VRAM and Cancel") runs the
nodes on a real GPU through the same stand-in: VRAM returned after offloading and after a Cancel in each
long node, outputs identical after reloading.
"""
from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

from comfy_stub import (InterruptProcessingException, LegacyInterruptProcessingException, apply_custom_paths,
                        install_comfy, make_folder_paths)
from helpers import PACK_NAME, tiny_vitmatte
from test_nodes import (_no_comfy, _synthetic_checkpoint, CoreRemoveBackground, edge_scene,  # noqa: F401
                        half_white, outputs, refine, remove, standin_model, sub)

META = torch.device("meta")
CPU = torch.device("cpu")


def small_ben():
    """A narrow BENBase of the pack (every code path of the full one) with seeded random weights."""
    ben2 = importlib.import_module(f"{PACK_NAME}.ben_core.model.ben2")
    g = torch.Generator().manual_seed(0)
    net = ben2.BENBase(embed_dim=32, depths=(1, 2, 1, 2), num_heads=(1, 2, 2, 4)).eval().requires_grad_(False)
    for p in net.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def tensors_on(module: torch.nn.Module, device_type: str) -> list:
    return [n for n, t in list(module.named_parameters()) + list(module.named_buffers())
            if t.device.type == device_type]


def state_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


# ----------------------------------------------------------------------------------- dynamic VRAM

def test_core_gives_a_cpu_load_device_a_plain_model_patcher(monkeypatch):
    """ModelPatcherDynamic.__new__ reroutes a CPU load device to ModelPatcher: on the CPU there is no dynamic
    path (and so no assign=True loading) even when the core runs with dynamic VRAM."""
    install_comfy(monkeypatch, dynamic=True)
    env = sub("nodes.comfy_env")
    cpu = env.make_patcher(torch.nn.Linear(2, 2), CPU, CPU)
    assert type(cpu).__name__ == "ModelPatcher" and not env.is_dynamic(cpu)
    gpu = env.make_patcher(torch.nn.Linear(2, 2), META, CPU)
    assert type(gpu).__name__ == "ModelPatcherDynamic" and env.is_dynamic(gpu)


def test_dynamic_vram_moves_every_weight_to_the_gpu_and_takes_every_one_back(monkeypatch):
    """Core's dynamic loader copies the weights of leaf modules (and every buffer) and moves parameters of
    modules with children in place, unaccounted, never moving them back. BEN2's weights all sit on leaf
    modules: loaded, everything is on the GPU and counted; offloaded, everything is back on the CPU,
    bit-identical, and so are the outputs."""
    comfy = install_comfy(monkeypatch, dynamic=True)
    mc = sub("nodes.model_cache")
    net = small_ben()
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = net(x)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    model = mc.LoadedBEN("small.pth", net, META, torch.float32, offload_device=CPU)
    assert sub("nodes.comfy_env").is_dynamic(model.patcher)
    model.prepare(1, 512)
    assert tensors_on(net, "cpu") == []
    assert model.patcher.loaded_size() == state_bytes(net)  # core accounts for every byte it put there
    model.prepare(1, 512)  # core loads again on every call: restore the backups, copy afresh
    assert tensors_on(net, "cpu") == [] and model.patcher.loaded_size() == state_bytes(net)
    sys.modules["comfy.model_management"].unload_all_models()
    assert tensors_on(net, "meta") == [] and model.patcher.loaded_size() == 0
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    with torch.inference_mode():
        assert torch.equal(net(x), before)
    assert [c[0] for c in comfy.calls].count("partially_load") == 2


def test_cuda_graphs_keep_their_weights_where_dynamic_vram_would_copy_them_afresh(monkeypatch):
    """A dynamic patcher puts new weight tensors on the GPU on every load; a CUDA graph recorded against
    the old ones would be re-recorded. With torch.compile + CUDA graphs the network gets the plain
    ModelPatcher: loaded once, the same tensors from run to run."""
    install_comfy(monkeypatch, dynamic=True)
    mc = sub("nodes.model_cache")

    def params_after_two_prepares(compile):
        model = mc.LoadedBEN("b.pth", standin_model().net, META, torch.float32, offload_device=CPU,
                             compile=compile)
        model.prepare(1, 512)
        first = list(model.net.parameters()) + list(model.net.buffers())
        model.prepare(1, 512)
        second = list(model.net.parameters()) + list(model.net.buffers())
        return type(model.patcher).__name__, all(a is b for a, b in zip(first, second))

    assert params_after_two_prepares("reduce-overhead") == ("ModelPatcher", True)
    assert params_after_two_prepares(None) == ("ModelPatcherDynamic", False)
    assert params_after_two_prepares("default")[0] == "ModelPatcherDynamic"


def test_vitmatte_gets_the_plain_patcher_because_transformers_keeps_a_parameter_on_a_parent(monkeypatch):
    """transformers' ViTMatte holds ``position_embeddings`` on a module with children, which the dynamic
    loader would leave on the GPU: the plain ModelPatcher moves the whole network."""
    pytest.importorskip("transformers")
    install_comfy(monkeypatch, dynamic=True)
    env = sub("nodes.comfy_env")
    vit = tiny_vitmatte(layers=1)
    assert not env.leaf_owned(vit) and env.leaf_owned(small_ben())
    assert type(env.make_patcher(vit, META, CPU)).__name__ == "ModelPatcher"


@pytest.mark.slow
def test_load_ben_with_dynamic_vram_assigns_on_a_gpu_and_copies_on_the_cpu(tmp_path, monkeypatch):
    """Core's rule for its own models, assign=patcher.is_dynamic(): the checkpoint's tensors become the
    parameters where the patcher is dynamic (a GPU), are copied in on the CPU (plain patcher); either way the
    weights are the checkpoint's, and a GPU load/offload round trip brings every one of them back."""
    install_comfy(monkeypatch, dynamic=True)
    mc = sub("nodes.model_cache")
    path = _synthetic_checkpoint(tmp_path)
    ckpt = importlib.import_module(f"{PACK_NAME}.ben_core.checkpoint")
    real_load_weights, assigned = ckpt.load_weights, []

    def spy(model, path, assign=False, **kw):
        assigned.append(assign)
        return real_load_weights(model, path, assign=assign, **kw)

    monkeypatch.setattr(ckpt, "load_weights", spy)
    from safetensors.torch import load_file

    sd = load_file(str(path))
    on_cpu = mc.get_model(str(path), "cpu", torch.float32)
    on_gpu = mc.get_model(str(path), "meta", torch.float32)
    assert assigned == [False, True]
    assert type(on_cpu.patcher).__name__ == "ModelPatcher" and type(on_gpu.patcher).__name__ == "ModelPatcherDynamic"
    for model in (on_cpu, on_gpu):
        own = model.net.state_dict()
        assert all(torch.equal(own[k], sd[k]) for k in own) and not tensors_on(model.net, "meta")
        assert all(not p.requires_grad for p in model.net.parameters()) and not model.net.training
    on_gpu.prepare(1, 512)
    assert tensors_on(on_gpu.net, "cpu") == []
    sys.modules["comfy.model_management"].unload_all_models()
    own = on_gpu.net.state_dict()
    assert tensors_on(on_gpu.net, "meta") == [] and all(torch.equal(own[k], sd[k]) for k in own)
    mask = CoreRemoveBackground.execute(on_cpu, torch.rand(1, 40, 56, 3), 512)  # core's node on the CPU copy
    assert mask.shape == (1, 40, 56) and torch.isfinite(mask).all()


# ----------------------------------------------------------------------------------------- Cancel

def test_the_stand_in_interrupt_is_cores():
    assert issubclass(InterruptProcessingException, BaseException)
    assert not issubclass(InterruptProcessingException, Exception)  # 2026: `except Exception` does not catch it
    assert issubclass(LegacyInterruptProcessingException, Exception)  # 0.3.64


@pytest.mark.parametrize("core", ["2026", "0.3.64"])
def test_cancel_in_the_middle_of_remove_background(monkeypatch, core):
    comfy = install_comfy(monkeypatch, core=core, interrupt_after=2)
    model = standin_model()
    with pytest.raises(comfy.InterruptProcessingException):
        remove(half_white(6, 16, 16), model=model, batch_size=1)
    assert 0 < len(model.net.seen) < 6


@pytest.mark.parametrize("core", ["2026", "0.3.64"])
def test_cancel_in_the_middle_of_refine_mask(monkeypatch, core):
    comfy = install_comfy(monkeypatch, core=core)
    comfy.interrupt_when = lambda ns: len(ns.progress) >= 1  # Cancel once the first image is done
    img, mask = edge_scene()
    with pytest.raises(comfy.InterruptProcessingException):
        refine(img.repeat(3, 1, 1, 1), mask, "guided", 0, 0.0, "band", 4, True, "RGBA", "#FFFFFF")
    assert comfy.progress == [(1, 3)]


@pytest.mark.parametrize("core", ["2026", "0.3.64"])
def test_cancel_between_vitmatte_tiles(monkeypatch, core):
    """An image wider than one tile: the Cancel comes between two ViTMatte tiles."""
    pytest.importorskip("transformers")
    comfy = install_comfy(monkeypatch, core=core)
    net = tiny_vitmatte(layers=1)
    tiles = []
    net.register_forward_hook(lambda *a: tiles.append(1))
    comfy.interrupt_when = lambda ns: len(tiles) >= 1
    monkeypatch.setattr(sub("nodes.model_cache"), "vitmatte_model", lambda device: net)
    img = torch.full((1, 96, 1100, 3), 0.1)
    img[:, 20:76, 60:1040] = 0.9
    mask = torch.zeros(1, 96, 1100)
    mask[:, 24:72, 64:1036] = 1.0
    plan = importlib.import_module(f"{PACK_NAME}.ben_core.vitmatte").vitmatte_tiles(
        96, 1100, importlib.import_module(f"{PACK_NAME}.ben_core.trimap").make_trimap(mask, "band", 4)[0] == 0.5,
        512, 64)
    assert len(plan) >= 3
    with pytest.raises(comfy.InterruptProcessingException):
        refine(img, mask, "vitmatte", 0, 0.0, "band", 4, False, "RGBA", "#FFFFFF")
    assert tiles == [1]  # one tile ran, the next was not started


# ---------------------------------------------------------------------- BACKGROUND_REMOVAL consumers

def test_bg_removal_model_has_what_cores_own_model_exposes():
    """comfy/bg_removal_model.py's BackgroundRemovalModel: image_size, image_mean, image_std, model_type,
    config, load_device, dtype, model, patcher, get_sd(), encode_image()."""
    model = standin_model()
    assert model.image_size == 1024 and model.model_type == "ben2"
    assert model.image_mean == [0.485, 0.456, 0.406] and model.image_std == [0.229, 0.224, 0.225]
    assert model.config["image_size"] == 1024 and model.config["model_type"] == "ben2"
    assert model.config["image_mean"] == model.image_mean and model.config["working_sizes"] == [1024, 768, 512]
    model.config["image_size"] = 7  # a fresh dict: a consumer cannot change the shared model
    model.image_mean.append(9)
    assert model.image_size == 1024 and model.config["image_size"] == 1024 and len(model.image_mean) == 3
    assert model.load_device == model.device and model.dtype == torch.float32
    assert model.model is model.net and hasattr(model, "patcher")
    assert list(model.get_sd()) == list(model.net.state_dict())
    # a consumer normalising as core's clip_preprocess does gets BEN2's input
    mean = torch.tensor(model.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.image_std).view(1, 3, 1, 1)
    x = (torch.rand(1, 3, 8, 8) - mean) / std
    assert torch.allclose(x * std + mean, x * model.net.std + model.net.mean)


# --------------------------------------------------------------------------------- extra_paths.yaml

def test_models_declared_in_extra_paths_yaml_are_found(tmp_path, monkeypatch):
    """2026 cores read extra_paths.yaml (and ignore extra_model_paths.yaml next to it) before custom nodes are
    imported; Load BEN lists and loads the BEN folders declared there, and says so."""
    install = tmp_path / "ComfyUI"
    (install / "models").mkdir(parents=True)
    shared, old = tmp_path / "shared" / "matting", tmp_path / "old" / "BEN"
    shared.mkdir(parents=True)
    old.mkdir(parents=True)
    (shared / "mine.pth").write_bytes(b"1")
    (old / "ignored.pth").write_bytes(b"1")
    (install / "extra_paths.yaml").write_text(f"studio:\n  base_path: {tmp_path / 'shared'}\n  BEN: matting\n")
    (install / "extra_model_paths.yaml").write_text(f"legacy:\n  BEN: {old}\n")
    fp = make_folder_paths(str(install / "models"))
    apply_custom_paths(fp, str(install))  # what main.py does before importing custom nodes
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    env, lb = sub("nodes.comfy_env"), sub("nodes.load_ben")
    env.register_model_folder()
    assert env.list_model_files() == ["mine.pth"]
    assert env.resolve_model_path("mine.pth") == str(shared / "mine.pth")
    assert env.model_folders() == [str(shared), os.path.join(fp.models_dir, "BEN")]
    assert "mine.pth" in lb.model_choices()
    schema = lb.BEN2LoadModel.define_schema()
    assert "extra_paths.yaml" in schema.description
    download = next(i for i in schema.inputs if i.id == "download_official_weights")
    assert "extra_paths.yaml" in download.tooltip
