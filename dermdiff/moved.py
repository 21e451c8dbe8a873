"""Old import paths of modules that moved in 0.2 (issue 16), kept working for one release.

`import dermdiff.synthesis` (and the other names in `MOVED`) still works: a meta-path finder builds the
old module from the modules its code now lives in and warns with a `DeprecationWarning` naming the new
path. No file stays at the old path, so `git` sees each move as a rename and edits made on a branch
follow the code to its new place when rebased. Remove this module (and its call in
`dermdiff/__init__.py`) in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module -> the modules whose names it re-exports (the first is where most of the code went)
MOVED = {
    "dermdiff.synthesis": ("dermdiff.hardcase.synthesis", "dermdiff.hardcase.filters", "dermdiff.data.synthetic_folder"),
    "dermdiff.mining": ("dermdiff.hardcase.mining",),
    "dermdiff.augmentation": ("dermdiff.hardcase.augmentation",),
    "dermdiff.hardcase_cli": ("dermdiff.hardcase.cli",),
    "dermdiff.classifier_training": ("dermdiff.loops.classifier",),
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old names of moved modules and fills each with the names of the modules it moved to."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module) -> None:
        targets = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {' / '.join(targets)}; the old path works until dermdiff 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        for target in targets:
            for name, value in vars(importlib.import_module(target)).items():
                if not (name.startswith("__") and name.endswith("__")):
                    module.__dict__.setdefault(name, value)


def install() -> None:
    """Registers the finder once, first in line: a stale copy of an old file (an older editable install
    elsewhere on the path) must not shadow the code that moved. Idempotent across `importlib.reload`."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())
