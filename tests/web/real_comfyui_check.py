"""Manual end-to-end check of the trimap widget in a REAL ComfyUI (not collected by pytest).

Start ComfyUI with this pack in custom_nodes and the frontend build under test, e.g.
    python main.py --cpu --listen 127.0.0.1 --port 8199 --front-end-root <unzipped wheel>/comfyui_frontend_package/static
then run
    python tests/web/real_comfyui_check.py http://127.0.0.1:8199 [screenshot.png]

It opens the UI in headless Debian chromium, builds LoadImage(example.png) -> ImageToMask(red) ->
BEN2_ShowTrimap, queues it, waits for the widget to receive the preview over the websocket, checks the
rendered canvas, moves the t_low slider, checks the node widget / serialised workflow / API prompt, queues
again and checks the node ran with the slider's value, then removes the node. Exit code 0 = all good.
"""
from __future__ import annotations

import json
import shutil
import sys

from playwright.sync_api import sync_playwright

BUILD_AND_RUN = """
async () => {
  const app = window.comfyAPI.app.app;
  const LG = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
  const ext = app.extensions.find((e) => e.name === "BEN2.TrimapPreview");
  if (!ext) throw new Error("extension BEN2.TrimapPreview not registered");
  app.graph.clear();
  const load = LG.createNode("LoadImage"); app.graph.add(load);
  load.widgets.find((w) => w.name === "image").value = "example.png";
  const toMask = LG.createNode("ImageToMask"); app.graph.add(toMask);
  toMask.widgets.find((w) => w.name === "channel").value = "red";
  const show = LG.createNode("BEN2_ShowTrimap"); app.graph.add(show);
  load.pos = [0, 0]; toMask.pos = [340, 0]; show.pos = [620, 0];
  load.connect(0, toMask, 0);
  load.connect(0, show, 0);
  toMask.connect(0, show, 1);
  window.showNode = show;
  const names = show.widgets.map((w) => [w.name, w.type, w.serialize !== false]);
  await app.queuePrompt(0, 1);
  return { names, version: window.__COMFYUI_FRONTEND_VERSION__ ?? null };
}
"""

STATE = """
() => {
  const n = window.showNode, p = n.ben2TrimapPreview;
  const c = p.canvas, ctx = c.getContext("2d");
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  const col = {}; // histogram of the trimap colours in trimap mode
  for (let i = 0; i < d.length; i += 4) { const k = `${d[i]},${d[i+1]},${d[i+2]}`; col[k] = (col[k] || 0) + 1; }
  const r = p.root.getBoundingClientRect();
  return { w: c.width, h: c.height, colours: col, info: p.info.textContent, unknown: Number(p.info.dataset.unknown),
           visible: r.width > 0 && r.height > 0 && document.body.contains(p.root), rect: [r.x, r.y, r.width, r.height],
           tLowWidget: n.widgets.find((w) => w.name === "t_low").value, status: p.status.textContent,
           payloadTLow: p.payloads[0]?.t_low };
}
"""


