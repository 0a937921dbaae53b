"""Cut out images at scale on Ray Data: ``python -m ben_core distributed INPUT_URI -o OUTPUT_URI``.

:class:`BEN2Stage` is a callable class for ``ray.data.Dataset.map_batches`` (Ray's batch-inference
pattern): each actor loads BEN2 once in its constructor and turns batches of image files (their bytes
and paths, as ``ray.data.read_binary_files(..., include_paths=True)`` gives them) into output files,
returning one row per input (input, output, status, error, seconds). It decodes, cuts out and encodes
exactly as the single-process CLI does (:mod:`ben_core.io.inputs`, :class:`ben_core.pipeline.CutoutPipeline`,
:mod:`ben_core.io.writers`), so the files are the same bytes.

Inputs and outputs are local folders or any URI pyarrow's file systems open (``s3://``, ``gs://``, ...,
with the credentials those use); outputs keep the inputs' relative names. Local files are written
atomically (temporary name, then rename); on object stores an object appears only when its upload
completes. ``--skip-existing`` and ``--report`` work as in the CLI.

Ray is an optional dependency (``pip install "ray[data]"``), imported only here. Run on a cluster by
passing ``--address`` or setting ``RAY_ADDRESS``; without either a local Ray starts with this machine's
CPUs. Images only: videos are left out with a warning (use ``python -m ben_core`` for them).
"""
from __future__ import annotations

import argparse
import os
import posixpath
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .jobs import (
    EXIT_FAILED,
    EXIT_MODEL,
    EXIT_OK,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Report,
    UsageError,
    background_arg,
    cut_out,
    load_predictor,
    model_options,
    output_format,
    positive_int,
    resolve_checkpoint,
    run_program,
)

__all__ = ["BEN2Stage", "Plan", "plan", "run", "main"]


class ModelUnavailable(RuntimeError):
    """The weights could not be found or downloaded (exit code 3)."""


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise UsageError('the distributed stage needs Ray Data: pip install "ray[data]" (or the ray extra: '
                         'pip install "comfyui-ben2[ray]")') from e
    return ray


def _filesystem(uri: str):
    """``(pyarrow FileSystem, path inside it)`` for a local path or a URI."""
    from pyarrow import fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    return pafs.FileSystem.from_uri(uri)


def _is_local(filesystem) -> bool:
    from pyarrow import fs as pafs

    return isinstance(filesystem, pafs.LocalFileSystem)


# --------------------------------------------------------------------------------------------------
# planning (in the driver, before any actor starts)
# --------------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """The inputs (paths inside ``in_fs``) and their outputs (paths inside ``out_fs``), in order."""

    in_uri: str
    out_uri: str
    root: str
    inputs: List[str]
    outputs: List[str]
    skipped: List[int]
    warnings: List[str]


def _list_images(filesystem, base: str, recursive: bool) -> Tuple[str, List[str], List[str]]:
    """``(root, image paths, warnings)`` under ``base`` (a folder or one file); hidden files are left out,
    files that are neither images nor videos are counted in a warning, videos too."""
    from pyarrow import fs as pafs

    info = filesystem.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise UsageError(f"input not found: {base}")
    if info.type == pafs.FileType.File:
        return posixpath.dirname(base), [base], []
    entries = filesystem.get_file_info(pafs.FileSelector(base, recursive=recursive))
    images, videos, other = [], [], []
    for entry in entries:
        if entry.type != pafs.FileType.File:
            continue
        rel = posixpath.relpath(entry.path, base)
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        ext = posixpath.splitext(entry.path)[1].lower()
        (images if ext in IMAGE_EXTENSIONS else videos if ext in VIDEO_EXTENSIONS else other).append(entry.path)
    warnings = []
    if videos:
        warnings.append(f"left out {len(videos)} video file(s): the distributed stage does images; use "
                        "python -m ben_core for videos")
    if other:
        warnings.append(f"ignored {len(other)} file(s) without an image extension")
    return base, sorted(images), warnings


def output_name(path: str, root: str, suffix: str) -> str:
    """The output's path relative to the output root: the input's relative path with ``suffix``
    (as the CLI names a folder's files)."""
    rel = posixpath.relpath(path, root)
    return posixpath.splitext(rel)[0] + suffix


