"""Command-line background removal: ``python -m ben_core INPUT... -o OUTDIR``.

Inputs are image files, video files or folders (images and videos inside, sorted; ``-r`` recurses).
Images are written as RGBA PNGs (``--background transparent``, the default; ``--format webp`` for RGBA
WebP), as images composited over a colour (``--background '#RRGGBB'``, PNG/JPEG/WebP) or as greyscale
alpha mattes (``--mask-only``); the input's ICC colour profile is kept (:mod:`ben_core.writers`). Videos
are streamed (memory does not grow with their length) into VP9 WebM with alpha (transparent, the default),
MP4 over the colour, ProRes 4444 ``.mov`` with alpha or a folder of numbered PNGs (``--video-format``; see
:mod:`ben_core.video_writers`), steadied from frame to frame with ``--temporal``.
Output names mirror the inputs' (relative to the folder given); two inputs that would write the same
file (``a.jpg`` and ``a.png``) or an output that would replace an input are refused before any work.

Files appear only when complete (:mod:`ben_core.files`: temporary name, then rename), so ``--skip-existing``
can resume a job that died; ``--report FILE`` appends one JSON line per input (input, output, status,
error, seconds). Reading and writing files overlap with the network (``--io-threads``). Nothing is skipped
silently: unreadable inputs are reported on stderr and the rest is still processed. Images and videos go
through :class:`ben_core.pipeline.CutoutPipeline`, like the ComfyUI nodes.

Ctrl-C (or SIGTERM) stops after the current chunk: the files of finished inputs are written, nothing
half-written is left, a summary is printed; a second Ctrl-C stops at once (still no half-written file).

Exit codes: 0 all inputs written (or skipped as done); 1 at least one input failed (the others were
written), or the disk filled up; 2 usage error (bad arguments, no inputs, name clashes, an unwritable
output folder - all found before the model loads); 3 the model could not be loaded (weights missing, bad
checkpoint, unavailable device); 130 stopped by Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

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
DEFAULT_VIDEO_BACKGROUND = (0.0, 1.0, 0.0)  # upstream segment_video's green screen for MP4 output


class UsageError(ValueError):
    """Bad command-line usage (exit code 2)."""


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
    from .compose import parse_colour  # lazy: importing the CLI stays cheap

    try:
        return parse_colour(text, allow_transparent=True)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ben_core`` argument parser."""
    from .model.ben2 import BENBase
    p = argparse.ArgumentParser(
        prog="python -m ben_core",
        description="Remove the background of images and videos with BEN2 (pure PyTorch).",
        epilog="Exit codes: 0 ok, 1 some inputs failed, 2 usage error, 3 model/weights could not be loaded, "
               "130 stopped by Ctrl-C or SIGTERM (the first finishes the current batch, a second stops at "
               "once; rerun with --skip-existing to resume).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image/video files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="BEN2_Base.pth or model.safetensors; default: cached official weights, "
                        "downloaded from the Hugging Face repo PramaLLC/BEN2 on first use")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto: fp16 on CUDA; on the CPU bf16 where it has native bf16 (AVX512-BF16/AMX), else "
                        "fp32; fp32 elsewhere")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N",
                   help="images (or video frames) per network call (default 1)")
    p.add_argument("--working-size", type=int, default=BENBase.native_size, choices=sorted(BENBase.working_sizes),
                   help="network input size (1024 is BEN2's native size)")
    p.add_argument("--refine-foreground", action="store_true",
                   help="estimate clean foreground colours at the edges (blur-fusion, slower)")
    p.add_argument("--background", type=background_arg, default=None, metavar="transparent|#RRGGBB",
                   help="transparent (RGBA PNG / WebM with alpha) or a colour to composite over, as "
                        "#RRGGBB, #RGB or r,g,b with 0..255 values (RGB image / MP4); default transparent")
    p.add_argument("--mask-only", action="store_true",
                   help="write the alpha matte as a greyscale image (PNG unless --format says otherwise)")
    p.add_argument("--format", dest="image_format", default="png", choices=["png", "jpg", "webp"],
                   help="image file format: png (default), webp (transparent or over a colour) or jpg "
                        "(needs --background or --mask-only: JPEG has no transparency)")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--video-format", default="auto", choices=["auto", "webm", "mov", "mp4", "mkv", "png"],
                   help="auto: WebM (VP9) with alpha when transparent, MP4 when a colour is given; mov: ProRes "
                        "4444 with alpha (what Resolve, Premiere and After Effects import); png: a folder of "
                        "numbered PNGs (+ the audio as .wav); MP4 without --background uses green #00FF00")
    p.add_argument("--temporal", action="store_true",
                   help="videos: steady the matte from frame to frame, following the motion (ben_core.temporal: "
                        "damps flicker on still and moving shots, no lag; motion compensation needs OpenCV, "
                        "`pip install opencv-python-headless`, else only still parts are steadied)")
    p.add_argument("--temporal-mode", choices=["causal", "bidirectional"], default=None,
                   help="implies --temporal. causal (default): each frame from the frames before it; "
                        "bidirectional: from the frames after it too (offline renders: steadier, each frame "
                        "written ~16-31 frames later, memory holds that many frames)")
    p.add_argument("--skip-existing", action="store_true",
                   help="resume: skip inputs whose output file already exists and is complete")
    p.add_argument("--report", metavar="FILE",
                   help="append one JSON line per input to FILE: input, output, status (ok, failed, skipped, "
                        "interrupted), error, seconds")
    p.add_argument("--io-threads", type=int, default=2, metavar="N",
                   help="threads reading and writing image files while the network runs (0: one after the "
                        "other; default 2)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output (errors are still printed)")
    return p


