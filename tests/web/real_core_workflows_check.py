"""Manual check of saved workflows in a REAL ComfyUI through its HTTP API (not collected by pytest).

Start ComfyUI with this pack in custom_nodes (e.g. ``python main.py --cpu --port 8199``), a BEN2 checkpoint
in models/BEN under the name the workflows use, and the files they load in input/; then run
    python tests/web/real_core_workflows_check.py http://127.0.0.1:8199 OUTPUT_DIR WORKFLOW.json [...]
        [--cancel-video WORKFLOW.json]

For every UI-format workflow (as the browser saves it) it maps each node's ``widgets_values`` by position
onto the inputs the server's /object_info declares (what the frontend does when it loads a workflow: widget
inputs in order, the upload button after a file combo, the control widget after a seed), checks every
value against its input (combo options, number ranges, types), builds the API prompt, queues it and waits
for the result. ``--cancel-video`` queues that workflow, interrupts it (POST /interrupt) once the video
node runs, and checks the run ended as interrupted with no new file in OUTPUT_DIR. Exit code 0 = all good.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NOTES = {"Note", "MarkdownNote"}


def call(base: str, path: str, data=None):
    req = urllib.request.Request(base + path, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    return json.loads(body) if body else None


def widget_inputs(info: dict) -> list:
    """[(name, type, options)] of a node's widget inputs in the frontend's order (required, optional)."""
    out = []
    for section in ("required", "optional"):
        for name, entry in info["input"].get(section, {}).items():
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
            if (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput"):
                out.append((name, "COMBO" if isinstance(kind, list) else kind, opts, kind))
    return out


def check_value(node, name, kind, opts, raw_kind, value) -> str | None:
    if kind == "COMBO":
        options = raw_kind if isinstance(raw_kind, list) else opts.get("options", [])
        return None if value in options else f"{node}.{name}={value!r} not in {options}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{node}.{name}={value!r} is not a boolean"
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{node}.{name}={value!r} is not a number"
        if not opts.get("min", value) <= value <= opts.get("max", value):
            return f"{node}.{name}={value!r} outside [{opts.get('min')}, {opts.get('max')}]"
    if kind == "STRING" and not isinstance(value, str):
        return f"{node}.{name}={value!r} is not a string"
    return None


def to_prompt(wf: dict, object_info: dict) -> tuple:
    """(API prompt, problems, mapped values) of a UI-format workflow."""
    links = {link[0]: link for link in wf["links"]}
    prompt, problems, mapped = {}, [], {}
    for n in wf["nodes"]:
        if n["type"] in NOTES:
            continue
        info = object_info.get(n["type"])
        if info is None:
            problems.append(f"node type {n['type']} is missing")
            continue
        inputs, values = {}, list(n.get("widgets_values") or [])
        for name, kind, opts, raw_kind in widget_inputs(info):
            if not values:
                break
            value = values.pop(0)
            inputs[name] = value
            problem = check_value(n["type"], name, kind, opts, raw_kind, value)
            if problem:
                problems.append(problem)
            if opts.get("image_upload") or opts.get("video_upload") or opts.get("control_after_generate"):
                if values:
                    values.pop(0)  # the frontend's upload button / seed control widget
        mapped[f"{n['id']}:{n['type']}"] = dict(inputs)
        if values:
            problems.append(f"{n['type']}: {len(values)} widget value(s) left over: {values}")
        for inp in n.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt, problems, mapped


def run(base: str, prompt: dict, timeout: float = 900.0, on_running=None) -> dict:
    pid = call(base, "/prompt", {"prompt": prompt})["prompt_id"]
    t0 = time.time()
    while time.time() - t0 < timeout:
        hist = call(base, f"/history/{pid}")
        if pid in hist:
            return hist[pid]
        if on_running is not None:
            on_running()
        time.sleep(0.5)
    raise TimeoutError(f"prompt {pid} did not finish in {timeout} s")


def files(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def main(argv) -> int:
    base, out_dir, rest = argv[0].rstrip("/"), Path(argv[1]), argv[2:]
    cancel = None
    if "--cancel-video" in rest:
        i = rest.index("--cancel-video")
        cancel, rest = rest[i + 1], rest[:i] + rest[i + 2:]
    object_info = call(base, "/object_info")
    ours = sorted(k for k in object_info if k.startswith("BEN2_"))
    print("BEN2 nodes:", ours)
    ok = len(ours) == 6
    for path in rest:
        wf = json.loads(Path(path).read_text(encoding="utf-8"))
        prompt, problems, mapped = to_prompt(wf, object_info)
        print(f"\n{path}")
        for key, values in mapped.items():
            if "BEN2_" in key:
                print(f"  {key}: {values}")
        if problems:
            ok = False
            print("  PROBLEMS:", *problems, sep="\n    ")
            continue
        t0 = time.time()
        result = run(base, prompt)
        status = result.get("status", {})
        print(f"  ran: {status.get('status_str')} in {time.time() - t0:.1f} s, outputs of nodes "
              f"{sorted(result.get('outputs', {}))}")
        ok &= status.get("status_str") == "success"
    if cancel:
        wf = json.loads(Path(cancel).read_text(encoding="utf-8"))
        prompt, problems, _ = to_prompt(wf, object_info)
        for node in prompt.values():  # a new prefix: ComfyUI would otherwise reuse the earlier run's result
            if node["class_type"] == "BEN2_RemoveVideoBackground":
                node["inputs"]["filename_prefix"] = "video/BEN2_cancel_check"
        before = files(out_dir)
        sent = []

        def interrupt_when_running():
            queue = call(base, "/queue")
            if queue["queue_running"] and not sent and time.time() - started > 3.0:
                call(base, "/interrupt", {})
                sent.append(time.time())

        started = time.time()
        result = run(base, prompt, on_running=interrupt_when_running)
        messages = [m[0] for m in result.get("status", {}).get("messages", [])]
        new = files(out_dir) - before
        print(f"\ncancel {cancel}: interrupt sent {bool(sent)}, status {result['status'].get('status_str')}, "
              f"messages {messages}, new files {sorted(new)}")
        ok &= bool(sent) and "execution_interrupted" in messages and not new
    print("\nALL OK" if ok else "\nFAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
