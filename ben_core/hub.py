"""Official BEN2 weights from the Hugging Face Hub (PramaLLC/BEN2 only), with clear offline errors.

Nothing is downloaded at import time; ``huggingface_hub`` is imported only when a function needs it.
The Hub library reads ``HF_HUB_OFFLINE`` / ``HF_HUB_CACHE`` / ``HF_HOME`` when it is first imported;
pass ``cache_dir`` to override the cache location per call.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

__all__ = [
    "OFFICIAL_REPO",
    "OFFICIAL_FILENAME",
    "OFFICIAL_PTH_FILENAME",
    "OFFICIAL_FILENAMES",
    "OFFICIAL_REVISION",
    "WeightsNotFoundError",
    "download_official_weights",
    "find_cached_weights",
    "missing_weights_message",
    "offline_mode",
]

OFFICIAL_REPO = "PramaLLC/BEN2"
OFFICIAL_FILENAME = "model.safetensors"
OFFICIAL_PTH_FILENAME = "BEN2_Base.pth"
#: The revision of PramaLLC/BEN2 downloaded by default. Pass ``revision=<commit hash>`` to pin the exact
#: files (a reproducible, integrity-pinned download); the branch follows the publisher's updates.
OFFICIAL_REVISION = "main"
OFFICIAL_FILENAMES = (OFFICIAL_FILENAME, OFFICIAL_PTH_FILENAME)

PathLike = Union[str, "os.PathLike[str]"]

log = logging.getLogger("ben_core")


class WeightsNotFoundError(FileNotFoundError):
    """The BEN2 weights are neither where they were looked for nor downloadable (offline, no network)."""


def _official_url(filename: str) -> str:
    return f"https://huggingface.co/{OFFICIAL_REPO}/resolve/main/{filename}"


def _hf_cache_dir(cache_dir: Optional[PathLike]) -> str:
    if cache_dir is not None:
        return str(Path(cache_dir).expanduser())
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def offline_mode() -> bool:
    """Whether Hugging Face's offline mode is on (``HF_HUB_OFFLINE``), as huggingface_hub reads it."""
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def missing_weights_message(searched: Iterable[PathLike] = (), *, reason: Optional[str] = None,
                            put_here: Optional[PathLike] = None, filename: str = OFFICIAL_FILENAME,
                            cache_dir: Optional[PathLike] = None) -> str:
    """Human-readable text for missing BEN2 weights: where we looked, where to put the file, where to get it.

    ``searched``: paths that were checked; ``put_here``: the file path the caller expects (first
    suggestion); ``reason``: why downloading did not work (offline, network error ...).
    """
    lines = ["BEN2 weights not found."]
    searched = [p if isinstance(p, str) and not os.path.isabs(p) else str(Path(p).expanduser()) for p in searched]
    if searched:
        lines.append("Looked for:")
        lines.extend(f"  - {p}" for p in searched)
    if reason:
        lines.append(f"Download not possible: {reason}")
    lines.append("Get the official weights from the Hugging Face repo " + OFFICIAL_REPO + " (only this repo):")
    lines.append(f"  - {_official_url(OFFICIAL_FILENAME)}  (safetensors, recommended)")
    lines.append(f"  - {_official_url(OFFICIAL_PTH_FILENAME)}  (PyTorch .pth, same weights)")
    if put_here is not None:
        lines.append(f"and put the file here: {Path(put_here).expanduser()}")
    else:
        lines.append("and pass the file's path explicitly (e.g. python -m ben_core --checkpoint PATH).")
    lines.append(f"Or fill the Hugging Face cache ({_hf_cache_dir(cache_dir)}) on a machine that is online with "
                 f"`hf download {OFFICIAL_REPO} {filename}` (older huggingface_hub: `huggingface-cli download "
                 f"{OFFICIAL_REPO} {filename}`) and copy that folder here.")
    return "\n".join(lines)


