"""The Show Trimap preview widget (web/js) in a real headless browser.

Debian's chromium driven by Python playwright (never `playwright install`). The repo is served on
127.0.0.1 the way ComfyUI serves the pack's WEB_DIRECTORY (read from the pack's __init__.py):
/extensions/ben2/<path inside WEB_DIRECTORY>; /scripts/app.js and /scripts/api.js are stand-ins for
ComfyUI's (tests/web/fake_app.js, fake_api.js), so the widget's own relative imports of them are
exercised unchanged and must agree with WEB_DIRECTORY; /api/view serves the preview files from a temp
folder as ComfyUI serves its temp folder.
"""
from __future__ import annotations

import ast
import http.server
import io
import json
import shutil
import tempfile
import threading
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_pack, naive_confidence_trimap

from ben_core.matting import trimap as trimap_mod

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
WEB_JS = ROOT / "web" / "js"
TEST_WEB = ROOT / "tests" / "web"


def web_directory() -> Path:
    """The pack's WEB_DIRECTORY (what ComfyUI serves as /extensions/<pack>/), read from __init__.py."""
    init = ROOT / "__init__.py"
    if init.exists():
        for stmt in ast.parse(init.read_text(encoding="utf-8")).body:
            if (isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == "WEB_DIRECTORY" for t in stmt.targets)
                    and isinstance(stmt.value, ast.Constant)):
                return (ROOT / stmt.value.value).resolve()
    return (ROOT / "web").resolve()


WEB_DIR = web_directory()
JS_URL = "/extensions/ben2/" + "".join(p + "/" for p in WEB_JS.resolve().relative_to(WEB_DIR).parts)

W, H = 64, 48
# image colours of the three columns of the synthetic preview (left = fg, middle = ramp, right = bg)
IMG_LEFT, IMG_MID, IMG_RIGHT = (200, 50, 50), (128, 128, 128), (20, 20, 160)
DEFAULTS = dict(t_low=0.10, t_high=0.90, t_min=0.03, t_max=0.97, step=0.001, min_unknown_fraction=60000 / 1024**2)


# ----------------------------------------------------------------------------- reference semantics
def py_round(x: float) -> int:
    """Python's round(): ties to even (what the contract's round() means)."""
    return round(x)


def naive_trimap(probs: np.ndarray, t_low, t_high, t_min, t_max, step, min_unknown):
    """Algorithms 1+2 the slow obvious way (helpers.naive_confidence_trimap) as widget labels 0 / 1 / 2."""
    tri, tl, th, _ = naive_confidence_trimap(probs, t_low, t_high, t_min, t_max, step, n_min=min_unknown)
    return (tri * 2).astype(np.uint8), tl, th


def codes_to_probs(codes: np.ndarray) -> np.ndarray:
    return codes.astype(np.float64) / 65535.0


# ----------------------------------------------------------------------------- payload builder
#: ComfyUI's temp folder stand-in: what /api/view serves (set by the ``server`` fixture).
VIEW_DIR = Path(tempfile.gettempdir())


def put_file(data: bytes, extension: str) -> dict:
    """Write a preview file where /api/view finds it; returns its reference as the node sends it."""
    name = f"test_{uuid.uuid4().hex[:12]}.{extension}"
    (VIEW_DIR / name).write_bytes(data)
    return {"filename": name, "subfolder": "", "type": "temp"}


def image_file(rgb: np.ndarray, fmt: str = "PNG") -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return put_file(buf.getvalue(), fmt.lower())


def probs_file(codes: np.ndarray) -> dict:
    """Payload ``probs``: a file of zlib(uint16le) ("zlib-uint16le")."""
    raw = codes.astype("<u2").tobytes(order="C")
    return put_file(zlib.compress(raw, 6), "u16.zlib")


def synthetic_codes() -> np.ndarray:
    """uint16 codes [H, W]: x<16 -> p=0.97 (fg), 16<=x<48 -> ramp 0.15..0.85 (unknown), x>=48 -> p=0.02 (bg)."""
    p = np.empty((H, W), np.float64)
    p[:, :16] = 0.97
    p[:, 16:48] = np.linspace(0.15, 0.85, 32)[None, :]
    p[:, 48:] = 0.02
    return np.round(p * 65535).astype(np.uint16)


def synthetic_image() -> np.ndarray:
    img = np.empty((H, W, 3), np.uint8)
    img[:, :16] = IMG_LEFT
    img[:, 16:48] = IMG_MID
    img[:, 48:] = IMG_RIGHT
    return img


