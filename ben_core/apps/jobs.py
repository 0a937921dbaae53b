"""What the programs share: exit codes, the model options, input collection, progress, reports, stopping
and the retrying batch loop.

``python -m ben_core`` (:mod:`ben_core.apps.cli`), ``python -m ben_core eval`` (:mod:`ben_core.apps.evaluate`)
and ``python -m ben_core distributed`` (:mod:`ben_core.apps.distributed`) import this module and never each
other. Importing it is cheap: torch and the network load only when a predictor is built.
"""
from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_INTERRUPTED = 130

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".tga",
     ".ppm", ".pgm", ".pbm", ".pnm", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".ico", ".dds", ".psd"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"})

#: The statuses of a ``--report`` line.
STATUSES = ("ok", "failed", "skipped", "interrupted")


class UsageError(ValueError):
    """Bad command-line usage (exit code 2): one line that names the problem and the fix."""


def kind_of(path: Path) -> str | None:
    """``"image"`` or ``"video"`` from the file's extension (case-insensitive), None for anything else."""
    ext = Path(path).suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


# --------------------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (``--batch-size``, ``--actors`` ...)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def background_arg(text: str):
    """``--background``: None for transparent, else ``(r, g, b)`` floats 0..1 (compose.parse_colour)."""
    from ..matting.compose import parse_colour  # lazy: importing a program stays cheap

    try:
        return parse_colour(text, allow_transparent=True)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device_arg(text: str) -> str:
    """``--device``: a name :func:`ben_core.devices.resolve_device` takes (auto, cpu, cuda, cuda:N, mps).
    Whether the device exists here is checked when the model loads (exit code 2 with the fix)."""
    if not _DEVICE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")


def model_options(*, defaults: bool = True, title: str | None = None,
                  checkpoint_help: str | None = None) -> argparse.ArgumentParser:
    """The parent parser every program takes its model options from: ``--checkpoint``, ``--device``,
    ``--dtype``, ``--working-size`` and ``--batch-size``.

    defaults: False leaves every option None when not given (``eval --pred`` refuses model options; its
      :func:`fill_model_defaults` fills them for ``--images``).
    title: the options' group in ``--help`` (None: the program's own options).
    """
    from ..model.ben2 import BENBase

    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(title) if title else parent
    default = model_defaults() if defaults else dict.fromkeys(MODEL_OPTIONS)
    group.add_argument("--checkpoint", metavar="PATH", default=None,
                       help=checkpoint_help or "BEN2_Base.pth or model.safetensors; default: cached official "
                            "weights, downloaded from the Hugging Face repo PramaLLC/BEN2 on first use")
    group.add_argument("--device", type=device_arg, default=default["device"], metavar="auto|cpu|cuda[:N]|mps",
                       help="where the network runs (default auto: CUDA, else MPS, else the CPU)")
    group.add_argument("--dtype", choices=PRECISION_CHOICES, default=default["dtype"],
                       help="auto (default): fp16 on CUDA; on the CPU bf16 where it has native bf16 "
                            "(AVX512-BF16/AMX), else fp32; fp32 elsewhere")
    group.add_argument("--working-size", type=int, default=default["working_size"],
                       choices=sorted(BENBase.working_sizes),
                       help=f"network input size (default {BENBase.native_size}, BEN2's native size)")
    group.add_argument("--batch-size", type=positive_int, default=default["batch_size"], metavar="N",
                       help="images (or video frames) per network call (default 1)")
    return parent


#: The ``args`` attributes of :func:`model_options`.
MODEL_OPTIONS = ("checkpoint", "device", "dtype", "working_size", "batch_size")


def model_defaults() -> dict:
    """The model options' defaults: no checkpoint (the official weights), auto device and precision, BEN2's
    native working size, one image per network call."""
    from ..model.ben2 import BENBase

    return {"checkpoint": None, "device": "auto", "dtype": "auto", "working_size": BENBase.native_size,
            "batch_size": 1}


