"""Packaging checks: pyproject.toml (Comfy Registry fields, no torch) and the example workflows
(UI-format graphs whose links, slots, types and widget values match the nodes they use)."""
from __future__ import annotations

import json

import pytest
from test_nodes import NODE_IDS, ROOT, load_pack

WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
#: ComfyUI core nodes the examples use: (input socket names, output types, widget count)
CORE_NODES = {
    "LoadImage": ([], ["IMAGE", "MASK"], 2),          # image + the upload button's value
    "SaveImage": (["images"], [], 1),
    "PreviewImage": (["images"], [], 0),
    "MaskPreview": (["mask"], [], 0),
    "InvertMask": (["mask"], ["MASK"], 0),
    "JoinImageWithAlpha": (["image", "alpha"], ["IMAGE"], 0),
    "MarkdownNote": ([], [], 1),
    "LoadVideo": ([], ["VIDEO"], 2),          # file + the upload button's value
}


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_pyproject_registry_fields_and_dependencies():
    data = _toml()
    project = data["project"]
    assert project["name"] == project["name"].lower() and project["name"]
    assert project["version"] and project["description"]
    reqs = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]
    assert project["dependencies"] == reqs
    assert not any(d.lower().startswith(("torch", "torchvision", "timm")) for d in project["dependencies"])
    assert {"Repository", "Documentation", "Bug Tracker"} <= set(project["urls"])
    comfy = data["tool"]["comfy"]
    assert {"PublisherId", "DisplayName", "Icon", "includes"} <= set(comfy)
    assert "web" not in comfy  # WEB_DIRECTORY registers web/ already
    # pip installs only ben_core (with the ben2 command); the custom-node folder is not a wheel
    assert data["build-system"]["build-backend"] == "setuptools.build_meta"
    assert data["tool"]["setuptools"]["packages"]["find"]["include"] == ["ben_core*"]
    assert project["scripts"]["ben2"] == "ben_core.__main__:main"
    extras = project["optional-dependencies"]
    assert {"video", "ray", "eval"} <= set(extras)
    assert not any(d.lower().startswith(("torch", "torchvision", "timm")) for deps in extras.values() for d in deps)
    assert not any(d.lower().startswith("ray") for d in project["dependencies"])


def _info(cls) -> dict:
    """The node definition ComfyUI's server sends the browser (/object_info: V1 format of a V3 node)."""
    return cls.GET_NODE_INFO_V1()


def _widget_inputs(cls):
    """[(name, spec)] of the inputs that become widgets, in the frontend's order (required, optional)."""
    out = []
    spec = _info(cls)["input"]
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind = entry[0]
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                out.append((name, entry))
    return out


def _socket_inputs(cls):
    spec = _info(cls)["input"]
    return [(name, entry[0]) for section in ("required", "optional") for name, entry in spec.get(section, {}).items()
            if not (isinstance(entry[0], list) or entry[0] in WIDGET_TYPES)]


def _check_widget_value(node_id, name, entry, value):
    kind, opts = entry[0], entry[1]
    if kind == "COMBO" or isinstance(kind, list):
        options = opts["options"] if kind == "COMBO" else kind
        assert value in options or name == "model_name", f"{node_id}.{name}={value!r} not in {options}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{node_id}.{name}"
    elif kind in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{node_id}.{name}"
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{node_id}.{name}={value}"
    elif kind == "STRING":
        assert isinstance(value, str)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_example_workflow_matches_the_nodes(path):
    pack = load_pack()
    wf = json.loads(path.read_text(encoding="utf-8"))
    assert wf["version"] == 0.4 and isinstance(wf["nodes"], list) and isinstance(wf["links"], list)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] >= max(nodes)
    assert wf["last_link_id"] >= max(link[0] for link in wf["links"])
    for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id
        assert out["type"] == inp["type"] == typ
        assert nodes[src]["order"] < nodes[dst]["order"]
    for n in wf["nodes"]:
        for inp in n.get("inputs", []):
            assert inp["link"] is None or any(link[0] == inp["link"] for link in wf["links"])
        if n["type"] in pack.NODE_CLASS_MAPPINGS:
            cls = pack.NODE_CLASS_MAPPINGS[n["type"]]
            sockets = _socket_inputs(cls)
            assert [(i["name"], i["type"]) for i in n["inputs"]] == sockets, n["type"]
            info = _info(cls)
            saved = [(o["name"], o["type"]) for o in n["outputs"]]
            # a workflow saved before an output was added lists fewer (Load BEN's bg_removal_model, 0.2.0)
            declared = list(zip(info["output_name"], info["output"], strict=True))
            assert saved and saved == declared[:len(saved)], n["type"]
            widgets = _widget_inputs(cls)
            assert len(n["widgets_values"]) == len(widgets), n["type"]
            for (name, entry), value in zip(widgets, n["widgets_values"], strict=True):
                _check_widget_value(n["type"], name, entry, value)
        else:
            assert n["type"] in CORE_NODES, f"unexpected node type {n['type']}"
            ins, outs, n_widgets = CORE_NODES[n["type"]]
            assert [i["name"] for i in n.get("inputs", [])] == ins
            assert [o["type"] for o in n.get("outputs", [])] == outs
            assert len(n["widgets_values"]) == n_widgets


