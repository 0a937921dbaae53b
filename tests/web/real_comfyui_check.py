r"""Manual end-to-end check of the trimap widget in a REAL ComfyUI (not collected by pytest).

Start ComfyUI with this pack in custom_nodes and the frontend build under test, e.g.
    python main.py --cpu --listen 127.0.0.1 --port 8199 \
        --front-end-root <unzipped wheel>/comfyui_frontend_package/static
then run
    python tests/web/real_comfyui_check.py http://127.0.0.1:8199 [screenshot.png] [--vue-nodes]

It opens the UI in headless Debian chromium, builds LoadImage(example.png) -> ImageToMask(red) ->
BEN2_ShowTrimap, queues it, waits for the widget to receive the preview over the websocket, checks the
rendered canvas, moves the t_low slider, checks the node widget / serialised workflow / API prompt, queues
again and checks the node ran with the slider's value, then removes the node. Exit code 0 = all good.
--vue-nodes switches the frontend's Vue-rendered nodes on (default off). It also checks that the widget's
modules (scripts/app.js, scripts/api.js shims, /extensions/ComfyUI-BEN2/js/) load and that both runs'
preview files came through /view (type=temp). Known: frontend 1.27's hidden experimental Vue-node mode
renders only its built-in widget types, so NO extension DOM widget (ours included) appears there;
1.53's and 1.58's Vue nodes render it.
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
  show.widgets.find((w) => w.name === "t_min").value = 0.031;  // must survive the reload below
  // reload it as a saved workflow (the path users take; also re-syncs Vue-rendered nodes)
  const saved = JSON.parse(JSON.stringify(app.graph.serialize()));
  await app.loadGraphData(saved);
  window.showNode = app.graph._nodes.find((n) => n.type === "BEN2_ShowTrimap");
  const restoredTMin = window.showNode.widgets.find((w) => w.name === "t_min").value;
  if (restoredTMin !== 0.031) throw new Error(`t_min not restored from widgets_values: ${restoredTMin}`);
  const show2 = window.showNode;
  const names = show2.widgets.map((w) => [w.name, w.type, w.serialize !== false]);
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


WATCH_COMMITS = """
() => { const n = window.showNode; window.__ben2Changed = [];
  const orig = n.onWidgetChanged;
  n.onWidgetChanged = function (name, value, oldValue, widget) {
    window.__ben2Changed.push([name, value, oldValue]);
    return orig?.apply(this, arguments);
  }; }
"""

COMMIT_STATE = """
() => { const app = window.comfyAPI.app.app;
  const wf = app.extensionManager?.workflow?.activeWorkflow ?? app.workflowManager?.activeWorkflow;
  const g = app.graph;
  return { version: g._version ?? g.version ?? null, changed: window.__ben2Changed ?? [],
           undo: wf?.changeTracker?.undoQueue?.length ?? null, modified: wf?.isModified ?? null }; }
