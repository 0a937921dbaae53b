"""Batch jobs that resume and never corrupt: atomic outputs, --skip-existing, --report, Ctrl-C / SIGTERM,
checks before the model loads, formats and colour profiles. Signals go to a real subprocess, the file
system is the real one (a file-size limit stands in for a full disk)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cli import REPO, RedPredictor, rand_image, run

from ben_core.apps import cli, jobs
from ben_core.io.files import TEMP_MARK, atomic_output, check_writable_folder, is_fatal_write_error
from ben_core.io.writers import is_complete_image


def noise_image(path: Path, w: int, h: int, seed: int) -> None:
    rand_image(path, w, h, seed)


def temporaries(folder: Path) -> list:
    return [p for p in folder.rglob("*") if TEMP_MARK in p.name]


def report_lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------- atomic files

def test_atomic_output_leaves_nothing_on_error(tmp_path):
    dst = tmp_path / "sub" / "x.png"
    with pytest.raises(RuntimeError):
        with atomic_output(dst) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert not dst.exists() and list((tmp_path / "sub").iterdir()) == []
    dst.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(dst) as tmp:
            tmp.write_bytes(b"new but half")
            raise KeyboardInterrupt
    assert dst.read_bytes() == b"old" and [p.name for p in dst.parent.iterdir()] == ["x.png"]
    with atomic_output(dst) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == dst.parent and tmp.name.startswith(".")
        tmp.write_bytes(b"complete")
    assert dst.read_bytes() == b"complete"


def test_disk_full_is_recognised_from_a_real_enospc():
    with pytest.raises(OSError) as err:
        with open("/dev/full", "wb") as f:
            f.write(b"x" * 10)
    assert is_fatal_write_error(err.value)


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
sys.path.insert(0, {tests!r})
from test_cli import RedPredictor
from ben_core.apps import cli, jobs
sys.exit(cli.main(sys.argv[1:], predictor=RedPredictor()))
"""


