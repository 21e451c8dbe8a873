"""Lazy public names for a package: `import dermdiff` stays fast; torch/diffusers load on first use."""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]):
    """`(__getattr__, __dir__)` for a package whose public `name` lives in module `exports[name]`.

    Relative module paths are resolved against `package`. A name is imported on first access and then
    cached in the package's namespace, so later lookups cost nothing.
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
