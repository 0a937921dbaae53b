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
])
def test_bad_settings_fail_before_any_work(tmp_path, comfy_dirs, monkeypatch, kw, match):
    out_dir, _ = comfy_dirs
    install_comfy(monkeypatch)
    model = standin_model()
    with pytest.raises(ValueError, match=match):
        run(make_clip(tmp_path / "clip.mp4", n=2), model=model, **kw)
    assert model.net.seen == [] and (not out_dir.exists() or all_files(out_dir) == [])


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
