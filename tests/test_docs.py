"""README.md and docs/ stay true (docs/development.md, "These docs stay true").

* Every fenced ``bash`` / ``python`` block right after a ``<!-- runnable -->`` line runs, in a temporary
  folder with small inputs and the synthetic conformance weights (also in an offline Hugging Face cache,
  so the CLI's official-weights default resolves), on the CPU; ``<!-- runnable: creates A, B; prints X -->``
  also requires those files and that output.
* Every relative link (file and ``#anchor``, GitHub's heading slugs) resolves.
* Every command of ``python -m ben_core`` / ``ben2`` / ``python -m ben_core eval`` /
  ``python -m ben_core distributed`` (or its 0.3 spelling ``python -m ben_core.distributed``) /
  ``python -m benchmarks.<name>`` in a code block or span parses with that program's own parser; a code span
  that starts with a flag names options that exist; the option tables of docs/cli.md, docs/batch-jobs.md,
  docs/evaluation.md and docs/onnx.md list exactly their parser's options.
* The node tables of docs/nodes.md list exactly each node's inputs (and defaults, and outputs), read from
  ``define_schema`` with the ComfyUI stand-in; the README's node table lists every node; ``BEN2_*`` ids,
  ``ben_core.*`` names and repository paths written in code spans exist.

Each checker returns a list of problems; the ``test_checker_*`` tests feed each one a wrong document and
require it to complain.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from helpers import load_pack
from PIL import Image

from benchmarks.make_figures import markdown_table

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: Top-level entries of the repository that a path in a code span may start with.
REPO_DIRS = ("ben_core", "nodes", "web", "docs", "tests", "benchmarks", "example_workflows", ".ci")
#: A doc page's option table -> the program whose parser it lists.
OPTION_TABLES = {"cli.md": "ben_core", "batch-jobs.md": "ben_core distributed", "evaluation.md": "ben_core eval",
                 "onnx.md": "ben_core export-onnx"}
#: The programs ``python -m ben_core <first argument>`` dispatches to (ben_core/__main__.py).
SUBCOMMANDS = ("eval", "distributed", "export-onnx")

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*runnable(?::(.*?))?\s*-->\s*$")
SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"!?\[(?:[^\]\n]|\][^(\n])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# ------------------------------------------------------------------------------------------ document model

@dataclass
class Block:
    lang: str
    code: str
    line: int
    runnable: bool = False
    creates: list = field(default_factory=list)
    prints: list = field(default_factory=list)


def fenced_blocks(text: str) -> list[Block]:
    """Fenced code blocks with their language, first line number and runnable marker (the nearest
    non-blank line above the fence)."""
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        above = [x for x in text[:m.start()].splitlines() if x.strip()]
        marker = MARKER.search(above[-1]) if above else None
        block = Block(m.group(1).lower(), m.group(2), line, runnable=marker is not None)
        for part in (marker.group(1) or "").split(";") if marker else []:
            key, _, value = part.strip().partition(" ")
            if key == "creates":
                block.creates = [v.strip() for v in value.split(",") if v.strip()]
            elif key == "prints":
                block.prints.append(value.strip())
            elif key:
                raise ValueError(f"runnable marker above line {line}: unknown key {key!r} (creates, prints)")
        out.append(block)
    return out


def prose(text: str) -> str:
    """The text without its fenced blocks (headings, links and spans live here)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def code_spans(text: str) -> list[str]:
    return [s.strip() for s in SPAN.findall(prose(text).replace("\\|", "|"))]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"[`*_]|!?\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", prose(text), re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


# ------------------------------------------------------------------------------------------------- links

