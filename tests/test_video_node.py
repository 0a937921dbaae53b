"""Remove Video Background (BEN2): VIDEO in, streamed, VIDEO out, written once into ComfyUI's output (or temp)
folder; checked with ComfyUI stand-ins (tests/comfy_stub) and by decoding the written files with PyAV."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from comfy_stub import InterruptProcessingException, install_comfy, make_folder_paths  # noqa: E402
from test_nodes import node_info, standin_model, sub  # noqa: E402
from test_video import make_clip  # noqa: E402
from test_video_formats import decode  # noqa: E402


@pytest.fixture
def comfy_dirs(tmp_path, monkeypatch):
    """folder_paths with output and temp folders; returns (output, temp)."""
    fp = make_folder_paths(str(tmp_path / "models"))
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return Path(fp.get_output_directory()), Path(fp.get_temp_directory())


def node():
    return sub("nodes.remove_video_background").BEN2RemoveVideoBackground


def video_input(path_or_buffer):
    import comfy_api.latest as latest

    return latest.InputImpl.VideoFromFile(path_or_buffer)


def run(clip, model=None, **kw):
    args = dict(video_format="webm", output_mode="RGBA", background_colour="#FFFFFF", refine_foreground=False,
                matte_only=False, temporal_stabilize=True, save_output=True, filename_prefix="video/BEN2",
                batch_size=2, working_size="512")
    args.update(kw)
    return node().execute(model or standin_model(), video_input(clip), **args)


def all_files(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_streams_in_batches_writes_once_and_passes_the_file_on(tmp_path, comfy_dirs, monkeypatch):
    out_dir, _ = comfy_dirs
    comfy = install_comfy(monkeypatch)
    clip = make_clip(tmp_path / "clip.mp4", n=7)
    model = standin_model()
    res = run(clip, model=model)
    assert [s[0] for s in model.net.seen] == [2, 2, 2, 1]  # never the whole clip at once
    assert all_files(out_dir) == ["video/BEN2_00001_.webm"]
    written = out_dir / "video" / "BEN2_00001_.webm"
    assert res.args[0].get_stream_source() == str(written)  # the VIDEO output is that file
    assert res.ui == {"images": [{"filename": "BEN2_00001_.webm", "subfolder": "video", "type": "output"}],
                      "animated": (True,)}
    frames, meta = decode(written)
    assert len(frames) == 7 and meta["frame_formats"] == {"yuva420p"} and meta["audio"] == ["opus"]
    assert comfy.progress[-1] == (7, 7) and comfy.checks >= 4
    run(clip)
    assert all_files(out_dir) == ["video/BEN2_00001_.webm", "video/BEN2_00002_.webm"]  # numbered like Save Video


def test_mov_keeps_alpha_and_has_no_browser_preview(tmp_path, comfy_dirs, monkeypatch):
    out_dir, _ = comfy_dirs
    install_comfy(monkeypatch)
    res = run(make_clip(tmp_path / "clip.mp4", n=3), video_format="mov", filename_prefix="cut")
    frames, meta = decode(out_dir / "cut_00001_.mov")
    assert meta["codec"] == "prores" and all(f.startswith("yuva444p") for f in meta["frame_formats"])
    assert res.ui is None


def test_preview_only_goes_to_the_temp_folder(tmp_path, comfy_dirs, monkeypatch):
    out_dir, temp_dir = comfy_dirs
    install_comfy(monkeypatch)
    buf = io.BytesIO(make_clip(tmp_path / "clip.mp4", n=3).read_bytes())  # VIDEOs may be in memory
    res = run(buf, save_output=False, video_format="mp4", output_mode="RGB", background_colour="#00ff00")
    assert all_files(out_dir) == [] if out_dir.exists() else True
    assert all_files(temp_dir) == ["video/BEN2_00001_.mp4"]
    assert res.ui["images"][0]["type"] == "temp"
    frames, meta = decode(temp_dir / "video" / "BEN2_00001_.mp4", fmt="rgb24")
    assert meta["pix_fmt"] == "yuv420p" and len(frames) == 3


def test_matte_only(tmp_path, comfy_dirs, monkeypatch):
    out_dir, _ = comfy_dirs
    install_comfy(monkeypatch)
    run(make_clip(tmp_path / "clip.mp4", n=3, audio=False), video_format="mp4", matte_only=True)
    frames, meta = decode(out_dir / "video" / "BEN2_00001_.mp4", fmt="gray")
    assert len(frames) == 3 and meta["audio"] == []
    f = np.stack(frames).astype(int)
    # the stand-in network: bright = foreground; the test clip is brighter on the right
    assert f[:, :, -8:].mean() > f[:, :, :8].mean() + 50


def test_bidirectional_mode_writes_every_frame(tmp_path, comfy_dirs, monkeypatch):
    """temporal_mode = bidirectional: the stabiliser holds frames back (its look-ahead) and lets them go at the
    end; every frame is written, in one file, the network sees batch_size frames at a time."""
    out_dir, _ = comfy_dirs
    install_comfy(monkeypatch)
    model = standin_model()
    run(make_clip(tmp_path / "clip.mp4", n=7), model=model, temporal_mode="bidirectional", video_format="mov")
    assert [s[0] for s in model.net.seen] == [2, 2, 2, 1]
    frames, _ = decode(out_dir / "video" / "BEN2_00001_.mov")
    assert len(frames) == 7


def test_cancel_leaves_no_file(tmp_path, comfy_dirs, monkeypatch):
    out_dir, _ = comfy_dirs
    install_comfy(monkeypatch, interrupt_after=3)
    model = standin_model()
    with pytest.raises(InterruptProcessingException):
        run(make_clip(tmp_path / "clip.mp4", n=9), model=model, batch_size=1)
    assert 0 < len(model.net.seen) < 9
    folder = out_dir / "video"
    assert not folder.exists() or os.listdir(folder) == []  # no partial file, hidden or not


@pytest.mark.parametrize("kw,match", [
    ({"video_format": "mp4"}, "set output_mode to RGB"),
    ({"video_format": "gif"}, "video_format must be one of"),
    ({"output_mode": "RGB", "background_colour": "nope"}, "background_colour"),
    ({"working_size": "300"}, "working_size"),
    ({"filename_prefix": " "}, "filename_prefix"),
    ({"temporal_mode": "forwards"}, "temporal_mode must be one of"),
])
def test_bad_settings_fail_before_any_work(tmp_path, comfy_dirs, monkeypatch, kw, match):
    out_dir, _ = comfy_dirs
    install_comfy(monkeypatch)
    model = standin_model()
    with pytest.raises(ValueError, match=match):
        run(make_clip(tmp_path / "clip.mp4", n=2), model=model, **kw)
    assert model.net.seen == [] and (not out_dir.exists() or all_files(out_dir) == [])


def test_the_format_rule_is_ben_cores_and_the_node_adds_its_widgets(tmp_path, comfy_dirs, monkeypatch):
    """Which format holds which frames is decided by ben_core.io.video_writers.check_format alone: the node
    asks it for every setting and gives it only the fix in its widgets' words."""
    install_comfy(monkeypatch)
    from importlib import import_module

    module = import_module(node().__module__)
    real = module.check_format
    asked = []

    def rule(fmt, mode, fix=None):
        asked.append((fmt, mode))
        if fmt == "mov":
            raise ValueError(f"a rule of ben_core's: {fix}")

    monkeypatch.setattr(module, "check_format", rule)
    clip = make_clip(tmp_path / "clip.mp4", n=2)
    model = standin_model()
    with pytest.raises(ValueError, match="video_format mov: a rule of ben_core's: set output_mode to RGB"):
        run(clip, model=model, video_format="mov", output_mode="RGB", background_colour="#000000")
    with pytest.raises(ValueError) as unwrapped:  # the rule says yes: the node does not re-test it ...
        run(clip, model=model, video_format="mp4")
    assert "output_mode" not in str(unwrapped.value)  # ... ben_core's writer, further on, has the last word
    run(clip, model=model, video_format="webm", matte_only=True)
    assert asked == [("mov", "rgb"), ("mp4", "rgba"), ("webm", "matte")]
    monkeypatch.setattr(module, "check_format", real)
    with pytest.raises(ValueError) as err:
        run(clip, model=model, video_format="mp4")
    assert str(err.value).startswith("video_format mp4: MP4 cannot store transparency: set output_mode to RGB")
    assert "video_format to webm or mov" in str(err.value) and "PNG sequence" not in str(err.value)


