"""What every dermdiff pipeline adds to diffusers' `save_pretrained`, so saved folders load anywhere.

Next to `model_index.json`, a three-line loader file `dermdiff_pipeline.py` that only imports the installed
pipeline class. It is what diffusers' documented custom-pipeline route needs for the generic loader:

    DiffusionPipeline.from_pretrained(folder_or_hub_id, custom_pipeline="dermdiff_pipeline", trust_remote_code=True)

(diffusers asks for `trust_remote_code` for any code file in a folder; this one can be read at a glance, and
the class it returns is the installed one, so `isinstance` checks hold). `DermDiffPipeline.from_pretrained`
needs neither argument. `_class_name` stays a plain string: diffusers' list form
(`["dermdiff_pipeline", "DermDiffPipeline"]`) would make even the explicit class demand `trust_remote_code`.

`model_index.json` names our components by their defining module, as diffusers writes it
(`["dermdiff.models.semantic_unet", "SemanticUNet2DModel"]`): the loader looks the base classes
(`ModelMixin`, ...) up in that module to pick the load method, so the top-level name `dermdiff` would not
load. Keep those module paths stable once pipelines are published, and keep package folders off the names
of `diffusers.pipelines`' subpackages (diffusers reads `<pkg>.<dir>.<module>` as one of its pipeline
modules when `diffusers.pipelines` has an attribute `<dir>`).
"""

from __future__ import annotations

import os

LOADER_MODULE = "dermdiff_pipeline"

_LOADER_TEMPLATE = '''"""Loader for the generic diffusers API; needs `pip install dermdiff`. Defines nothing itself:

    DiffusionPipeline.from_pretrained(folder, custom_pipeline="{module}", trust_remote_code=True)
"""
from dermdiff import {class_name}  # noqa: F401
'''


class PortablePipelineMixin:
    """Put before `DiffusionPipeline` in the bases; its `save_config` also writes the loader file."""

    def save_config(self, save_directory, push_to_hub: bool = False, **kwargs):
        os.makedirs(save_directory, exist_ok=True)
        loader = _LOADER_TEMPLATE.format(module=LOADER_MODULE, class_name=type(self).__name__)
        with open(os.path.join(save_directory, f"{LOADER_MODULE}.py"), "w", encoding="utf-8") as handle:
            handle.write(loader)
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)
