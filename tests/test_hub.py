"""Official-weights lookup/download: offline behaviour with the real huggingface_hub cache layout.

No test touches the network: offline mode is on, or hf_hub_download is replaced by a stand-in.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub  # a required dependency (requirements.txt): never skipped
import pytest

from ben_core.model import weights as hub
from ben_core.model.weights import (
    OFFICIAL_FILENAME,
    OFFICIAL_REPO,
    WeightsNotFoundError,
    download_official_weights,
    find_cached_weights,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHA = "41efc6966a6fcaf77dfd90ecd4cf06a1edcd1745"


def make_hf_cache(cache: Path, filename: str = OFFICIAL_FILENAME, payload: bytes = b"weights!") -> Path:
    """The real hub cache layout: models--PramaLLC--BEN2/{refs/main, blobs/<etag>, snapshots/<sha>/<file> -> blob}."""
    repo = cache / "models--PramaLLC--BEN2"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(SHA)
    blob = repo / "blobs" / ("e" * 64 + filename.replace(".", ""))
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(payload)
    snap = repo / "snapshots" / SHA / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    try:
        snap.symlink_to(os.path.relpath(blob, snap.parent))
    except OSError:  # no symlinks (Windows without developer mode): the hub copies files then too
        snap.write_bytes(payload)
    return snap


@pytest.fixture
def offline(monkeypatch):
    """HF offline mode in this process (the library reads HF_HUB_OFFLINE once, at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _forbid_download(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError(f"hf_hub_download must not be called here: {args} {kwargs}")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)


def test_constants_and_error_type():
    assert OFFICIAL_REPO == "PramaLLC/BEN2" and OFFICIAL_FILENAME == "model.safetensors"
    assert issubclass(WeightsNotFoundError, FileNotFoundError)


def test_find_cached_weights_in_real_cache_layout(tmp_path):
    cache = tmp_path / "hub"
    assert find_cached_weights(cache_dir=cache) is None
    snap = make_hf_cache(cache)
    found = find_cached_weights(cache_dir=cache)
    assert found is not None and found == snap and found.read_bytes() == b"weights!"
    # the .pth is looked for too when no file name is given, safetensors first
    pth = make_hf_cache(tmp_path / "hub2", "BEN2_Base.pth")
    assert find_cached_weights(cache_dir=tmp_path / "hub2") == pth
    assert find_cached_weights(cache_dir=tmp_path / "hub2", filename=OFFICIAL_FILENAME) is None


def test_find_cached_weights_local_dir_first_and_ignores_empty(tmp_path):
    local = tmp_path / "models"
    local.mkdir()
    (local / "model.safetensors").write_bytes(b"")  # an interrupted copy does not count
    assert find_cached_weights(cache_dir=tmp_path / "empty-cache", local_dir=local) is None
    (local / "BEN2_Base.pth").write_bytes(b"x")
    assert find_cached_weights(cache_dir=tmp_path / "empty-cache", local_dir=local) == local / "BEN2_Base.pth"


def test_download_returns_cached_file_offline(tmp_path, offline, monkeypatch):
    snap = make_hf_cache(tmp_path / "hub")
    assert download_official_weights(cache_dir=tmp_path / "hub") == snap


def test_download_offline_without_file_explains_where_to_put_it(tmp_path, offline):
    cache = tmp_path / "hub"
    with pytest.raises(WeightsNotFoundError) as info:
        download_official_weights(cache_dir=cache)
    msg = str(info.value)
    assert "HF_HUB_OFFLINE" in msg
    assert "https://huggingface.co/PramaLLC/BEN2/resolve/main/model.safetensors" in msg
    assert "BEN2_Base.pth" in msg
    assert str(cache) in msg  # where the cache is


def test_download_offline_into_local_dir_names_the_target(tmp_path, offline):
    target_dir = tmp_path / "ComfyUI" / "models" / "BEN"
    with pytest.raises(WeightsNotFoundError) as info:
        download_official_weights(local_dir=target_dir, cache_dir=tmp_path / "hub")
    assert str(target_dir / "model.safetensors") in str(info.value)


def test_existing_local_file_needs_no_network(tmp_path, monkeypatch):
    _forbid_download(monkeypatch)
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    assert download_official_weights(local_dir=tmp_path) == tmp_path / "model.safetensors"


def test_network_error_becomes_weights_not_found(tmp_path, monkeypatch):
    calls = []

    def no_network(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(hub, "_unreachable_reason", lambda: None)  # the endpoint counts as reachable here
    with pytest.raises(WeightsNotFoundError) as info:
        download_official_weights(local_dir=tmp_path / "dl", cache_dir=tmp_path / "hub")
    assert calls and calls[0][0] == "PramaLLC/BEN2" and calls[0][1] == "model.safetensors"
    assert calls[0][2]["local_dir"] == str(tmp_path / "dl")
    msg = str(info.value)
    assert "could not download" in msg and "Failed to resolve" in msg
    assert str(tmp_path / "dl" / "model.safetensors") in msg
    assert isinstance(info.value.__cause__, ConnectionError)


def test_download_uses_official_repo_only(tmp_path, monkeypatch):
    seen = {}

    def fake_download(repo_id, filename, **kwargs):
        seen.update(repo_id=repo_id, filename=filename, **kwargs)
        out = Path(kwargs["local_dir"]) / filename
        out.write_bytes(b"downloaded")
        return str(out)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(hub, "_unreachable_reason", lambda: None)  # the endpoint counts as reachable here
    got = download_official_weights(local_dir=tmp_path / "new", filename="BEN2_Base.pth")
    assert got == tmp_path / "new" / "BEN2_Base.pth" and got.read_bytes() == b"downloaded"
    assert seen["repo_id"] == "PramaLLC/BEN2" and seen["filename"] == "BEN2_Base.pth"
    assert seen["revision"] == "main"  # the default; a commit hash pins the files
    pinned = "0123456789abcdef0123456789abcdef01234567"
    download_official_weights(local_dir=tmp_path / "pinned", revision=pinned)
    assert seen["revision"] == pinned and seen["filename"] == "model.safetensors"


@pytest.mark.parametrize("name", ["BiRefNet.safetensors", "../model.safetensors", "model.bin"])
def test_only_official_file_names(name, tmp_path):
    with pytest.raises(ValueError):
        download_official_weights(local_dir=tmp_path, filename=name)


def _run_offline(code: str, cache: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf-home"),
               PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_env_vars_end_to_end_in_fresh_process(tmp_path):
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE exactly as a user sets them, read by the real library at import."""
    cache = tmp_path / "hub"
    code = ("import sys; from ben_core.model import weights as hub\n"
            "assert 'huggingface_hub' not in sys.modules, 'imported at import time'\n"
            "print(hub.find_cached_weights()); print(hub.download_official_weights())\n")
    r = _run_offline(code, cache, tmp_path)
    assert r.returncode != 0
    assert "WeightsNotFoundError" in r.stderr and "HF_HUB_OFFLINE" in r.stderr and str(cache) in r.stderr
    snap = make_hf_cache(cache)
    r = _run_offline(code, cache, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(snap), str(snap)]


def test_unreachable_endpoint_is_answered_at_once(monkeypatch):
    """A closed port (or an unresolvable name) is found by one TCP connect, before the Hub client and its
    retries run; behind a proxy the check is left to the client."""
    import time

    called = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: called.append(1))
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    assert "127.0.0.1:9 is not reachable" in hub._unreachable_reason()
    t = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="127.0.0.1:9 is not reachable"):
        download_official_weights(local_dir="/nonexistent/never-created")
    assert time.perf_counter() - t < 5 and not called
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub._unreachable_reason() is None