def test_wrong_socket_values_are_named(tmp_path, comfy_dirs):
    with pytest.raises(TypeError, match="VIDEO"):
        node().execute(standin_model(), np.zeros((2, 8, 8, 3)))
    with pytest.raises(TypeError, match="Load BEN"):
        node().execute(object(), video_input(make_clip(tmp_path / "c.mp4", n=1)))


def test_schema_is_an_output_node_with_a_video_output():
    info = node_info(node())
    assert info["output"] == ["VIDEO"] and info["output_node"] is True
    assert info["input"]["required"]["video"][0] == "VIDEO"
    assert info["name"] == "BEN2_RemoveVideoBackground"


class FramesVideo:
    """Like core's VideoFromComponents (Create Video): no file behind it; 0.3.64's get_stream_source fails
    ("Could not determine output format"), save_to(path) writes an MP4."""

    def __init__(self, clip: Path):
        self.clip = clip
        self.saved = []

    def get_stream_source(self):
        raise ValueError("Could not determine output format")

    def get_dimensions(self):
        return 96, 64

    def save_to(self, path, format="auto", codec="auto", metadata=None):
        self.saved.append(path)
        Path(path).write_bytes(self.clip.read_bytes())


def test_a_video_made_of_frames_is_saved_to_temp_for_the_run_and_removed(tmp_path, comfy_dirs, monkeypatch):
    out_dir, temp_dir = comfy_dirs
    install_comfy(monkeypatch)
    frames_video = FramesVideo(make_clip(tmp_path / "clip.mp4", n=3))
    args = dict(video_format="webm", output_mode="RGBA", background_colour="#FFFFFF", refine_foreground=False,
                matte_only=False, temporal_stabilize=False, save_output=True, filename_prefix="video/BEN2",
                batch_size=2, working_size="512")
    node().execute(standin_model(), frames_video, **args)
    assert len(frames_video.saved) == 1 and Path(frames_video.saved[0]).parent == temp_dir
    assert not Path(frames_video.saved[0]).exists()  # removed after the run
    frames, _ = decode(out_dir / "video" / "BEN2_00001_.webm")
    assert len(frames) == 3


