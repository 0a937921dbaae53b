"""Command-line background removal: ``python -m ben_core INPUT... -o OUTDIR``.

Inputs are image files, video files or folders (images and videos inside, sorted; ``-r`` recurses).
Images are written as RGBA PNGs (``--background transparent``, the default), as RGB images composited
over a colour (``--background '#RRGGBB'``) or as greyscale alpha mattes (``--mask-only``). Videos are
written as VP9 WebM with alpha (transparent) or as MP4 over the colour (see :mod:`ben_core.video`).

Nothing is skipped silently: unreadable inputs are reported on stderr and the rest is still processed.
Images and videos go through :class:`ben_core.pipeline.CutoutPipeline`, like the ComfyUI nodes; this
module only parses arguments, plans the jobs and writes the files.

Exit codes: 0 all inputs written; 1 at least one input failed (the others were written);
2 usage error (bad arguments, no inputs found); 3 the model could not be loaded (weights missing,
bad checkpoint, unavailable device).
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

def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _background_arg(text: str):
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
        epilog="Exit codes: 0 ok, 1 some inputs failed, 2 usage error, 3 model/weights could not be loaded.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image/video files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="BEN2_Base.pth or model.safetensors; default: cached official weights, "
                        "downloaded from the Hugging Face repo PramaLLC/BEN2 on first use")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="auto: fp16 on CUDA, fp32 elsewhere")
    p.add_argument("--batch-size", type=_positive_int, default=1, metavar="N",
                   help="images (or video frames) per network call (default 1)")
    p.add_argument("--working-size", type=int, default=BENBase.native_size, choices=sorted(BENBase.working_sizes),
                   help="network input size (1024 is BEN2's native size)")
    p.add_argument("--refine-foreground", action="store_true",
                   help="estimate clean foreground colours at the edges (blur-fusion, slower)")
    p.add_argument("--background", type=_background_arg, default=None, metavar="transparent|#RRGGBB",
                   help="transparent (RGBA PNG / WebM with alpha) or a colour to composite over, as "
                        "#RRGGBB, #RGB or r,g,b with 0..255 values (RGB image / MP4); default transparent")
    p.add_argument("--mask-only", action="store_true", help="write the alpha matte as a greyscale PNG")
    p.add_argument("--format", dest="image_format", default="png", choices=["png", "jpg", "webp"],
                   help="image format for composited output (transparent output is always PNG)")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--video-format", default="auto", choices=["auto", "webm", "mp4"],
                   help="auto: WebM with alpha when transparent, MP4 when a colour is given "
                        "(MP4 without --background uses green #00FF00)")
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
    """Assign collision-free relative output paths (without suffix) to collected inputs.

    Each file is named relative to its own root (the folder given, or the file's folder for a file
    given by name). If that makes two inputs share a name (``a/x.png`` and ``b/x.png``), all paths are
    taken relative to the common ancestor of the roots instead, keeping the folder structure
    (``a/x``, ``b/x``). Files that still map to the same name (``x.jpg`` and ``x.png`` side by side) get
    their extension appended (``x_jpg``, ``x_png``), then a counter if needed.
    """
    if not found:
        return []
    rels = [f.relative_to(root).with_suffix("") for f, root, _ in found]
    if len({str(r).lower() for r in rels}) < len(rels):
        roots = {root for _, root, _ in found}
        base = Path(os.path.commonpath([str(r) for r in roots])) if len(roots) > 1 else next(iter(roots))
        rels = [f.relative_to(base).with_suffix("") for f, _, _ in found]
    keys = [str(r).lower() for r in rels]  # case-insensitive file systems
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    taken: set[str] = set()
    jobs: list[Job] = []
    for (f, _, kind), rel, key in zip(found, rels, keys):
        if counts[key] > 1:
            rel = rel.with_name(f"{rel.name}_{f.suffix.lstrip('.').lower() or 'noext'}")
        cand, n = rel, 2
        while str(cand).lower() in taken:
            cand = rel.with_name(f"{rel.name}_{n}")
            n += 1
        taken.add(str(cand).lower())
        jobs.append(Job(f, cand, kind))
    # names freed by renaming may coincide with another file's natural name: make sure uniqueness held
    if len({str(j.rel).lower() for j in jobs}) != len(jobs):
        raise RuntimeError("internal error: two inputs were given the same output name; please report it")
    return jobs


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
        if not p.is_file():
            raise FileNotFoundError(f"--checkpoint {path}: no such file")
        return p
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
    ckpt = resolve_checkpoint(args.checkpoint, log)
    from .checkpoint import load_ben
    from .predictor import BENPredictor

    model = load_ben(ckpt, device=device)
    return BENPredictor(model, device=device, dtype=dtype, working_size=args.working_size,
                        batch_size=args.batch_size)


# --------------------------------------------------------------------------------------------------
# processing
# --------------------------------------------------------------------------------------------------

def _chunks(seq: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _image_out_path(outdir: Path, job: Job, args) -> Path:
    if args.mask_only or args.background is None:
        ext = ".png"
    else:
        ext = "." + args.image_format
    return outdir / job.rel.parent / (job.rel.name + ext)


def _video_out_path(outdir: Path, job: Job, args) -> tuple[Path, tuple[float, float, float] | None]:
    fmt = args.video_format
    if fmt == "auto":
        fmt = "webm" if args.background is None else "mp4"
    bg = args.background
    if fmt == "mp4" and bg is None and not args.mask_only:
        bg = DEFAULT_VIDEO_BACKGROUND  # MP4 has no alpha: composite over green like upstream
    return outdir / job.rel.parent / (job.rel.name + "." + fmt), bg


def _cut_out(pipeline, images: list) -> list:
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
        return [r for im in images for r in _cut_out(pipeline, [im])]


def _save(dst: Path, alpha, image, args) -> None:
    from PIL import Image

    if args.mask_only:
        out = Image.fromarray(alpha.numpy(), "L")
    else:
        out = Image.fromarray(image.numpy(), "RGBA" if args.background is None else "RGB")
    dst.parent.mkdir(parents=True, exist_ok=True)
    out.save(dst, **({"quality": 95} if dst.suffix in (".jpg", ".webp") else {}))


def _process_images(jobs: Sequence[Job], predictor, args, outdir: Path, progress: Progress) -> list[tuple[Path, str]]:
    """Cut out images in chunks of ``args.batch_size``; returns (path, reason) failures."""
    from .inputs import frame_count, load_image_file
    from .pipeline import CutoutOptions, CutoutPipeline

    pipeline = CutoutPipeline(predictor, CutoutOptions(foreground=args.refine_foreground and not args.mask_only,
                                                       background=args.background, image=not args.mask_only))
    failures: list[tuple[Path, str]] = []
    for chunk in _chunks(list(jobs), args.batch_size):
        loaded = []
        for job in chunk:
            try:
                loaded.append((job, load_image_file(job.source)))
            except Exception as e:  # unreadable file: report, continue
                failures.append((job.source, f"cannot read image: {type(e).__name__}: {e}"))
                progress.write(f"error: {job.source}: cannot read image ({type(e).__name__}: {e})")
                progress.update(1, job.source.name)
                continue
            frames = frame_count(job.source)
            if frames > 1:  # never drop frames silently
                progress.write(f"warning: {job.source}: has {frames} frames; only the first is processed "
                               "(convert it to a video file, e.g. .mp4 or .webm, to process every frame)")
        if not loaded:
            continue
        results = _cut_out(pipeline, [image for _, image in loaded])
        for (job, _), result in zip(loaded, results):
            try:
                if isinstance(result, Exception):
                    raise result
                _save(_image_out_path(outdir, job, args), *result, args)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                failures.append((job.source, f"{type(e).__name__}: {e}"))
                progress.write(f"error: {job.source}: {type(e).__name__}: {e}")
            progress.update(1, job.source.name)
    return failures


def _process_video(job: Job, predictor, args, outdir: Path, progress: Progress) -> tuple[Path, str] | None:
    from . import video

    dst, bg = _video_out_path(outdir, job, args)
    dst.parent.mkdir(parents=True, exist_ok=True)
    last = [0]

    def on_progress(done: int, total: int | None) -> None:
        if not args.quiet and (done - last[0] >= 25 or (total and done >= total)):
            progress.write(f"  {job.source.name}: {done}/{total if total else '?'} frames")
            last[0] = done

    try:
        info = video.remove_background_video(
            predictor, job.source, dst, background=bg, batch_size=max(args.batch_size, 1),
            refine_foreground=args.refine_foreground, mask_only=args.mask_only, progress=on_progress)
        if not args.quiet:
            progress.write(f"  {job.source.name} -> {dst} ({info.frames} frames, {float(info.fps):.3f} fps"
                           f"{', audio ' + info.audio if info.audio else ''})")
        return None
    except KeyboardInterrupt:
        raise
    except Exception as e:
        progress.write(f"error: {job.source}: {type(e).__name__}: {e}")
        return job.source, f"{type(e).__name__}: {e}"
    finally:
        progress.update(1, job.source.name)


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
        if args.mask_only and args.background is not None:
            raise UsageError("--mask-only writes the alpha matte; it cannot be combined with --background")
        found, warnings = collect_inputs(args.inputs, args.recursive, exclude=Path(args.output))
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        if not found:
            raise UsageError("no image or video files found in the given inputs")
        outdir = Path(args.output)
        if outdir.exists() and not outdir.is_dir():
            raise UsageError(f"-o {args.output}: exists and is not a folder")
        jobs = plan_jobs(found)
    except UsageError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    if predictor is None:
        try:
            predictor = build_predictor(args, log)
        except UsageError as e:
            print(f"{parser.prog}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        except Exception as e:  # WeightsNotFoundError, CheckpointError, FileNotFoundError, ...
            print(f"error: could not load the BEN2 model: {e}", file=sys.stderr)
            return EXIT_MODEL

    outdir.mkdir(parents=True, exist_ok=True)
    images = [j for j in jobs if j.kind == "image"]
    videos = [j for j in jobs if j.kind == "video"]
    log(f"{len(images)} image(s), {len(videos)} video(s) -> {outdir}")
    progress = Progress(len(jobs), enabled=not args.quiet)
    failures: list[tuple[Path, str]] = []
    try:
        failures += _process_images(images, predictor, args, outdir, progress)
        for job in videos:
            f = _process_video(job, predictor, args, outdir, progress)
            if f is not None:
                failures.append(f)
    except KeyboardInterrupt:
        progress.close()
        print("interrupted", file=sys.stderr)
        return 130
    progress.close()
    if failures:
        print(f"{len(failures)} of {len(jobs)} input(s) failed:", file=sys.stderr)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    log(f"done: {len(jobs)} file(s) written to {outdir}")
    return EXIT_OK
