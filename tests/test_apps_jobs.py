"""ben_core.apps.jobs, what the three programs share, and what a new user hit on 0.3 (each test failed there):
a transparent MP4 that came out green, a report missing inputs after Ctrl-C, ``-o`` equal to the input
folder, an empty folder left by a failed model load, a bomb refusal without a way out, warnings printed
into the progress bar's line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import warnings
from pathlib import Path

import pytest
from PIL import Image
from test_cli import RedPredictor, rand_image, run

from ben_core.apps import cli, distributed, evaluate, jobs
from ben_core.model.ben2 import BENBase


def options_of(parser: argparse.ArgumentParser) -> dict:
    return {s: a for a in parser._actions for s in a.option_strings}


# ------------------------------------------------------------------------------ one parent parser

@pytest.mark.parametrize("build", [cli.build_parser, evaluate.build_parser, distributed.build_parser])
def test_every_program_takes_the_same_model_options(build):
    """--checkpoint/--device/--dtype/--working-size/--batch-size: one declaration, the same choices and types."""
    mine, shared = options_of(build()), options_of(jobs.model_options())
    for flag in ("--checkpoint", "--device", "--dtype", "--working-size", "--batch-size"):
        a, b = mine[flag], shared[flag]
        assert (a.choices, a.type, a.metavar) == (b.choices, b.type, b.metavar), flag
    assert sorted(mine["--working-size"].choices) == sorted(BENBase.working_sizes)


def test_device_names_are_those_the_resolver_takes():
    parser = cli.build_parser()
    for name in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert parser.parse_args(["x", "-o", "y", "--device", name]).device == name
    with pytest.raises(SystemExit):
        parser.parse_args(["x", "-o", "y", "--device", "gpu"])


def test_defaults_come_from_the_model():
    args = cli.build_parser().parse_args(["x", "-o", "y"])
    assert (args.working_size, args.device, args.dtype, args.batch_size) == (BENBase.native_size, "auto", "auto", 1)
    blank = evaluate.build_parser().parse_args(["--images", "i", "--gt", "g"])
    assert all(getattr(blank, name) is None for name in jobs.MODEL_OPTIONS)
    jobs.fill_model_defaults(blank)
    assert blank.working_size == BENBase.native_size and blank.checkpoint is None


def test_a_cuda_device_this_machine_lacks_is_a_usage_error(tmp_path, capsys):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    src = tmp_path / "a.png"
    rand_image(src, 8, 8, 0)
    assert cli.main([str(src), "-o", str(tmp_path / "o"), "--device", "cuda:1"]) == jobs.EXIT_USAGE
    assert "cuda:1" in capsys.readouterr().err


# ------------------------------------------------------------------------------ MP4 and alpha

def test_a_transparent_mp4_is_refused_naming_the_fix(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded: refused before any work")
    code = run([clip, "-o", tmp_path / "o", "--video-format", "mp4"])
    err = capsys.readouterr().err
    assert code == jobs.EXIT_USAGE
    assert "--video-format mp4" in err and "--background" in err and "transparency" in err
    assert not (tmp_path / "o").exists()


def test_mp4_is_accepted_over_a_colour_or_as_a_matte():
    parser = cli.build_parser()
    assert cli.video_format(parser.parse_args(["x", "-o", "y", "--video-format", "mp4", "--mask-only"])) == "mp4"
    assert cli.video_format(parser.parse_args(["x", "-o", "y", "--video-format", "mp4", "--background", "#00ff00"])) \
        == "mp4"
    assert cli.video_format(parser.parse_args(["x", "-o", "y", "--background", "#000000"])) == "mp4"
    assert cli.video_format(parser.parse_args(["x", "-o", "y"])) == "webm"


def test_images_alone_never_ask_about_the_video_format(tmp_path):
    src = tmp_path / "a.png"
    rand_image(src, 8, 8, 0)
    assert run([src, "-o", tmp_path / "o", "--video-format", "mp4", "-q"]) == jobs.EXIT_OK


# ------------------------------------------------------------------------------ the report

def test_the_report_has_a_line_for_every_input_after_ctrl_c(tmp_path):
    """The first Ctrl-C lands while the second chunk is predicted: the rest are reported interrupted."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        rand_image(src / f"{i:02d}.png", 16, 12, i)

    class CtrlCOnSecondChunk(RedPredictor):
        def predict_chunk(self, chunk, deferred=False):
            if len(self.calls) == 1:
                os.kill(os.getpid(), signal.SIGINT)  # StopRequest's handler, in this (main) thread
            return super().predict_chunk(chunk, deferred)

    report = tmp_path / "r.jsonl"
    code = run([src, "-o", tmp_path / "out", "-q", "--report", report, "--io-threads", "0"], CtrlCOnSecondChunk())
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert code == jobs.EXIT_INTERRUPTED
    assert sorted(Path(d["input"]).name for d in lines) == sorted(p.name for p in src.iterdir())
    statuses = [d["status"] for d in lines]
    assert statuses.count("ok") == len(list((tmp_path / "out").iterdir())) >= 1
    assert set(statuses) == {"ok", "interrupted"}