def make_payload(codes=None, image=None, **params) -> dict:
    """A payload as nodes/trimap_preview.py builds it (zlib uint16 probs, JPEG image)."""
    codes = synthetic_codes() if codes is None else codes
    image = synthetic_image() if image is None else image
    h, w = codes.shape
    prm = {**DEFAULTS, **params}
    fields = {"image": image_file(image, "JPEG"), "image_format": "jpeg",
              "probs": probs_file(codes), "probs_encoding": "zlib-uint16le"}
    return {
        "width": w,
        "height": h,
        **fields,
        **prm,
        "final_t_low": prm["t_low"],
        "final_t_high": prm["t_high"],
        "unknown_count": 123456,
        "full_width": w * 16,
        "full_height": h * 16,
    }


# ----------------------------------------------------------------------------- server + browser
class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript"}

    def translate_path(self, path):
        path, _, query = path.split("#", 1)[0].partition("?")
        if path == "/scripts/app.js":
            return str(TEST_WEB / "fake_app.js")
        if path == "/scripts/api.js":
            return str(TEST_WEB / "fake_api.js")
        if path == "/api/view":  # ComfyUI: /view?filename=&subfolder=&type=temp from its temp folder
            from urllib.parse import parse_qs

            q = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
            name = q.get("filename", "")
            if q.get("type") == "temp" and q.get("subfolder", "") == "" and name and "/" not in name:
                return str(VIEW_DIR / name)
            return str(TEST_WEB / "__missing__")
        for prefix, base in (("/extensions/ben2/", WEB_DIR), ("/tests/web/", TEST_WEB)):
            if path.startswith(prefix):
                target = (base / path[len(prefix):]).resolve()
                if base.resolve() in target.parents:
                    return str(target)
        return str(TEST_WEB / "__missing__")

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    global VIEW_DIR
    VIEW_DIR = tmp_path_factory.mktemp("comfy_temp")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("python playwright is not installed (pip install playwright)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    pg = browser.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{server}/tests/web/index.html?js={JS_URL}")
    pg.wait_for_function("window.__ready === true || window.__loadError !== undefined", timeout=15000)
    err = pg.evaluate("window.__loadError")
    assert err is None, f"widget module failed to load: {err}"
    yield pg
    assert not errors, f"uncaught page errors: {errors}"
    pg.close()


# JS helpers installed into the page: register the extension's hooks on a fake node type with
# pre-existing callbacks (to check chaining), make a node, and read canvas pixels.
SETUP_JS = """
(opts) => {
  const { withDOMWidget = true, plainWidgets = false, values, nodeData = { name: "BEN2_ShowTrimap" } } = opts;
  const ext = app.extensions.find((e) => e.name === "BEN2.TrimapPreview");
  if (!ext) throw new Error("extension BEN2.TrimapPreview was not registered");
  const NodeType = fakeNode.makeNodeType({ withDOMWidget, plainWidgets });
  const log = (window.protoLog = []);
  NodeType.prototype.onNodeCreated = function () { log.push("created"); };
  NodeType.prototype.onExecuted = function (m) { log.push(["executed", Object.keys(m)]); };
  NodeType.prototype.onRemoved = function () { log.push("removed"); };
  // another node type must stay untouched
  const Other = fakeNode.makeNodeType({});
  const otherExec = Other.prototype.onExecuted = function () {};
  ext.beforeRegisterNodeDef(Other, { name: "SomethingElse" });
  if (Other.prototype.onExecuted !== otherExec) throw new Error("patched a foreign node type");
  ext.beforeRegisterNodeDef(NodeType, nodeData);
  window.node = new NodeType(values);
  return true;
}
"""

PIXELS_JS = """
(pts) => {
  const c = node.ben2TrimapPreview.canvas;
  const ctx = c.getContext("2d");
  return pts.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data));
}
"""

LABELS_JS = """
() => {
  const p = node.ben2TrimapPreview;
  return { labels: Array.from(p.result.labels), tLow: p.result.tLow, tHigh: p.result.tHigh,
           unknown: Number(p.info.dataset.unknown), info: p.info.textContent };
}
"""


def node_values():
    return {k: DEFAULTS[k] for k in ("t_low", "t_high", "t_min", "t_max", "min_unknown_fraction")}


def setup_node(page, payloads, with_dom=True, plain_widgets=False):
    page.evaluate(SETUP_JS, {"withDOMWidget": with_dom, "plainWidgets": plain_widgets, "values": node_values()})
    page.evaluate("(m) => node.onExecuted(m)", {"ben2_trimap": payloads, "images": []})
    page.wait_for_function("node.ben2TrimapPreview.root.dataset.ready !== '0'", timeout=10000)
    assert page.evaluate("node.ben2TrimapPreview.root.dataset.ready") == "1", page.evaluate(
        "node.ben2TrimapPreview.status.textContent"
    )


