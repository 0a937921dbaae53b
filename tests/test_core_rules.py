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
import types

import pytest
import torch
from comfy_stub import (
    VRAM_STATES,
    InterruptProcessingException,
    LegacyInterruptProcessingException,
    apply_custom_paths,
    install_comfy,
    make_folder_paths,
)
from helpers import PACK_NAME, tiny_vitmatte
from test_nodes import (  # noqa: F401
    CoreRemoveBackground,
    _no_comfy,
    _synthetic_checkpoint,
    edge_scene,
    half_white,
    outputs,
    refine,
    remove,
    show,
    standin_model,
    sub,
)

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
        return type(model.patcher).__name__, all(a is b for a, b in zip(first, second, strict=True))

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
    ckpt = importlib.import_module(f"{PACK_NAME}.ben_core.model.weights")
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


# ------------------------------------------------------------------------------------- VRAM states

#: The patchers the pack's networks get: BEN with dynamic VRAM (2026), BEN on a 2026 core without it, BEN
#: with torch.compile + CUDA graphs (the plain patcher everywhere), BEN on 0.3.64, ViTMatte (plain).
NETWORKS = ("ben-dynamic", "ben-plain", "ben-cuda-graphs", "ben-0.3.64", "vitmatte")


def _network_under(monkeypatch, vram, kind):
    """``(loaded, run)`` for one network under core's ``vram`` state: ``run()`` does what a node does before
    computing (load through core) and returns ``(network, device its inputs go to, its patcher)``."""
    if kind == "vitmatte":
        pytest.importorskip("transformers")
    dynamic = kind == "ben-dynamic"
    comfy = install_comfy(monkeypatch, device="meta", vram=vram, dynamic=dynamic,
                          core="0.3.64" if kind == "ben-0.3.64" else "2026")
    env, mc = sub("nodes.comfy_env"), sub("nodes.model_cache")
    device = env.torch_device()
    if kind == "vitmatte":
        vm = importlib.import_module(f"{PACK_NAME}.ben_core.matting.vitmatte")
        net = tiny_vitmatte(layers=1)
        monkeypatch.setattr(vm, "load_vitmatte", lambda device="cpu", **kw: net.to(device))

        def run():
            got = mc.vitmatte_model(device)
            patcher = next(p for p in comfy.patchers if p is not None and p.model.net is got)
            return got, next(got.parameters()).device, patcher  # vitmatte_refine's tiles go to its first parameter
        return net, run
    # the predictor is the pack's own (tested elsewhere) and computes nothing on "the GPU": record where it is told
    # to run (the real one would also move a network that is elsewhere behind core's back)
    monkeypatch.setattr(importlib.import_module(f"{PACK_NAME}.ben_core.predictor"), "BENPredictor",
                        lambda net, device, **kw: types.SimpleNamespace(device=torch.device(device)))
    model = mc.LoadedBEN("small.pth", small_ben().to(env.offload_device()), device, torch.float32,
                         offload_device=env.offload_device(),
                         compile="reduce-overhead" if kind == "ben-cuda-graphs" else None)

    def run():
        predictor = model.predictor(1, 512)
        return model.net, predictor.device, model.patcher
    return model, run


@pytest.mark.parametrize("kind", NETWORKS)
@pytest.mark.parametrize("vram", VRAM_STATES)
def test_every_vram_state_runs_where_the_weights_are(monkeypatch, vram, kind):
    """``--gpu-only``, ``--highvram``, normal, ``--lowvram``, ``--novram``, ``--cpu``: after core has loaded the
    network, every weight is on the device the inputs are sent to (no device mismatch), that is the GPU
    (``--cpu``: the CPU), and core counts every byte, so it can offload them; after core unloads everything
    and the node runs again, the same holds. Under ``--novram`` core's budget of 0.1 byte moved no plain
    module, so this failed before the pack asked the patcher for a complete load. (A plain patcher's weights
    cannot be copied back from the meta "GPU": it is unloaded only where its offload device is the GPU itself
    or the CPU; the dynamic patcher puts its CPU backups back.)"""
    _, run = _network_under(monkeypatch, vram, kind)
    mm = sys.modules["comfy.model_management"]
    want = CPU if vram == "cpu" else META
    for _ in range(2):
        net, device, patcher = run()
        assert device == want
        assert tensors_on(net, "cpu" if want == META else "meta") == []
        if want == META:
            assert patcher in mm.loaded_models() and patcher.loaded_size() == state_bytes(net)
        if kind == "ben-dynamic" or patcher.offload_device == want:
            mm.unload_all_models()
            parked = "meta" if patcher.offload_device == CPU else "cpu"
            assert patcher.loaded_size() == 0 and tensors_on(net, parked) == []


