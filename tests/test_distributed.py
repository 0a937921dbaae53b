"""The Ray Data stage (ben_core.apps.distributed): planning, the stage on its own, writing into an object store
(a non-local pyarrow file system), and a real local Ray with two actors and synthetic weights whose files
must equal the single-process CLI's."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec  # comes with huggingface_hub (a required dependency)
import numpy as np
import pytest
from PIL import Image
from test_cli import REPO, RedPredictor, rand_image

from ben_core.apps import distributed
from ben_core.apps.cli import UsageError
from ben_core.io.writers import OutputFormat

# Ray (and pyarrow, which comes with it) is optional at run time; CI installs it. Only the tests that use them
# skip without them: the message for a missing Ray is tested either way.
try:
    import ray
    import ray.data  # noqa: F401
except ImportError:
    ray = None
try:
    import pyarrow
    from pyarrow import fs as pafs
except ImportError:
    pyarrow = pafs = None

needs_ray = pytest.mark.skipif(ray is None, reason='Ray Data is not installed (pip install "ray[data]")')
needs_pyarrow = pytest.mark.skipif(pafs is None, reason='pyarrow is not installed (it comes with "ray[data]")')


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from helpers import synth_sd
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("weights") / "synth.safetensors"
    save_file(synth_sd(0), str(path))
    return path


def _folder(root: Path) -> Path:
    src = root / "in"
    (src / "sub").mkdir(parents=True)
    for i, (w, h) in enumerate([(40, 30), (17, 23), (32, 32)]):
        rand_image(src / f"{i}.png", w, h, i)
    rand_image(src / "sub" / "deep.png", 12, 9, 7)
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (src / ".hidden.png").write_bytes(b"")
    (src / "clip.mp4").write_bytes(b"")
    (src / "notes.txt").write_text("x")
    return src


@needs_pyarrow
def test_plan_names_like_the_cli_and_refuses_clashes(tmp_path):
    src = _folder(tmp_path)
    fmt = OutputFormat()
    plan = distributed.plan(str(src), str(tmp_path / "out"), fmt)
    names = [os.path.relpath(o, tmp_path / "out") for o in plan.outputs]
    assert names == ["0.png", "1.png", "2.png", "broken.png"]  # not recursive, no hidden file
    assert any("video" in w for w in plan.warnings) and any("ignored 1" in w for w in plan.warnings)
    deep = distributed.plan(str(src), str(tmp_path / "out"), fmt, recursive=True)
    assert "sub/deep.png" in [os.path.relpath(o, tmp_path / "out") for o in deep.outputs]
    rand_image(src / "0.jpg", 8, 8, 9)
    with pytest.raises(UsageError, match="would both be written"):
        distributed.plan(str(src), str(tmp_path / "out"), fmt)
    with pytest.raises(UsageError, match="would replace an input"):
        distributed.plan(str(src / "1.png"), str(src), fmt)
    with pytest.raises(UsageError, match="under a file"):
        distributed.plan(str(src / "1.png"), str(src / "1.png" / "x"), OutputFormat(image_format="webp"))
    with pytest.raises(UsageError, match="not found"):
        distributed.plan(str(tmp_path / "nope"), str(tmp_path / "out"), fmt)


@needs_pyarrow
@pytest.mark.slow
def test_stage_turns_a_batch_of_files_into_rows(tmp_path, checkpoint):
    """The map_batches contract without Ray: bytes + paths in, files and one row per input out."""
    src = _folder(tmp_path)
    stage = distributed.BEN2Stage(str(tmp_path / "out"), str(src), str(checkpoint), device="cpu", working_size=512)
    paths = [str(src / "0.png"), str(src / "broken.jpg"), str(src / "sub" / "deep.png")]
    batch = {"path": np.array(paths, dtype=object),
             "bytes": np.array([Path(p).read_bytes() for p in paths], dtype=object)}
    rows = stage(batch)
    assert set(rows) == {"input", "output", "status", "error", "seconds"}
    by_input = {i: (o, s, e)
                for i, o, s, e in zip(rows["input"], rows["output"], rows["status"], rows["error"], strict=True)}
    assert by_input[paths[0]][:2] == (str(tmp_path / "out" / "0.png"), "ok")
    assert by_input[paths[2]][:2] == (str(tmp_path / "out" / "sub" / "deep.png"), "ok")
    assert by_input[paths[1]][1] == "failed" and "not an image file" in by_input[paths[1]][2]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["0.png", "deep.png"]


@needs_ray
@pytest.mark.slow
def test_local_ray_two_actors_write_what_the_cli_writes(tmp_path, checkpoint):
    src = _folder(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS="")
    # fp32: 1-CPU actors run torch on one thread, the CLI on two; fp32 gives the same bytes either way, bf16
    # (what auto picks on CPUs with native bf16) does not
    common = ["--checkpoint", str(checkpoint), "--working-size", "512", "--dtype", "fp32", "-q"]
    r = subprocess.run([sys.executable, "-m", "ben_core.apps.distributed", str(src), "-o", str(tmp_path / "ray"),
                        "--actors", "2", "--report", str(tmp_path / "r.jsonl"), *common],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-3000:]  # the broken file
    assert "broken.jpg" in r.stderr
    c = subprocess.run([sys.executable, "-m", "ben_core", str(src), "-o", str(tmp_path / "cli"), *common],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert c.returncode == 1, c.stderr
    ray_files = {p.name: p.read_bytes() for p in (tmp_path / "ray").iterdir()}
    cli_files = {p.name: p.read_bytes() for p in (tmp_path / "cli").iterdir()}
    assert sorted(ray_files) == ["0.png", "1.png", "2.png"] and ray_files == cli_files
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted((Path(d["input"]).name, d["status"]) for d in lines) == [
        ("0.png", "ok"), ("1.png", "ok"), ("2.png", "ok"), ("broken.jpg", "failed")]
    # resumed: everything done is skipped without starting Ray or loading a model
    again = subprocess.run([sys.executable, "-m", "ben_core.apps.distributed", str(src), "-o", str(tmp_path / "ray"),
                            "--skip-existing", "--checkpoint", str(tmp_path / "absent.pth")],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 3, again.stderr  # broken.jpg is still to do: the (absent) model is needed
    assert "absent.pth" in again.stderr and "Traceback" not in again.stderr


# --------------------------------------------------------------------------------------------------
# an object store: fsspec's in-memory file system behind pyarrow (not a pyarrow LocalFileSystem)
# --------------------------------------------------------------------------------------------------

class _Upload(io.BytesIO):
    """An object store's upload: nothing is visible until close(), which publishes the whole object."""

    def __init__(self, store, path: str, events: list):
        super().__init__()
        self.store, self.path, self.events = store, path, events

    def close(self):
        if not self.closed:
            data = self.getvalue()
            self.store.pipe_file(self.path, data)
            self.events.append(("publish", self.path, data))
        super().close()