def plan(in_uri: str, out_uri: str, fmt, *, recursive: bool = False, skip_existing: bool = False) -> Plan:
    """List the inputs, name the outputs, refuse clashes and outputs that would replace inputs
    (UsageError, one line), prove a local output folder writable, and find finished outputs."""
    from pyarrow import fs as pafs

    from ..io.files import check_writable_folder

    in_fs, in_base = _filesystem(in_uri)
    out_fs, out_base = _filesystem(out_uri)
    root, inputs, warnings = _list_images(in_fs, in_base, recursive)
    if not inputs:
        raise UsageError(f"no image files found in {in_uri}")
    names = [output_name(p, root, fmt.suffix) for p in inputs]
    seen: Dict[str, str] = {}
    for src, name in zip(inputs, names, strict=True):
        if name.lower() in seen:
            raise UsageError(f"{seen[name.lower()]} and {src} would both be written to {name}: rename one of them "
                             "or process them in separate runs")
        seen[name.lower()] = src
    outputs = [posixpath.join(out_base, n) for n in names]
    if _is_local(out_fs):
        problem = check_writable_folder(out_base)
        if problem is not None:
            raise UsageError(f"-o {out_uri}: {problem}")
    if type(in_fs) is type(out_fs) and set(outputs) & set(inputs):
        raise UsageError(f"writing {sorted(set(outputs) & set(inputs))[0]} would replace an input image; choose "
                         "another output location (-o)")
    skipped = []
    if skip_existing:
        from ..io.writers import is_complete_image

        infos = out_fs.get_file_info(outputs)
        for i, (out, info) in enumerate(zip(outputs, infos, strict=True)):
            if info.type == pafs.FileType.File and info.size > 0 and (not _is_local(out_fs) or is_complete_image(out)):
                skipped.append(i)
    return Plan(in_uri, out_uri, root, inputs, outputs, skipped, warnings)


# --------------------------------------------------------------------------------------------------
# the stage (in each actor)
# --------------------------------------------------------------------------------------------------

