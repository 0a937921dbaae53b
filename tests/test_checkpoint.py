"""Checkpoint formats (.pth wrapper / flat, .safetensors) and every bad-file case."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import synth_sd

from ben_core.model.weights import CheckpointError, WeightsNotFoundError, check_state_dict, load_ben, read_state_dict

CHECK_KEYS = ("backbone.patch_embed.proj.weight", "backbone.layers.2.blocks.17.mlp.fc2.bias",
              "backbone.layers.0.blocks.0.attn.relative_position_index")


@pytest.fixture(scope="module")
def sd():
    return synth_sd(0)


@pytest.fixture(scope="module")
def files(sd, tmp_path_factory):
    """The synthetic weights saved the three supported ways (done once: ~380 MB each)."""
    d = tmp_path_factory.mktemp("ckpt")
    wrapped = d / "BEN2_Base.pth"
    torch.save({"model_state_dict": sd, "epoch": 7,
                "optimizer_state_dict": {"state": {0: {"exp_avg": torch.zeros(3)}},
                                         "param_groups": [{"lr": 1e-4, "params": [0]}]}}, wrapped)
    flat = d / "flat.pth"
    torch.save(sd, flat)
    from safetensors.torch import save_file

    st = d / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    return {"wrapped": wrapped, "flat": flat, "safetensors": st}


@pytest.mark.slow
def test_load_weights_assign_replaces_meta_and_keeps_the_models_dtype(files, sd):
    """ComfyUI's dynamic-VRAM pattern: a network built without memory (meta) gets the file's tensors
    (assign=True): no meta tensor survives, dtypes are the model's, values the file's. Without assign a
    meta network would stay meta (the 'meta tensor' crashes of packs that ignored dynamic VRAM)."""
    from ben_core.model import BENBase
    from ben_core.model.weights import load_weights

    with torch.device("meta"):
        net = BENBase()
    load_weights(net, files["safetensors"], assign=True)
    state = net.state_dict()
    assert not [k for k, v in state.items() if v.device.type == "meta"]
    assert all(torch.equal(state[k], sd[k]) and state[k].dtype == sd[k].dtype for k in CHECK_KEYS)
    half = BENBase().to(torch.bfloat16)
    load_weights(half, files["safetensors"], assign=True)
    assert half.state_dict()[CHECK_KEYS[0]].dtype == torch.bfloat16
    assert half.state_dict()[CHECK_KEYS[2]].dtype == sd[CHECK_KEYS[2]].dtype  # integer buffer kept
    with torch.device("meta"):
        stays = BENBase()
    with pytest.warns(UserWarning, match="meta parameter"):  # torch: copying into meta is a no-op
        load_weights(stays, files["safetensors"], assign=False)
    assert stays.state_dict()[CHECK_KEYS[0]].device.type == "meta"


def _small(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


# ------------------------------------------------------------------------------------------------
# good files
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wrapped", "flat", "safetensors"])
def test_read_state_dict_all_formats(kind, files, sd):
    got = read_state_dict(files[kind])
    assert set(got) == set(sd) and len(got) == 535
    for k in CHECK_KEYS:
        assert torch.equal(got[k], sd[k]) and got[k].device.type == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize("kind,dtype", [("wrapped", torch.float32), ("safetensors", torch.bfloat16)])
def test_load_ben_ready_to_run(kind, dtype, files, sd):
    model = load_ben(files[kind], device="cpu", dtype=dtype)
    from ben_core.model import BENBase

    assert isinstance(model, BENBase)
    assert not model.training and all(not m.training for m in model.modules())
    assert all(not p.requires_grad for p in model.parameters())
    state = model.state_dict()
    for k in CHECK_KEYS:
        want = sd[k].to(dtype) if sd[k].is_floating_point() else sd[k]
        assert state[k].dtype == want.dtype and torch.equal(state[k], want)


def test_small_flat_and_legacy_formats_and_prefix(tmp_path):
    tensors = {"a.weight": torch.randn(3, 2), "b.bias": torch.arange(4)}
    p = _small(tmp_path / "flat.pt", tensors)
    got = read_state_dict(p)
    assert set(got) == set(tensors) and torch.equal(got["a.weight"], tensors["a.weight"])
    legacy = tmp_path / "legacy.pth"
    torch.save(tensors, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(read_state_dict(legacy)["b.bias"], tensors["b.bias"])
    ddp = _small(tmp_path / "ddp.ckpt", {"state_dict": {f"module.{k}": v for k, v in tensors.items()}})
    assert set(read_state_dict(ddp)) == set(tensors)
    # extension differs from content: the content decides
    from safetensors.torch import save_file

    odd = tmp_path / "really_safetensors.pth"
    save_file(tensors, str(odd))
    assert set(read_state_dict(odd)) == set(tensors)


# ------------------------------------------------------------------------------------------------
# bad files
# ------------------------------------------------------------------------------------------------

def test_missing_file_lists_locations_and_source(tmp_path):
    missing = tmp_path / "models" / "BEN" / "BEN2_Base.pth"
    other = tmp_path / "elsewhere" / "model.safetensors"
    with pytest.raises(WeightsNotFoundError) as info:
        read_state_dict(missing, search_locations=[other])
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert str(missing) in msg and str(other) in msg
    assert "PramaLLC/BEN2" in msg and "model.safetensors" in msg and "BEN2_Base.pth" in msg
    with pytest.raises(WeightsNotFoundError):
        load_ben(missing)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wrapped", "safetensors"])
def test_truncated_real_file(kind, files, tmp_path):
    src = files[kind]
    bad = tmp_path / src.name
    with open(src, "rb") as f:
        bad.write_bytes(f.read(src.stat().st_size // 2))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(bad)


def test_truncated_small_files(tmp_path):
    from safetensors.torch import save_file

    tensors = {"w": torch.randn(64, 64)}
    p = _small(tmp_path / "x.pth", tensors)
    s = tmp_path / "x.safetensors"
    save_file(tensors, str(s))
    for path in (p, s):
        data = path.read_bytes()
        for cut in (len(data) - 100, len(data) // 2, 40):
            path.write_bytes(data[:cut])
            with pytest.raises(CheckpointError, match="truncated or corrupt|not a PyTorch"):
                read_state_dict(path)


@pytest.mark.parametrize("name", ["noise.pth", "noise.safetensors", "noise.ckpt"])
def test_random_bytes(name, tmp_path):
    p = tmp_path / name
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError):
        read_state_dict(p)


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html><body>Access denied</body></html>", "HTML"),
    (b"hello world, this is not a checkpoint at all", "not a PyTorch or safetensors"),
])
def test_not_a_checkpoint(content, match, tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(p)


@pytest.mark.parametrize("name", ["model.onnx", "image.png", "weights"])
def test_unsupported_extension(name, tmp_path):
    p = _small(tmp_path / name, {"w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unsupported file type"):
        read_state_dict(p)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_and_foreign_zip(tmp_path):
    ts = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(ts))
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_state_dict(ts)
    import zipfile

    z = tmp_path / "archive.pth"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("readme.txt", "not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_state_dict(z)


def test_unavailable_device_fails_before_reading(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="not available"):
        load_ben(tmp_path / "missing.pth", device="cuda")


def test_directory_is_not_a_checkpoint(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="folder"):
        read_state_dict(tmp_path)


def _make_marker(path):
    Path(path).touch()


class _Payload:
    """Unpickling this would create a marker file: weights_only must refuse it before that happens."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_make_marker, (self.marker,))


