"""diffusers pipelines of dermdiff, one file per pipeline; imported as `dermdiff.pipelines`.

Names load lazily so that importing the package does not import diffusers.
"""

import importlib

_EXPORTS: dict[str, str] = {
    "DermDiffPipeline": ".pipeline_dermdiff",
    "skin_type_sweep": ".sweeps",
    "size_sweep": ".sweeps",
    "DermGANPipeline": ".pipeline_dermgan",
    "DCGANPipeline": ".pipeline_dcgan",
    "LesionEditPipeline": ".pipeline_lesion_edit",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dermdiff.pipelines' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
