"""The one precision resolver (ben_core.devices) on CPUs with and without native bf16, with the CPU's
capability mocked: what ``auto`` picks, which explicit choices warn, and that the CLI and Load BEN get the
same answer. The speed and agreement behind the rule are measured by benchmarks/bench_precision.py."""
from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from helpers import PACK_NAME, load_pack

from ben_core import devices

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_capability():
    devices.cpu_native_bf16.cache_clear()
    yield
    devices.cpu_native_bf16.cache_clear()


def native(monkeypatch, value: bool, module=devices):
    monkeypatch.setattr(module, "cpu_native_bf16", lambda: value)


@pytest.mark.parametrize("avx512_bf16,amx,expected", [(True, False, True), (False, True, True), (False, False, False)])
def test_capability_comes_from_torchs_cpu_checks(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(devices, "_cpuinfo_flags", lambda: frozenset({"avx512_bf16"}))  # not asked
    assert devices.cpu_native_bf16() is expected


def test_capability_from_cpuinfo_when_torch_has_no_checks(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.setattr(devices, "_cpuinfo_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert devices.cpu_native_bf16() is True
    devices.cpu_native_bf16.cache_clear()
    monkeypatch.setattr(devices, "_cpuinfo_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert devices.cpu_native_bf16() is False


def test_a_check_that_cannot_run_counts_as_absent(monkeypatch):
    def broken():
        raise RuntimeError("not supported on this build")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert devices.cpu_native_bf16() is False


def test_cpuinfo_flags_of_this_machine_parse():
    flags = devices._cpuinfo_flags()
    assert isinstance(flags, frozenset) and all(" " not in f for f in flags)


@pytest.mark.parametrize("has_bf16,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_the_cpu_follows_native_bf16_silently(monkeypatch, has_bf16, expected):
    native(monkeypatch, has_bf16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert devices.resolve_precision("auto", CPU) == expected
        assert devices.resolve_precision("fp32", CPU) == torch.float32  # never a warning


def test_bf16_warns_only_where_it_is_slow(monkeypatch):
    native(monkeypatch, False)
    with pytest.warns(UserWarning, match="no native bf16") as record:
        assert devices.resolve_precision("bf16", CPU) == torch.bfloat16  # kept as asked
    assert "slower than fp32" in str(record[0].message)
    native(monkeypatch, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert devices.resolve_precision("bf16", CPU) == torch.bfloat16


@pytest.mark.parametrize("has_bf16", [True, False])
def test_fp16_on_the_cpu_still_becomes_fp32(monkeypatch, has_bf16):
    native(monkeypatch, has_bf16)
    with pytest.warns(UserWarning, match="fp16 on the CPU"):
        assert devices.resolve_precision("fp16", CPU) == torch.float32


def test_gpus_do_not_ask_the_cpu(monkeypatch):
    def fail():
        raise AssertionError("the CPU's capability was asked for a GPU device")

    monkeypatch.setattr(devices, "cpu_native_bf16", fail)
    cuda = torch.device("cuda")
    assert devices.resolve_precision("auto", cuda) == torch.float16
    assert devices.resolve_precision("auto", cuda, fp16_ok=lambda d: False) == torch.float32
    assert devices.resolve_precision("auto", cuda, fp16_ok=lambda d: False, bf16_ok=lambda d: True) == torch.bfloat16
    assert devices.resolve_precision("bf16", cuda, bf16_ok=lambda d: True) == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be auto"):
        devices.resolve_precision("int8", CPU)


@pytest.mark.parametrize("has_bf16,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_the_cli_gets_the_resolvers_answer(monkeypatch, has_bf16, expected):
    from ben_core.apps import cli, jobs

    native(monkeypatch, has_bf16)
    seen = {}
    monkeypatch.setattr(jobs, "load_predictor", lambda ckpt, device, dtype, *a: seen.update(device=device, dtype=dtype))
    jobs.build_predictor(cli.build_parser().parse_args(["x", "-o", "y", "--device", "cpu"]), log=lambda m: None)
    assert seen == {"device": CPU, "dtype": expected}


@pytest.mark.parametrize("has_bf16,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_load_ben_gets_the_resolvers_answer(monkeypatch, has_bf16, expected):
    load_pack()
    load_ben = importlib.import_module(f"{PACK_NAME}.nodes.load_ben")
    native(monkeypatch, has_bf16, importlib.import_module(f"{PACK_NAME}.ben_core.devices"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_ben.resolve_precision("auto", CPU) == expected


@pytest.mark.parametrize("native", [True, False])
def test_bf16_only_where_the_device_computes_it(monkeypatch, native):
    """An explicit bf16 on a GPU without bf16 (NVIDIA before Ampere: torch emulates it) becomes fp32 with a
    warning; torch's own check decides outside ComfyUI, ComfyUI's should_use_bf16 inside."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    cuda = torch.device("cuda")
    assert devices.device_native_bf16(cuda) is native
    want = torch.bfloat16 if native else torch.float32
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert devices.resolve_precision("bf16", cuda) == want
        assert devices.resolve_precision("bf16", cuda, bf16_ok=lambda d: native) == want
    assert [str(r.message) for r in record] == ([] if native else ["bf16 is not supported on cuda (emulated or "
                                                                   "missing there); using fp32"] * 2)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: native, raising=False)
    assert devices.device_native_bf16(torch.device("mps")) is native
    assert devices.device_native_bf16(torch.device("meta")) is False