def _unreachable_reason(timeout: float = 5.0) -> Optional[str]:
    """Why the Hub endpoint (``HF_ENDPOINT``, default huggingface.co) cannot be reached - the name does
    not resolve, the connection is refused or times out - or None when a TCP connection opens. Behind a
    proxy (``HTTPS_PROXY`` / ``ALL_PROXY``) the check is left to the Hub client (None)."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except (ImportError, AttributeError):
        endpoint = "https://huggingface.co"
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port} is not reachable ({e.strerror or type(e).__name__}); check the network or proxy"
    return None


def _check_filename(filename: str) -> None:
    if filename not in OFFICIAL_FILENAMES:
        raise ValueError(f"filename must be one of the official files {OFFICIAL_FILENAMES} of {OFFICIAL_REPO}, "
                         f"got {filename!r}")


def _usable(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def find_cached_weights(cache_dir: Optional[PathLike] = None, filename: Optional[str] = None,
                        local_dir: Optional[PathLike] = None) -> Optional[Path]:
    """Path of already-present official weights, or None. Never touches the network.

    Looks in ``local_dir`` (if given) for the file, then in the Hugging Face cache (``cache_dir`` or
    the library's default, honouring HF_HUB_CACHE/HF_HOME) via ``huggingface_hub.try_to_load_from_cache``
    for ``PramaLLC/BEN2``. ``filename=None`` tries ``model.safetensors`` then ``BEN2_Base.pth``.
    Returns a ``pathlib.Path`` to a non-empty file, or None.
    """
    names: Sequence[str] = OFFICIAL_FILENAMES if filename is None else (filename,)
    for name in names:
        _check_filename(name)
    if local_dir is not None:
        for name in names:
            candidate = Path(local_dir).expanduser() / name
            if _usable(candidate):
                return candidate
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in names:
        kwargs = {} if cache_dir is None else {"cache_dir": str(Path(cache_dir).expanduser())}
        try:
            hit = try_to_load_from_cache(OFFICIAL_REPO, name, **kwargs)
        except Exception as e:  # a malformed cache folder is "not cached", not a crash
            log.debug("ben_core: Hugging Face cache lookup of %s failed: %s", name, e)
            continue
        if isinstance(hit, (str, os.PathLike)) and _usable(Path(hit)):
            return Path(hit)
    return None


def download_official_weights(local_dir: Optional[PathLike] = None, filename: str = OFFICIAL_FILENAME, *,
                              cache_dir: Optional[PathLike] = None, revision: str = OFFICIAL_REVISION) -> Path:
    """Path of the official BEN2 weights, downloading ``PramaLLC/BEN2/<filename>`` if they are not present.

    ``local_dir``: download into this folder (file ends up at ``local_dir/filename``); if None the
    Hugging Face cache is used (``cache_dir`` or the library default). ``filename``:
    ``"model.safetensors"`` (default) or ``"BEN2_Base.pth"``. An existing non-empty file at the target
    (or in the cache) is returned without any network access. Downloads use
    ``huggingface_hub.hf_hub_download`` from the official repo only, at ``revision`` (a branch or a commit
    hash; see :data:`OFFICIAL_REVISION`).

    Raises:
        WeightsNotFoundError: offline (``HF_HUB_OFFLINE=1``), no network, the Hub refused, or
            huggingface_hub is missing; the message says where to put the file and where to get it.
        ValueError: ``filename`` is not an official file name.
    """
    _check_filename(filename)
    target = None if local_dir is None else Path(local_dir).expanduser() / filename
    found = find_cached_weights(cache_dir=cache_dir, filename=filename, local_dir=local_dir)
    if found is not None:
        return found
    searched = [target] if target is not None else []
    if local_dir is None:
        searched.append(f"the Hugging Face cache ({_hf_cache_dir(cache_dir)})")

    def fail(reason: str, cause: Optional[BaseException] = None) -> WeightsNotFoundError:
        err = WeightsNotFoundError(missing_weights_message(searched, reason=reason, put_here=target,
                                                           filename=filename, cache_dir=cache_dir))
        err.__cause__ = cause
        return err

    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise fail("the huggingface_hub package is not installed (pip install huggingface_hub)", e)
    kwargs = {}
    if local_dir is not None:
        Path(local_dir).expanduser().mkdir(parents=True, exist_ok=True)
        kwargs["local_dir"] = str(Path(local_dir).expanduser())
    if cache_dir is not None:
        kwargs["cache_dir"] = str(Path(cache_dir).expanduser())
    unreachable = None if offline_mode() else _unreachable_reason()
    if unreachable is not None:  # answer at once instead of the Hub client's retries (~25 s of warnings)
        raise fail(f"could not download: {unreachable}")
    try:
        path = hf_hub_download(OFFICIAL_REPO, filename, revision=revision, **kwargs)
    except Exception as e:  # offline / DNS / HTTP / disk errors all end in the same advice
        if offline_mode():
            raise fail("Hugging Face offline mode is on (HF_HUB_OFFLINE=1; unset it to allow the download)", e) from e
        first = str(e).splitlines()[0] if str(e) else ""
        raise fail(f"could not download from huggingface.co ({type(e).__name__}: {first})", e) from e
    path = Path(path)
    if not _usable(path):
        raise fail(f"the download finished but {path} is missing or empty")
    return path
