"""Fail when a file that would be published to the Comfy Registry holds something its scanner flags.

Published = tracked by git and not excluded by ``.comfyignore``. Checks, all must come out empty:
1. the text ``subprocess``, ``.bind(`` or ``.connect(`` anywhere in a published file (observed triggers);
2. ``ruff --select S102,S307,E702`` (exec, eval, several statements on one line: what ``comfy node
   validate`` runs) on the published Python files;
3. ``bandit`` (what the registry's server-side scan is reported to be) on the published Python files,
   every severity.

``python .ci/registry_check.py [REPO_ROOT]`` (default: this repository). Exit code 0 = clean.
"""
from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_TRIGGERS = re.compile(r"\bsubprocess\b|\.bind\(|\.connect\(")


def ignore_patterns(root: Path) -> list[str]:
    path = root / ".comfyignore"
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def published_files(root: Path) -> list[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    patterns = ignore_patterns(root)

    def ignored(name: str) -> bool:
        for pat in patterns:
            if pat.endswith("/") and (name.startswith(pat) or ("/" + pat) in "/" + name):
                return True
            if fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(Path(name).name, pat):
                return True
        return False

    return [name for name in tracked if not ignored(name)]


def main(root: Path = ROOT) -> int:
    files = published_files(root)
    problems = []
    for name in files:
        try:
            text = (root / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary (icon, npz) or deleted in the work tree
        for number, line in enumerate(text.splitlines(), 1):
            if TEXT_TRIGGERS.search(line):
                problems.append(f"{name}:{number}: registry-flagged text: {line.strip()[:100]}")
    python = [name for name in files if name.endswith(".py")]
    ruff = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--select", "S102,S307,E702",
                           "--output-format", "concise", *python], cwd=root, capture_output=True, text=True)
    if ruff.returncode != 0:
        problems.append("ruff S102,S307,E702:\n" + ruff.stdout.strip())
    bandit = subprocess.run([sys.executable, "-m", "bandit", "-q", "-f", "txt", *python], cwd=root,
                            capture_output=True, text=True)
    if bandit.returncode != 0:
        problems.append("bandit:\n" + (bandit.stdout + bandit.stderr).strip())
    print(f"registry check: {len(files)} published files ({len(python)} Python), {len(problems)} problem(s)")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
