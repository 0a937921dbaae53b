"""Command-line background removal: ``python -m ben_core INPUT... -o OUTDIR``.

Inputs are image files, video files or folders (images and videos inside, sorted; ``-r`` recurses).
Images are written as RGBA PNGs (``--background transparent``, the default; ``--format webp`` for RGBA
WebP), as images composited over a colour (``--background '#RRGGBB'``, PNG/JPEG/WebP) or as greyscale
alpha mattes (``--mask-only``); the input's ICC colour profile is kept (:mod:`ben_core.io.writers`). Videos
are streamed (memory does not grow with their length) into VP9 WebM with alpha (transparent, the default),
MP4 over the colour, ProRes 4444 ``.mov`` with alpha or a folder of numbered PNGs (``--video-format``; see
:mod:`ben_core.io.video_writers`), steadied from frame to frame with ``--temporal``.
Output names mirror the inputs' (relative to the folder given); two inputs that would write the same
file (``a.jpg`` and ``a.png``) or an output that would replace an input are refused before any work.

Files appear only when complete (:mod:`ben_core.io.files`: temporary name, then rename), so ``--skip-existing``
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
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .jobs import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    Progress,
    Report,
    StopRequest,
    UsageError,
    background_arg,
    build_predictor,
    collect_inputs,
    cut_out,
    model_options,
    output_format,
    run_program,
)

# --------------------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ben_core`` argument parser (model options from :func:`ben_core.apps.jobs.model_options`)."""
    p = argparse.ArgumentParser(
        prog="python -m ben_core",
        description="Remove the background of images and videos with BEN2 (pure PyTorch).",
        epilog="Exit codes: 0 ok, 1 some inputs failed, 2 usage error, 3 model/weights could not be loaded, "
               "130 stopped by Ctrl-C or SIGTERM (the first finishes the current batch, a second stops at "
               "once; rerun with --skip-existing to resume).",
        parents=[model_options(title="the BEN2 model")],
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image/video files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
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
                        "numbered PNGs (+ the audio as .wav); mp4 has no alpha, so it needs --background "
                        "(e.g. '#00FF00' for a green screen) or --mask-only")
    p.add_argument("--temporal", action="store_true",
                   help="videos: steady the matte from frame to frame, following the motion "
                        "(ben_core.matting.temporal: damps flicker on still and moving shots, no lag; motion "
                        "compensation needs OpenCV, `pip install opencv-python-headless`, else only still parts "
                        "are steadied)")
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
    p.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                   help="largest image to read, in pixels (default: Pillow's decompression-bomb guard, "
                        "about 179 million); 0 reads images of any size (only for files you trust)")
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
    return [Job(f, rel, kind) for (f, _, kind), rel in zip(found, rels, strict=True)]


def check_outputs(jobs: Sequence[Job], outputs: Sequence[Path]) -> None:
    """Refuse (UsageError) a plan in which two inputs write the same file (names compared without case,
    as on Windows/macOS disks), an output would replace one of the inputs, or an input or output lies inside
    a PNG sequence's output folder (replaced as a whole)."""
    from ..io.video_writers import VIDEO_FORMATS

    by_name: dict[str, Job] = {}
    for job, out in zip(jobs, outputs, strict=True):
        key = str(out).lower()
        if key in by_name:
            other = by_name[key]
            raise UsageError(f"{other.source} and {job.source} would both be written to {out}: rename one of "
                             "them or process them in separate runs")
        by_name[key] = job
    # a PNG sequence's output is a folder, replaced as a whole: nothing else may lie inside it
    video_suffixes = {s for s in VIDEO_FORMATS.values() if s}
    folders = {str(out.resolve()).lower() for job, out in zip(jobs, outputs, strict=True)
               if job.kind == "video" and out.suffix.lower() not in video_suffixes}
    if folders:
        for job, out in zip(jobs, outputs, strict=True):
            for path in (out.resolve(), job.source.resolve()):
                inside = next((str(p) for p in path.parents if str(p).lower() in folders), None)
                if inside is not None:
                    raise UsageError(f"{path} lies inside {inside}, which a PNG sequence would replace: choose "
                                     "another output folder (-o) or another --video-format")
    inputs = set()
    for job in jobs:
        st = job.source.stat()
        inputs.add((st.st_dev, st.st_ino))
    for out in outputs:
        try:
            st = out.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inputs:
            raise UsageError(f"writing {out} would replace an input image; choose another output folder (-o)")