def test_main_example_covers_the_whole_chain():
    wf = json.loads((ROOT / "example_workflows" / "ben2_remove_background.json").read_text(encoding="utf-8"))
    types_ = {n["type"] for n in wf["nodes"]}
    # ViTMatte needs transformers and a download: not in the example; video has its own example
    elsewhere = {"BEN2_RefineMaskViTMatte", "BEN2_RemoveVideoBackground"}
    assert (set(NODE_IDS) - elsewhere) | {"LoadImage", "SaveImage"} <= types_
    video = json.loads((ROOT / "example_workflows" / "ben2_remove_video_background.json").read_text(encoding="utf-8"))
    assert {"LoadVideo", "BEN2_LoadModel", "BEN2_RemoveVideoBackground"} <= {n["type"] for n in video["nodes"]}


#: The widgets of each node as 0.1.0 saved them in workflows (ComfyUI stores widgets_values by position).
WIDGETS_0_1_0 = {
    "BEN2_LoadModel": ["model_name", "device", "precision", "download_official_weights"],
    "BEN2_RemoveBackground": ["output_mode", "background_colour", "refine_foreground", "invert_mask", "batch_size",
                              "working_size"],
    "BEN2_ShowTrimap": ["t_low", "t_high", "t_min", "t_max", "min_unknown_fraction"],
    "BEN2_RefineMask": ["method", "radius", "eps", "trimap_source", "band_radius", "refine_foreground", "output_mode",
                        "background_colour"],
}


def test_workflows_saved_by_0_1_0_still_load():
    """A saved workflow maps widgets_values by position: the widgets of 0.1.0 must come first, in their
    order, and any widget added since must be optional with a default (what an old workflow gets)."""
    pack = load_pack()
    for node_id, old in WIDGETS_0_1_0.items():
        cls = pack.NODE_CLASS_MAPPINGS[node_id]
        names = [name for name, _ in _widget_inputs(cls)]
        assert names[:len(old)] == old, node_id
        optional = _info(cls)["input"].get("optional", {})
        for name in names[len(old):]:
            assert name in optional and "default" in optional[name][1], (node_id, name)


#: The outputs of each node as 0.1.0 had them (links in saved workflows refer to output slots by index).
OUTPUTS_0_1_0 = {
    "BEN2_LoadModel": [("ben_model", "BEN_MODEL")],
    "BEN2_RemoveBackground": [("image", "IMAGE"), ("mask", "MASK")],
    "BEN2_ShowTrimap": [("trimap", "MASK"), ("visualisation", "IMAGE")],
    "BEN2_RefineMask": [("mask", "MASK"), ("image", "IMAGE")],
}


def test_outputs_of_0_1_0_keep_their_slots():
    pack = load_pack()
    for node_id, old in OUTPUTS_0_1_0.items():
        info = _info(pack.NODE_CLASS_MAPPINGS[node_id])
        assert list(zip(info["output_name"], info["output"], strict=True))[:len(old)] == old, node_id


def _registry_check(root):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(ROOT / ".ci" / "registry_check.py"), str(root)],
                          capture_output=True, text=True, timeout=300)


def test_published_files_pass_the_registry_scanner_rules():
    """What would be uploaded to the Comfy Registry (git-tracked, not in .comfyignore) is clean of every
    trigger its scanner is known to flag (.ci/registry_check.py; CI runs it too)."""
    r = _registry_check(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 problem(s)" in r.stdout


def test_registry_check_catches_each_trigger(tmp_path):
    import subprocess

    (tmp_path / ".comfyignore").write_text("tests/\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "ok.py").write_text("import subprocess\n")  # ignored: not published
    (tmp_path / "bad.py").write_text("x = 1; y = eval('2')\n")
    (tmp_path / "run.py").write_text("import os\n\n\ndef go(cmd):\n    return os.system(cmd)\n")
    (tmp_path / "widget.js").write_text("// node.connect(0, other, 1)\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    r = _registry_check(tmp_path)
    assert r.returncode == 1
    out = r.stdout
    assert "widget.js:1" in out and "tests/ok.py" not in out
    assert "E702" in out and "S307" in out  # several statements on one line, eval
    assert "B605" in out or "os.system" in out  # bandit: a shell started from Python