class ObjectStore:
    """A bucket in fsspec's memory file system, served to the stage as ``pyarrow.fs.PyFileSystem(FSSpecHandler)``
    under the test-only URI scheme ``memory://`` (resolved by a patched ``distributed._filesystem``; every
    other URI goes to the real one). Writes behave as on an object store: an object appears when its output
    stream is closed, whole; ``events`` records ``("open", path)`` and ``("publish", path, bytes)``."""

    def __init__(self):
        self.mem = fsspec.filesystem("memory")  # one store per process: every test takes its own bucket
        self.bucket = f"/ben2-test-{uuid.uuid4().hex}"
        self.events: list = []
        store, events = self.mem, self.events

        class Handler(pafs.FSSpecHandler):
            def open_output_stream(self, path, metadata):
                events.append(("open", path))
                return pyarrow.PythonFile(_Upload(store, path, events), mode="w")

        self.fs = pafs.PyFileSystem(Handler(self.mem))

    def uri(self, rel: str = "") -> str:
        return "memory://" + self.path(rel)

    def path(self, rel: str = "") -> str:
        return f"{self.bucket}/{rel}".rstrip("/")

    def put(self, rel: str, data: bytes) -> None:
        self.mem.pipe_file(self.path(rel), data)

    def objects(self, prefix: str) -> dict:
        """``{path relative to prefix: bytes}`` of every object under ``prefix``."""
        base = self.path(prefix)
        if not self.mem.exists(base):
            return {}
        return {name[len(base) + 1:]: self.mem.cat_file(name) for name in self.mem.find(base)}