# --------------------------------------------------------------------------------------------------
# output naming
# --------------------------------------------------------------------------------------------------


def _out_path(outdir: Path, job: Job, suffix: str) -> Path:
    """``job``'s output under ``outdir``: its relative name plus ``suffix`` ("" for a PNG sequence's folder)."""
    return outdir / job.rel.parent / (job.rel.name + suffix)


def video_format(args) -> str:
    """The video container ``--video-format`` and ``--background`` ask for (auto: WebM with alpha when
    transparent, MP4 over a colour); UsageError, naming the fix, when it cannot hold the frames."""
    from ..io.video_writers import check_format

    fmt = args.video_format
    if fmt == "auto":
        fmt = "webm" if args.background is None else "mp4"
    mode = "matte" if args.mask_only else ("rgba" if args.background is None else "rgb")
    try:
        check_format(fmt, mode, fix="add --background '#RRGGBB' ('#00FF00' for a green screen) or --mask-only, or "
                                    "choose --video-format webm, mov or png (they keep the alpha)")
    except ValueError as e:
        raise UsageError(f"--video-format {fmt}: {e}") from None
    return fmt


def _is_done(path: Path, kind: str) -> bool:
    """Whether an output exists and is complete (``--skip-existing``)."""
    if kind == "video":
        from ..io.video_writers import is_complete_output

        return is_complete_output(path)
    from ..io.writers import is_complete_image

    return is_complete_image(path)


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
    from ..io.image_files import read_image_file

    t0 = time.perf_counter()
    try:
        return _Read(job, output, read_image_file(job.source), None, time.perf_counter() - t0)
    except Exception as e:  # unreadable file: reported, the job goes on
        return _Read(job, output, None, f"cannot read image: {type(e).__name__}: {e}", time.perf_counter() - t0)


def _write(dst: Path, alpha, image, fmt, icc_profile) -> float:
    from ..io.writers import encode_cutout, write_file

    t0 = time.perf_counter()
    write_file(dst, encode_cutout(alpha, image, fmt, icc_profile))
    return time.perf_counter() - t0


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


