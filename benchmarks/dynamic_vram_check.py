"""Section "dynamic VRAM and Cancel" of the device check (benchmarks/gpu_check.py).

The nodes of this pack, run on the device through the stand-in of a 2026 core with dynamic VRAM on
(tests/comfy_stub: ``ModelPatcherDynamic`` as comfy/model_patcher.py @ 08d0e51 moves weights, core's
``load_models_gpu`` / ``unload_all_models``; not ComfyUI itself, which cannot be installed on the lent
machine), on synthetic weights written to a temporary checkpoint and loaded by Load BEN's own code:

1. load -> run -> offload -> run again: how much the device holds after the load (against the state dict's
   bytes), what is left after core's offload (``torch.cuda.memory_allocated`` against the baseline), whether
   the two runs give identical masks, and the seconds of the first prepare, of a prepare while loaded
   (core copies the weights afresh on every load) and of the prepare after the offload;
2. a Cancel in the middle of every long node (Remove Background, Remove Video Background, Refine Mask guided,
   Refine Mask ViTMatte tiles when ``transformers`` is there): the interrupt reaches the caller, no file is
   left in the output or temp folder, and after core's offload the device holds what it held before.

3. every VRAM state (``--gpu-only``, ``--highvram``, normal, ``--lowvram``, ``--novram`` as the stand-in
   maps them, after comfy/model_management.py's load_models_gpu), and with torch.compile + CUDA graphs under
   normal and ``--novram``: load -> run -> core unloads everything -> run again, on a narrow BENBase at
   512: every weight on the device the inputs go to after each load, core's count of the loaded bytes,
   identical masks, no error (a device mismatch would raise).

On the CPU (``--device cpu``) core hands the network a plain ModelPatcher (its rule for CPU load devices):
the section then runs the same steps as a smoke test, without device-memory figures (and without the
CUDA-graph rows).
"""
from __future__ import annotations

import gc
import importlib
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.comfy_stub import install_comfy, make_folder_paths  # noqa: E402
from tests.helpers import PACK_NAME, load_pack, synth_sd  # noqa: E402

#: Device memory that may stay allocated after core's offload: each cached predictor keeps its two
#: normalisation constants (one allocator block each).
LEFTOVER_OK_BYTES = 64 * 1024


class _Modules:
    """The ``monkeypatch.setitem`` that tests/comfy_stub.install_comfy uses, for a script: undone at the end."""

    def __init__(self):
        self._saved = []

    def setitem(self, mapping, key, value):
        self._saved.append((mapping, key, mapping.get(key, _Modules)))
        mapping[key] = value

    def undo(self):
        for mapping, key, old in reversed(self._saved):
            if old is _Modules:
                mapping.pop(key, None)
            else:
                mapping[key] = old
        self._saved.clear()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _allocated(device) -> int | None:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else None


def _timed(device, fn):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def _files(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _write_clip(path: Path, n: int, width: int, height: int) -> Path:
    """A small H.264 (or MPEG-4) MP4: a bright disc moving over a dark ramp."""
    import av

    with av.open(str(path), "w") as c:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        vs = c.add_stream(codec, rate=Fraction(12))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(n):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 2] = np.linspace(0, 80, width, dtype=np.uint8)[None]
            disc = (yy - height / 2) ** 2 + (xx - width / 3 - 4 * i) ** 2 < (height / 4) ** 2
            img[disc] = 230
            c.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(vs.encode(None))
    return path


def _narrow_ben(path, device, dtype):
    """get_model's loader for --quick: the pack's BENBase with 32 channels, seeded random weights."""
    ben2 = importlib.import_module(f"{PACK_NAME}.ben_core.model.ben2")
    g = torch.Generator().manual_seed(0)
    net = ben2.BENBase(embed_dim=32, depths=(1, 2, 1, 2), num_heads=(1, 2, 2, 4)).eval().requires_grad_(False)
    for p in net.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net.to(device)


def run(device: torch.device, dtype: torch.dtype, quick: bool, log) -> dict:
    """Both parts of the section; returns the figures and checks as a dict (see the module docstring)."""
    modules = _Modules()
    work = Path(tempfile.mkdtemp(prefix="ben2_dynamic_vram_"))
    try:
        return _run(device, dtype, quick, log, modules, work)
    finally:
        modules.undo()