@pytest.fixture
def store(monkeypatch, tmp_path):
    if pafs is None:
        pytest.skip('pyarrow is not installed (it comes with "ray[data]")')
    bucket = ObjectStore()
    real = distributed._filesystem

    def filesystem(uri):
        if isinstance(uri, str) and uri.startswith("memory://"):
            return bucket.fs, uri[len("memory://"):].rstrip("/")
        return real(uri)

    monkeypatch.setattr(distributed, "_filesystem", filesystem)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a stage that wrote the object's path as a local (relative) file would show here
    try:
        yield bucket
    finally:
        if bucket.mem.exists(bucket.bucket):
            bucket.mem.rm(bucket.bucket, recursive=True)
        leaked = Path(bucket.bucket).exists()
        if leaked:
            shutil.rmtree(bucket.bucket)
    assert not leaked, "the object store's paths were written on the local disk"
    assert list(cwd.iterdir()) == [], "something was written on the local disk"


@needs_pyarrow
def test_uris_open_their_file_system(tmp_path, monkeypatch):
    """Local paths (relative ones resolved) and file:// open the local file system, any other scheme pyarrow
    knows a non-local one (the stage then writes through output streams, not local files)."""
    monkeypatch.chdir(tmp_path)
    fs, path = distributed._filesystem("out")
    assert distributed._is_local(fs) and path == str(tmp_path / "out")
    fs, path = distributed._filesystem(f"file://{tmp_path}/out")
    assert distributed._is_local(fs) and path == f"{tmp_path}/out"
    fs, _ = distributed._filesystem("mock://bucket/prefix")  # pyarrow's in-memory mock: no network
    assert not distributed._is_local(fs)


