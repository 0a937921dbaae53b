"""``python -m ben_core``: inputs, outputs, failures, exit codes (stand-in predictor unless marked slow)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ben_core.apps import cli, jobs
from ben_core.io.inputs import to_float_rgb

REPO = Path(__file__).resolve().parents[1]


class RedPredictor:
    """Stand-in for BENPredictor: alpha = red channel; records the batch size of every network call."""

    device = torch.device("cpu")
    batch_size = 1

    def __init__(self):
        self.calls: list[int] = []

    def predict_chunk(self, chunk, deferred=False):
        assert all(im.dim() == 3 and im.shape[-1] == 3 for im in chunk)  # validated, channels last
        self.calls.append(len(chunk))
        red = [to_float_rgb(im[None])[0, 0] for im in chunk]  # red channel, float 0..1
        alpha = torch.stack(red) if isinstance(chunk, torch.Tensor) else red
        return (alpha, lambda: None) if deferred else alpha


def rand_image(path: Path, w: int, h: int, seed: int, **save_kw) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, **save_kw)
    return arr


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    arrs = {
        "a": rand_image(d / "a.png", 40, 30, 1),
        "b": rand_image(d / "b.png", 17, 23, 2),
        "c": rand_image(d / "c.bmp", 32, 32, 3),
    }
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    full = (d / "a.png").read_bytes()
    (d / "truncated.png").write_bytes(full[: len(full) // 2])
    (d / "notes.txt").write_text("not an image")
    return d, arrs


def run(argv, predictor=None):
    return cli.main([str(a) for a in argv], predictor=predictor if predictor is not None else RedPredictor())


def test_folder_with_broken_files_reports_and_writes_the_rest(folder, tmp_path, capsys):
    d, arrs = folder
    out = tmp_path / "out"
    code = run([d, "-o", out])
    err = capsys.readouterr().err
    assert code == jobs.EXIT_FAILED
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert "broken.png" in err and "truncated.png" in err and "2 of 5 input(s) failed" in err
    assert "notes.txt" in err  # ignored files are named, not dropped silently
    for name, arr in arrs.items():
        im = Image.open(out / f"{name}.png")
        assert im.mode == "RGBA" and im.size == (arr.shape[1], arr.shape[0])
        got = np.asarray(im)
        np.testing.assert_array_equal(got[..., :3], arr)
        np.testing.assert_array_equal(got[..., 3], arr[..., 0])  # alpha = stand-in's red channel


def test_all_good_exit_zero_and_colour_background_composite(tmp_path, capsys):
    src = tmp_path / "x.png"
    arr = rand_image(src, 25, 19, 7)
    out = tmp_path / "o"
    assert run([src, "-o", out, "--background", "#102030", "-q"]) == jobs.EXIT_OK
    im = Image.open(out / "x.png")
    assert im.mode == "RGB" and im.size == (25, 19)
    a = arr[..., :1].astype(np.float64) / 255
    expect = np.rint((arr / 255 * a + np.array([0x10, 0x20, 0x30]) / 255 * (1 - a)) * 255)
    assert np.abs(np.asarray(im).astype(np.float64) - expect).max() <= 1
    assert capsys.readouterr().err == ""  # -q: nothing on stderr when all is well

    assert run([src, "-o", out, "--background", "00ff00", "--format", "jpg", "-q"]) == jobs.EXIT_OK
    assert Image.open(out / "x.jpg").mode == "RGB"


def test_animated_image_warns_that_only_the_first_frame_is_processed(tmp_path, capsys):
    src = tmp_path / "anim.gif"
    frames = [Image.fromarray(np.full((8, 10, 3), v, np.uint8)) for v in (10, 200, 90)]
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert run([src, "-o", tmp_path / "o", "-q"]) == jobs.EXIT_OK
    err = capsys.readouterr().err
    assert "anim.gif" in err and "3 frames" in err and "only the first" in err
    assert (tmp_path / "o" / "anim.png").is_file()


def test_mask_only_writes_greyscale_alpha(tmp_path):
    src = tmp_path / "m.png"
    arr = rand_image(src, 12, 9, 3)
    assert run([src, "-o", tmp_path / "o", "--mask-only"]) == 0
    im = Image.open(tmp_path / "o" / "m.png")
    assert im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), arr[..., 0])


@pytest.mark.parametrize("bs,expected", [(1, [1] * 5), (2, [2, 2, 1]), (8, [5])])
def test_batch_size_chunks(tmp_path, bs, expected):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(5):
        rand_image(d / f"{i}.png", 10 + i, 8, i)  # mixed sizes in one batch
    pred = RedPredictor()
    assert run([d, "-o", tmp_path / "o", "--batch-size", bs, "-q"], pred) == 0
    assert pred.calls == expected
    assert len(list((tmp_path / "o").iterdir())) == 5


def test_broken_file_in_a_batch_does_not_sink_the_batch(folder, tmp_path):
    d, _ = folder
    pred = RedPredictor()
    assert run([d, "-o", tmp_path / "o", "--batch-size", 3, "-q"], pred) == jobs.EXIT_FAILED
    assert sum(pred.calls) == 3 and len(list((tmp_path / "o").iterdir())) == 3


def test_predictor_failure_is_isolated_to_the_bad_image(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for i, w in enumerate([10, 11, 12]):
        rand_image(d / f"{i}.png", w, 8, i)

    class Picky(RedPredictor):
        def predict_chunk(self, chunk, deferred=False):
            if any(im.shape[1] == 11 for im in chunk):
                raise RuntimeError("cannot handle width 11")
            return super().predict_chunk(chunk, deferred)

    assert run([d, "-o", tmp_path / "o", "--batch-size", 3], Picky()) == jobs.EXIT_FAILED
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["0.png", "2.png"]
    assert "1.png" in capsys.readouterr().err


def test_output_names_mirror_the_inputs_and_clashes_are_refused_before_any_work(tmp_path, capsys):
    for sub in ("a", "b", "a/deep"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    rand_image(tmp_path / "a" / "x.png", 8, 8, 1)
    rand_image(tmp_path / "b" / "x.png", 8, 8, 3)
    rand_image(tmp_path / "a" / "deep" / "y.png", 8, 8, 4)
    out = tmp_path / "out"
    assert run([tmp_path / "a", tmp_path / "b", "-o", out, "-r", "-q"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == sorted(["a/x.png", "b/x.png", "a/deep/y.png"])  # same names, kept apart by folder
    rand_image(tmp_path / "a" / "x.jpg", 8, 8, 2)  # x.jpg and x.png would both write x.png
    predictor = RedPredictor()
    assert run([tmp_path / "a", "-o", tmp_path / "out2", "-q", "-r"], predictor) == jobs.EXIT_USAGE
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "x.jpg" in errors[0] and "x.png" in errors[0] and "would both be written" in errors[0]
    assert predictor.calls == [] and not (tmp_path / "out2").exists()  # refused before any work


def test_files_from_different_folders_stay_flat_without_collisions(tmp_path):
    for sub in ("p/q", "r"):
        (tmp_path / sub).mkdir(parents=True)
    rand_image(tmp_path / "p" / "q" / "one.png", 8, 8, 1)
    rand_image(tmp_path / "r" / "two.png", 8, 8, 2)
    out = tmp_path / "out"
    assert run([tmp_path / "p" / "q" / "one.png", tmp_path / "r" / "two.png", "-o", out, "-q"]) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["one.png", "two.png"]


def test_output_folder_inside_input_folder_is_not_reprocessed(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    rand_image(d / "a.png", 8, 8, 1)
    out = d / "out"
    assert run([d, "-o", out, "-r", "-q"]) == 0
    assert run([d, "-o", out, "-r", "-q"]) == 0  # second run must not pick up out/a.png
    assert sorted(p.name for p in out.rglob("*.png")) == ["a.png"]
    assert "output folder" in capsys.readouterr().err


def test_exif_orientation_applied(tmp_path):
    src = tmp_path / "rot.jpg"
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, :5] = 255  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(arr).save(src, exif=exif, quality=100)
    assert run([src, "-o", tmp_path / "o", "-q"]) == 0
    im = np.asarray(Image.open(tmp_path / "o" / "rot.png"))
    assert im.shape[:2] == (30, 10)  # displayed orientation
    assert im[:5, :, 0].mean() > 200 and im[-5:, :, 0].mean() < 50  # band now on top


def test_usage_errors_exit_2(tmp_path, capsys):
    src = tmp_path / "x.png"
    rand_image(src, 8, 8, 0)
    assert run([tmp_path / "missing.png", "-o", tmp_path / "o"]) == jobs.EXIT_USAGE
    assert "missing.png" in capsys.readouterr().err
    assert run([src, "-o", tmp_path / "o", "--background", "purple"]) == jobs.EXIT_USAGE
    assert "#00FF00" in capsys.readouterr().err
    assert run([src, "-o", tmp_path / "o", "--batch-size", "0"]) == jobs.EXIT_USAGE
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run([empty, "-o", tmp_path / "o"]) == jobs.EXIT_USAGE
    assert run([src, "-o", tmp_path / "o", "--mask-only", "--background", "#000000"]) == jobs.EXIT_USAGE


def test_missing_weights_offline_gives_clear_message(tmp_path):
    """No --checkpoint, empty HF cache, offline: exit 3 and a message saying where the weights go."""
    src = tmp_path / "x.png"
    rand_image(src, 8, 8, 0)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_HUB_CACHE=str(tmp_path / "hf" / "hub"), PYTHONPATH=str(REPO))
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    r = subprocess.run([sys.executable, "-m", "ben_core", str(src), "-o", str(tmp_path / "o"), "--device", "cpu"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == jobs.EXIT_MODEL, r.stderr
    assert "PramaLLC/BEN2" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "x.png").exists()


def test_checkpoint_path_missing_exit_3(tmp_path, capsys):
    src = tmp_path / "x.png"
    rand_image(src, 8, 8, 0)
    code = cli.main([str(src), "-o", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "nope.pth"),
                     "--device", "cpu"])
    assert code == jobs.EXIT_MODEL
    assert "nope.pth" in capsys.readouterr().err


def test_video_input_through_cli(tmp_path):
    av = pytest.importorskip("av")
    from test_video import DiskPredictor, make_clip

    del av

    class Both(DiskPredictor):
        def predict_chunk(self, chunk, deferred=False):
            if chunk[0].shape[:2] == (8, 8):  # the still image (the clip's frames are 96x64)
                return RedPredictor().predict_chunk(chunk, deferred)
            return super().predict_chunk(chunk, deferred)

    make_clip(tmp_path / "clip.mp4", n=4)
    rand_image(tmp_path / "still.png", 8, 8, 0)
    out = tmp_path / "o"
    pred = Both()
    assert cli.main([str(tmp_path / "clip.mp4"), str(tmp_path / "still.png"), "-o", str(out), "-q",
                     "--batch-size", "2"], predictor=pred) == 0
    assert pred.calls == [2, 2]
    assert (out / "clip.webm").is_file() and (out / "still.png").is_file()
    assert cli.main([str(tmp_path / "clip.mp4"), "-o", str(out), "-q", "--background", "#0000ff"],
                    predictor=DiskPredictor()) == 0
    assert (out / "clip.mp4").is_file()


def test_video_formats_through_cli_and_resume(tmp_path):
    """--video-format mov (ProRes 4444 with alpha), png (a folder of numbered PNGs + audio as .wav),
    --mask-only into MP4, --temporal; --skip-existing takes finished outputs of every kind as done."""
    av = pytest.importorskip("av")
    from test_video import DiskPredictor, make_clip

    make_clip(tmp_path / "clip.mp4", n=4)
    out = tmp_path / "o"
    assert cli.main([str(tmp_path / "clip.mp4"), "-o", str(out), "-q", "--video-format", "mov", "--temporal"],
                    predictor=DiskPredictor()) == 0
    with av.open(str(out / "clip.mov")) as c:
        assert c.streams.video[0].codec_context.name == "prores" and c.streams.audio
        assert {f.format.name for f in c.decode(video=0)} == {"yuva444p12le"}
    assert cli.main([str(tmp_path / "clip.mp4"), "-o", str(out / "seq"), "-q", "--video-format", "png"],
                    predictor=DiskPredictor()) == 0
    assert sorted(p.name for p in (out / "seq" / "clip").iterdir()) == [
        "clip.wav", "clip_000001.png", "clip_000002.png", "clip_000003.png", "clip_000004.png"]
    assert cli.main([str(tmp_path / "clip.mp4"), "-o", str(out / "matte"), "-q", "--video-format", "mp4",
                     "--mask-only"], predictor=DiskPredictor()) == 0
    with av.open(str(out / "matte" / "clip.mp4")) as c:
        grey = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(grey[..., 0] - grey[..., 2]).max() < 8 and grey[32, 48, 0] > 230 and grey[2, 2, 0] < 25

    pred = DiskPredictor()
    for fmt, folder in (("mov", out), ("png", out / "seq")):
        assert cli.main([str(tmp_path / "clip.mp4"), "-o", str(folder), "-q", "--video-format", fmt,
                         "--skip-existing"], predictor=pred) == 0
    assert pred.calls == []  # both were found complete


def test_temporal_flags_reach_the_video_loop(tmp_path, monkeypatch):
    """--temporal = causal, --temporal-mode bidirectional (implies --temporal), neither = per-frame; a real
    bidirectional run writes every frame."""
    av = pytest.importorskip("av")
    from test_video import DiskPredictor, make_clip

    from ben_core import video

    make_clip(tmp_path / "clip.mp4", n=5, audio=False)
    seen, real = [], video.remove_background_video

    def spy(*a, temporal=False, **k):
        seen.append(temporal)
        return real(*a, temporal=temporal, **k)

    monkeypatch.setattr(video, "remove_background_video", spy)
    for i, flags in enumerate(([], ["--temporal"], ["--temporal-mode", "bidirectional"],
                               ["--temporal", "--temporal-mode", "causal"])):
        out = tmp_path / f"o{i}"
        assert cli.main([str(tmp_path / "clip.mp4"), "-o", str(out), "-q", "--video-format", "mov", *flags],
                        predictor=DiskPredictor()) == 0
        with av.open(str(out / "clip.mov")) as c:
            assert sum(1 for _ in c.decode(video=0)) == 5
    assert seen == [False, True, "bidirectional", "causal"]
    assert cli.main([str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "x"), "--temporal-mode", "both"]) == 2


def test_help_runs_as_module():
    r = subprocess.run([sys.executable, "-m", "ben_core", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0 and "--refine-foreground" in r.stdout and "--batch-size" in r.stdout


@pytest.mark.slow
def test_end_to_end_real_network_synthetic_checkpoint(tmp_path):
    """Real BEN2 network + synthetic .pth checkpoint at working size 512: the written alpha is the
    network's probability map (the stored 512² conformance image needs no resize), a second image of
    another size and aspect is processed in the same run."""
    from helpers import DATA_DIR, synth_sd

    ref = np.load(DATA_DIR / "ben2_seed0_512.npz")
    ckpt = tmp_path / "BEN2_Base.pth"
    torch.save({"model_state_dict": synth_sd(0)}, ckpt)
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(ref["images"][0]).save(d / "conf.png")
    rand_image(d / "wide.jpg", 150, 60, 5)
    out = tmp_path / "out"
    code = cli.main([str(d), "-o", str(out), "--checkpoint", str(ckpt), "--working-size", "512",
                     "--device", "cpu", "--dtype", "fp32", "--batch-size", "2", "-q"])  # auto is bf16 on some CPUs
    assert code == jobs.EXIT_OK
    conf = np.asarray(Image.open(out / "conf.png"))
    assert conf.shape == (512, 512, 4)
    np.testing.assert_array_equal(conf[..., :3], ref["images"][0])
    expect = ref["probs"][0, 0] * 255
    assert np.abs(conf[..., 3].astype(np.float64) - expect).max() <= 1.0
    wide = Image.open(out / "wide.png")
    assert wide.mode == "RGBA" and wide.size == (150, 60)


def test_png_sequence_folder_may_not_swallow_other_outputs(tmp_path, capsys):
    pytest.importorskip("av")
    from test_video import DiskPredictor, make_clip

    d = tmp_path / "in"
    (d / "shots").mkdir(parents=True)
    make_clip(d / "shots.mp4", n=2)
    rand_image(d / "shots" / "a.png", 8, 8, 0)
    code = cli.main([str(d), "-r", "-o", str(tmp_path / "o"), "--video-format", "png", "-q"],
                    predictor=DiskPredictor())
    assert code == jobs.EXIT_USAGE
    assert "PNG sequence would replace" in capsys.readouterr().err
    assert not (tmp_path / "o" / "shots").exists()