def set_mode(page, mode):
    page.click(f"[data-role=root] button[data-mode={mode}]")


def move_slider(page, key, value):
    page.evaluate(
        """([key, value]) => {
             const s = document.querySelector(`input[data-param="${key}"]`);
             s.value = String(value);
             s.dispatchEvent(new Event("input", { bubbles: true }));
           }""",
        [key, value],
    )


def widget_value(page, name):
    return page.evaluate("(n) => node.widgets.find((w) => w.name === n).value", name)


def colors(page):
    return page.evaluate("() => ({fg: Array.from(core.COLORS.fg), bg: Array.from(core.COLORS.bg), "
                         "unknown: Array.from(core.COLORS.unknown)})")


# ----------------------------------------------------------------------------- tests
FG_PT, MID_PT, BG_PT = (5, 24), (32, 24), (60, 24)


def test_renders_three_regions_and_unknown_count(page):
    setup_node(page, [make_payload()])
    tol = 3  # JPEG (q85, flat 16-px-aligned blocks) is nearly exact
    col = colors(page)
    assert len({tuple(v) for v in col.values()}) == 3, "the three region colours must differ"

    set_mode(page, "trimap")
    px = page.evaluate(PIXELS_JS, [FG_PT, MID_PT, BG_PT])
    assert px == [col["fg"] + [255], col["unknown"] + [255], col["bg"] + [255]]

    codes = synthetic_codes()
    mu = py_round(DEFAULTS["min_unknown_fraction"] * W * H)
    lab, _, _ = naive_trimap(codes_to_probs(codes), DEFAULTS["t_low"], DEFAULTS["t_high"], DEFAULTS["t_min"],
                             DEFAULTS["t_max"], DEFAULTS["step"], mu)
    got = page.evaluate(LABELS_JS)
    assert got["unknown"] == int((lab == 1).sum()) == 32 * H
    assert f"unknown {32 * H} px" in got["info"]
    assert "123456" in got["info"], "the full-resolution unknown count from the run is shown"
    assert np.array_equal(np.array(got["labels"], np.uint8), lab.ravel())

    # overlay: image blended with the region colour (JS Math.round = floor(x + 0.5))
    set_mode(page, "overlay")
    page.evaluate("""() => { const o = document.querySelector('[data-role=opacity]');
                             o.value = '0.5'; o.dispatchEvent(new Event('input')); }""")
    px = page.evaluate(PIXELS_JS, [FG_PT, MID_PT, BG_PT])
    for (img, key), got_px in zip(((IMG_LEFT, "fg"), (IMG_MID, "unknown"), (IMG_RIGHT, "bg")), px, strict=True):
        want = [int(np.floor(a * 0.5 + b * 0.5 + 0.5)) for a, b in zip(img, col[key], strict=True)]
        assert np.abs(np.subtract(got_px[:3], want)).max() <= tol, (key, got_px, want)

    set_mode(page, "image")
    got_img = np.array([p[:3] for p in page.evaluate(PIXELS_JS, [FG_PT, MID_PT, BG_PT])], np.int64)
    assert np.abs(got_img - np.array([IMG_LEFT, IMG_MID, IMG_RIGHT])).max() <= tol, got_img

    set_mode(page, "mask")
    grey = [round(int(codes[y, x]) * 255 / 65535) for x, y in (FG_PT, MID_PT, BG_PT)]
    assert [p[:3] for p in page.evaluate(PIXELS_JS, [FG_PT, MID_PT, BG_PT])] == [[g] * 3 for g in grey]


@pytest.mark.parametrize("plain_widgets", [False, True], ids=["frontend-widgets", "plain-object-widgets"])
def test_a_slider_edit_is_committed_like_a_canvas_edit(page, plain_widgets):
    """Undo, the workflow's "modified" mark and Vue-rendered nodes follow the graph's version and
    onWidgetChanged: a slider edit must advance them once per change, as an edit on the canvas does."""
    setup_node(page, [make_payload()], plain_widgets=plain_widgets)
    before = page.evaluate("node.graph._version")
    move_slider(page, "t_low", 0.5)
    assert widget_value(page, "t_low") == 0.5
    assert page.evaluate("node.widgetChangedLog") == [["t_low", 0.5, DEFAULTS["t_low"]]]
    assert page.evaluate("node.graph._version") == before + 1
    move_slider(page, "t_low", 0.5)  # the same value again: no edit
    assert page.evaluate("node.graph._version") == before + 1
    move_slider(page, "t_high", 0.6)
    assert page.evaluate("node.widgetChangedLog")[-1] == ["t_high", 0.6, DEFAULTS["t_high"]]
    assert page.evaluate("node.graph._version") == before + 2