def _png(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _fill_inputs(store: ObjectStore) -> dict:
    """The inputs of ``_folder``, uploaded under ``in/``: ``{relative name: bytes}``."""
    files = {"0.png": _png(40, 30, 0), "1.png": _png(17, 23, 1), "2.png": _png(32, 32, 2),
             "sub/deep.png": _png(12, 9, 7), "broken.jpg": b"\xff\xd8 not a jpeg", ".hidden.png": b"",
             "clip.mp4": b"", "notes.txt": b"x"}
    for rel, data in files.items():
        store.put(f"in/{rel}", data)
    return files


def test_plan_on_an_object_store_names_skips_and_refuses_clashes(store, tmp_path):
    """plan() with input and output in an object store: the CLI's names under the output prefix, no local
    folder made or checked for the output, the skip-existing rule of object stores (an object exists only
    whole, so any non-empty one is done) and both clash checks."""
    _fill_inputs(store)
    fmt = OutputFormat()
    plan = distributed.plan(store.uri("in"), store.uri("out"), fmt)
    assert plan.root == store.path("in")
    assert plan.inputs == [store.path(f"in/{n}") for n in ("0.png", "1.png", "2.png", "broken.jpg")]
    assert plan.outputs == [store.path(f"out/{n}") for n in ("0.png", "1.png", "2.png", "broken.png")]
    assert plan.skipped == [] and any("video" in w for w in plan.warnings)
    assert store.objects("out") == {}  # planning writes nothing
    deep = distributed.plan(store.uri("in"), store.uri("out"), fmt, recursive=True)
    assert store.path("out/sub/deep.png") in deep.outputs

    # --skip-existing: a non-empty object is a finished output (uploads publish whole objects); an empty one,
    # or none, is to do. The object is not read back as a local file would be (is_complete_image).
    store.put("out/0.png", _png(40, 30, 0))
    store.put("out/1.png", b"")
    store.put("out/broken.png", _png(8, 8, 3)[:40])
    resumed = distributed.plan(store.uri("in"), store.uri("out"), fmt, skip_existing=True)
    assert resumed.skipped == [0, 3]
    assert distributed.plan(store.uri("in"), store.uri("out"), fmt).skipped == []  # only when asked

    # clashes: two inputs onto one output name; an output that would replace an input in the same store
    store.put("in/0.jpg", _png(8, 8, 9))
    with pytest.raises(UsageError, match="would both be written to 0.png"):
        distributed.plan(store.uri("in"), store.uri("out"), fmt)
    with pytest.raises(UsageError, match="would replace an input"):
        distributed.plan(store.uri("in/1.png"), store.uri("in"), fmt)
    # the same path in another file system (a local folder) is not the input
    local = tmp_path / "local"
    local.mkdir()
    rand_image(local / "1.png", 8, 8, 4)
    across = distributed.plan(str(local / "1.png"), "memory://" + str(local), fmt)
    assert across.outputs == [str(local / "1.png")] == across.inputs


def test_stage_writes_whole_objects_into_an_object_store(store, tmp_path, monkeypatch):
    """BEN2Stage with an object-store output: every output goes up through the file system's output stream
    as one whole object (the same bytes the stage writes to a local folder), sub-prefixes included, nothing
    else appears in the store (no temporary names), and an input that fails leaves no object."""
    files = _fill_inputs(store)
    monkeypatch.setattr(distributed, "load_predictor", lambda *a, **k: RedPredictor())
    names = ["0.png", "broken.jpg", "sub/deep.png", "2.png"]
    batch = {"path": np.array([store.path(f"in/{n}") for n in names], dtype=object),
             "bytes": np.array([files[n] for n in names], dtype=object)}

    stage = distributed.BEN2Stage(store.uri("out"), store.path("in"), None, device="cpu")
    rows = stage(batch)
    status = {i: (o, s, e) for i, o, s, e in zip(rows["input"], rows["output"], rows["status"], rows["error"],
                                                  strict=True)}
    for n in ("0.png", "sub/deep.png", "2.png"):
        assert status[store.path(f"in/{n}")][:2] == (store.path(f"out/{n}"), "ok")
    assert status[store.path("in/broken.jpg")][:2] == (None, "failed")

    written = store.objects("out")
    assert sorted(written) == ["0.png", "2.png", "sub/deep.png"]
    for n, data in written.items():  # opened once, published once, whole: what the object holds
        path = store.path(f"out/{n}")
        assert [e[:2] for e in store.events if e[1] == path] == [("open", path), ("publish", path)]
        assert [e[2] for e in store.events if e[1] == path and e[0] == "publish"] == [data]
        im = np.asarray(Image.open(io.BytesIO(data)))
        src = np.asarray(Image.open(io.BytesIO(files[n])))
        assert im.shape == (*src.shape[:2], 4)
        np.testing.assert_array_equal(im[..., 3], src[..., 0])  # alpha = the stand-in's red channel

    local = distributed.BEN2Stage(str(tmp_path / "local"), store.path("in"), None, device="cpu")
    local(batch)
    assert {n: (tmp_path / "local" / n).read_bytes() for n in written} == written

    # an output that cannot be encoded: the row says so and no object (not even an empty one) appears
    from ben_core.io import writers

    encode = writers.encode_cutout

    def encode_fails_for_deep(alpha, *a, **k):
        if tuple(alpha.shape) == (9, 12):
            raise OSError("disk full")
        return encode(alpha, *a, **k)

    monkeypatch.setattr(writers, "encode_cutout", encode_fails_for_deep)
    store.events.clear()
    again = distributed.BEN2Stage(store.uri("out2"), store.path("in"), None, device="cpu")
    rows = again(batch)
    failed = dict(zip(rows["input"], rows["error"], strict=True))[store.path("in/sub/deep.png")]
    assert "disk full" in failed
    assert sorted(store.objects("out2")) == ["0.png", "2.png"]
    assert not any(e[1] == store.path("out2/sub/deep.png") for e in store.events)


def test_without_ray_the_message_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError, match=r'pip install "ray\[data\]"'):
        distributed._import_ray()