def _run(device, dtype, quick, log, modules, work) -> dict:
    from safetensors.torch import save_file

    comfy = install_comfy(modules, device=str(device), dynamic=True)
    fp = make_folder_paths(str(work / "models"))
    modules.setitem(sys.modules, "folder_paths", fp)
    load_pack()
    mc = importlib.import_module(f"{PACK_NAME}.nodes.model_cache")
    nodes = importlib.import_module(PACK_NAME).NODE_CLASS_MAPPINGS
    mm = sys.modules["comfy.model_management"]
    ckpt = work / "synthetic.safetensors"
    loader = None
    if quick:  # the smoke test: a narrow BENBase (the same modules), no checkpoint to write and read
        ckpt.write_bytes(b"quick")
        loader = _narrow_ben
    else:
        save_file(synth_sd(0), str(ckpt))
    size = 512 if quick else 1024
    result: dict = {"device": str(device), "dtype": str(dtype).replace("torch.", ""), "working_size": size,
                    "network": "narrow BENBase (--quick)" if quick else "BENBase, synthetic weights"}

    gc.collect()
    baseline = _allocated(device)
    model = mc.get_model(str(ckpt), device, dtype, loader=loader)
    net = model.net
    state_bytes = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    result.update(patcher=type(model.patcher).__name__, dynamic=bool(model.patcher.is_dynamic()),
                  state_dict_mib=state_bytes / 2 ** 20)
    log(f"  patcher {result['patcher']} (dynamic {result['dynamic']}), weights {result['state_dict_mib']:.0f} MiB")

    images = torch.rand(2, 360, 480, 3, generator=torch.Generator().manual_seed(0))
    remove = nodes["BEN2_RemoveBackground"]

    def cut():
        return remove.execute(model, images, "RGBA", "#FFFFFF", False, False, 1, str(size)).args[1]

    _, result["first_prepare_s"] = _timed(device, lambda: model.prepare(1, size))
    held = None if baseline is None else _allocated(device) - baseline
    result["held_after_load_mib"] = None if held is None else held / 2 ** 20
    result["accounted_by_core_mib"] = model.patcher.loaded_size() / 2 ** 20
    tensors = list(net.parameters()) + list(net.buffers())
    result["weights_on_device"] = all(t.device.type == device.type for t in tensors)
    first = cut()
    _, result["prepare_while_loaded_s"] = _timed(device, lambda: model.prepare(1, size))
    mm.unload_all_models()
    gc.collect()
    left = None if baseline is None else _allocated(device) - baseline
    result["left_after_offload_bytes"] = left
    on_device = [n for n, t in list(net.named_parameters()) + list(net.named_buffers()) if t.device.type != "cpu"]
    more = [f"... {len(on_device) - 5} more"] if len(on_device) > 5 else []
    result["tensors_left_on_device"] = on_device[:5] + more
    _, result["prepare_after_offload_s"] = _timed(device, lambda: model.prepare(1, size))
    second = cut()
    result["masks_identical"] = bool(torch.equal(first, second))
    result["masks_max_abs_diff"] = float((first - second).abs().max())
    result["vram_returned"] = (not on_device) and (left is None or left <= LEFTOVER_OK_BYTES)
    log(f"  prepare: first {result['first_prepare_s']:.3f} s, while loaded {result['prepare_while_loaded_s']:.3f} s, "
        f"after offload {result['prepare_after_offload_s']:.3f} s; left after offload {left} B; "
        f"masks identical {result['masks_identical']}")
    mm.unload_all_models()

    # ---- Cancel in the middle of every long node
    cancels = []
    out_dir, temp_dir = Path(fp.get_output_directory()), Path(fp.get_temp_directory())

    def cancel(name, fn, after):
        gc.collect()
        before = _allocated(device)
        comfy.progress.clear()
        comfy.interrupt_when = after
        row = {"node": name}
        try:
            fn()
            row["interrupted"] = False
        except comfy.InterruptProcessingException:
            row["interrupted"] = True
        finally:
            comfy.interrupt_when = None
        row["progress_seen"] = list(comfy.progress)
        mm.unload_all_models()
        gc.collect()
        row["left_bytes"] = None if before is None else _allocated(device) - before
        row["files_left"] = _files(out_dir) + _files(temp_dir)
        row["ok"] = row["interrupted"] and not row["files_left"] and (row["left_bytes"] is None or
                                                                       row["left_bytes"] <= LEFTOVER_OK_BYTES)
        cancels.append(row)
        log(f"  cancel {name}: interrupted {row['interrupted']}, left {row['left_bytes']} B, files {row['files_left']}")

    after_first = lambda ns: len(ns.progress) >= 1  # noqa: E731 - the Cancel once the first step is reported
    cancel("Remove Background", lambda: remove.execute(model, torch.rand(3, 360, 480, 3), "RGBA", "#FFFFFF", True,
                                                         False, 1, str(size)), after_first)
    try:
        import av  # noqa: F401
        clip = _write_clip(work / "clip.mp4", 6, 320, 240)
        video = importlib.import_module("comfy_api.latest").InputImpl.VideoFromFile(str(clip))
        cancel("Remove Video Background", lambda: nodes["BEN2_RemoveVideoBackground"].execute(
            model, video, video_format="webm", working_size=str(size), batch_size=2), after_first)
    except ImportError:
        cancels.append({"node": "Remove Video Background", "skipped": "PyAV is not installed"})
    img = torch.full((3, 256, 320, 3), 0.1)
    img[:, 64:192, 80:240] = 0.9
    mask = torch.zeros(3, 256, 320)
    mask[:, 70:186, 86:234] = 1.0
    refine = nodes["BEN2_RefineMask"]
    cancel("Refine Mask (guided)", lambda: refine.execute(img, mask, "guided", 0, 0.0, "band", 4, True, "RGBA",
                                                          "#FFFFFF"), after_first)
    try:
        from tests.helpers import tiny_vitmatte

        vit = tiny_vitmatte(layers=1)
        vm = importlib.import_module(f"{PACK_NAME}.ben_core.matting.vitmatte")
        real_load, tiles = vm.load_vitmatte, []
        vm.load_vitmatte = lambda device="cpu", **kw: vit.to(device)
        vit.register_forward_hook(lambda *a: tiles.append(1))
        wide = torch.full((1, 96, 1100, 3), 0.1)
        wide[:, 20:76, 60:1040] = 0.9
        band = torch.zeros(1, 96, 1100)
        band[:, 24:72, 64:1036] = 1.0
        try:
            cancel("Refine Mask (ViTMatte tiles)", lambda: refine.execute(wide, band, "vitmatte", 0, 0.0, "band", 4,
                                                                         False, "RGBA", "#FFFFFF"),
                   lambda ns: len(tiles) >= 1)
            cancels[-1]["tiles_run"] = len(tiles)
        finally:
            vm.load_vitmatte = real_load
    except ImportError:
        cancels.append({"node": "Refine Mask (ViTMatte tiles)", "skipped": "transformers is not installed"})
    result["cancel"] = cancels
    modules.undo()
    result["vram_states"] = vram_states(device, dtype, log, work)
    result["ok"] = bool(result["vram_returned"] and result["masks_identical"]
                        and all(r.get("ok", "skipped" in r) for r in cancels)
                        and all(r["ok"] for r in result["vram_states"]))
    return result


