"""The house's rules, read from the code: every import in ben_core points down, no program imports another,
docs/development.md names every module, and the 0.3 module paths still import (as the same modules)."""
from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ben_core"

#: The floors of docs/development.md#layout, ground first. A module may import its own floor's and lower
#: floors' modules (within a room, modules of one floor may import each other), never a higher floor.
FLOORS = [
    {"devices", "callbacks", "memory", "_moved"},
    {"model", "io"},
    {"matting"},
    {"predictor"},
    {"pipeline"},
    {"video"},
    {"apps"},
    {"__main__", "distributed"},
]
ROOMS_WITH_FOLDERS = {"model", "matting", "io", "apps"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The ben_core modules ``path`` imports (relative imports resolved; ``from . import x`` -> ``pkg.x``)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {target} if node.module else {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ben_core"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ben_core")}
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ben_core"


def floor(module: str) -> int:
    r = room(module)
    for i, rooms in enumerate(FLOORS):
        if r in rooms:
            return i
    raise AssertionError(f"{module}: its room {r!r} is on no floor of FLOORS (add it to docs/development.md too)")


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_every_import_points_down(path):
    here = module_name(path)
    if here == "ben_core":
        return  # the package's face imports its public names lazily, from every floor
    up = [t for t in imports(path) if t != "ben_core" and floor(t) > floor(here)]
    assert up == [], f"{here} (floor {floor(here)}) imports from a higher floor: {up}"


def test_no_program_imports_another():
    """cli, evaluate and distributed share ben_core.apps.jobs and nothing else of each other."""
    programs = {"ben_core.apps.cli", "ben_core.apps.evaluate", "ben_core.apps.distributed"}
    for path in (PACKAGE / "apps").glob("*.py"):
        here = module_name(path)
        others = {t for t in imports(path) if t in programs and t != here}
        assert not others, f"{here} imports the program(s) {sorted(others)}; share through ben_core.apps.jobs"


def test_the_floors_table_is_the_documented_layout():
    """docs/development.md's layout names every module of ben_core, and no module that is gone."""
    text = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):]
    block = layout[layout.index("```text"):layout.index("```", layout.index("```text") + 7)]
    for path in MODULES:
        if path.name == "__init__.py" and path.parent != PACKAGE:
            continue
        rel = path.relative_to(PACKAGE)
        named = str(rel) if rel.parent == Path(".") else f"{rel.parent}/{rel.name}"
        short = rel.name if rel.parent == Path(".") else f"{rel.parent}/{rel.stem}"
        assert named in block or short in block or rel.stem in block, f"docs/development.md's layout lacks {named}"


@pytest.mark.parametrize("old,new", [
    ("ben_core.trimap", "ben_core.matting.trimap"),
    ("ben_core.hub", "ben_core.model.weights"),
    ("ben_core.checkpoint", "ben_core.model.weights"),
    ("ben_core.video_writers", "ben_core.io.video_writers"),
    ("ben_core.cli", "ben_core.apps.cli"),
])
def test_an_old_module_path_is_the_new_module_with_a_warning(old, new):
    import importlib

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)  # the same objects: isinstance and monkeypatching hold
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_every_old_module_path_is_listed_and_resolves():
    from ben_core import _moved

    for old, new in _moved.MOVED.items():
        assert not (PACKAGE / f"{old}.py").exists(), f"ben_core/{old}.py exists beside its alias"
        assert (PACKAGE / (new.replace(".", "/") + ".py")).is_file(), f"{old} -> {new}: no such module"


def test_an_unknown_module_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        __import__("ben_core.no_such_module")


@pytest.mark.parametrize("argv", [["-m", "ben_core", "distributed", "--help"],
                                  ["-m", "ben_core.distributed", "--help"]])
def test_both_spellings_of_the_distributed_program_run_it(argv):
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python -m ben_core distributed") and "--actors" in r.stdout
