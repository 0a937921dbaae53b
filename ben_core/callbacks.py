"""The progress / cancel convention of every long loop in ben_core.

A loop over images, tiles or chunks takes two optional callbacks and nothing else from its caller:

* ``progress(done, total)``: called after each step with the steps done so far and the total;
* ``should_stop()``: called before each step; a true result stops the loop with :class:`Cancelled`.
  It may also raise an exception of its own (ComfyUI's interrupt does), which propagates unchanged.

ComfyUI's progress bar and interrupt check are passed in by the nodes; ben_core never calls back into
ComfyUI itself.

A step that cannot take the callback as an argument (a network forward of several seconds on a CPU,
behind the predictor protocol ``predict_chunk(chunk, deferred=...)``) reads the one that
:func:`stop_scope` made current, :func:`current_stop`.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, Optional

__all__ = ["Cancelled", "Progress", "ShouldStop", "check_stop", "report", "stop_scope", "current_stop"]

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


_CURRENT_STOP: ContextVar = ContextVar("ben_core_should_stop", default=None)


@contextmanager
def stop_scope(should_stop: ShouldStop) -> Iterator[None]:
    """Make ``should_stop`` the callback :func:`current_stop` returns inside the block (this thread or task)."""
    token = _CURRENT_STOP.set(should_stop)
    try:
        yield
    finally:
        _CURRENT_STOP.reset(token)


def current_stop() -> ShouldStop:
    """The ``should_stop`` of the innermost :func:`stop_scope`, or None."""
    return _CURRENT_STOP.get()