# --------------------------------------------------------------------------------------------------
# inputs and output naming
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One input file and the output path (without suffix) relative to OUTDIR."""

    source: Path
    rel: Path          # relative output path without the final suffix
    kind: str          # "image" or "video"


def _kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def collect_inputs(inputs: Sequence[str], recursive: bool = False,
                   exclude: Path | None = None) -> tuple[list[tuple[Path, Path, str]], list[str]]:
    """Expand INPUT arguments into ``(file, root, kind)`` triples and a list of warnings.

    Folders contribute their image/video files (sorted, hidden files ignored; sub-folders only with
    ``recursive``); other files in them are counted in a warning, never dropped silently. A file named
    explicitly is always attempted (kind from its extension, ``image`` if unknown). Duplicates are removed.
    Files inside ``exclude`` (the output folder, when it lies inside an input folder) are left out of
    folder listings, with a warning.
    Raises UsageError when an input does not exist.
    """
    found: list[tuple[Path, Path, str]] = []
    warnings: list[str] = []
    seen: set[Path] = set()
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            root = p.resolve()
            it = root.rglob("*") if recursive else root.iterdir()
            files = sorted(f for f in it if f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(root).parts))
            ignored = []
            if exclude is not None:
                ex = exclude.resolve()
                inside = [f for f in files if ex == f.parent or ex in f.parents]
                if inside:
                    warnings.append(f"{raw}: left out {len(inside)} file(s) inside the output folder {exclude}")
                    files = [f for f in files if f not in set(inside)]
            for f in files:
                kind = _kind_of(f)
                if kind is None:
                    ignored.append(f.name)
                    continue
                if f not in seen:
                    seen.add(f)
                    found.append((f, root, kind))
            if ignored:
                shown = ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else "")
                warnings.append(f"{raw}: ignored {len(ignored)} file(s) without an image/video extension ({shown})")
            if not recursive and any(c.is_dir() and not c.name.startswith(".") for c in root.iterdir()):
                warnings.append(f"{raw}: has sub-folders; use -r/--recursive to include them")
        elif p.exists():
            f = p.resolve()
            if f not in seen:
                seen.add(f)
                found.append((f, f.parent, _kind_of(f) or "image"))
        else:
            raise UsageError(f"input not found: {raw}")
    return found, warnings


def plan_jobs(found: Sequence[tuple[Path, Path, str]]) -> list[Job]:
    """Give each collected input its relative output path (without suffix).

    Each file is named relative to its own root (the folder given, or the file's folder for a file
    given by name). If that makes two inputs share a name (``a/x.png`` and ``b/x.png`` from two folder
    arguments), all paths are taken relative to the common ancestor of the roots instead, keeping the
    folder structure (``a/x``, ``b/x``). Inputs that still share a name (``x.jpg`` beside ``x.png``) are
    left for :func:`check_outputs`, which refuses them once the output suffixes are known.
    """
    if not found:
        return []
    rels = [f.relative_to(root).with_suffix("") for f, root, _ in found]
    if len({str(r).lower() for r in rels}) < len(rels):
        roots = {root for _, root, _ in found}
        if len(roots) > 1:
            base = Path(os.path.commonpath([str(r) for r in roots]))
            rels = [f.relative_to(base).with_suffix("") for f, _, _ in found]
    return [Job(f, rel, kind) for (f, _, kind), rel in zip(found, rels)]


def check_outputs(jobs: Sequence[Job], outputs: Sequence[Path]) -> None:
    """Refuse (UsageError) a plan in which two inputs write the same file (names compared without case,
    as on Windows/macOS disks), an output would replace one of the inputs, or an input or output lies inside
    a PNG sequence's output folder (replaced as a whole)."""
    from .video_writers import VIDEO_FORMATS

    by_name: dict[str, Job] = {}
    for job, out in zip(jobs, outputs):
        key = str(out).lower()
        if key in by_name:
            other = by_name[key]
            raise UsageError(f"{other.source} and {job.source} would both be written to {out}: rename one of "
                             "them or process them in separate runs")
        by_name[key] = job
    # a PNG sequence's output is a folder, replaced as a whole: nothing else may lie inside it
    video_suffixes = {s for s in VIDEO_FORMATS.values() if s}
    folders = {str(out.resolve()).lower() for job, out in zip(jobs, outputs)
               if job.kind == "video" and out.suffix.lower() not in video_suffixes}
    if folders:
        for job, out in zip(jobs, outputs):
            for path in (out.resolve(), job.source.resolve()):
                inside = next((str(p) for p in path.parents if str(p).lower() in folders), None)
                if inside is not None:
                    raise UsageError(f"{path} lies inside {inside}, which a PNG sequence would replace: choose "
                                     "another output folder (-o) or another --video-format")
    inputs = set()
    for job in jobs:
        st = job.source.stat()
        inputs.add((st.st_dev, st.st_ino))
    for job, out in zip(jobs, outputs):
        try:
            st = out.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inputs:
            raise UsageError(f"writing {out} would replace an input image; choose another output folder (-o)")