def check_links(text: str, path: Path) -> list[str]:
    """Problems with the relative links of one document at ``path``: missing files or anchors."""
    problems = []
    for target in LINK.findall(prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("<"):
            continue  # http(s), mailto: not ours to check
        file_part, _, anchor = target.partition("#")
        if not file_part:
            if anchor not in anchors(text):
                problems.append(f"{rel(path)}: link to {target}: no such heading in this page")
            continue
        dest = (path.parent / file_part).resolve()
        if not dest.exists():
            problems.append(f"{rel(path)}: link to {target}: {rel(dest)} does not exist")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{rel(path)}: link to {target}: no heading #{anchor} in {rel(dest)}")
    return problems


# ------------------------------------------------------------------------------------------------ parsers

class _Captured(Exception):
    pass


@lru_cache(maxsize=None)
def parser_for(program: str) -> argparse.ArgumentParser | None:
    """The argument parser of ``program`` (``ben_core``, ``ben_core <subcommand>``, ``benchmarks.<name>``),
    or None when there is no such program. A benchmark without ``build_parser``
    is asked for its parser by calling its ``main([])`` with ``parse_args`` intercepted, so nothing runs."""
    builders = {"ben_core": "ben_core.apps.cli", "ben_core eval": "ben_core.apps.evaluate",
                "ben_core distributed": "ben_core.apps.distributed",
                "ben_core.distributed": "ben_core.apps.distributed",
                "ben_core export-onnx": "ben_core.apps.export_onnx"}
    if program in builders:
        return importlib.import_module(builders[program]).build_parser()
    if not re.fullmatch(r"benchmarks\.\w+", program) or not (REPO / (program.replace(".", "/") + ".py")).is_file():
        return None
    module = importlib.import_module(program)
    if hasattr(module, "build_parser"):
        return module.build_parser()
    if "ArgumentParser(" not in Path(module.__file__).read_text(encoding="utf-8"):
        return argparse.ArgumentParser(prog=f"python -m {program}")  # a benchmark that takes no options

    def grab(self, *args, **kwargs):
        raise _Captured(self)

    saved = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_known_args = grab
    try:
        module.main([])
    except _Captured as c:
        return c.args[0]
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = saved
    raise AssertionError(f"{program}.main([]) returned without parsing arguments")


def options(parser: argparse.ArgumentParser) -> set[str]:
    """Every documented option string of ``parser`` (help and SUPPRESSed ones left out)."""
    return {s for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
            for s in a.option_strings}


def all_options() -> set[str]:
    programs = ["ben_core"] + [f"ben_core {sub}" for sub in SUBCOMMANDS]
    programs += [f"benchmarks.{p.stem}" for p in sorted((REPO / "benchmarks").glob("*.py")) if p.stem != "__init__"]
    found = set()
    for prog in programs:
        parser = parser_for(prog)
        if parser is not None:
            found |= options(parser)
    return found | {"-h", "--help"}


def commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line (split at ``&&``, ``||``, ``;``, ``|``; comments dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    out, current = [], []
    try:
        for tok in lexer:
            if tok and set(tok) <= set(";&|"):
                out.append(current)
                current = []
            else:
                current.append(tok)
    except ValueError:  # unbalanced quotes: not a command line
        return []
    return [c for c in out + [current] if c]


def invocation(tokens: list[str]) -> tuple[str, list[str]] | None:
    """``(program, argv)`` when ``tokens`` run one of our programs (after env assignments, ``time`` ...)."""
    for i, tok in enumerate(tokens):
        if tok == "ben2" and all("=" in t for t in tokens[:i]):  # the command itself, after VAR=value
            args = tokens[i + 1:]
            break
        if re.fullmatch(r"python3?", Path(tok).name) and tokens[i + 1:i + 2] == ["-m"] and len(tokens) > i + 2:
            module, args = tokens[i + 2], tokens[i + 3:]
            if module == "ben_core" and args[:1] and args[0] in SUBCOMMANDS:
                return f"ben_core {args[0]}", args[1:]
            if "<" in module:  # a placeholder such as benchmarks.<name>
                return None
            if module == "ben_core" or module.startswith(("ben_core.", "benchmarks.")):
                return module, args
            return None
    else:
        return None
    if args[:1] and args[0] in SUBCOMMANDS:
        return f"ben_core {args[0]}", args[1:]
    return "ben_core", args


def shell_lines(text: str) -> list[str]:
    """Command lines written in the document: fenced shell blocks (continuations joined) and code spans."""
    lines = []
    for b in fenced_blocks(text):
        if b.lang in ("bash", "sh", "shell", "console"):
            lines += b.code.replace("\\\n", " ").splitlines()
    return lines + code_spans(text)


def check_commands(text: str, name: str) -> list[str]:
    """Commands of our programs that their parser refuses, and lone flags that no program has."""
    problems = []
    known = None
    for line in shell_lines(text):
        for tokens in commands(line):
            call = invocation(tokens)
            if call is None:
                continue
            program, argv = call
            parser = parser_for(program)
            if parser is None:
                problems.append(f"{name}: `{line}`: no program {program}")
            elif argv and "..." not in argv:  # `ben2 ...`: the program named, its arguments elided
                err = io.StringIO()
                parser.allow_abbrev = False  # a doc spells options out: `--gpus` is not `--gpus-per-actor`
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    try:
                        parser.parse_args(argv)
                    except SystemExit as e:
                        if e.code not in (0, None):
                            problems.append(f"{name}: `{line}`: {err.getvalue().strip().splitlines()[-1]}")
    for span in code_spans(text):
        if span.startswith("-"):
            known = all_options() if known is None else known
            problems += [f"{name}: `{span}`: no program has the option {f}" for f in FLAG.findall(span)
                         if f not in known]
    return problems


def table_rows(text: str, header: str) -> list[list[str]]:
    """Body rows of the first table (outside code blocks) whose header row starts with ``header``; [] if none."""
    try:
        return markdown_table(prose(text), header)
    except ValueError:
        return []


def check_option_table(text: str, name: str, program: str) -> list[str]:
    """The ``| option | meaning |`` table must list exactly ``program``'s options."""
    rows = table_rows(text, "| option |")
    if not rows:
        return [f"{name}: no '| option | meaning |' table for {program}"]
    listed = {f for row in rows for span in SPAN.findall(row[0]) for f in FLAG.findall(span)}
    have = options(parser_for(program))
    return ([f"{name}: the option table lists {f}, which {program} does not have" for f in sorted(listed - have)]
            + [f"{name}: the option table misses {program}'s {f}" for f in sorted(have - listed)])


# ------------------------------------------------------------------------------------------------- nodes

@lru_cache(maxsize=1)
def node_schemas() -> dict:
    """``{node id: schema}`` of the pack, loaded with the ComfyUI stand-in (no ComfyUI needed)."""
    return {k: cls.define_schema() for k, cls in load_pack().NODE_CLASS_MAPPINGS.items()}


def _default_text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "" if value is None else str(value)


def check_node_tables(text: str, name: str) -> list[str]:
    """Each ``## `` section of the nodes page that names a node id must give its outputs after '→' and
    list exactly its inputs, with their defaults, in its ``| input | default |`` tables."""
    problems = []
    schemas = node_schemas()
    for section in re.split(r"^## ", prose(text), flags=re.M)[1:]:
        ident = re.search(r"^`(BEN2_\w+)`(.*)$", section, re.M)
        if ident is None:
            continue
        node = ident.group(1)
        if node not in schemas:
            problems.append(f"{name}: section of {node}: no such node")
            continue
        schema = schemas[node]
        outs = [o.display_name for o in schema.outputs]
        documented_outs = SPAN.findall(ident.group(2).partition("→")[2])
        if documented_outs != outs:
            problems.append(f"{name}: {node} outputs {documented_outs}, the node has {outs}")
        inputs = {i.id: i for i in schema.inputs}
        seen = set()
        for block in re.findall(r"^\| input \| default \|.*?(?=^[^|]|\Z)", section, re.S | re.M):
            for row in table_rows(block, "| input | default |"):
                names = SPAN.findall(row[0])
                default = SPAN.findall(row[1])
                for n in names:
                    seen.add(n)
                    if n not in inputs:
                        problems.append(f"{name}: {node} has no input {n!r}")
                        continue
                    actual = _default_text(getattr(inputs[n], "default", None))
                    if len(names) == 1 and actual != (default[:1] or [""])[0]:
                        problems.append(f"{name}: {node}.{n}: documented default {default[:1]}, the node's is "
                                        f"{actual!r}")
        problems += [f"{name}: {node}'s input {n!r} is not in its table" for n in inputs if n not in seen]
    covered = {m for m in re.findall(r"^`(BEN2_\w+)`", prose(text), re.M)}
    problems += [f"{name}: no section for {n}" for n in schemas if n not in covered]
    return problems


def check_node_list(text: str, name: str) -> list[str]:
    """The README's ``| node | id |`` table: every node once, with its display name."""
    schemas = node_schemas()
    rows = table_rows(text, "| node | id |")
    listed = {SPAN.findall(r[1])[0]: r[0] for r in rows if SPAN.findall(r[1])}
    problems = [f"{name}: node table lists {n}, which does not exist" for n in listed if n not in schemas]
    problems += [f"{name}: node table misses {n}" for n in schemas if n not in listed]
    problems += [f"{name}: {n} is displayed as {schemas[n].display_name!r}, the table says {d!r}"
                 for n, d in listed.items() if n in schemas and d != schemas[n].display_name]
    return problems


#: Pages about the nodes, where a snake_case name in a code span is a node's input or output ...
NODE_PAGES = ("README.md", "docs/nodes.md", "docs/comfyui-versions.md", "docs/video.md")
#: ... or one of these names of ComfyUI core or of the package.
CORE_NAMES = {"ben_core", "custom_nodes", "define_schema", "load_models_gpu", "save_to", "should_use_fp16",
              # ComfyUI's own functions, YAML keys, status and attributes the ComfyUI versions page cites
              "apply_custom_paths", "base_path", "execution_interrupted", "position_embeddings",
              "force_full_load", "throw_exception_if_processing_interrupted", "should_use_bf16",
              "get_stream_source", "current_loaded_models",
              # what core's BackgroundRemovalModel exposes (and Load BEN's bg_removal_model too)
              "image_size", "image_mean", "image_std", "model_type", "working_sizes", "load_device"}


def check_input_names(text: str, name: str) -> list[str]:
    """Snake_case names in code spans of a node page must be inputs or outputs of some node (or CORE_NAMES)."""
    known = {i.id for s in node_schemas().values() for i in s.inputs}
    known |= {o.display_name for s in node_schemas().values() for o in s.outputs} | CORE_NAMES
    return [f"{name}: `{span}` is no node's input or output" for span in code_spans(text)
            if re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)+", span) and span not in known]


# ---------------------------------------------------------------------------------------- names and paths

def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module or an attribute of one, at its current home: a module path kept
    only for 0.3's code (ben_core._moved, a DeprecationWarning) does not count."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)
                obj = importlib.import_module(".".join(parts[:cut]))
        except (ImportError, DeprecationWarning):
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def check_names(text: str, name: str) -> list[str]:
    """``BEN2_*`` node ids, ``ben_core.*`` names and repository paths written in code spans must exist."""
    problems = []
    schemas = node_schemas()
    for span in code_spans(text):
        for node in re.findall(r"\bBEN2_[A-Za-z]\w*", span):
            if node not in schemas and not node.startswith("BEN2_Base"):
                problems.append(f"{name}: `{span}`: no node {node}")
        if not re.search(r"\s", span):
            for dotted in re.findall(r"(?<![\w/.-])ben_core(?:\.[A-Za-z_]\w*)+", span):
                if not _resolves(dotted):
                    problems.append(f"{name}: `{span}`: {dotted} does not exist")
            path = span.rstrip("/")
            if path.split("/")[0] in REPO_DIRS and "/" in path and not re.search(r"[<>*\[\]]", path):
                if not (REPO / path).exists():
                    problems.append(f"{name}: `{span}`: no such file or folder in the repository")
    return problems


# ------------------------------------------------------------------------------------- the real documents

def _docs():
    return [(p, p.read_text(encoding="utf-8")) for p in DOCS]


def test_docs_exist_and_the_readme_is_short():
    assert (REPO / "README.md").stat().st_size <= 12 * 1024
    assert {p.name for p in DOCS} >= {"nodes.md", "cli.md", "python-api.md", "video.md", "batch-jobs.md",
                                       "evaluation.md", "performance.md", "publishing.md", "open-weights.md",
                                       "onnx.md",
                                       "comfyui-versions.md"}


def test_every_relative_link_resolves():
    assert [p for path, text in _docs() for p in check_links(text, path)] == []


def test_every_command_and_flag_named_exists():
    assert [p for path, text in _docs() for p in check_commands(text, rel(path))] == []


@pytest.mark.parametrize("page", sorted(OPTION_TABLES))
def test_option_tables_list_every_option(page):
    text = (REPO / "docs" / page).read_text(encoding="utf-8")
    assert check_option_table(text, page, OPTION_TABLES[page]) == []


def test_node_reference_matches_the_nodes():
    text = (REPO / "docs" / "nodes.md").read_text(encoding="utf-8")
    assert check_node_tables(text, "docs/nodes.md") == []
    assert check_node_list((REPO / "README.md").read_text(encoding="utf-8"), "README.md") == []


def test_node_inputs_named_on_node_pages_exist():
    assert [p for page in NODE_PAGES for p in check_input_names((REPO / page).read_text(encoding="utf-8"), page)] == []


def test_names_and_paths_in_code_spans_exist():
    assert [p for path, text in _docs() for p in check_names(text, rel(path))] == []


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -r requirements-test.txt && python -m pytest -q" in readme
    assert "-r requirements-test.txt" in ci and re.search(r"^python -m pytest -q$", ci, re.M)


# ------------------------------------------------------------------------------ the checkers can fail

def test_checker_finds_a_missing_file_and_anchor(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Real heading\n")
    text = "# Here\n[a](other.md#real-heading) [b](missing.md) [c](other.md#no-such) [d](#here) [e](#nope)\n"
    problems = check_links(text, page)
    assert len(problems) == 3 and any("missing.md" in p for p in problems)
    assert any("#no-such" in p for p in problems) and any("#nope" in p for p in problems)


def test_checker_finds_unknown_flags_and_bad_values():
    bad = ("```bash\npython -m ben_core ./p -o out --no-such-flag\n```\n"
           "`python -m ben_core ./p -o out --working-size 2048` and `ben2 ./p -o out --format gif`\n"
           "`python -m ben_core eval --pred a` (no --gt) and `python -m ben_core distributed in -o out --gpus 2`\n"
           "`python -m benchmarks.bench_memory --no-such-option` and `python -m benchmarks.no_such_bench --x`\n"
           "a lone `--not-an-option`\n")
    problems = check_commands(bad, "bad.md")
    assert len(problems) == 8, problems
    good = ("```bash\nRAY_ADDRESS=ray://h:1 python -m ben_core distributed s3://b/p -o s3://b/o --actors 8 \\\n"
            "    --gpus-per-actor 1\n```\n`python -m ben_core ./p -o out --dtype bf16 --working-size 512`, "
            "`--mask-only`, `pip install --no-deps x`, `python -m benchmarks.bench_memory --sizes 1920x1080`\n")
    assert check_commands(good, "good.md") == []


def test_checker_finds_an_incomplete_option_table():
    text = ("| option | meaning |\n|---|---|\n| `-o OUTDIR`, `--output OUTDIR` | out |\n| `--made-up` | no |\n")
    problems = check_option_table(text, "cli.md", "ben_core")
    assert "the option table lists --made-up, which ben_core does not have" in problems[0]
    assert any("misses ben_core's --checkpoint" in p for p in problems)


def test_checker_finds_wrong_node_inputs_defaults_and_outputs():
    text = ("## Show Trimap\n\n`BEN2_ShowTrimap` → `trimap` (MASK), `preview` (IMAGE)\n\n"
            "| input | default | meaning |\n|---|---|---|\n| `image`, `mask` | | x |\n"
            "| `t_low` | `0.2` | wrong default |\n| `t_hihg` | `0.9` | misspelt |\n")
    problems = check_node_tables(text, "nodes.md")
    assert any("outputs ['trimap', 'preview']" in p for p in problems)
    assert any("t_low: documented default ['0.2']" in p for p in problems)
    assert any("has no input 't_hihg'" in p for p in problems)
    assert any("input 't_high' is not in its table" in p for p in problems)
    assert any("no section for BEN2_LoadModel" in p for p in problems)
    table = "| node | id | what |\n|---|---|---|\n| Load BEN (BEN2) | `BEN2_LoadModel` | x |\n| X | `BEN2_Nope` | y |\n"
    problems = check_node_list(table, "README.md")
    assert any("BEN2_Nope, which does not exist" in p for p in problems)
    assert any("misses BEN2_RefineMask" in p for p in problems)


def test_checker_finds_an_input_that_no_node_has():
    assert check_input_names("switch on `invert_mask` or `temporal_stabilize`", "x.md") == []
    assert check_input_names("switch on `invert_masks` (renamed)", "x.md") == ["x.md: `invert_masks` is no node's "
                                                                              "input or output"]


def test_checker_finds_missing_names_and_paths():
    text = ("`ben_core.remove_background_video` `ben_core.video.remove_background_video` `ben_core.nope.x` "
            "`BEN2_RemoveEverything` `tests/no_such_test.py` `benchmarks/bench_memory.py` `BEN2_Base.pth`\n")
    problems = check_names(text, "x.md")
    assert len(problems) == 4, problems


def test_runnable_markers_are_read():
    text = ("<!-- runnable -->\n```bash\necho a\n```\n\n```bash\necho b\n```\n"
            "<!-- runnable: creates out.png, d/; prints done -->\n\n```python\nprint('done')\n```\n")
    blocks = fenced_blocks(text)
    assert [b.runnable for b in blocks] == [True, False, True]
    assert blocks[2].creates == ["out.png", "d/"] and blocks[2].prints == ["done"] and blocks[2].lang == "python"


# --------------------------------------------------------------------------------- runnable snippets

RUNNABLE = [(rel(path), b) for path, text in _docs() for b in fenced_blocks(text) if b.runnable]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder with what the runnable snippets use: ``photos/`` (one JPEG), ``photo.jpg``,
    ``model.safetensors`` (synthetic weights), ``my_masks/`` + ``gt/``, and a Hugging Face cache holding the
    synthetic weights as ``PramaLLC/BEN2``'s ``model.safetensors`` (returned with the folder)."""
    from helpers import synth_sd
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("docs_sandbox")
    weights = root / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in synth_sd(0).items()}, str(weights))
    snapshot = root / "hf" / "models--PramaLLC--BEN2" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(weights)
    (root / "hf" / "models--PramaLLC--BEN2" / "refs").mkdir()
    (root / "hf" / "models--PramaLLC--BEN2" / "refs" / "main").write_text("0" * 40)
    inputs = root / "inputs"
    (inputs / "photos").mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:36, 0:52]
    disc = ((yy - 18) ** 2 + (xx - 26) ** 2 < 12 ** 2)
    photo = np.where(disc[..., None], [220, 120, 60], [40, 90, 160]) + rng.integers(0, 20, (36, 52, 3))
    photo = photo.astype(np.uint8)
    Image.fromarray(photo).save(inputs / "photos" / "photo_1.jpg", quality=95)
    Image.fromarray(photo).save(inputs / "photo.jpg", quality=95)
    for folder, mask in (("gt", disc), ("my_masks", np.roll(disc, 2, axis=1))):
        (inputs / folder).mkdir()
        Image.fromarray((mask * 255).astype(np.uint8)).save(inputs / folder / "photo_1.png")
    return root