def test_a_video_that_cannot_be_read_gets_a_clear_error(tmp_path, comfy_dirs, monkeypatch):
    install_comfy(monkeypatch)

    class Broken(FramesVideo):
        def save_to(self, path, **kw):
            raise RuntimeError("disk on fire")

    with pytest.raises(ValueError, match="Save Video and load that file"):
        node().execute(standin_model(), Broken(tmp_path / "none.mp4"), video_format="webm")
    _, temp_dir = comfy_dirs
    assert not temp_dir.exists() or all_files(temp_dir) == []


def test_a_trimmed_video_of_a_newer_core_is_read_through_save_to(tmp_path, comfy_dirs, monkeypatch):
    """2026 cores: a trimmed VIDEO's get_stream_source() is the whole file; save_to writes the trimmed clip."""
    out_dir, _ = comfy_dirs
    install_comfy(monkeypatch)
    whole = make_clip(tmp_path / "whole.mp4", n=8)
    trimmed = FramesVideo(make_clip(tmp_path / "trim.mp4", n=3))
    trimmed.get_stream_source = lambda: str(whole)
    trimmed.get_active_trim_window = lambda: (0.5, 0.25)
    node().execute(standin_model(), trimmed, video_format="webm", working_size="512")
    frames, _ = decode(out_dir / "video" / "BEN2_00001_.webm")
    assert len(frames) == 3 and len(trimmed.saved) == 1


