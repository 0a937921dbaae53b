"""Old module paths of ben_core 0.3 (before the rooms of 0.4) keep importing, with a DeprecationWarning.

``import ben_core.trimap`` gives the very module ``ben_core.matting.trimap`` (the same objects, so
``isinstance`` and monkeypatching behave), never a second copy. ``python -m ben_core.distributed`` is a
real file beside this one, because ``-m`` runs a file, not an alias.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: 0.3 module (under ben_core) -> its 0.4 home.
MOVED = {
    "checkpoint": "model.weights",
    "hub": "model.weights",
    "compose": "matting.compose",
    "foreground": "matting.foreground",
    "guided_filter": "matting.guided_filter",
    "refine": "matting.refine",
    "temporal": "matting.temporal",
    "trimap": "matting.trimap",
    "vitmatte": "matting.vitmatte",
    "files": "io.files",
    "inputs": "io.inputs",
    "video_writers": "io.video_writers",
    "writers": "io.writers",
    "cli": "apps.cli",
    "evaluate": "apps.evaluate",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        """The target module was executed when it was imported; an alias runs nothing."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds ``<package>.<old name>`` for each entry of :data:`MOVED` and hands out the new module."""

    def __init__(self, package: str):
        self.package = package

    def find_spec(self, fullname, path=None, target=None):
        head, _, old = fullname.rpartition(".")
        if head != self.package or old not in MOVED:
            return None
        new = f"{self.package}.{MOVED[old]}"
        warnings.warn(f"{fullname} moved to {new} in ben_core 0.4; import it from there (the old path will go "
                      "in a later release)", DeprecationWarning, stacklevel=3)
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install(package: str) -> None:
    """Let the old module paths under ``package`` (``ben_core``, or its name inside ComfyUI) import."""
    if not any(isinstance(f, MovedModuleFinder) and f.package == package for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder(package))