def test_a_write_that_runs_out_of_space_leaves_no_truncated_file(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past 20 kB, as a full disk would: the big cut-out fails
    (reported, exit 1), no truncated file and no temporary remain, the small one is written."""
    src = tmp_path / "in"
    src.mkdir()
    noise_image(src / "big.png", 200, 150, 1)  # RGBA noise PNG ~ 120 kB
    noise_image(src / "small.png", 8, 8, 2)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", _LIMITED.format(tests=str(REPO / "tests")), str(src), "-o", str(out),
                        "-q", "--report", str(tmp_path / "r.jsonl")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == jobs.EXIT_FAILED, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["small.png"]
    assert is_complete_image(out / "small.png")
    lines = {Path(d["input"]).name: d for d in report_lines(tmp_path / "r.jsonl")}
    assert lines["big.png"]["status"] == "failed" and "big.png" in lines["big.png"]["output"]
    assert "File too large" in lines["big.png"]["error"] and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------- resume and report

def test_skip_existing_resumes_and_redoes_incomplete_outputs(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        noise_image(src / f"{i}.png", 20 + i, 16, i)
    out = tmp_path / "out"
    assert run([src, "-o", out, "-q"]) == jobs.EXIT_OK
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "1.png").unlink()  # never written (the job died before it)
    (out / "2.png").write_bytes(first["2.png"][: len(first["2.png"]) // 2])  # truncated by another tool
    os.utime(out / "0.png", (1, 1))
    predictor = RedPredictor()
    report = tmp_path / "report.jsonl"
    assert run([src, "-o", out, "-q", "--skip-existing", "--report", report], predictor) == jobs.EXIT_OK
    assert sum(predictor.calls) == 2  # only 1.png and 2.png went through the network
    assert (out / "0.png").stat().st_mtime == 1  # untouched
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    lines = report_lines(report)
    assert sorted((Path(d["input"]).name, d["status"]) for d in lines) == [
        ("0.png", "skipped"), ("1.png", "ok"), ("2.png", "ok"), ("3.png", "skipped")]
    for d in lines:
        assert set(d) == {"input", "output", "status", "error", "seconds"} and d["seconds"] >= 0
    predictor = RedPredictor()  # everything done: the model is not even needed
    assert run([src, "-o", out, "-q", "--skip-existing"], predictor) == jobs.EXIT_OK and predictor.calls == []


def test_report_lists_failures_and_successes(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noise_image(src / "a.png", 10, 10, 1)
    (src / "empty.png").write_bytes(b"")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    report = tmp_path / "logs" / "report.jsonl"
    assert run([src, "-o", tmp_path / "out", "-q", "--report", report]) == jobs.EXIT_FAILED
    lines = {Path(d["input"]).name: d for d in report_lines(report)}
    assert lines["a.png"]["status"] == "ok" and lines["a.png"]["error"] is None
    assert lines["empty.png"]["status"] == "failed" and "empty file (0 bytes)" in lines["empty.png"]["error"]
    assert lines["broken.jpg"]["status"] == "failed" and lines["broken.jpg"]["output"] is None


# ------------------------------------------------------------------------------------- Ctrl-C

_SLOW = """
import sys, time
sys.path.insert(0, {tests!r})
from test_cli import RedPredictor
from ben_core.apps import cli, jobs

class Slow(RedPredictor):
    def predict_chunk(self, chunk, deferred=False):
        time.sleep(0.6)
        return super().predict_chunk(chunk, deferred)

sys.exit(cli.main(sys.argv[1:], predictor=Slow()))
"""


def _start_slow_job(tmp_path, n=12):
    src = tmp_path / "in"
    src.mkdir(parents=True)
    for i in range(n):
        noise_image(src / f"{i:02d}.png", 64, 48, i)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW.format(tests=str(REPO / "tests")), str(src), "-o", str(out),
                             "--report", str(tmp_path / "r.jsonl")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())):
        time.sleep(0.05)
    assert out.is_dir(), "the job never started writing"
    return proc, out


def test_ctrl_c_stops_after_the_current_chunk_and_says_how_to_resume(tmp_path):
    proc, out = _start_slow_job(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == jobs.EXIT_INTERRUPTED, err
    assert "stopping after the current chunk" in err and "--skip-existing" in err and "Traceback" not in err
    written = sorted(p.name for p in out.iterdir())
    assert 1 <= len(written) < 12 and not temporaries(out)
    assert all(is_complete_image(out / name) for name in written)
    ok = [d for d in report_lines(tmp_path / "r.jsonl") if d["status"] == "ok"]
    assert sorted(Path(d["output"]).name for d in ok) == written


def test_second_ctrl_c_stops_at_once_and_sigterm_is_a_polite_stop(tmp_path):
    proc, out = _start_slow_job(tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == jobs.EXIT_INTERRUPTED and time.monotonic() - t0 < 5, err
    assert "Traceback" not in err and not temporaries(out)
    assert all(is_complete_image(p) for p in out.iterdir())

    proc, out = _start_slow_job(tmp_path / "term")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == jobs.EXIT_INTERRUPTED and "stopping after the current chunk" in err, err
    assert not temporaries(out)


# -------------------------------------------------------------------- refused before the model loads

def test_unwritable_outputs_are_refused_before_the_model_loads(tmp_path, capsys):
    """No predictor and no checkpoint: getting past the checks would mean loading weights (exit 3)."""
    src = tmp_path / "x.png"
    noise_image(src, 8, 8, 0)

    def refused(out) -> str:
        assert cli.main([str(src), "-o", str(out), "--device", "cpu", "-q"]) == jobs.EXIT_USAGE
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        return err

    assert "under a file" in refused(src / "sub")  # a path under a file
    assert "not a folder" in refused(src)
    assert "/sys/ben2-out" in refused("/sys/ben2-out")  # a system folder nobody may create things in
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            assert "cannot write" in refused(ro)
        finally:
            ro.chmod(0o755)
    assert cli.main([str(src), "-o", str(tmp_path / "o"), "--report", str(src / "r.jsonl")]) == jobs.EXIT_USAGE
    assert "--report" in capsys.readouterr().err


def test_never_writes_over_an_input(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    noise_image(photo, 16, 16, 0)
    before = photo.read_bytes()
    predictor = RedPredictor()
    assert run([photo, "-o", tmp_path], predictor) == jobs.EXIT_USAGE  # what `*.png -o .` does
    assert "would replace an input" in capsys.readouterr().err
    assert photo.read_bytes() == before and predictor.calls == []
    assert run([photo, "-o", tmp_path, "--format", "webp", "-q"]) == jobs.EXIT_OK  # photo.webp: no clash
    assert photo.read_bytes() == before and (tmp_path / "photo.webp").exists()


def test_checkpoint_folder_and_jpg_without_background(tmp_path, capsys):
    src = tmp_path / "x.png"
    noise_image(src, 8, 8, 0)
    (tmp_path / "weights").mkdir()
    assert cli.main([str(src), "-o", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "weights"),
                     "--device", "cpu", "-q"]) == jobs.EXIT_MODEL
    err = capsys.readouterr().err
    assert "folder" in err and "Traceback" not in err
    assert run([src, "-o", tmp_path / "o2", "--format", "jpg"]) == jobs.EXIT_USAGE
    assert "--background" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # refused before anything was created


def test_offline_without_weights_answers_at_once(tmp_path):
    """Unreachable Hub, nothing cached, offline mode NOT set: a clear message in seconds, no retry noise."""
    src = tmp_path / "x.png"
    noise_image(src, 8, 8, 0)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
               HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(REPO))  # port 9 (discard): refused
    for key in ("HF_HUB_OFFLINE", "HUGGINGFACE_HUB_CACHE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(key, None)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "ben_core", str(src), "-o", str(tmp_path / "o"), "--device", "cpu"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == jobs.EXIT_MODEL, r.stderr
    assert time.monotonic() - t0 < 15
    assert "not reachable" in r.stderr and "PramaLLC/BEN2" in r.stderr
    assert "Traceback" not in r.stderr and "Retrying" not in r.stderr and "thrown while requesting" not in r.stderr


# --------------------------------------------------------------------------- formats and profiles

def _icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_colour_profile_is_carried_and_formats_do_what_they_say(tmp_path):
    icc = _icc()
    src = tmp_path / "in"
    src.mkdir()
    arr = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(arr).save(src / "p3.png", icc_profile=icc)
    Image.fromarray(arr).save(src / "q.jpg", icc_profile=icc, quality=95)
    out = tmp_path / "out"
    assert run([src, "-o", out, "-q"]) == jobs.EXIT_OK
    for name in ("p3.png", "q.png"):
        with Image.open(out / name) as im:
            assert im.mode == "RGBA" and im.info.get("icc_profile") == icc, name
    assert run([src, "-o", tmp_path / "webp", "-q", "--format", "webp"]) == jobs.EXIT_OK
    with Image.open(tmp_path / "webp" / "p3.webp") as im:
        assert im.format == "WEBP" and im.mode == "RGBA" and im.info.get("icc_profile") == icc
        alpha = np.asarray(im)[..., 3]
    assert np.abs(alpha.astype(int) - arr[..., 0]).max() <= 1  # alpha (red channel here) kept losslessly
    assert run([src, "-o", tmp_path / "jpg", "-q", "--format", "jpg", "--background", "#102030"]) == jobs.EXIT_OK
    with Image.open(tmp_path / "jpg" / "p3.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.info.get("icc_profile") == icc
    assert run([src, "-o", tmp_path / "mask", "-q", "--mask-only"]) == jobs.EXIT_OK
    with Image.open(tmp_path / "mask" / "p3.png") as im:
        assert im.mode == "L" and "icc_profile" not in im.info  # a grey matte is not in the photo's colour space


def test_io_threads_do_not_change_the_files(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(7):
        noise_image(src / f"{i}.png", 30 + i, 20 + 2 * i, i)
    outs = {}
    for threads in (0, 1, 3):
        out = tmp_path / f"out{threads}"
        assert run([src, "-o", out, "-q", "--io-threads", threads, "--batch-size", 2]) == jobs.EXIT_OK
        outs[threads] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert outs[0] == outs[1] == outs[3] and len(outs[0]) == 7


def test_complete_image_check_reads_only_the_ends(tmp_path):
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(buf, format=fmt)
        data = buf.getvalue()
        whole, cut = tmp_path / f"a.{ext}", tmp_path / f"b.{ext}"
        whole.write_bytes(data)
        cut.write_bytes(data[:-5])
        assert is_complete_image(whole) and not is_complete_image(cut), fmt
    assert check_writable_folder(tmp_path / "new" / "deeper") is None and (tmp_path / "new" / "deeper").is_dir()