# ------------------------------------------------------------------ VIDEOs of 2026 cores: crop and trim

def recording_model():
    """The stand-in network, also recording the mean colour (R, G, B, 0..1) of every frame it is given."""
    model = standin_model()
    colours = []
    inner = model.net.forward

    def forward(x):
        rgb = x.float() * model.net.std + model.net.mean
        colours.extend(rgb.mean((2, 3)).tolist())
        return inner(x)

    model.net.forward = forward
    return model, colours


def core_video(path, later=False):
    from comfy_stub.video_types import LaterVideoFromFile, VideoFromFile

    return (LaterVideoFromFile if later else VideoFromFile)(str(path))


def run_video(video, model, **kw):
    args = dict(video_format="webm", output_mode="RGBA", background_colour="#FFFFFF", refine_foreground=False,
                matte_only=False, temporal_stabilize=False, save_output=True, filename_prefix="video/BEN2",
                batch_size=2, working_size="512")
    args.update(kw)
    return node().execute(model, video, **args)


@pytest.mark.parametrize("later", [False, True], ids=["stored-core", "later-core"])
def test_a_cropped_video_is_cut_out_cropped(tmp_path, comfy_dirs, monkeypatch, later):
    """Core's as_cropped keeps the crop in the VIDEO; its stream source is the whole frame and (stored
    cores) has_pending_frame_edits() says False. The node must see and write the crop only."""
    out_dir, temp_dir = comfy_dirs
    install_comfy(monkeypatch)
    whole = core_video(make_clip(tmp_path / "clip.mp4", n=4), later)
    cropped = whole.as_cropped(48, 0, 48, 64)  # the right half: the bright end of the green ramp
    assert cropped.get_stream_source() == whole.get_stream_source() and cropped.get_dimensions() == (48, 64)
    model, colours = recording_model()
    run_video(cropped, model)
    frames, meta = decode(out_dir / "video" / "BEN2_00001_.webm")
    assert (meta["width"], meta["height"]) == (48, 64) and len(frames) == 4
    green = [c[1] for c in colours]
    assert len(green) == 4 and min(green) > 0.65  # the uncropped frame averages 0.5
    assert all_files(temp_dir) == [] if temp_dir.exists() else True  # core's rendering was removed


def test_a_cropped_and_trimmed_video_keeps_both_edits(tmp_path, comfy_dirs, monkeypatch):
    out_dir, _ = comfy_dirs
    install_comfy(monkeypatch)
    clip = make_clip(tmp_path / "clip.mp4", n=14)  # 12 fps; red = 15 * frame index
    edited = core_video(clip).as_cropped(0, 0, 48, 64).as_trimmed(0.25, 0.25)
    assert edited.get_active_trim_window() == (0.25, 0.25)
    model, colours = recording_model()
    run_video(edited, model)
    frames, meta = decode(out_dir / "video" / "BEN2_00001_.webm")
    assert (meta["width"], meta["height"]) == (48, 64) and len(frames) == 3  # frames 3, 4, 5
    red = np.array([c[0] for c in colours]) * 255
    assert np.allclose(red, [45, 60, 75], atol=3), red
    assert max(c[1] for c in colours) < 0.35  # the left half: the dark end of the ramp


