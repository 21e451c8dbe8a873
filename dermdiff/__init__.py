"""dermdiff: controllable dermatology image generation on Hugging Face diffusers.

Public names are imported lazily, so `dermdiff --help` and `import dermdiff` stay fast and the heavy
libraries (torch, diffusers) load only when a model or pipeline is touched. diffusers' loader finds our
components the same way (`getattr(importlib.import_module("dermdiff"), class_name)`).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from . import moved
from .lazy import lazy_exports

__version__ = "0.1.0"


def _map_source_tree_pipelines() -> None:
    """Makes `dermdiff.pipelines` importable from a source checkout.

    The pipelines live in the repository's top-level `pipelines/` folder. An installed copy (wheel or
    editable) gets it as `dermdiff.pipelines` through setup.cfg's `package_dir`; but `python -m pytest`
    from the repository root imports this source-tree `dermdiff`, which has no `pipelines` subfolder.
    There we register the top-level folder under the same name, so every layout imports the same code.
    """
    name = f"{__name__}.pipelines"
    if name in sys.modules or os.path.isdir(os.path.join(os.path.dirname(__file__), "pipelines")):
        return
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines")
    init = os.path.join(folder, "__init__.py")
    if not os.path.isfile(init):
        return
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    setattr(sys.modules[__name__], "pipelines", module)


# name -> module that defines it (relative to this package)
_EXPORTS = {
    "SemanticMap": ".semantic_map",
    "Region": ".semantic_map",
    "ConditionRegistry": ".conditions",
    "get_registry": ".conditions",
    "SemanticUNet2DModel": ".models.semantic_unet",
    "DermDiffPipeline": ".pipelines.pipeline_dermdiff",
    "GenerationSettings": ".pipelines.generation_settings",
    "DermGANPipeline": ".pipelines.pipeline_dermgan",
    "DCGANPipeline": ".pipelines.pipeline_dcgan",
    "LesionEditPipeline": ".pipelines.pipeline_lesion_edit",
    "DermGANGenerator": ".models.dermgan",
    "PatchGANDiscriminator": ".models.dermgan",
    "DCGANGenerator": ".models.dcgan",
    "truncate_latents": ".models.dcgan",
    "MultiScaleDiscriminator": ".models.multiscale_discriminator",
    "TranslationGenerator": ".models.translation",
    "SkinClassifier": ".classifier",
    "run_hardcase_loop": ".hardcase.loop",
    "HardCaseConfig": ".hardcase.loop",
    "run_augmentation_experiment": ".hardcase.augmentation",
    "AugmentationConfig": ".hardcase.augmentation",
    "synthesize_hard_cases": ".hardcase.synthesis",
    "AdversarialGuidance": ".hardcase.synthesis",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)

_map_source_tree_pipelines()
moved.install()