def test_novram_loads_cuda_graph_weights_once_and_keeps_their_tensors(monkeypatch):
    """The CUDA-graph path under ``--novram``: the weights are put on the GPU once (one complete load) and the
    same tensors stay there from run to run, as a recorded graph needs."""
    model, run = _network_under(monkeypatch, "novram", "ben-cuda-graphs")
    net, _, _ = run()
    first = list(net.parameters()) + list(net.buffers())
    data = [t.data_ptr() for t in first]
    loads = []
    real = model.patcher.load
    model.patcher.load = lambda *a, **kw: (loads.append(kw.get("full_load")), real(*a, **kw))[1]
    for _ in range(2):
        net, _, _ = run()
    assert all(a is b for a, b in zip(first, list(net.parameters()) + list(net.buffers()), strict=True))
    assert [t.data_ptr() for t in first] == data and True not in loads and tensors_on(net, "cpu") == []


def test_weights_spread_over_two_devices_are_put_back_where_core_parks_them(monkeypatch, caplog):
    """A core that loads part of a plain network (none of the stored ones does for these networks, but a
    partial load is core's normal answer for models it can stream): the pack never runs a network spread over
    two devices; core's detach puts it back on the offload device and the network runs there, with a
    warning."""
    install_comfy(monkeypatch, device="meta", dynamic=True)
    mc = sub("nodes.model_cache")
    model = mc.LoadedBEN("small.pth", small_ben(), META, torch.float32, offload_device=CPU)
    mm = sys.modules["comfy.model_management"]
    real = mm.load_models_gpu

    def partial(models, *a, **kw):
        real(models, *a, **kw)
        key = next(iter(model.patcher.backup))  # one weight left on the CPU
        sys.modules["comfy.utils"].set_attr_param(model.patcher.model, key, model.patcher.backup.pop(key))

    monkeypatch.setattr(mm, "load_models_gpu", partial)
    with caplog.at_level("WARNING", logger="ComfyUI-BEN2"):
        predictor = model.predictor(1, 512)
    assert predictor.device == CPU and tensors_on(model.net, "meta") == []
    assert "running it there" in caplog.text


# ----------------------------------------------------------------------------------------- Cancel

def test_the_stand_in_interrupt_is_cores():
    assert issubclass(InterruptProcessingException, BaseException)
    assert not issubclass(InterruptProcessingException, Exception)  # 2026: `except Exception` does not catch it
    assert issubclass(LegacyInterruptProcessingException, Exception)  # 0.3.64


@pytest.mark.parametrize("core", ["2026", "0.3.64"])
def test_one_cancel_raises_once_as_in_core(monkeypatch, core):
    """core's throw_exception_if_processing_interrupted clears its flag when it raises: a second check after one
    Cancel passes, so code that swallowed the first exception would run on in core (and must fail here)."""
    comfy = install_comfy(monkeypatch, core=core, interrupt_after=2)
    mm = sys.modules["comfy.model_management"]
    mm.throw_exception_if_processing_interrupted()
    with pytest.raises(comfy.InterruptProcessingException):
        mm.throw_exception_if_processing_interrupted()
    assert not mm.processing_interrupted()
    mm.throw_exception_if_processing_interrupted()  # the Cancel was spent
    comfy.interrupt_when = lambda ns: ns.checks >= 4
    with pytest.raises(comfy.InterruptProcessingException):
        mm.throw_exception_if_processing_interrupted()
    mm.throw_exception_if_processing_interrupted()
    mm.interrupt_current_processing()
    assert mm.processing_interrupted()
    with pytest.raises(comfy.InterruptProcessingException):
        sys.modules["comfy.utils"].ProgressBar(2).update(1)  # main.py's progress hook checks too
    assert comfy.checks == 6 and not mm.processing_interrupted()