#: The VRAM states of part 3, and those also run with torch.compile + CUDA graphs (on CUDA only).
VRAM_STATES = ("gpu-only", "highvram", "normal", "lowvram", "novram")
CUDA_GRAPH_STATES = ("normal", "novram")


def vram_states(device, dtype, log, work: Path) -> list:
    """Part 3 (see the module docstring): one row per (VRAM state, compile mode)."""
    from collections import OrderedDict

    ckpt = work / "narrow.safetensors"
    ckpt.write_bytes(b"narrow")
    images = torch.rand(2, 200, 264, 3, generator=torch.Generator().manual_seed(3))
    runs = [(state, None) for state in VRAM_STATES]
    if device.type == "cuda":
        runs += [(state, "reduce-overhead") for state in CUDA_GRAPH_STATES]
    rows = []
    for state, compile_mode in runs:
        modules = _Modules()
        row = {"vram": state, "compile": compile_mode or "off"}
        try:
            install_comfy(modules, device=str(device), vram=state, dynamic=compile_mode is None)
            mc = importlib.import_module(f"{PACK_NAME}.nodes.model_cache")
            modules.setitem(vars(mc), "_cache", OrderedDict())
            remove = importlib.import_module(PACK_NAME).NODE_CLASS_MAPPINGS["BEN2_RemoveBackground"]
            mm = sys.modules["comfy.model_management"]
            model = mc.get_model(str(ckpt), device, dtype, compile_mode, loader=_narrow_ben)
            net = model.net

            def cut(remove=remove, model=model, net=net):  # called twice in this iteration only; bound explicitly
                mask = remove.execute(model, images, "RGBA", "#FFFFFF", False, False, 2, "512").args[1]
                tensors = list(net.parameters()) + list(net.buffers())
                return mask, all(t.device.type == device.type for t in tensors)

            t0 = time.perf_counter()
            first, row["weights_on_device_1"] = cut()
            row["first_run_s"] = time.perf_counter() - t0
            row["accounted_mib"] = model.patcher.loaded_size() / 2 ** 20
            mm.unload_all_models()
            second, row["weights_on_device_2"] = cut()
            row["masks_identical"] = bool(torch.equal(first, second))
            row["patcher"] = type(model.patcher).__name__
            row["ok"] = row["weights_on_device_1"] and row["weights_on_device_2"] and row["masks_identical"]
        except Exception as e:  # a device mismatch raises here: recorded, the next state still runs
            row.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
        finally:
            modules.undo()
        rows.append(row)
        log(f"  vram {state}, compile {row['compile']}: ok {row['ok']}" + (f" ({row['error']})" if "error" in row
                                                                          else ""))
    return rows


