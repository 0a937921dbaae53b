"""The progress / cancel convention of every long loop in ben_core.

A loop over images, tiles or chunks takes two optional callbacks and nothing else from its caller:

* ``progress(done, total)``: called after each step with the steps done so far and the total;
* ``should_stop()``: called before each step; a true result stops the loop with :class:`Cancelled`.
  It may also raise an exception of its own (ComfyUI's interrupt does), which propagates unchanged.

ComfyUI's progress bar and interrupt check are passed in by the nodes; ben_core never calls back into
ComfyUI itself.
"""
from __future__ import annotations

from typing import Callable, Optional

__all__ = ["Cancelled", "Progress", "ShouldStop", "check_stop", "report"]

Progress = Optional[Callable[[int, int], None]]
ShouldStop = Optional[Callable[[], bool]]


class Cancelled(RuntimeError):
    """``should_stop()`` returned True: the work stopped between two steps."""


def check_stop(should_stop: ShouldStop, done: int, total: int, unit: str = "images") -> None:
    """Raise :class:`Cancelled` ("stopped after done of total unit") if ``should_stop()`` is true."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"stopped after {done} of {total} {unit}")


def report(progress: Progress, done: int, total: int) -> None:
    """Call ``progress(done, total)`` if a callback was given."""
    if progress is not None:
        progress(done, total)