def test_the_edits_core_keeps_privately_are_read_in_comfy_env_only(tmp_path):
    """A VIDEO's private crop/trim state (core's VideoFromFile: ``__crop``, ``__start_time``, ``__duration``)
    is read by comfy_env.video_crop / video_trim, which give None where a core keeps no such state."""
    env = sub("nodes.comfy_env")
    whole = core_video(make_clip(tmp_path / "clip.mp4", n=14))
    assert env.video_crop(whole) is None and env.video_trim(whole) == (0, 0)
    edited = whole.as_cropped(48, 0, 48, 64).as_trimmed(0.25, 0.5)
    assert env.video_crop(edited) == (48, 0, 48, 64) and env.video_trim(edited) == (0.25, 0.5)
    later = core_video(make_clip(tmp_path / "later.mp4", n=2), later=True).as_cropped(0, 0, 48, 64)
    assert env.video_crop(later) == (0, 0, 48, 64)  # a subclass of core's class: the same state
    assert env.video_crop(FramesVideo(tmp_path / "none.mp4")) is None  # no such state (another core, class)
    assert env.video_trim(FramesVideo(tmp_path / "none.mp4")) is None
    assert sub("nodes.video_input").pending_edits(edited) == ["crop (48, 0, 48, 64)", "trim from 0.25 s for 0.5 s"]
    for path in sorted((Path(__file__).resolve().parents[1] / "nodes").glob("*.py")):
        if path.name != "comfy_env.py":  # ComfyUI's private attributes are read there only
            text = path.read_text(encoding="utf-8")
            assert "__crop" not in text.replace("``__crop``", "") and 'f"_{' not in text, path.name


def test_an_unedited_core_video_is_streamed_without_rendering(tmp_path, comfy_dirs, monkeypatch):
    install_comfy(monkeypatch)
    video = core_video(make_clip(tmp_path / "clip.mp4", n=3))
    video.save_to = lambda *a, **k: pytest.fail("an unedited VIDEO must be streamed from its file")
    assert video.as_cropped(0, 0, 96, 64) is video  # a whole-frame crop is no crop (core's rule)
    run_video(video, standin_model())


def test_edits_are_rendered_losslessly_where_the_core_can(tmp_path, comfy_dirs, monkeypatch):
    """core's save_to takes crf (2026): the temporary rendering is lossless H.264 (crf 0); 0.3.64's save_to
    takes no such option and gets none."""
    install_comfy(monkeypatch)
    edited = core_video(make_clip(tmp_path / "clip.mp4", n=4)).as_trimmed(0.0, 0.2)
    asked = []
    real = edited.save_to

    def spy(path, **kw):
        asked.append(kw)
        return real(path, **kw)

    edited.save_to = spy
    spy.__signature__ = __import__("inspect").signature(real)
    run_video(edited, standin_model())
    assert asked == [{"crf": 0, "preset": "ultrafast"}]
    old = FramesVideo(make_clip(tmp_path / "old.mp4", n=2))  # 0.3.64's save_to(path, format, codec, metadata)
    run_video(old, standin_model())
    assert len(old.saved) == 1


def test_a_video_whose_size_is_not_its_streams_is_rendered_by_core(tmp_path, comfy_dirs, monkeypatch):
    """An edit this pack does not know (a resize, a crop kept under another name): the VIDEO reports another
    size than its file's; core's save_to renders it."""
    out_dir, _ = comfy_dirs
    install_comfy(monkeypatch)
    whole = make_clip(tmp_path / "whole.mp4", n=4)
    resized = FramesVideo(make_clip(tmp_path / "small.mp4", n=4))
    resized.get_stream_source = lambda: str(whole)
    resized.get_dimensions = lambda: (48, 32)
    run_video(resized, standin_model())
    assert len(resized.saved) == 1