# --------------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------------

class Progress:
    """File-level progress on stderr: tqdm when installed, else a plain counter line."""

    def __init__(self, total: int, enabled: bool = True, unit: str = "file"):
        self.total, self.done, self.enabled = total, 0, enabled
        self._bar = None
        self._t0 = time.monotonic()
        self._tty = sys.stderr.isatty()
        if enabled:
            try:
                from tqdm import tqdm  # optional
                self._bar = tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def update(self, n: int = 1, label: str = "") -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        el = time.monotonic() - self._t0
        eta = el / self.done * (self.total - self.done) if self.done else 0.0
        line = f"[{self.done}/{self.total}] {100.0 * self.done / max(self.total, 1):5.1f}%  {el:6.1f}s elapsed, ~{eta:.0f}s left  {label}"
        if self._tty:
            sys.stderr.write("\r" + line[:160].ljust(100))
            if self.done >= self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def write(self, msg: str) -> None:
        """Print a message without breaking the bar."""
        if self._bar is not None:
            self._bar.write(msg, file=sys.stderr)
        else:
            if self.enabled and self._tty and 0 < self.done < self.total:
                sys.stderr.write("\n")
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# --------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------

def resolve_checkpoint(path: str | None, log: Callable[[str], None]) -> Path:
    """The checkpoint to load: ``path`` if given, else cached official weights, else a download.

    Raises ben_core.hub.WeightsNotFoundError (offline / download failed) or FileNotFoundError.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"--checkpoint {path}: no such file")
        return p  # a folder gets ben_core.checkpoint's own explanation when it is read
    from . import hub

    cached = hub.find_cached_weights()
    if cached is not None:
        return Path(cached)
    log(f"downloading the official BEN2 weights ({hub.OFFICIAL_REPO}/{hub.OFFICIAL_FILENAME}) ...")
    return Path(hub.download_official_weights())


def build_predictor(args, log: Callable[[str], None]):
    """Load the model and wrap it in a BENPredictor as the arguments say (UsageError for a device or
    precision this machine does not have)."""
    from .devices import resolve_device, resolve_precision

    try:
        device = resolve_device(args.device)
        dtype = resolve_precision(args.dtype, device)
    except ValueError as e:
        raise UsageError(f"--device {args.device} / --dtype {args.dtype}: {e}") from None
    return load_predictor(args.checkpoint, device, dtype, args.working_size, args.batch_size, log)


def load_predictor(checkpoint, device, dtype, working_size: int, batch_size: int, log: Callable[[str], None]):
    """BEN2 from ``checkpoint`` (a file, a folder or None: see :func:`resolve_checkpoint`) on a resolved
    ``device`` / ``dtype``, wrapped in a BENPredictor (the CLI, eval and the distributed stage build it here)."""
    from .checkpoint import load_ben
    from .predictor import BENPredictor

    model = load_ben(resolve_checkpoint(checkpoint, log), device=device)
    return BENPredictor(model, device=device, dtype=dtype, working_size=working_size, batch_size=batch_size)


# --------------------------------------------------------------------------------------------------
# processing
# --------------------------------------------------------------------------------------------------

def _chunks(seq: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def output_format(args):
    """The :class:`ben_core.writers.OutputFormat` the arguments ask for (UsageError if it cannot be written)."""
    from .writers import OutputFormat

    try:
        return OutputFormat(background=args.background, image_format=args.image_format,
                            mask_only=args.mask_only).check()
    except ValueError as e:
        raise UsageError(str(e)) from None


def _image_out_path(outdir: Path, job: Job, fmt) -> Path:
    return outdir / job.rel.parent / (job.rel.name + fmt.suffix)


def _video_out_path(outdir: Path, job: Job, args) -> tuple[Path, tuple[float, float, float] | None]:
    fmt = args.video_format
    if fmt == "auto":
        fmt = "webm" if args.background is None else "mp4"
    bg = args.background
    if fmt == "mp4" and bg is None and not args.mask_only:
        bg = DEFAULT_VIDEO_BACKGROUND  # MP4 has no alpha: composite over green like upstream
    suffix = "" if fmt == "png" else "." + fmt  # a PNG sequence is a folder named after the input
    return outdir / job.rel.parent / (job.rel.name + suffix), bg


def _video_format(dst: Path, args) -> str:
    return "png" if args.video_format == "png" else dst.suffix[1:]


def _is_done(path: Path, kind: str) -> bool:
    """Whether an output exists and is complete (``--skip-existing``)."""
    if kind == "video":
        from .video import is_complete_video

        return is_complete_video(path)
    from .writers import is_complete_image

    return is_complete_image(path)


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
        import signal

        for sig, handler in reversed(self._previous):
            signal.signal(sig, handler)
        self._previous.clear()


class Report:
    """The ``--report`` file (JSON lines, appended, flushed per line) and the counts of each status."""

    def __init__(self, path: Path | None):
        self.counts: dict[str, int] = {}
        self.failures: list[tuple[Path, str]] = []
        self._file = open(path, "a", encoding="utf-8") if path is not None else None

    def add(self, source: Path, output: Path | None, status: str, error: str | None = None,
            seconds: float = 0.0) -> None:
        import json

        self.counts[status] = self.counts.get(status, 0) + 1
        if status == "failed":
            self.failures.append((source, error or "unknown error"))
        if self._file is not None:
            self._file.write(json.dumps({"input": str(source), "output": None if output is None else str(output),
                                         "status": status, "error": error, "seconds": round(seconds, 4)}) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# --------------------------------------------------------------------------------------------------
# processing
# --------------------------------------------------------------------------------------------------

@dataclass
class _Read:
    """An input read by a worker: the file (or None) and the error message (or None)."""

    job: Job
    output: Path
    file: object
    error: str | None
    seconds: float


def _read(job: Job, output: Path) -> _Read:
    from .inputs import read_image_file

    t0 = time.perf_counter()
    try:
        return _Read(job, output, read_image_file(job.source), None, time.perf_counter() - t0)
    except Exception as e:  # unreadable file: reported, the job goes on
        return _Read(job, output, None, f"cannot read image: {type(e).__name__}: {e}", time.perf_counter() - t0)


def _write(dst: Path, alpha, image, fmt, icc_profile) -> float:
    from .writers import encode_cutout, write_file

    t0 = time.perf_counter()
    write_file(dst, encode_cutout(alpha, image, fmt, icc_profile))
    return time.perf_counter() - t0


def cut_out(pipeline, images: list) -> list:
    """One network batch of loaded images -> ``(alpha, image)`` uint8 CPU tensors per image; when the
    batch fails, each image is retried alone so that only the culprit fails (its entry is the error)."""
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


class _Inline:
    """An executor that runs each task at once in the caller's thread (``--io-threads 0``)."""

    def submit(self, fn, *args):
        from concurrent.futures import Future

        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as e:
            fut.set_exception(e)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _process_images(jobs: Sequence[Job], outputs: Sequence[Path], predictor, args, fmt, progress: Progress,
                    report: Report, stop: StopRequest) -> BaseException | None:
    """Cut out images in chunks of ``args.batch_size``, reading the next files and writing the finished ones
    on ``args.io_threads`` threads while the network runs (at most a few chunks ahead, so memory stays
    flat). Stops after the current chunk when ``stop`` is requested. Returns the error that made further
    writing impossible (disk full...), else None."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from .files import is_fatal_write_error
    from .pipeline import CutoutOptions, CutoutPipeline

    pipeline = CutoutPipeline(predictor, CutoutOptions(foreground=args.refine_foreground and not args.mask_only,
                                                       background=args.background, image=not args.mask_only))
    pool = ThreadPoolExecutor(args.io_threads, thread_name_prefix="ben2-io") if args.io_threads > 0 else _Inline()
    reads: deque = deque()
    writes: deque = deque()
    ahead = max(2 * args.batch_size, args.io_threads)
    fatal: list = []
    next_job = 0

    def finish_writes(keep: int) -> None:
        while len(writes) > keep:
            job, dst, fut, seconds = writes.popleft()
            try:
                report.add(job.source, dst, "ok", seconds=seconds + fut.result())
            except Exception as e:
                message = f"cannot write {dst}: {type(e).__name__}: {e}"
                report.add(job.source, dst, "failed", message, seconds)
                progress.write(f"error: {job.source}: {message}")
                if is_fatal_write_error(e) and not fatal:
                    fatal.append(e)
            progress.update(1, job.source.name)

    try:
        while (next_job < len(jobs) or reads) and not stop.requested and not fatal:
            while next_job < len(jobs) and len(reads) < ahead:
                reads.append(pool.submit(_read, jobs[next_job], outputs[next_job]))
                next_job += 1
            chunk = []
            while reads and len(chunk) < args.batch_size:
                item = reads.popleft().result()
                if item.error is not None:
                    report.add(item.job.source, None, "failed", item.error, item.seconds)
                    progress.write(f"error: {item.job.source}: {item.error}")
                    progress.update(1, item.job.source.name)
                    continue
                if item.file.frames > 1:  # never drop frames silently
                    progress.write(f"warning: {item.job.source}: has {item.file.frames} frames; only the first is "
                                   "processed (convert it to a video file, e.g. .mp4 or .webm, to process every "
                                   "frame)")
                chunk.append(item)
            if not chunk:
                continue
            t0 = time.perf_counter()
            results = cut_out(pipeline, [item.file.pixels for item in chunk])
            share = (time.perf_counter() - t0) / len(chunk)
            for item, result in zip(chunk, results):
                if isinstance(result, Exception):
                    message = f"{type(result).__name__}: {result}"
                    report.add(item.job.source, None, "failed", message, share + item.seconds)
                    progress.write(f"error: {item.job.source}: {message}")
                    progress.update(1, item.job.source.name)
                    continue
                alpha, image = result
                writes.append((item.job, item.output, pool.submit(_write, item.output, alpha, image, fmt,
                                                                  item.file.icc_profile), share + item.seconds))
            finish_writes(keep=2 * ahead)
        finish_writes(keep=0)
        for fut in reads:  # read ahead but never cut out: stopped
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                item = fut.result()
                report.add(item.job.source, None, "interrupted", "stopped before it was processed")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return fatal[0] if fatal else None


def _process_video(job: Job, dst: Path, bg, predictor, args, progress: Progress, report: Report,
                   stop: StopRequest) -> None:
    from . import video
    from .callbacks import Cancelled

    last = [0]
    t0 = time.perf_counter()

    def on_progress(done: int, total: int | None) -> None:
        if not args.quiet and (done - last[0] >= 25 or (total and done >= total)):
            progress.write(f"  {job.source.name}: {done}/{total if total else '?'} frames")
            last[0] = done

    try:
        info = video.remove_background_video(
            predictor, job.source, dst, video_format=_video_format(dst, args), background=bg,
            batch_size=max(args.batch_size, 1),
            refine_foreground=args.refine_foreground, mask_only=args.mask_only, progress=on_progress,
            should_stop=stop, temporal=args.temporal_mode or args.temporal)
        report.add(job.source, dst, "ok", seconds=time.perf_counter() - t0)
        if not args.quiet:
            progress.write(f"  {job.source.name} -> {dst} ({info.frames} frames, {float(info.fps):.3f} fps"
                           f"{', audio ' + info.audio if info.audio else ''})")
    except Cancelled:
        report.add(job.source, None, "interrupted", "stopped mid-video; nothing was written",
                   time.perf_counter() - t0)
    except Exception as e:
        report.add(job.source, None, "failed", f"{type(e).__name__}: {e}", time.perf_counter() - t0)
        progress.write(f"error: {job.source}: {type(e).__name__}: {e}")
    finally:
        progress.update(1, job.source.name)


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------

@dataclass
class _Plan:
    """Everything decided before the model loads."""

    outdir: Path
    fmt: object
    jobs: list
    outputs: list
    backgrounds: list
    skipped: list


def _plan(args) -> _Plan:
    """Check the arguments, find the inputs, name the outputs and prove the output folder is writable;
    raises UsageError (one line) for anything that would fail later."""
    from .files import check_writable_folder

    fmt = output_format(args)
    if args.io_threads < 0:
        raise UsageError(f"--io-threads must be >= 0, got {args.io_threads}")
    outdir = Path(args.output)
    found, warnings = collect_inputs(args.inputs, args.recursive, exclude=outdir)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not found:
        raise UsageError("no image or video files found in the given inputs")
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"-o {args.output}: exists and is not a folder")
    jobs = plan_jobs(found)
    outputs, backgrounds = [], []
    for job in jobs:
        if job.kind == "video":
            dst, bg = _video_out_path(outdir, job, args)
        else:
            dst, bg = _image_out_path(outdir, job, fmt), args.background
        outputs.append(dst)
        backgrounds.append(bg)
    check_outputs(jobs, outputs)
    problem = check_writable_folder(outdir)
    if problem is not None:
        raise UsageError(f"-o {args.output}: {problem}")
    if args.report is not None:
        report_dir = Path(args.report).parent
        problem = check_writable_folder(report_dir) if str(report_dir) not in ("", ".") else None
        if problem is None and Path(args.report).is_dir():
            problem = f"{args.report} is a folder"
        if problem is not None:
            raise UsageError(f"--report {args.report}: {problem}")
    skipped = []
    if args.skip_existing:
        skipped = [i for i, (job, dst) in enumerate(zip(jobs, outputs)) if _is_done(dst, job.kind)]
    return _Plan(outdir, fmt, jobs, outputs, backgrounds, skipped)


def main(argv: Sequence[str] | None = None, predictor=None) -> int:
    """Run the CLI; returns the exit code (see module docstring).

    ``predictor``: a loaded ``BENPredictor`` (or an object with its ``device`` and ``predict_chunk``)
    to use instead of loading BEN2 from ``--checkpoint`` (embedding, tests).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse prints its own message; code 2 for errors, 0 for --help
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    try:
        plan = _plan(args)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    report = Report(Path(args.report) if args.report is not None else None)
    try:
        return _run(args, plan, predictor, report, parser, log)
    finally:
        report.close()