def test_a_node_that_swallowed_the_cancel_would_run_on(monkeypatch):
    """The stand-in is no kinder than core: a should_stop that swallows the first Cancel lets Remove Background
    process every image (as it would in core), so the Cancel tests above prove the pack lets it through."""
    install_comfy(monkeypatch, interrupt_after=2)
    env = sub("nodes.comfy_env")
    real = env.should_stop

    def swallowing():
        try:
            return real()
        except BaseException:
            return False

    monkeypatch.setattr(env, "should_stop", swallowing)
    model = standin_model()
    remove(half_white(4, 16, 16), model=model, batch_size=1)
    assert len(model.net.seen) == 4


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
    monkeypatch.setattr(sub("nodes.model_cache"), "vitmatte_model", lambda device, image_hw=None: net)
    img = torch.full((1, 96, 1100, 3), 0.1)
    img[:, 20:76, 60:1040] = 0.9
    mask = torch.zeros(1, 96, 1100)
    mask[:, 24:72, 64:1036] = 1.0
    trimap = importlib.import_module(f"{PACK_NAME}.ben_core.matting.trimap").make_trimap(mask, "band", 4)[0]
    plan = importlib.import_module(f"{PACK_NAME}.ben_core.matting.vitmatte").vitmatte_tiles(
        96, 1100, trimap == 0.5, 512, 64)
    assert len(plan) >= 3
    with pytest.raises(comfy.InterruptProcessingException):
        refine(img, mask, "vitmatte", 0, 0.0, "band", 4, False, "RGBA", "#FFFFFF")
    assert tiles == [1]  # one tile ran, the next was not started


# -------------------------------------------------------------------------------- node outputs' dtype

@pytest.mark.parametrize("want", [torch.float16, torch.float32])
def test_every_node_output_follows_fp16_intermediates(monkeypatch, want):
    """2026's --fp16-intermediates (``intermediate_dtype()`` = float16): every IMAGE and MASK the nodes output is
    in that dtype, through one helper; without it float32, even when the inputs came in fp16."""
    install_comfy(monkeypatch, intermediate_dtype=want if want == torch.float16 else None)
    img, mask = edge_scene()
    if want == torch.float32:
        img, mask = img.half(), mask.half()
    got = {"remove": remove(img, model=standin_model()),
           "refine guided": refine(img, mask, "guided", 0, 0.0, "band", 4, True, "RGB", "#FFFFFF"),
           "show trimap": show(img, mask)[0],
           "core's Remove Background": (CoreRemoveBackground.execute(standin_model(), img.float(), 512),)}
    wrong = {k: [t.dtype for t in v] for k, v in got.items() if any(t.dtype != want for t in v)}
    assert wrong == {}
    assert all(torch.isfinite(t).all() for v in got.values() for t in v)


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


# --------------------------------------------------------------------------- who owns the network