class _ImageRun:
    """Images cut out in chunks of ``args.batch_size``, the next files read and the finished ones written on
    ``args.io_threads`` threads while the network runs (at most a few chunks ahead, so memory stays flat).

    Holds the reads in flight, the writes in flight and the first error that makes further writing
    impossible (disk full ...). Every input gets its report line here, except those a stop leaves unread:
    :meth:`ben_core.apps.jobs.Report.close` reports them as interrupted.
    """

    def __init__(self, args, fmt, predictor, progress: Progress, report: Report):
        from concurrent.futures import ThreadPoolExecutor

        from ..pipeline import CutoutOptions, CutoutPipeline

        self.args, self.fmt, self.progress, self.report = args, fmt, progress, report
        self.pipeline = CutoutPipeline(predictor, CutoutOptions(
            foreground=args.refine_foreground and not args.mask_only, background=args.background,
            image=not args.mask_only))
        self.pool = (ThreadPoolExecutor(args.io_threads, thread_name_prefix="ben2-io") if args.io_threads > 0
                     else _Inline())
        self.ahead = max(2 * args.batch_size, args.io_threads)
        self.reads: deque = deque()   # futures of _Read, in input order
        self.writes: deque = deque()  # (job, dst, future of the write's seconds, seconds so far)
        self.fatal: BaseException | None = None

    def run(self, jobs: Sequence[Job], outputs: Sequence[Path], stop: StopRequest) -> BaseException | None:
        """Process ``jobs`` (writing ``outputs``) until done, stopped or the disk is full; returns the error that
        made further writing impossible, else None."""
        todo = deque(zip(jobs, outputs, strict=True))
        try:
            while (todo or self.reads) and not stop.requested and self.fatal is None:
                while todo and len(self.reads) < self.ahead:
                    self.reads.append(self.pool.submit(_read, *todo.popleft()))
                chunk = self._next_chunk()
                if chunk:
                    self._cut_out(chunk)
                self._finish_writes(keep=2 * self.ahead)
            self._finish_writes(keep=0)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return self.fatal

    def _next_chunk(self) -> list:
        """Up to ``batch_size`` files read without error (the others are reported failed)."""
        chunk = []
        while self.reads and len(chunk) < self.args.batch_size:
            item = self.reads.popleft().result()
            if item.error is not None:
                self._failed(item.job, item.error, item.seconds)
                continue
            if item.file.frames > 1:  # never drop frames silently
                self.progress.write(f"warning: {item.job.source}: has {item.file.frames} frames; only the first is "
                                    "processed (convert it to a video file, e.g. .mp4 or .webm, to process every "
                                    "frame)")
            chunk.append(item)
        return chunk

    def _cut_out(self, chunk: list) -> None:
        t0 = time.perf_counter()
        results = cut_out(self.pipeline, [item.file.pixels for item in chunk])
        share = (time.perf_counter() - t0) / len(chunk)
        for item, result in zip(chunk, results, strict=True):
            if isinstance(result, Exception):
                self._failed(item.job, f"{type(result).__name__}: {result}", share + item.seconds)
                continue
            alpha, image = result
            write = self.pool.submit(_write, item.output, alpha, image, self.fmt, item.file.icc_profile)
            self.writes.append((item.job, item.output, write, share + item.seconds))

    def _finish_writes(self, keep: int) -> None:
        """Report the oldest writes until at most ``keep`` are in flight."""
        from ..io.files import is_fatal_write_error

        while len(self.writes) > keep:
            job, dst, write, seconds = self.writes.popleft()
            try:
                self.report.add(job.source, dst, "ok", seconds=seconds + write.result())
                self.progress.update(1, job.source.name)
            except Exception as e:
                self._failed(job, f"cannot write {dst}: {type(e).__name__}: {e}", seconds, output=dst)
                if is_fatal_write_error(e) and self.fatal is None:
                    self.fatal = e

    def _failed(self, job: Job, message: str, seconds: float, output: Path | None = None) -> None:
        self.report.add(job.source, output, "failed", message, seconds)
        self.progress.write(f"error: {job.source}: {message}")
        self.progress.update(1, job.source.name)


def _process_video(job: Job, dst: Path, video_fmt: str, predictor, args, progress: Progress, report: Report,
                   stop: StopRequest) -> None:
    from .. import video
    from ..callbacks import Cancelled

    last = [0]
    t0 = time.perf_counter()

    def on_progress(done: int, total: int | None) -> None:
        if not args.quiet and (done - last[0] >= 25 or (total and done >= total)):
            progress.write(f"  {job.source.name}: {done}/{total if total else '?'} frames")
            last[0] = done

    try:
        info = video.remove_background_video(
            predictor, job.source, dst, video_format=video_fmt, background=args.background,
            batch_size=args.batch_size, refine_foreground=args.refine_foreground, mask_only=args.mask_only,
            progress=on_progress, should_stop=stop, temporal=args.temporal_mode or args.temporal)
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
    created: bool      # the output folder did not exist before this run (removed again if left empty)
    fmt: object
    video_fmt: str | None
    jobs: list
    outputs: list
    skipped: list


