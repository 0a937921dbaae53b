"""Output files that are never half-written: every file is written under a temporary name in its target
folder and renamed into place only when complete, so a crash, Ctrl-C or a full disk never leaves a
truncated image or video under the final name.

Temporary names are hidden (``.<name>.<pid>-<random>.ben2-partial<suffix>``: the real suffix stays last,
so encoders that pick the format from the extension still do); they are removed on every error and on
Ctrl-C. Only a killed process (SIGKILL, power loss) can leave one behind; it is never taken for an output.
"""
from __future__ import annotations

import errno
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

#: Marks our temporary files (see :func:`temporary_path`).
TEMP_MARK = ".ben2-partial"
#: Errors after which no later file can be written either: a job stops instead of failing every file.
FATAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def temporary_path(dst: PathLike) -> Path:
    """A fresh hidden name next to ``dst`` for writing it (same folder, so the final rename is atomic)."""
    dst = Path(dst)
    return dst.with_name(f".{dst.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_MARK}{dst.suffix}")


@contextmanager
def atomic_output(dst: PathLike) -> Iterator[Path]:
    """``with atomic_output(dst) as tmp:`` write the file at ``tmp``; on a normal exit it is renamed to
    ``dst`` (replacing an older file atomically), on any exception (KeyboardInterrupt included) it is
    deleted and ``dst`` is left as it was. Creates ``dst``'s folder if needed."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(dst)
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def is_fatal_write_error(err: BaseException) -> bool:
    """Whether ``err`` means no further file can be written (disk full, quota, read-only file system)."""
    return isinstance(err, OSError) and err.errno in FATAL_WRITE_ERRNOS


def check_writable_folder(folder: PathLike) -> Optional[str]:
    """Create ``folder`` if needed and prove a file can be written and removed there; returns None when it
    can, else one line saying why not (read-only, a path under a file, permissions...)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"{folder} exists and is not a folder"
    except NotADirectoryError:
        return f"{folder} lies under a file, not a folder"
    except OSError as e:
        return f"cannot create {folder}: {e.strerror or e}"
    if not folder.is_dir():
        return f"{folder} exists and is not a folder"
    probe = temporary_path(folder / "write-test")
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
    except OSError as e:
        return f"cannot write into {folder}: {e.strerror or e}"
    finally:
        if os.path.lexists(probe):
            try:
                os.unlink(probe)
            except OSError:
                pass
    return None