@pytest.mark.parametrize("core", ["2026", "0.3.64"])
def test_cancel_while_core_renders_the_edits(tmp_path, comfy_dirs, monkeypatch, core):
    """core's save_to reports progress, and every progress update may raise the Cancel: it must reach
    ComfyUI as the Cancel (0.3.64's is an Exception: not turned into 'could not be read'), and nothing stays
    behind, neither the temporary rendering nor an output."""
    out_dir, temp_dir = comfy_dirs
    comfy = install_comfy(monkeypatch, core=core, interrupt_after=1)
    model = standin_model()

    class Rendering(FramesVideo):
        def save_to(self, path, **kw):
            Path(path).write_bytes(b"half a file")
            sys.modules["comfy.utils"].ProgressBar(4).update(1)  # core's _save_transcoded: pbar.update(1)

    with pytest.raises(comfy.InterruptProcessingException):
        run_video(Rendering(make_clip(tmp_path / "clip.mp4", n=2)), model)
    assert model.net.seen == []
    for folder in (out_dir, temp_dir):
        assert not folder.exists() or all_files(folder) == []


@pytest.mark.parametrize("core", ["2026", "0.3.64"])
def test_cancel_mid_clip_leaves_no_file_on_either_core(tmp_path, comfy_dirs, monkeypatch, core):
    out_dir, temp_dir = comfy_dirs
    comfy = install_comfy(monkeypatch, core=core)
    comfy.interrupt_when = lambda ns: len(ns.progress) >= 2  # after two batches of frames
    model = standin_model()
    edited = core_video(make_clip(tmp_path / "clip.mp4", n=9)).as_cropped(0, 0, 48, 64) if core == "2026" else \
        video_input(make_clip(tmp_path / "clip.mp4", n=9))
    with pytest.raises(comfy.InterruptProcessingException):
        run_video(edited, model, batch_size=1)
    assert 0 < len(model.net.seen) < 9
    for folder in (out_dir, temp_dir):
        assert not folder.exists() or all_files(folder) == []


@pytest.mark.parametrize("kind", ["Create Video", "Concatenate Video"])
def test_a_video_without_a_file_of_its_own_is_saved_losslessly_to_a_temporary_file(comfy_dirs, monkeypatch, kind):
    """2026's VideoFromComponents / VideoFromList leave get_stream_source to the base class, which encodes the clip
    into a lossy MP4 in memory (no crf): the pack never asks for it, it has core save the clip once with crf=0 to
    a temporary file, streams that and removes it."""
    import torch
    from comfy_stub.video_types import VideoFromComponents, VideoFromList

    out_dir, temp_dir = comfy_dirs
    install_comfy(monkeypatch)
    frames = torch.rand(3, 64, 96, 3, generator=torch.Generator().manual_seed(4))
    video = VideoFromComponents(frames)
    if kind == "Concatenate Video":
        video = VideoFromList([video, VideoFromComponents(frames[:2])])  # core saves each chunk to memory here
    before = len(video.saves)
    run_video(video, standin_model())
    made = video.saves[before:]
    assert len(made) == 1 and made[0][1] == 0 and made[0][0] != "memory", made
    assert Path(made[0][0]).parent == temp_dir and not Path(made[0][0]).exists()
    frames_out, _ = decode(out_dir / "video" / "BEN2_00001_.webm")
    assert len(frames_out) == (3 if kind == "Create Video" else 5)


def test_a_video_file_held_in_memory_is_streamed_as_it_is(tmp_path, comfy_dirs, monkeypatch):
    """A VideoFromFile over the bytes of a file gives its own stream (the original file, lossless): streamed
    directly, nothing saved."""
    from comfy_stub.video_types import VideoFromFile

    out_dir, _ = comfy_dirs
    install_comfy(monkeypatch)
    held = VideoFromFile(io.BytesIO(make_clip(tmp_path / "clip.mp4", n=3).read_bytes()))
    assert sub("nodes.video_input").has_own_stream(held)
    monkeypatch.setattr(type(held), "save_to", lambda *a, **kw: pytest.fail("saved a VIDEO that has its own stream"))
    run_video(held, standin_model())
    assert len(decode(out_dir / "video" / "BEN2_00001_.webm")[0]) == 3