def _plan(args) -> _Plan:
    """Check the arguments, find the inputs, name the outputs and prove the output folder is writable;
    raises UsageError (one line) for anything that would fail later."""
    from ..io.files import check_writable_folder

    fmt = output_format(args)
    if args.io_threads < 0:
        raise UsageError(f"--io-threads must be >= 0, got {args.io_threads}")
    if args.max_image_pixels is not None and args.max_image_pixels < 0:
        raise UsageError(f"--max-image-pixels must be >= 0 (0: no limit), got {args.max_image_pixels}")
    outdir = Path(args.output)
    found, notes = collect_inputs(args.inputs, args.recursive, exclude=outdir)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if not found:
        raise UsageError("no image or video files found in the given inputs")
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"-o {args.output}: exists and is not a folder")
    jobs = plan_jobs(found)
    video_fmt = video_format(args) if any(job.kind == "video" for job in jobs) else None
    video_suffix = None if video_fmt is None else ("" if video_fmt == "png" else "." + video_fmt)  # png: a folder
    outputs = [_out_path(outdir, job, video_suffix if job.kind == "video" else fmt.suffix) for job in jobs]
    check_outputs(jobs, outputs)
    created = not outdir.exists()
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
        skipped = [i for i, (job, dst) in enumerate(zip(jobs, outputs, strict=True)) if _is_done(dst, job.kind)]
    return _Plan(outdir, created, fmt, video_fmt, jobs, outputs, skipped)


def main(argv: Sequence[str] | None = None, predictor=None) -> int:
    """Run the CLI; returns the exit code (see module docstring).

    ``predictor``: a loaded ``BENPredictor`` (or an object with its ``device`` and ``predict_chunk``)
    to use instead of loading BEN2 from ``--checkpoint`` (embedding, tests).
    """
    return run_program(build_parser(), argv, lambda args, log: _main(args, log, predictor))


def _main(args, log, predictor) -> int:
    plan = _plan(args)
    report = Report(Path(args.report) if args.report is not None else None,
                    expected=[job.source for job in plan.jobs])
    from PIL import Image

    saved_limit = Image.MAX_IMAGE_PIXELS
    try:
        if args.max_image_pixels is not None:
            Image.MAX_IMAGE_PIXELS = args.max_image_pixels or None
        return _run(args, plan, predictor, report, log)
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit
        report.close()


def _load(args, plan: _Plan, log):
    """The predictor, or the exit code when it cannot be built (an output folder this run made is removed
    again when it is still empty, so a failed start leaves nothing behind)."""
    try:
        return build_predictor(args, log)
    except Exception as e:  # UsageError, WeightsNotFoundError, CheckpointError, FileNotFoundError, ...
        if plan.created and plan.outdir.is_dir() and not any(plan.outdir.iterdir()):
            plan.outdir.rmdir()
        if isinstance(e, UsageError):
            raise
        print(f"error: could not load the BEN2 model: {e}", file=sys.stderr)
        return EXIT_MODEL


def _run(args, plan: _Plan, predictor, report: Report, log) -> int:
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
        predictor = _load(args, plan, log)
        if isinstance(predictor, int):
            return predictor

    images = [i for i in todo if plan.jobs[i].kind == "image"]
    videos = [i for i in todo if plan.jobs[i].kind == "video"]
    log(f"{len(images)} image(s), {len(videos)} video(s) -> {plan.outdir}")
    stop = StopRequest().install()
    fatal = None
    interrupted = False
    try:
        with Progress(len(todo), enabled=not args.quiet) as progress:
            fatal = _ImageRun(args, plan.fmt, predictor, progress, report).run(
                [plan.jobs[i] for i in images], [plan.outputs[i] for i in images], stop)
            for i in videos:
                if stop.requested or fatal is not None:
                    break
                _process_video(plan.jobs[i], plan.outputs[i], plan.video_fmt, predictor, args, progress, report,
                               stop)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.restore()
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