def _run(args, plan: _Plan, predictor, report: Report, parser, log) -> int:
    """Load the model (unless given) and process the planned jobs; returns the exit code."""
    skipped = set(plan.skipped)
    for i in plan.skipped:
        report.add(plan.jobs[i].source, plan.outputs[i], "skipped", "output exists and is complete")
    todo = [i for i in range(len(plan.jobs)) if i not in skipped]
    if skipped:
        log(f"skipping {len(skipped)} input(s) whose output exists and is complete")
    if not todo:
        log(f"nothing to do: all {len(plan.jobs)} output(s) exist in {plan.outdir}")
        return EXIT_OK

    if predictor is None:
        try:
            predictor = build_predictor(args, log)
        except UsageError as e:
            print(f"{parser.prog}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        except Exception as e:  # WeightsNotFoundError, CheckpointError, FileNotFoundError, ...
            print(f"error: could not load the BEN2 model: {e}", file=sys.stderr)
            return EXIT_MODEL

    images = [i for i in todo if plan.jobs[i].kind == "image"]
    videos = [i for i in todo if plan.jobs[i].kind == "video"]
    log(f"{len(images)} image(s), {len(videos)} video(s) -> {plan.outdir}")
    progress = Progress(len(todo), enabled=not args.quiet)
    stop = StopRequest().install()
    fatal = None
    interrupted = False
    try:
        fatal = _process_images([plan.jobs[i] for i in images], [plan.outputs[i] for i in images], predictor, args,
                                plan.fmt, progress, report, stop)
        for i in videos:
            if stop.requested or fatal is not None:
                break
            _process_video(plan.jobs[i], plan.outputs[i], plan.backgrounds[i], predictor, args, progress, report,
                           stop)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.restore()
        progress.close()
    done = report.counts
    summary = (f"{done.get('ok', 0)} written, {done.get('failed', 0)} failed, {done.get('skipped', 0)} skipped as "
               f"done, {len(todo) - done.get('ok', 0) - done.get('failed', 0)} not processed")
    if interrupted or stop.requested:
        print(f"stopped: {summary}. Run the same command with --skip-existing to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    if fatal is not None:
        print(f"stopped: cannot write any more files ({fatal.strerror or fatal}): {summary}. Free space, then "
              "resume with --skip-existing.", file=sys.stderr)
        return EXIT_FAILED
    if report.failures:
        print(f"{len(report.failures)} of {len(todo)} input(s) failed:", file=sys.stderr)
        for path, reason in report.failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    log(f"done: {done.get('ok', 0)} file(s) written to {plan.outdir}")
    return EXIT_OK