def fill_model_defaults(args) -> None:
    """Give every model option that was not given its default (for parsers built with ``defaults=False``)."""
    for name, value in model_defaults().items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def run_program(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                body: Callable[[argparse.Namespace, Callable[[str], None]], int]) -> int:
    """Parse ``argv``, then ``body(args, log)``; returns the exit code. A UsageError from ``body`` is printed
    as ``<prog>: error: ...`` (exit 2) and argparse's own exit codes are returned, never raised.
    ``log`` prints to stderr unless ``--quiet``."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed its message; 2 for errors, 0 for --help
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE

    def log(msg: str) -> None:
        if not getattr(args, "quiet", False):
            print(msg, file=sys.stderr, flush=True)

    try:
        return body(args, log)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------

def collect_inputs(inputs: Sequence[str], recursive: bool = False,
                   exclude: Path | None = None) -> tuple[list[tuple[Path, Path, str]], list[str]]:
    """Expand INPUT arguments into ``(file, root, kind)`` triples and a list of warnings.

    Folders contribute their image/video files (sorted, hidden files ignored; sub-folders only with
    ``recursive``); other files in them are counted in a warning, never dropped silently. A file named
    explicitly is always attempted (kind from its extension, ``image`` if unknown). Duplicates are removed.
    Files inside ``exclude`` (the output folder, when it lies inside an input folder) are left out of
    folder listings, with a warning.
    Raises UsageError when an input does not exist, or when every file found lies in ``exclude`` (the
    output folder is the input folder: the message names the fix).
    """
    found: list[tuple[Path, Path, str]] = []
    notes: list[str] = []
    seen: set[Path] = set()
    left_out = 0
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            root = p.resolve()
            it = root.rglob("*") if recursive else root.iterdir()
            files = sorted(f for f in it if f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(root).parts))
            ignored = []
            if exclude is not None:
                ex = Path(exclude).resolve()
                inside = {f for f in files if ex == f.parent or ex in f.parents}
                inside_media = [f for f in inside if kind_of(f) is not None]
                if inside_media:
                    notes.append(f"{raw}: left out {len(inside_media)} file(s) inside the output folder {exclude}")
                    left_out += len(inside_media)
                files = [f for f in files if f not in inside]
            for f in files:
                kind = kind_of(f)
                if kind is None:
                    ignored.append(f.name)
                    continue
                if f not in seen:
                    seen.add(f)
                    found.append((f, root, kind))
            if ignored:
                shown = ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else "")
                notes.append(f"{raw}: ignored {len(ignored)} file(s) without an image/video extension ({shown})")
            if not recursive and any(c.is_dir() and not c.name.startswith(".") for c in root.iterdir()):
                notes.append(f"{raw}: has sub-folders; use -r/--recursive to include them")
        elif p.exists():
            f = p.resolve()
            if f not in seen:
                seen.add(f)
                found.append((f, f.parent, kind_of(f) or "image"))
        else:
            raise UsageError(f"input not found: {raw}")
    if not found and left_out:
        raise UsageError(f"every image or video found lies in the output folder {exclude}, where it would be "
                         "replaced by its cut-out: write the cut-outs to another folder, e.g. "
                         f"-o {Path(exclude).resolve().parent / 'cutouts'}")
    return found, notes


# --------------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------------

class Progress:
    """Progress on stderr as a tqdm bar (tqdm comes with huggingface_hub), with messages printed above it.

    ``total``: the number of units; ``enabled=False`` prints no bar (``--quiet``), messages still go out.
    Use it as a context manager: inside, Python warnings and ``ben_core`` log records are printed above
    the bar too, never into its line.
    """

    def __init__(self, total: int, enabled: bool = True, unit: str = "file"):
        from tqdm import tqdm

        self.enabled = enabled
        self._bar = tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=not enabled)
        self._saved: list = []

    def update(self, n: int = 1, label: str = "") -> None:
        """Count ``n`` units done; ``label`` (the file's name) is shown beside the bar."""
        if label and self.enabled:
            self._bar.set_postfix_str(label[:40], refresh=False)
        self._bar.update(n)

    def write(self, msg: str) -> None:
        """Print a message above the bar (stderr)."""
        self._bar.write(msg, file=sys.stderr)

    def close(self) -> None:
        """Close the bar (idempotent)."""
        self._bar.close()

    def __enter__(self) -> "Progress":
        import logging

        progress = self

        class _AboveBar(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                progress.write(f"{record.levelname.lower()}: {record.getMessage()}")

        logger = logging.getLogger("ben_core")
        handler = _AboveBar(logging.WARNING)
        saved_show = warnings.showwarning
        warnings.showwarning = lambda message, category, *a, **k: self.write(f"warning: {message}")
        logger.addHandler(handler)
        saved_propagate, logger.propagate = logger.propagate, False
        self._saved = [saved_show, handler, saved_propagate]
        return self

    def __exit__(self, *exc) -> None:
        import logging

        saved_show, handler, saved_propagate = self._saved
        warnings.showwarning = saved_show
        logger = logging.getLogger("ben_core")
        logger.removeHandler(handler)
        logger.propagate = saved_propagate
        self.close()


# --------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------

def resolve_checkpoint(path: str | None, log: Callable[[str], None]) -> Path:
    """The checkpoint to load: ``path`` if given, else cached official weights, else a download.

    Raises ben_core.model.weights.WeightsNotFoundError (offline / download failed) or FileNotFoundError.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"--checkpoint {path}: no such file")
        return p  # a folder gets ben_core.model.weights's own explanation when it is read
    from ..model import weights

    cached = weights.find_cached_weights()
    if cached is not None:
        return Path(cached)
    log(f"downloading the official BEN2 weights ({weights.OFFICIAL_REPO}/{weights.OFFICIAL_FILENAME}) ...")
    return Path(weights.download_official_weights())


def build_predictor(args, log: Callable[[str], None]):
    """Load the model and wrap it in a BENPredictor as the model options say (UsageError for a device or
    precision this machine does not have)."""
    from ..devices import resolve_device, resolve_precision

    try:
        device = resolve_device(args.device)
        dtype = resolve_precision(args.dtype, device)
    except ValueError as e:
        raise UsageError(f"--device {args.device} / --dtype {args.dtype}: {e}") from None
    return load_predictor(args.checkpoint, device, dtype, args.working_size, args.batch_size, log)


def load_predictor(checkpoint, device, dtype, working_size: int, batch_size: int, log: Callable[[str], None]):
    """BEN2 from ``checkpoint`` (a file, a folder or None: see :func:`resolve_checkpoint`) on a resolved
    ``device`` / ``dtype``, wrapped in a BENPredictor (every program builds it here)."""
    from ..model.weights import load_ben
    from ..predictor import BENPredictor

    model = load_ben(resolve_checkpoint(checkpoint, log), device=device)
    return BENPredictor(model, device=device, dtype=dtype, working_size=working_size, batch_size=batch_size)


def output_format(args):
    """The :class:`ben_core.io.writers.OutputFormat` that ``--background``, ``--format`` and ``--mask-only``
    ask for (UsageError if it cannot be written)."""
    from ..io.writers import OutputFormat

    try:
        return OutputFormat(background=args.background, image_format=args.image_format,
                            mask_only=args.mask_only).check()
    except ValueError as e:
        raise UsageError(str(e)) from None


# --------------------------------------------------------------------------------------------------
# stopping and reporting
# --------------------------------------------------------------------------------------------------

class StopRequest:
    """Ctrl-C / SIGTERM: the first signal asks the job to stop after the current chunk (``requested``;
    also usable as a ``should_stop()`` callback), the second raises KeyboardInterrupt (stop at once).
    Handlers are installed only in the main thread (embedding callers keep theirs otherwise)."""

    def __init__(self):
        self.requested = False
        self._previous: list = []

    def __call__(self) -> bool:
        return self.requested

    def install(self) -> "StopRequest":
        """Take SIGINT and SIGTERM (main thread only); returns self."""
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous.append((sig, signal.signal(sig, self._handle)))
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after the current chunk (press Ctrl-C again to stop at once) ...", file=sys.stderr,
              flush=True)

    def restore(self) -> None:
        """Give the signals back to the handlers they had before :meth:`install`."""
        import signal

        for sig, handler in reversed(self._previous):
            signal.signal(sig, handler)
        self._previous.clear()


class Report:
    """The ``--report`` file (JSON lines, appended, flushed per line) and the counts of each status.

    Every input gets exactly one line: :meth:`close` writes ``interrupted`` for each input of ``expected``
    that has none yet (a stopped or failed run), so the file always accounts for the whole job.
    """

    def __init__(self, path: Path | None, expected: Sequence | None = None):
        self.counts: dict[str, int] = {}
        self.failures: list[tuple[Path, str]] = []
        self._expected = list(expected or [])
        self._reported: set[str] = set()
        self._file = open(path, "a", encoding="utf-8") if path is not None else None

    def add(self, source, output, status: str, error: str | None = None, seconds: float = 0.0) -> None:
        """One input's line: ``status`` is one of :data:`STATUSES`; ``error`` says why for failed/interrupted."""
        import json

        if status not in STATUSES:
            raise ValueError(f"report status must be one of {STATUSES}, got {status!r}")
        self.counts[status] = self.counts.get(status, 0) + 1
        self._reported.add(str(source))
        if status == "failed":
            self.failures.append((source, error or "unknown error"))
        if self._file is not None:
            self._file.write(json.dumps({"input": str(source), "output": None if output is None else str(output),
                                         "status": status, "error": error, "seconds": round(seconds, 4)}) + "\n")
            self._file.flush()

    def close(self, reason: str = "stopped before it was processed") -> None:
        """Write ``interrupted`` (with ``reason``) for every expected input without a line, then close."""
        for source in self._expected:
            if str(source) not in self._reported:
                self.add(source, None, "interrupted", reason)
        self._expected.clear()
        if self._file is not None:
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------------------------------
# the retrying batch loop
# --------------------------------------------------------------------------------------------------

def cut_out(pipeline, images: list) -> list:
    """One network batch of loaded images -> ``(alpha, image)`` uint8 CPU tensors per image; when the
    batch fails, each image is retried alone so that only the culprit fails (its entry is the error).

    pipeline: a :class:`ben_core.pipeline.CutoutPipeline`; images: what it takes (``[H, W, C]`` arrays or
    tensors, PIL images). Returns one entry per image, in order: ``(alpha [H, W], image [H, W, C] or
    None)`` or the exception.
    """
    import torch

    try:
        cut = pipeline.run(images, batch_size=len(images), out_dtype=torch.uint8)
        return [(cut.alpha[i], None if cut.image is None else cut.image[i]) for i in range(len(images))]
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if len(images) == 1:
            return [e]
        return [r for im in images for r in cut_out(pipeline, [im])]