def _run_block(block: Block, cwd: Path, sandbox: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(PYTHONPATH=str(REPO), HF_HUB_CACHE=str(sandbox / "hf"), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    if block.lang == "python":
        (cwd / "snippet.py").write_text(block.code)
        cmd = [sys.executable, "snippet.py"]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("doc,block", RUNNABLE, ids=[f"{d}:{b.line}" for d, b in RUNNABLE])
def test_runnable_snippet_runs(doc, block, sandbox, tmp_path):
    """The snippet runs as written (synthetic weights, CPU, offline), makes what it says and only readable
    images."""
    assert block.lang in ("bash", "python"), f"{doc}:{block.line}: runnable blocks are bash or python"
    work = tmp_path / "work"
    shutil.copytree(sandbox / "inputs", work)
    (work / "model.safetensors").symlink_to(sandbox / "weights.safetensors")
    r = _run_block(block, work, sandbox)
    assert r.returncode == 0, f"{doc}:{block.line} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    for path in block.creates:
        target = work / path
        assert target.exists() and (any(target.iterdir()) if target.is_dir() else target.stat().st_size > 0), \
            f"{doc}:{block.line} did not create {path}"
    for text in block.prints:
        assert text in r.stdout, f"{doc}:{block.line} did not print {text!r}:\n{r.stdout[-2000:]}"
    for image in [p for p in work.rglob("*") if p.suffix in (".png", ".jpg", ".webp") and p.is_file()]:
        with Image.open(image) as im:
            im.load()  # a truncated or broken output fails here