def test_slider_recomputes_trimap_and_writes_node_widgets(page):
    setup_node(page, [make_payload()])
    col = colors(page)
    set_mode(page, "trimap")
    x_low = 20  # ramp column with p ~ 0.24: unknown at t_low=0.10, background at t_low=0.5
    assert page.evaluate(PIXELS_JS, [(x_low, 10)])[0][:3] == col["unknown"]

    move_slider(page, "t_low", 0.5)
    assert widget_value(page, "t_low") == 0.5
    assert ["t_low", 0.5] in page.evaluate("node.widgetCallbackLog"), "the node widget's callback must fire"
    assert page.evaluate(PIXELS_JS, [(x_low, 10)])[0][:3] == col["bg"]
    codes = synthetic_codes()
    mu = py_round(DEFAULTS["min_unknown_fraction"] * W * H)
    lab, _, _ = naive_trimap(codes_to_probs(codes), 0.5, 0.9, 0.03, 0.97, 0.001, mu)
    got = page.evaluate(LABELS_JS)
    assert got["unknown"] == int((lab == 1).sum()) < 32 * H
    assert np.array_equal(np.array(got["labels"], np.uint8), lab.ravel())

    move_slider(page, "t_high", 0.6)
    assert widget_value(page, "t_high") == 0.6
    assert widget_value(page, "t_low") == 0.5, "other widgets are left alone"

    # a large minimum unknown area forces Algorithm 2 to widen the thresholds
    move_slider(page, "min_unknown_fraction", 0.45)
    assert widget_value(page, "min_unknown_fraction") == 0.45
    mu = py_round(0.45 * W * H)
    lab, tl, th = naive_trimap(codes_to_probs(codes), 0.5, 0.6, 0.03, 0.97, 0.001, mu)
    got = page.evaluate(LABELS_JS)
    assert (got["tLow"], got["tHigh"]) == (tl, th)
    assert tl < 0.5 and th > 0.6
    assert np.array_equal(np.array(got["labels"], np.uint8), lab.ravel())

    # crossing thresholds are prevented (t_low stays below t_high)
    move_slider(page, "t_low", 0.9)
    assert widget_value(page, "t_low") < widget_value(page, "t_high")

    # nothing of ours went into the serialised widget values
    assert page.evaluate("node.widgets.filter((w) => w.serialize !== false).map((w) => w.name)") == [
        "t_low", "t_high", "t_min", "t_max", "min_unknown_fraction"]


def test_node_widget_edit_updates_preview(page):
    setup_node(page, [make_payload()])
    page.evaluate("""() => { const w = node.widgets.find((w) => w.name === 't_high');
                             w.value = 0.5; w.callback(w.value); }""")
    assert page.evaluate("document.querySelector('input[data-param=t_high]').value") == "0.5"
    assert ["t_high", 0.5] in page.evaluate("node.widgetCallbackLog"), "the original callback still runs"
    mu = py_round(DEFAULTS["min_unknown_fraction"] * W * H)
    lab, _, _ = naive_trimap(codes_to_probs(synthetic_codes()), 0.1, 0.5, 0.03, 0.97, 0.001, mu)
    assert page.evaluate(LABELS_JS)["unknown"] == int((lab == 1).sum())


def test_callbacks_are_chained_and_removed_node_is_inert(page):
    setup_node(page, [make_payload()])
    log = page.evaluate("protoLog")
    assert log[0] == "created"
    assert log[1] == ["executed", ["ben2_trimap", "images"]]
    # messages without a preview are passed through and ignored
    page.evaluate("node.onExecuted({images: []})")
    assert page.evaluate("protoLog.length") == 3

    page.evaluate("node.onRemoved()")
    assert "removed" in page.evaluate("protoLog")
    assert page.evaluate("document.querySelectorAll('.fake-dom-widget-host').length") == 0
    assert page.evaluate("node.ben2TrimapPreview") is None
    assert page.evaluate("document.querySelector('input[data-param=t_low]')") is None  # element gone
    # node widget callbacks are restored to the originals (which still work)
    callback_src = page.evaluate("""() => { const w = node.widgets.find((w) => w.name === 't_low');
                                    w.value = 0.2; w.callback(0.2); return w.callback.toString(); }""")
    assert callback_src.startswith("(v)")
    assert ["t_low", 0.2] in page.evaluate("node.widgetCallbackLog")