def main(url: str, shot: str | None) -> int:
    chromium = shutil.which("chromium")
    ok = True
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1400, "height": 900})
        logs = []
        page.on("console", lambda m: logs.append(f"{m.type}: {m.text} @ {m.location.get('url', '')}:{m.location.get('lineNumber', '')}"))
        page.on("pageerror", lambda e: logs.append(f"pageerror: {e} {getattr(e, 'stack', '')}"))
        page.goto(url)
        page.wait_for_function("window.comfyAPI?.app?.app?.graph && window.comfyAPI.app.app.extensions?.some((e) => e.name === 'BEN2.TrimapPreview')",
                               timeout=90000)
        page.wait_for_timeout(2000)
        # first-start dialogs (template browser etc.) cover the canvas: close them
        for _ in range(3):
            page.keyboard.press("Escape")
            page.wait_for_timeout(300)
        startup_logs = len(logs)  # everything before this is the frontend starting up (before our node exists)
        info = page.evaluate(BUILD_AND_RUN)
        print("frontend:", info["version"])
        print("node widgets:", info["names"])
        page.wait_for_function("window.showNode.ben2TrimapPreview?.root.dataset.ready === '1'", timeout=120000)
        page.evaluate("window.showNode.ben2TrimapPreview.setMode('trimap')")
        s1 = page.evaluate(STATE)
        print("after run 1:", json.dumps({k: v for k, v in s1.items() if k != "colours"}))
        print("  trimap colours:", s1["colours"])
        ok &= s1["visible"] and len(s1["colours"]) >= 2 and s1["payloadTLow"] == 0.1
        if shot:
            page.evaluate("window.showNode.ben2TrimapPreview.setMode('overlay')")
            page.wait_for_timeout(300)
            page.screenshot(path=shot)
            page.evaluate("window.showNode.ben2TrimapPreview.setMode('trimap')")

        # move the t_low slider like a user would (real pointer input on the range element)
        slider = page.locator("input[data-param=t_low]")
        slider.scroll_into_view_if_needed()
        box = slider.bounding_box()
        print("t_low slider box:", box)
        page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] / 2)
        page.wait_for_timeout(300)
        s2 = page.evaluate(STATE)
        print("after slider click:", json.dumps({k: v for k, v in s2.items() if k != "colours"}))
        ok &= s2["tLowWidget"] != 0.1 and s2["unknown"] != s1["unknown"]
        wf = page.evaluate("""() => { const app = window.comfyAPI.app.app;
            const ser = app.graph.serialize(); return ser.nodes.find((n) => n.type === 'BEN2_ShowTrimap').widgets_values; }""")
        prompt = page.evaluate("""async () => { const app = window.comfyAPI.app.app; const p = await app.graphToPrompt();
            return p.output[String(window.showNode.id)].inputs; }""")
        print("workflow widgets_values:", wf)
        print("API prompt inputs:", {k: v for k, v in prompt.items() if not isinstance(v, list)})
        ok &= wf[0] == s2["tLowWidget"] and prompt["t_low"] == s2["tLowWidget"] and "ben2_trimap_preview" not in prompt

        # second run must use the slider's value
        page.evaluate("window.showNode.ben2TrimapPreview.root.dataset.ready = '0'; window.comfyAPI.app.app.queuePrompt(0, 1)")
        page.wait_for_function("window.showNode.ben2TrimapPreview.root.dataset.ready === '1'", timeout=120000)
        s3 = page.evaluate(STATE)
        print("after run 2: payload t_low =", s3["payloadTLow"], " info:", s3["info"].replace("\n", " | "))
        ok &= s3["payloadTLow"] == s2["tLowWidget"]

        page.evaluate("""() => { const n = window.showNode; window.__el = n.ben2TrimapPreview.root;
                                 window.comfyAPI.app.app.graph.remove(n); }""")
        page.wait_for_timeout(300)
        gone = page.evaluate("() => [window.showNode.ben2TrimapPreview === undefined, document.body.contains(window.__el)]")
        print("after remove: preview disposed, element still in document:", gone)
        ok &= gone[0] and not gone[1]
        bad = [l for l in logs if l.startswith(("error", "pageerror"))]
        errs = [l for l in bad if "BEN2" in l or "trimap" in l.lower()]
        print("widget-related console errors / page errors:", errs)
        # network errors of a backend older/newer than the frontend (e.g. 1.53 polling /api/jobs) are not ours
        network = ("Failed to load resource", "Failed to fetch", "[Jobs API]")
        late = [l for l in logs[startup_logs:] if l.startswith(("error", "pageerror")) and not any(x in l for x in network)]
        print("console errors / page errors after the node was created:", late)
        ok &= not late
        print("other console errors / page errors (frontend start-up or backend, not ours):", len(bad) - len(errs))
        for l in bad:
            if l not in errs:
                print("   ", l.splitlines()[0][:200])
        ok &= not errs
        b.close()
    print("RESULT:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