def report_lines(r: dict) -> list:
    """The section's Markdown lines for gpu_check.md."""
    def num(v, spec):
        return "-" if v is None else format(v, spec)

    lines = [f"## Dynamic VRAM and Cancel (stand-in of a 2026 core with dynamic VRAM; {r['patcher']}, "
             f"{r['network']}, {r['dtype']}, working size {r['working_size']})", "",
             "| check | value | ok |", "|---|---|---|",
             f"| held on the device after the load / accounted by core / state dict | "
             f"{num(r['held_after_load_mib'], '.1f')} / {r['accounted_by_core_mib']:.1f} / "
             f"{r['state_dict_mib']:.1f} MiB "
             f"| {r['weights_on_device']} |",
             f"| left after core's offload | {num(r['left_after_offload_bytes'], 'd')} B, tensors left: "
             f"{r['tensors_left_on_device'] or 'none'} | {r['vram_returned']} |",
             f"| masks of run 1 and run 2 (after offload and reload) | max abs diff {r['masks_max_abs_diff']:.1e} "
             f"| {r['masks_identical']} |",
             f"| prepare: first / while loaded / after offload | {r['first_prepare_s']:.3f} / "
             f"{r['prepare_while_loaded_s']:.3f} / {r['prepare_after_offload_s']:.3f} s | |"]
    for row in r.get("vram_states", []):
        if "error" in row:
            lines.append(f"| VRAM state {row['vram']}, compile {row['compile']} | {row['error']} | False |")
        else:
            lines.append(f"| VRAM state {row['vram']}, compile {row['compile']} ({row['patcher']}): weights on the "
                         f"device after load / after reload, core counts {row['accounted_mib']:.1f} MiB, masks "
                         f"identical, first run {row['first_run_s']:.2f} s | {row['weights_on_device_1']} / "
                         f"{row['weights_on_device_2']}, {row['masks_identical']} | {row['ok']} |")
    for row in r["cancel"]:
        if "skipped" in row:
            lines.append(f"| Cancel mid-run: {row['node']} | skipped: {row['skipped']} | |")
        else:
            lines.append(f"| Cancel mid-run: {row['node']} | interrupted {row['interrupted']}, progress "
                         f"{row['progress_seen']}, left {num(row['left_bytes'], 'd')} B, files "
                         f"{row['files_left'] or 'none'}"
                         f" | {row['ok']} |")
    return lines + [""]