class BEN2Stage:
    """``Dataset.map_batches`` callable class: BEN2 loaded once per actor, a batch of image files in,
    one result row per file out.

    Batch in (numpy format): ``"path"`` (paths inside the input file system) and ``"bytes"`` (the files'
    contents). Batch out: ``"input"``, ``"output"``, ``"status"`` ("ok" / "failed"), ``"error"``,
    ``"seconds"``. Constructor: ``in_uri`` / ``out_uri`` as given to :func:`plan`, ``root`` the input root
    the relative names are taken from, ``checkpoint`` a path every node can read (None: the official
    weights from the Hugging Face cache, downloaded once per node), then the CLI's options (``working_size``
    None: BEN2's native size).
    """

    def __init__(self, out_uri: str, root: str, checkpoint: Optional[str] = None, *, device: str = "auto",
                 dtype: str = "auto", working_size: Optional[int] = None, batch_size: int = 1,
                 refine_foreground: bool = False,
                 background: Optional[Tuple[float, float, float]] = None, image_format: str = "png",
                 mask_only: bool = False):
        from ..devices import resolve_device, resolve_precision
        from ..io.writers import OutputFormat
        from ..model.ben2 import BENBase
        from ..pipeline import CutoutOptions, CutoutPipeline

        self.fmt = OutputFormat(background=background, image_format=image_format, mask_only=mask_only).check()
        dev = resolve_device(device)
        predictor = load_predictor(checkpoint, dev, resolve_precision(dtype, dev),
                                   working_size or BENBase.native_size, batch_size, lambda msg: None)
        self.pipeline = CutoutPipeline(predictor, CutoutOptions(foreground=refine_foreground and not mask_only,
                                                                background=background, image=not mask_only))
        self.out_fs, self.out_base = _filesystem(out_uri)
        self.root = root

    def _write(self, path: str, data: bytes) -> None:
        from ..io.writers import write_file

        if _is_local(self.out_fs):
            write_file(path, data)
            return
        parent = posixpath.dirname(path)
        if parent:
            self.out_fs.create_dir(parent, recursive=True)
        with self.out_fs.open_output_stream(path) as stream:  # object stores publish on close only
            stream.write(data)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from ..io.image_files import read_image_file
        from ..io.writers import encode_cutout

        rows = []
        decoded = []
        for path, data in zip(batch["path"], batch["bytes"], strict=True):
            path = str(path)
            out = posixpath.join(self.out_base, output_name(path, self.root, self.fmt.suffix))
            t0 = time.perf_counter()
            try:
                decoded.append((path, out, read_image_file(bytes(data)), time.perf_counter() - t0))
            except Exception as e:  # a broken file is reported; the others go on
                rows.append((path, None, "failed", f"cannot read image: {type(e).__name__}: {e}",
                             time.perf_counter() - t0))
        if decoded:
            t0 = time.perf_counter()
            results = cut_out(self.pipeline, [f.pixels for _, _, f, _ in decoded])
            share = (time.perf_counter() - t0) / len(decoded)
            for (path, out, file, read_s), result in zip(decoded, results, strict=True):
                t1 = time.perf_counter()
                try:
                    if isinstance(result, Exception):
                        raise result
                    self._write(out, encode_cutout(*result, self.fmt, file.icc_profile))
                    rows.append((path, out, "ok", None, read_s + share + time.perf_counter() - t1))
                except Exception as e:
                    rows.append((path, None, "failed", f"{type(e).__name__}: {e}", read_s + share))
        return {
            "input": np.array([r[0] for r in rows], dtype=object),
            "output": np.array([r[1] for r in rows], dtype=object),
            "status": np.array([r[2] for r in rows], dtype=object),
            "error": np.array([r[3] for r in rows], dtype=object),
            "seconds": np.array([r[4] for r in rows], dtype=np.float64),
        }


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ben_core distributed`` argument parser (model options from
    :func:`ben_core.apps.jobs.model_options`)."""
    p = argparse.ArgumentParser(
        prog="python -m ben_core distributed",
        description="Remove the background of many images on a Ray cluster (or a local Ray).",
        epilog="Exit codes: 0 ok, 1 some inputs failed, 2 usage error, 3 the model could not be loaded.",
        parents=[model_options(title="the BEN2 model (in every actor)",
                               checkpoint_help="BEN2 weights readable on every node (default: the official "
                                               "weights, from the Hugging Face cache or downloaded once per node)")])
    p.add_argument("input", metavar="INPUT_URI", help="folder, file or URI (s3://bucket/prefix, gs://...)")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT_URI", help="output folder or URI")
    p.add_argument("--actors", type=positive_int, default=1, metavar="N", help="model replicas (default 1)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, metavar="N",
                   help="CPUs reserved per actor (torch uses that many threads; default 1)")
    p.add_argument("--gpus-per-actor", type=float, default=None, metavar="N",
                   help="GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: RAY_ADDRESS, else a local Ray on this machine)")
    p.add_argument("--refine-foreground", action="store_true",
                   help="estimate clean foreground colours at the edges (blur-fusion, slower)")
    p.add_argument("--background", type=background_arg, default=None, metavar="transparent|#RRGGBB",
                   help="transparent (RGBA) or a colour to composite over (as the CLI's --background)")
    p.add_argument("--mask-only", action="store_true", help="write the alpha matte as a greyscale image")
    p.add_argument("--format", dest="image_format", default="png", choices=["png", "jpg", "webp"],
                   help="image file format (jpg needs --background or --mask-only)")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders / prefixes")
    p.add_argument("--skip-existing", action="store_true", help="resume: skip inputs whose output is complete")
    p.add_argument("--report", metavar="FILE", help="append one JSON line per input (as the CLI's --report)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output (errors are still printed)")
    return p


def run(args, log=print) -> int:
    """Plan, start Ray, stream the dataset through :class:`BEN2Stage` and report; returns the exit code."""

    fmt = output_format(args)
    the_plan = plan(args.input, args.output, fmt, recursive=args.recursive, skip_existing=args.skip_existing)
    for w in the_plan.warnings:
        print(f"warning: {w}", file=sys.stderr)
    report = Report(Path(args.report) if args.report else None, expected=the_plan.inputs)
    try:
        skipped = set(the_plan.skipped)
        for i in the_plan.skipped:
            report.add(Path(the_plan.inputs[i]), Path(the_plan.outputs[i]), "skipped", "output exists and is complete")
        todo = [p for i, p in enumerate(the_plan.inputs) if i not in skipped]
        if not todo:
            log(f"nothing to do: all {len(the_plan.inputs)} output(s) exist")
            return EXIT_OK
        ray = _import_ray()
        address = args.address or os.environ.get("RAY_ADDRESS") or None
        checkpoint = args.checkpoint
        if checkpoint is not None or address is None:
            # fail here, not in every actor; on one machine the actors then share the resolved file

            try:
                checkpoint = str(resolve_checkpoint(checkpoint, log))
            except Exception as e:
                raise ModelUnavailable(str(e)) from None
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 include_dashboard=False if address is None else None)
        gpus = args.gpus_per_actor
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        in_fs, _ = _filesystem(args.input)
        ds = ray.data.read_binary_files(todo, filesystem=in_fs, include_paths=True, num_cpus=0)
        ds = ds.map_batches(
            BEN2Stage, batch_size=args.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=args.actors),
            num_cpus=args.cpus_per_actor, num_gpus=gpus,
            fn_constructor_args=(args.output, the_plan.root, checkpoint),
            fn_constructor_kwargs=dict(device=args.device, dtype=args.dtype, working_size=args.working_size,
                                       batch_size=args.batch_size, refine_foreground=args.refine_foreground,
                                       background=args.background, image_format=args.image_format,
                                       mask_only=args.mask_only))
        t0 = time.perf_counter()
        for row in ds.iter_rows():
            report.add(Path(row["input"]), Path(row["output"]) if row["output"] else None, row["status"],
                       row["error"], float(row["seconds"]))
            if row["status"] == "failed":
                print(f"error: {row['input']}: {row['error']}", file=sys.stderr)
        elapsed = time.perf_counter() - t0
        done = report.counts
        log(f"{done.get('ok', 0)} written, {done.get('failed', 0)} failed, {done.get('skipped', 0)} skipped in "
            f"{elapsed:.1f} s with {args.actors} actor(s) ({done.get('ok', 0) / max(elapsed, 1e-9):.2f} images/s)")
        return EXIT_FAILED if report.failures else EXIT_OK
    finally:
        report.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ben_core distributed``: returns the exit code."""
    return run_program(build_parser(), argv, _main)


def _main(args, log) -> int:
    try:
        return run(args, log)
    except ModelUnavailable as e:
        print(f"error: could not load the BEN2 model: {e}", file=sys.stderr)
        return EXIT_MODEL


if __name__ == "__main__":
    sys.exit(main())