"""


def main(url: str, shot: str | None, vue_nodes: bool = False) -> int:
    chromium = shutil.which("chromium")
    ok = True
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1400, "height": 900})
        logs = []
        page.on("console", lambda m: logs.append(f"{m.type}: {m.text} @ "
                                                 f"{m.location.get('url', '')}:{m.location.get('lineNumber', '')}"))
        page.on("pageerror", lambda e: logs.append(f"pageerror: {e} {getattr(e, 'stack', '')}"))
        net = []  # (status, url) of every response: the widget's module imports and its /view fetches
        page.on("response", lambda r: net.append((r.status, r.url)))
        page.on("requestfailed", lambda r: net.append(("FAILED " + str(r.failure), r.url)))
        page.goto(url)
        page.wait_for_function("window.comfyAPI?.app?.app?.graph && "
                               "window.comfyAPI.app.app.extensions?.some((e) => e.name === 'BEN2.TrimapPreview')",
                               timeout=90000)
        page.wait_for_timeout(2000)
        # first-start dialogs (template browser etc.) cover the canvas: close them
        for _ in range(3):
            page.keyboard.press("Escape")
            page.wait_for_timeout(300)
        # the frontend's "Nodes 2.0" (Vue-rendered nodes) on or off (the setting persists in the user dir)
        page.evaluate("""async (on) => { const app = window.comfyAPI.app.app;
            await app.extensionManager.setting.set('Comfy.VueNodes.Enabled', on); }""", vue_nodes)
        page.wait_for_timeout(1000)
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

        # how an edit is committed: the graph's version, node.onWidgetChanged, the undo queue, "modified"
        page.evaluate(WATCH_COMMITS)
        c0 = page.evaluate(COMMIT_STATE)
        print("before the slider edit:", json.dumps(c0))

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
        page.wait_for_timeout(500)  # the change tracker compares states after the pointer is released
        c1 = page.evaluate(COMMIT_STATE)
        print("after the slider edit:", json.dumps(c1))
        committed = (c1["version"] is not None and c1["version"] > c0["version"]
                     and ["t_low", s2["tLowWidget"], 0.1] in c1["changed"])
        undo_ok = c1["undo"] is not None and c1["undo"] > c0["undo"] and c1["modified"] is True
        print("slider edit committed (graph version, onWidgetChanged):", committed, " undo step and modified:", undo_ok)
        ok &= committed and undo_ok
        if vue_nodes:  # the Vue-rendered node shows its own t_low widget: it must show the slider's value
            shown = page.evaluate("""() => Array.from(document.querySelectorAll(
                `[data-node-id='${window.showNode.id}'] input`)).map((i) => i.value)""")
            print("Vue node's inputs show:", shown)
            ok &= any(v and float(v) == s2["tLowWidget"] for v in shown if v.replace(".", "", 1).isdigit())
        wf = page.evaluate("""() => { const app = window.comfyAPI.app.app;
            const ser = app.graph.serialize();
            return ser.nodes.find((n) => n.type === 'BEN2_ShowTrimap').widgets_values; }""")
        prompt = page.evaluate("""async () => { const app = window.comfyAPI.app.app;
            const p = await app.graphToPrompt();
            return p.output[String(window.showNode.id)].inputs; }""")
        print("workflow widgets_values:", wf)
        print("API prompt inputs:", {k: v for k, v in prompt.items() if not isinstance(v, list)})
        ok &= wf[0] == s2["tLowWidget"] and prompt["t_low"] == s2["tLowWidget"] and "ben2_trimap_preview" not in prompt

        if shot:
            page.screenshot(path=shot.replace(".png", "_after_slider.png"))

        # the other direction: the user edits the node's own t_high widget in the UI -> preview follows
        clicked = False
        if vue_nodes:  # Vue nodes: the widgets are DOM number inputs; type into t_high's
            inp = page.locator("[data-node-id='%s'] input" % page.evaluate("String(window.showNode.id)"))
            for i in range(inp.count()):
                if inp.nth(i).input_value() == "0.900":
                    inp.nth(i).fill("0.8")
                    inp.nth(i).press("Enter")
                    clicked = True
                    break
        else:
            pt = page.evaluate("""() => { const app = window.comfyAPI.app.app, n = window.showNode;
                const w = n.widgets.find((w) => w.name === 't_high'), ds = app.canvas.ds;
                const r = app.canvas.canvas.getBoundingClientRect();
                const gx = n.pos[0] + n.size[0] - 20, gy = n.pos[1] + w.y + 10;
                return [r.left + (gx + ds.offset[0]) * ds.scale, r.top + (gy + ds.offset[1]) * ds.scale]; }""")
            page.mouse.click(pt[0], pt[1])
            clicked = True
        page.wait_for_timeout(500)
        th = page.evaluate("""() => [window.showNode.widgets.find((w) => w.name === 't_high').value,
                                     Number(document.querySelector('input[data-param=t_high]').value),
                                     window.showNode.ben2TrimapPreview.values.t_high]""")
        print("after editing the node's t_high in the UI (widget, preview slider, preview value):", th,
              "clicked:", clicked)
        ok &= clicked and th[0] != 0.9 and th[0] == th[2]

        # undo brings the edits back, node widget and preview alike (the frontend reloads the graph: new nodes)
        if undo_ok:
            page.evaluate("window.__beforeUndo = window.comfyAPI.app.app.graph.serialize()")
            # focus the graph canvas, away from the nodes (the keybindings ignore keys typed into inputs)
            spot = page.evaluate("""() => { const r = window.comfyAPI.app.app.canvas.canvas.getBoundingClientRect();
                                           return [r.left + r.width * 0.5, r.top + r.height * 0.85]; }""")
            page.mouse.click(spot[0], spot[1])
            undone = 0
            while page.evaluate(COMMIT_STATE)["undo"] > c0["undo"] and undone < 10:
                page.keyboard.press("Control+z")
                page.wait_for_timeout(400)
                undone += 1
            u = page.evaluate("""() => {
                const n = window.comfyAPI.app.app.graph._nodes.find((m) => m.type === 'BEN2_ShowTrimap');
                return [n.widgets.find((w) => w.name === 't_low').value, n.ben2TrimapPreview?.values.t_low ?? null,
                        Number(n.ben2TrimapPreview?.root.querySelector('input[data-param=t_low]').value)]; }""")
            print("after undo (node widget, preview value, preview slider):", u)
            ok &= u == [0.1, 0.1, 0.1]
            for _ in range(undone):  # redo, so the second run below uses the slider's value
                page.keyboard.press("Control+y")
                page.wait_for_timeout(400)
            redo = page.evaluate("""() => { const app = window.comfyAPI.app.app;
                window.showNode = app.graph._nodes.find((m) => m.type === 'BEN2_ShowTrimap');
                const n = window.showNode, w = (k) => n.widgets.find((x) => x.name === k).value;
                return [w('t_low'), w('t_high'), n.ben2TrimapPreview?.values.t_low ?? null]; }""")
            print(f"after {undone} undo and redo steps (t_low, t_high, preview t_low):", redo)
            ok &= redo == [s2["tLowWidget"], th[0], s2["tLowWidget"]]

        # second run must use the slider's value
        page.evaluate("window.showNode.ben2TrimapPreview.root.dataset.ready = '0'; "
                      "window.comfyAPI.app.app.queuePrompt(0, 1)")
        page.wait_for_function("window.showNode.ben2TrimapPreview.root.dataset.ready === '1'", timeout=120000)
        s3 = page.evaluate(STATE)
        print("after run 2: payload t_low =", s3["payloadTLow"], " info:", s3["info"].replace("\n", " | "))
        ok &= s3["payloadTLow"] == s2["tLowWidget"]

        page.evaluate("""() => { const n = window.showNode; window.__el = n.ben2TrimapPreview.root;
                                 window.comfyAPI.app.app.graph.remove(n); }""")
        page.wait_for_timeout(300)
        gone = page.evaluate("() => [window.showNode.ben2TrimapPreview === undefined, "
                             "document.body.contains(window.__el)]")
        print("after remove: preview disposed, element still in document:", gone)
        ok &= gone[0] and not gone[1]
        bad = [line for line in logs if line.startswith(("error", "pageerror"))]
        errs = [line for line in bad if "BEN2" in line or "trimap" in line.lower()]
        print("widget-related console errors / page errors:", errs)
        # network errors of a backend older/newer than the frontend (e.g. 1.53 polling /api/jobs) are not ours
        network = ("Failed to load resource", "Failed to fetch", "[Jobs API]")
        late = [line for line in logs[startup_logs:]
                if line.startswith(("error", "pageerror")) and not any(x in line for x in network)]
        print("console errors / page errors after the node was created:", late)
        ok &= not late
        print("other console errors / page errors (frontend start-up or backend, not ours):", len(bad) - len(errs))
        for line in bad:
            if line not in errs:
                print("   ", line.splitlines()[0][:200])
        ok &= not errs
        mods = [(st, u) for st, u in net
                if "/scripts/app.js" in u or "/scripts/api.js" in u or "/extensions/ComfyUI-BEN2/" in u]
        print("module / extension responses:", mods)
        ok &= bool(mods) and all(st == 200 for st, _ in mods)
        views = [(st, u.split("/", 3)[-1]) for st, u in net if "view?" in u and "ben2_trimap" in u]
        print("preview files fetched through /view:", views)
        jpgs = [v for v in views if ".jpg" in v[1]]
        maps = [v for v in views if ".u16.zlib" in v[1]]
        ok &= len(jpgs) >= 2 and len(maps) >= 2  # two runs, an image and a map each
        ok &= all(st == 200 and "type=temp" in u for st, u in views)
        print("all failed / >= 400 responses:", [(st, u) for st, u in net if not (isinstance(st, int) and st < 400)])
        b.close()
    print("RESULT:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--vue-nodes"]
    sys.exit(main(args[0], args[1] if len(args) > 1 else None, "--vue-nodes" in sys.argv))