def test_dropping_the_node_outputs_frees_the_network(tmp_path, monkeypatch):
    """2026's RAM-pressure cache drops node outputs holding a ``.patcher`` first: once no output holds Load BEN's
    network any more, its weights must go (the pack's cache holds them weakly; core's current_loaded_models holds
    patchers weakly too). While an output holds it, every Load BEN of that file shares the one network."""
    import gc
    import weakref

    comfy = install_comfy(monkeypatch, device="meta", dynamic=True)
    mc = sub("nodes.model_cache")
    f = tmp_path / "small.pth"
    f.write_bytes(b"1")
    loads = []

    def loader(path, device, dtype):
        loads.append(path)
        return small_ben()

    first = mc.get_model(str(f), META, torch.float32, loader=loader)
    second = mc.get_model(str(f), META, torch.float32, loader=loader)  # another Load BEN node: shared
    assert second is first and len(loads) == 1
    first.prepare(1, 512)
    mm = sys.modules["comfy.model_management"]
    assert mm.loaded_models() == [first.patcher]
    refs = [weakref.ref(x) for x in (first, first.net, first.patcher, next(first.net.parameters()))]
    del first, second  # core drops the outputs
    comfy.calls.clear()  # (the stand-in's own record of calls; core keeps none)
    gc.collect()
    assert [r() for r in refs] == [None] * 4
    assert mm.loaded_models() == [] and len(mc._cache) == 0
    again = mc.get_model(str(f), META, torch.float32, loader=loader)  # the next run loads it again
    assert len(loads) == 2 and again.net is not None


# --------------------------------------------------------------------------------- memory asked of core

def test_remove_background_asks_core_for_its_chunk_and_image_size(monkeypatch):
    """The memory a node asks ComfyUI to free besides the weights is ben_core.memory's measured formula: it grows
    with batch, working size and the image's own size (full-resolution tensors), and in half precision over
    float32 weights it includes autocast's half copies of the weights."""
    comfy = install_comfy(monkeypatch)
    mem = importlib.import_module(f"{PACK_NAME}.ben_core.memory")
    model = standin_model()
    remove(half_white(2, 48, 64), model=model, batch_size=2)  # working size 512
    asked = [c[2] for c in comfy.calls if c[0] == "load_models_gpu"][-1]
    assert asked == mem.cutout_bytes(2, 512, torch.float32, (48, 64))
    hd, uhd = model.memory_estimate(1, 1024, (1080, 1920)), model.memory_estimate(1, 1024, (2160, 3840))
    assert uhd > hd > model.memory_estimate(1, 1024)  # the image's own size counts
    assert model.memory_estimate(4, 1024, (1080, 1920)) > hd > model.memory_estimate(1, 512, (1080, 1920))
    half = sub("nodes.model_cache").LoadedBEN("h.pth", standin_model().net, CPU, torch.float16)
    weights = sum(p.numel() for p in half.net.parameters()) * 2
    assert half.memory_estimate(1, 1024) == mem.cutout_bytes(1, 1024, torch.float16, None, weights)


def test_refine_mask_and_vitmatte_ask_core_for_room(monkeypatch):
    """Refine Mask keeps no model of its own on the device: its guided filter asks core to free what it needs
    (free_memory on a GPU, nothing on the CPU); ViTMatte asks with its load."""
    comfy = install_comfy(monkeypatch)
    mem = importlib.import_module(f"{PACK_NAME}.ben_core.memory")
    env = sub("nodes.comfy_env")
    asked = []
    real_reserve = env.reserve
    monkeypatch.setattr(env, "reserve", lambda n, device: (asked.append((n, device)), real_reserve(n, device))[1])
    img, mask = edge_scene()
    refine(img, mask, "guided", 0, 0.0, "band", 4, True, "RGBA", "#FFFFFF")
    assert asked == [(mem.with_margin(mem.refine_bytes((64, 64))), CPU)]
    assert not [c for c in comfy.calls if c[0] == "free_memory"]  # the CPU: nothing to free
    real_reserve(12345, META)
    assert comfy.calls[-1] == ("free_memory", 12345, "meta")
    vm = importlib.import_module(f"{PACK_NAME}.ben_core.matting.vitmatte")
    monkeypatch.setattr(vm, "load_vitmatte", lambda device="cpu", **kw: torch.nn.Linear(2, 2))
    sub("nodes.model_cache").vitmatte_model(CPU, (720, 1280))
    load = [c for c in comfy.calls if c[0] == "load_models_gpu"][-1]
    assert load[2] == mem.with_margin(mem.vitmatte_bytes((720, 1280))) > mem.VITMATTE_TILE_BYTES