def test_loaded_workflow_values_reach_the_sliders(page):
    """configure() (loading a saved workflow) sets widget values without callbacks, then onConfigure."""
    page.evaluate(SETUP_JS, {"withDOMWidget": True, "values": node_values()})
    page.evaluate("""() => { const saved = {t_low: 0.2, t_high: 0.5, min_unknown_fraction: 0.01};
                             for (const w of node.widgets) if (w.name in saved) w.value = saved[w.name];
                             node.onConfigure({widgets_values: [0.2, 0.5, 0.03, 0.97, 0.01]}); }""")
    assert page.evaluate("document.querySelector('input[data-param=t_low]').value") == "0.2"
    assert page.evaluate("document.querySelector('input[data-param=t_high]').value") == "0.5"
    assert page.evaluate("document.querySelector('input[data-param=min_unknown_fraction]').value") == "0.01"
    # the t_low < t_high guard uses the loaded t_high, not the default 0.9
    move_slider(page, "t_low", 0.7)
    assert widget_value(page, "t_low") < widget_value(page, "t_high") == 0.5


def test_slider_inert_after_removal(page):
    setup_node(page, [make_payload()])
    page.evaluate("window.__slider = document.querySelector('input[data-param=t_low]'); node.onRemoved();")
    page.evaluate("""() => { __slider.value = '0.6'; __slider.dispatchEvent(new Event('input')); }""")
    assert widget_value(page, "t_low") == DEFAULTS["t_low"]


def test_several_images_selector(page):
    second = np.full((H, W), round(0.5 * 65535), np.uint16)  # all unknown
    setup_node(page, [make_payload(), make_payload(codes=second)])
    col = colors(page)
    set_mode(page, "trimap")
    assert page.evaluate("document.querySelector('[data-role=image-select]').options.length") == 2
    assert page.evaluate(PIXELS_JS, [FG_PT])[0][:3] == col["fg"]
    page.select_option("[data-role=image-select]", "1")
    page.wait_for_function("node.ben2TrimapPreview.root.dataset.ready === '1'")
    assert page.evaluate(PIXELS_JS, [FG_PT])[0][:3] == col["unknown"]
    assert page.evaluate(LABELS_JS)["unknown"] == W * H


def _status_after(page, payload):
    page.evaluate("(m) => node.onExecuted(m)", {"ben2_trimap": [payload]})
    page.wait_for_function("node.ben2TrimapPreview.root.dataset.ready !== '0'", timeout=10000)
    assert page.evaluate("node.ben2TrimapPreview.root.dataset.ready") == "error"
    return page.evaluate("node.ben2TrimapPreview.status.textContent")


def test_bad_payload_shows_error_and_keeps_chain(page):
    page.evaluate(SETUP_JS, {"withDOMWidget": True, "values": node_values()})
    bad = make_payload()
    bad["probs"] = put_file(b"\x00\x01\x02", "u16.zlib")
    status = _status_after(page, bad)
    assert "probs" in status and "width*height*2" in status
    assert page.evaluate("protoLog")[1][0] == "executed"

    raw = synthetic_codes().astype("<u2").tobytes()
    # compressed form: wrong size after inflating, corrupt / truncated zlib, far too much data, raw bytes
    # labelled as zlib, an encoding or image format this widget does not know
    cases = {
        "short": zlib.compress(raw[:-2]),
        "truncated": zlib.compress(raw)[:-9],
        "corrupt": b"\x78\x9c" + bytes(range(40)),
        "bomb": zlib.compress(bytes(4 * len(raw))),
        "not-compressed": raw,
    }
    for name, data in cases.items():
        bad = make_payload()
        bad["probs"] = put_file(data, "u16.zlib")
        status = _status_after(page, bad)
        assert "probs (zlib-uint16le)" in status and "width*height*2" in status, (name, status)
    bad = make_payload()
    bad["probs_encoding"] = "zstd-uint16le"
    assert "probs_encoding" in _status_after(page, bad)
    bad = make_payload()
    bad["image_format"] = "tiff"
    assert "image_format" in _status_after(page, bad)
    # the format fields are required: a payload without them (raw probs, PNG) is refused, not guessed
    for key in ("probs_encoding", "image_format"):
        bad = make_payload()
        del bad[key]
        assert key in _status_after(page, bad)
    bad = make_payload()
    bad["image"] = put_file(b"this is not an image" * 8, "jpg")
    assert "could not decode the preview image (image/jpeg)" in _status_after(page, bad)
    # a payload of the base64 era (0.1.0) or a file ComfyUI no longer has (its temp folder is emptied at
    # start-up, the history survives in the browser tab)
    for key in ("image", "probs"):
        bad = make_payload()
        bad[key] = "aGVsbG8="
        status = _status_after(page, bad)
        assert f"'{key}' must be a file reference" in status and "reload the page" in status, status
    bad = make_payload()
    bad["probs"] = {"filename": "gone.u16.zlib", "subfolder": "", "type": "temp"}
    status = _status_after(page, bad)
    assert "gone.u16.zlib" in status and "run the node again" in status and "404" in status, status
    # a good payload afterwards clears the error
    page.evaluate("(m) => node.onExecuted(m)", {"ben2_trimap": [make_payload()]})
    page.wait_for_function("node.ben2TrimapPreview.root.dataset.ready !== '0'", timeout=10000)
    assert page.evaluate("node.ben2TrimapPreview.root.dataset.ready") == "1"
    assert page.evaluate("node.ben2TrimapPreview.status.textContent") == ""
    assert [e[0] if isinstance(e, list) else e for e in page.evaluate("protoLog")].count("executed") == 15