class CustomThing:
    def __init__(self):
        self.value = 3


def test_unsafe_pickle_refused_never_executed(tmp_path):
    marker = tmp_path / "EXECUTED"
    p = _small(tmp_path / "evil.pth", {"model_state_dict": {"w": torch.zeros(2)}, "extra": _Payload(marker)})
    with pytest.raises(CheckpointError) as info:
        read_state_dict(p)
    assert not marker.exists()
    msg = str(info.value)
    assert "refusing" in msg.lower() and "safety" in msg and "_make_marker" in msg
    # a plain custom class is refused the same way (weights_only allows tensors and primitives only)
    q = _small(tmp_path / "custom.pth", {"model_state_dict": {"w": torch.zeros(2)}, "cfg": CustomThing()})
    with pytest.raises(CheckpointError, match="safety") as info:
        read_state_dict(q)
    assert "CustomThing" in str(info.value)
    # the payload is live (an unsafe load would run it), so the check above can fail
    torch.load(p, weights_only=False)
    assert marker.exists()


def test_non_tensor_flat_dict_and_non_dict(tmp_path):
    p = _small(tmp_path / "meta.pth", {"epoch": 3, "lr": 0.1, "w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="non-tensor entries"):
        read_state_dict(p)
    q = _small(tmp_path / "list.pth", [torch.zeros(1)])
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(q)
    r = _small(tmp_path / "nothing.pth", {"model_state_dict": {}})
    with pytest.raises(CheckpointError, match="no tensors"):
        read_state_dict(r)


# ------------------------------------------------------------------------------------------------
# wrong model / wrong shapes (validation against the network's own state_dict keys)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def expected():
    from ben_core.model import BENBase

    with torch.device("meta"):
        return BENBase().state_dict()


def test_check_state_dict_accepts_exact_keys(sd, expected):
    check_state_dict(sd, expected)


def test_birefnet_checkpoint_named(tmp_path, expected):
    other = {"bb.layers.0.blocks.0.attn.qkv.weight": torch.zeros(2, 2),
             "squeeze_module.0.dec_att.aspp1.atrous_conv.weight": torch.zeros(1),
             "decoder.ipt_blk5.conv1.weight": torch.zeros(1), "decoder.gdt_convs_4.0.weight": torch.zeros(1)}
    p = _small(tmp_path / "BiRefNet-general.pth", other)
    with pytest.raises(CheckpointError) as info:
        load_ben(p)
    msg = str(info.value)
    assert "BiRefNet" in msg and "Missing 535 keys" in msg and "Unexpected 4 keys" in msg
    assert "decoder.ipt_blk5.conv1.weight" in msg and "0 of 535" in msg


def test_rmbg14_checkpoint_named(expected):
    other = {"conv_in.weight": torch.zeros(1), "stage1.rebnconvin.conv_s1.weight": torch.zeros(1),
             "side1.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="RMBG-1.4"):
        check_state_dict(other, expected)


def test_partial_mismatch_lists_keys_and_counts(sd, expected):
    bad = dict(sd)
    dropped = sorted(bad)[:3]
    for k in dropped:
        del bad[k]
    bad["head.extra.weight"] = torch.zeros(1)
    bad["head.extra.bias"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        check_state_dict(bad, expected, source="mine.pth")
    msg = str(info.value)
    assert "mine.pth" in msg and "Missing 3 keys" in msg and "Unexpected 2 keys" in msg
    assert all(k in msg for k in dropped) and "head.extra.bias" in msg and "532 of 535" in msg
    assert "BiRefNet" not in msg


def test_shape_mismatch_named(sd, expected):
    bad = dict(sd)
    k = "backbone.patch_embed.proj.weight"
    bad[k] = torch.zeros(64, 3, 4, 4)
    with pytest.raises(CheckpointError) as info:
        check_state_dict(bad, expected)
    msg = str(info.value)
    assert k in msg and "(64, 3, 4, 4)" in msg and str(tuple(sd[k].shape)) in msg


def test_nan_weights_rejected(sd, expected):
    bad = dict(sd)
    k = "backbone.norm3.weight" if "backbone.norm3.weight" in sd else sorted(k for k in sd if k.endswith("weight"))[0]
    bad[k] = sd[k].clone()
    bad[k].view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        check_state_dict(bad, expected)
    assert torch.isfinite(sd[k]).all()  # the caller's tensors were not touched


def test_integer_buffer_as_float_rejected(sd, expected):
    bad = dict(sd)
    k = "backbone.layers.0.blocks.0.attn.relative_position_index"
    bad[k] = sd[k].float()
    with pytest.raises(CheckpointError, match="kind of dtype"):
        check_state_dict(bad, expected)


def test_load_ben_rejects_bad_dtype(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        load_ben(tmp_path / "x.pth", dtype=torch.int8)