def test_report_close_accounts_for_every_expected_input(tmp_path):
    path = tmp_path / "r.jsonl"
    report = jobs.Report(path, expected=["a", "b", "c"])
    report.add("b", "out/b.png", "ok")
    report.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(d["input"], d["status"]) for d in lines] == [("b", "ok"), ("a", "interrupted"), ("c", "interrupted")]
    with pytest.raises(ValueError, match="status"):
        jobs.Report(None).add("a", None, "done")


# ------------------------------------------------------------------------------ the output folder

def test_output_folder_equal_to_the_input_folder_names_the_fix(tmp_path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    rand_image(src / "a.png", 8, 8, 0)
    assert run([src, "-o", src]) == jobs.EXIT_USAGE
    err = capsys.readouterr().err
    assert "lies in the output folder" in err and "-o " in err and "cutouts" in err
    assert sorted(p.name for p in src.iterdir()) == ["a.png"]


def test_a_failed_model_load_leaves_no_empty_output_folder(tmp_path, capsys):
    src = tmp_path / "a.png"
    rand_image(src, 8, 8, 0)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "new" / "cutouts"
    assert cli.main([str(src), "-o", str(out), "--checkpoint", str(bad), "--device", "cpu"]) == jobs.EXIT_MODEL
    assert "could not load the BEN2 model" in capsys.readouterr().err
    assert not out.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    assert cli.main([str(src), "-o", str(existing), "--checkpoint", str(bad), "--device", "cpu"]) == jobs.EXIT_MODEL
    assert existing.is_dir()  # a folder the user made stays


# ------------------------------------------------------------------------------ large images

def test_a_decompression_bomb_refusal_names_the_way_to_allow_it(tmp_path, monkeypatch, capsys):
    src = tmp_path / "big.png"
    rand_image(src, 64, 64, 0)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 px > 2 x 1000: Pillow refuses to open it
    assert run([src, "-o", tmp_path / "o", "-q"]) == jobs.EXIT_FAILED
    assert "--max-image-pixels" in capsys.readouterr().err
    assert run([src, "-o", tmp_path / "o2", "-q", "--max-image-pixels", "0"]) == jobs.EXIT_OK
    assert (tmp_path / "o2" / "big.png").is_file()
    assert Image.MAX_IMAGE_PIXELS == 1000  # the limit is the run's, not the process's from then on


# ------------------------------------------------------------------------------ the progress bar

def test_warnings_and_log_records_print_above_the_bar(capsys):
    with jobs.Progress(3, enabled=True) as progress:
        progress.update(1, "a.png")
        logging.getLogger("ben_core").warning("OpenCV is not installed")
        warnings.warn("a Python warning", stacklevel=1)
        progress.update(1, "b.png")
    err = capsys.readouterr().err
    for message in ("warning: OpenCV is not installed", "warning: a Python warning"):
        line = next(part for part in err.replace("\r", "\n").split("\n") if message in part)
        assert line == message, repr(line)  # on a line of its own, not inside the bar's
    assert logging.getLogger("ben_core").propagate  # restored after the run