def test_newer_message_wins_over_a_slower_older_decode(page):
    """onExecuted decodes asynchronously: whatever finishes first, the newest message's preview stays."""
    page.evaluate(SETUP_JS, {"withDOMWidget": True, "values": node_values()})
    rng = np.random.default_rng(7)
    big = rng.integers(0, 65536, size=(512, 512), dtype=np.uint16)  # slow to inflate and classify
    small = np.full((H, W), round(0.5 * 65535), np.uint16)  # all unknown
    first = make_payload(codes=big, image=np.zeros((512, 512, 3), np.uint8))
    second = make_payload(codes=small)
    got = page.evaluate("""async ([a, b]) => {
        node.onExecuted({ ben2_trimap: [a] });
        const p1 = node.ben2TrimapPreview.ready;
        node.onExecuted({ ben2_trimap: [b] });
        const p2 = node.ben2TrimapPreview.ready;
        await Promise.all([p1, p2]);
        await new Promise((r) => setTimeout(r, 50));
        const p = node.ben2TrimapPreview;
        return { ready: p.root.dataset.ready, w: p.decoded.width, h: p.decoded.height,
                 canvas: [p.canvas.width, p.canvas.height], unknown: p.result.unknown, status: p.status.textContent };
    }""", [first, second])
    assert got == {"ready": "1", "w": W, "h": H, "canvas": [W, H], "unknown": W * H, "status": ""}
    assert page.evaluate("protoLog").count("created") == 1
    assert sum(1 for e in page.evaluate("protoLog") if isinstance(e, list) and e[0] == "executed") == 2


def test_removed_while_decoding_stays_inert(page):
    page.evaluate(SETUP_JS, {"withDOMWidget": True, "values": node_values()})
    got = page.evaluate("""async (a) => {
        node.onExecuted({ ben2_trimap: [a] });
        const preview = node.ben2TrimapPreview, pending = preview.ready;
        node.onRemoved();
        await pending;
        return { decoded: preview.decoded, image: preview.image, status: preview.status.textContent };
    }""", make_payload())
    assert got == {"decoded": None, "image": None, "status": ""}


def test_canvas_fallback_without_dom_widgets(page):
    setup_node(page, [make_payload()], with_dom=False)
    kind = page.evaluate("node.widgets.find((w) => w.name === 'ben2_trimap_preview').type")
    assert kind == "ben2_trimap_canvas"
    col = colors(page)
    page.evaluate("node.ben2TrimapPreview.setMode('trimap')")
    # draw the widget like LiteGraph would, onto a 2D context, and read the pixels back
    px = page.evaluate("""() => {
        const c = document.createElement('canvas'); c.width = 340; c.height = 260;
        const ctx = c.getContext('2d');
        const w = node.widgets.find((w) => w.name === 'ben2_trimap_preview');
        w.draw(ctx, node, 340, 0);
        // preview is scaled to fit 320x200 (64x48 -> 266.67x200) and centred horizontally
        const x0 = (340 - 64 * 200 / 48) / 2, s = 200 / 48;
        return [[5, 24], [32, 24], [60, 24]].map(([x, y]) =>
            Array.from(ctx.getImageData(Math.floor(x0 + (x + 0.5) * s), Math.floor((y + 0.5) * s), 1, 1).data));
    }""")
    assert [p[:3] for p in px] == [col["fg"], col["unknown"], col["bg"]]
    # node widget edits still drive the recompute in fallback mode
    page.evaluate("""() => { const w = node.widgets.find((w) => w.name === 't_low');
                             w.value = 0.5; w.callback(w.value); }""")
    assert page.evaluate(LABELS_JS)["unknown"] < 32 * H


# ----------------------------------------------------------------------------- recompute vs reference
def _random_cases():
    rng = np.random.default_rng(1234)
    cases = []
    u = rng.integers(0, 65536, size=(37, 53), dtype=np.uint16)
    cases.append(("uniform", u, dict(DEFAULTS)))
    cases.append(("uniform-big-min", u, {**DEFAULTS, "min_unknown_fraction": 0.5}))
    sat = np.where(rng.random((40, 30)) < 0.5, rng.integers(0, 800, (40, 30)), rng.integers(64800, 65536, (40, 30)))
    sat = sat.astype(np.uint16)
    sat[::7, ::5] = rng.integers(0, 65536, sat[::7, ::5].shape)
    cases.append(("saturated", sat, dict(DEFAULTS)))
    cases.append(("saturated-odd-params", sat, {**DEFAULTS, "t_low": 0.2, "t_high": 0.75, "t_min": 0.05,
                                                  "t_max": 0.9, "step": 0.003, "min_unknown_fraction": 0.3}))
    cases.append(("constant", np.full((8, 9), 30000, np.uint16), dict(DEFAULTS)))
    cases.append(("constant-fg", np.full((8, 9), 65535, np.uint16), dict(DEFAULTS)))
    cases.append(("tiny", np.array([[0, 65535, 6554]], np.uint16), {**DEFAULTS, "min_unknown_fraction": 1.0}))
    # codes sitting exactly on threshold boundaries of the float64 sequence
    edge = np.array([[round(t * 65535) + d for t in (0.1, 0.9, 0.03, 0.97, 0.05, 0.95) for d in (-1, 0, 1)]], np.uint16)
    cases.append(("edges", np.repeat(edge, 3, axis=0), {**DEFAULTS, "min_unknown_fraction": 0.99}))
    # codes whose probability equals a threshold exactly in float64 (13107/65535 == 0.2, 52428/65535 == 0.8,
    # 0.4 - 0.2 == 0.2): checks the >= / <= comparisons, not just the counts
    exact = np.array([[13106, 13107, 13108, 26214, 39321, 52427, 52428, 52429]], np.uint16)
    exact_params = {**DEFAULTS, "t_low": 0.2, "t_high": 0.8, "min_unknown_fraction": 0.0}
    cases.append(("exact-thresholds", exact, exact_params))
    cases.append(("exact-after-steps", exact, {**exact_params, "t_low": 0.4, "t_high": 0.6, "step": 0.2,
                                               "t_min": 0.0, "t_max": 1.0, "min_unknown_fraction": 0.9}))
    return cases


COMPUTE_JS = """
([codes, w, h, params]) => {
  const probs = Uint16Array.from(codes);
  const r = core.computeTrimap(probs, null, params, w, h);
  return { labels: Array.from(r.labels), tLow: r.tLow, tHigh: r.tHigh, unknown: r.unknown, minUnknown: r.minUnknown };
}
"""


def test_recompute_matches_python_reference(page):
    for name, codes, prm in _random_cases():
        h, w = codes.shape
        mu = py_round(prm["min_unknown_fraction"] * w * h)
        lab, tl, th = naive_trimap(codes_to_probs(codes), prm["t_low"], prm["t_high"], prm["t_min"], prm["t_max"],
                                   prm["step"], mu)
        got = page.evaluate(COMPUTE_JS, [codes.ravel().tolist(), w, h, prm])
        assert got["minUnknown"] == mu, name
        assert (got["tLow"], got["tHigh"]) == (tl, th), name
        assert got["unknown"] == int((lab == 1).sum()), name
        assert np.array_equal(np.array(got["labels"], np.uint8), lab.ravel()), name


def test_min_unknown_uses_python_round(page):
    for frac, w, h in [(0.5, 3, 1), (0.5, 5, 1), (0.5, 7, 1), (0.25, 2, 1), (60000 / 1024**2, 512, 512),
                       (0.0572, 511, 383)]:
        assert page.evaluate("([f, w, h]) => core.minUnknownCount(f, w, h)", [frac, w, h]) == round(frac * w * h)


def test_recompute_matches_ben_core_trimap(page):
    for name, codes, prm in _random_cases():
        h, w = codes.shape
        mu = py_round(prm["min_unknown_fraction"] * w * h)
        probs = torch.from_numpy(codes_to_probs(codes))[None]  # float64 [1, H, W]
        tri, tl, th = trimap_mod.confidence_trimap(probs, t_low=prm["t_low"], t_high=prm["t_high"], t_min=prm["t_min"],
                                                   t_max=prm["t_max"], step=prm["step"], min_unknown=mu)
        want = np.rint(tri[0].double().numpy() * 2).astype(np.uint8)  # {0, 0.5, 1} -> {0, 1, 2}
        got = page.evaluate(COMPUTE_JS, [codes.ravel().tolist(), w, h, prm])
        assert (got["tLow"], got["tHigh"]) == (float(tl[0]), float(th[0])), name
        assert np.array_equal(np.array(got["labels"], np.uint8), want.ravel()), name


def test_payload_json_roundtrip_is_what_the_widget_reads(page):
    """The payload survives JSON (as ComfyUI sends it) and decodes to the same codes."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 65536, size=(H, W), dtype=np.uint16)
    codes[:3, :3] = [[0, 1, 255], [256, 65534, 65535], [0x00FF, 0xFF00, 0x8001]]  # byte order matters
    payload = json.loads(json.dumps(make_payload(codes=codes)))
    got = page.evaluate("""async (p) => {
        const fetchBytes = async (path) => (await fetch("/api" + path)).arrayBuffer();
        const d = await core.decodePayload(p, fetchBytes);
        return { probs: Array.from(d.probs), mime: d.imageMime, path: d.imagePath }; }""", payload)
    assert np.array_equal(np.array(got["probs"], np.uint16).reshape(H, W), codes)
    assert got["mime"] == "image/jpeg"
    assert got["path"] == f"/view?filename={payload['image']['filename']}&type=temp&subfolder="


# ----------------------------------------------------------------------------- the real node's payload
def _show_trimap_pack():
    """The pack imported as ComfyUI does (see helpers.load_pack), which must register Show Trimap: an
    import error or a node left out of NODE_CLASS_MAPPINGS fails the test."""
    pack = load_pack()
    assert "BEN2_ShowTrimap" in pack.NODE_CLASS_MAPPINGS, sorted(pack.NODE_CLASS_MAPPINGS)
    return pack


def test_real_node_payload_drives_the_widget(page, monkeypatch):
    """Show Trimap's own payload and files (nodes/show_trimap.py, written to the temp folder /api/view serves)
    -> onExecuted -> the browser recompute agrees with the node."""
    import sys

    from comfy_stub import make_folder_paths

    fp = make_folder_paths(str(VIEW_DIR / "models"))
    fp.get_temp_directory = lambda: str(VIEW_DIR)
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    pack = _show_trimap_pack()
    node_cls = pack.NODE_CLASS_MAPPINGS["BEN2_ShowTrimap"]
    h, w = 48, 80  # below 512: the preview map is the full-resolution map, quantised to uint16
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    # coarse levels (multiples of 1/64) so uint16 quantisation cannot move a pixel across a threshold
    probs = (torch.sigmoid((xx - 40) / 6.0) * 64).round() / 64
    img = torch.stack([probs, 1 - probs, torch.full_like(probs, 0.5)], -1)[None]
    res = node_cls.execute(img, probs[None], 0.2, 0.8, 0.03, 0.97, 0.3)
    payload = json.loads(json.dumps(res.ui["ben2_trimap"]))[0]
    assert (payload["width"], payload["height"]) == (w, h)
    assert (payload["probs_encoding"], payload["image_format"]) == ("zlib-uint16le", "jpeg")

    setup_node(page, [payload])
    got = page.evaluate(LABELS_JS)
    assert (got["tLow"], got["tHigh"]) == (payload["final_t_low"], payload["final_t_high"])
    assert got["unknown"] == payload["unknown_count"]
    trimap = res.args[0][0].double().numpy()
    assert np.array_equal(np.array(got["labels"], np.uint8).reshape(h, w), np.rint(trimap * 2).astype(np.uint8))
    assert page.evaluate("node.ben2TrimapPreview.status.textContent") == ""


def test_slider_defaults_come_from_the_node_definition(page):
    """The widget holds no copy of the paper's constants: before any run, and with the threshold widgets
    converted to inputs, its sliders show the defaults of the definition the server sends, which the
    Python node takes from ben_core.matting.trimap.PAPER_DEFAULTS."""
    pack = _show_trimap_pack()
    import importlib

    paper = importlib.import_module(pack.__name__ + ".ben_core.matting.trimap").PAPER_DEFAULTS
    info = pack.NODE_CLASS_MAPPINGS["BEN2_ShowTrimap"].GET_NODE_INFO_V1()  # what /object_info sends
    node_data = json.loads(json.dumps({"name": "BEN2_ShowTrimap", "input": info["input"]}))
    page.evaluate(SETUP_JS, {"withDOMWidget": True, "values": {}, "nodeData": node_data})
    got = page.evaluate("() => ({...node.ben2TrimapPreview.values})")  # the range inputs round to their step
    assert got == {k: paper[k] for k in ("t_low", "t_high", "min_unknown_fraction")}
