"""What every dermdiff pipeline adds to diffusers' `save_pretrained`, so saved folders load anywhere.

Next to `model_index.json`, a three-line loader file `dermdiff_pipeline.py` that only imports the installed
pipeline class, and `_class_name` in diffusers' custom-pipeline form `["dermdiff_pipeline", "DermDiffPipeline"]`.
Two loaders work:

    DermDiffPipeline.from_pretrained(folder_or_hub_id)                                  # no flags
    DiffusionPipeline.from_pretrained(folder_or_hub_id, trust_remote_code=True)         # the generic loader

(`custom_pipeline="dermdiff_pipeline"` may still be given; it names the same file.) Without
`trust_remote_code`, the generic loader stops with diffusers' own one-paragraph message naming the loader
file, whose docstring shows both lines above; a plain string `_class_name` instead made it fail with
`AttributeError: module diffusers has no attribute DermDiffPipeline`. diffusers asks for `trust_remote_code`
for any code file in a folder; this one can be read at a glance, and the class it returns is the installed
one, so `isinstance` checks hold.

The explicit class must not take the custom-code route (it would demand `trust_remote_code` too): the
mixin's `_dict_from_json_file`, which both `load_config` and the Hub download read `model_index.json`
through, hands our classes the plain class name. Folders saved before the list form (plain string) still
load with the explicit class. `pipeline_class_name(folder)` reads either form.

`model_index.json` names our components by their defining module, as diffusers writes it
(`["dermdiff.models.semantic_unet", "SemanticUNet2DModel"]`): the loader looks the base classes
(`ModelMixin`, ...) up in that module to pick the load method, so the top-level name `dermdiff` would not
load. Keep those module paths stable once pipelines are published, and keep package folders off the names
of `diffusers.pipelines`' subpackages (diffusers reads `<pkg>.<dir>.<module>` as one of its pipeline
modules when `diffusers.pipelines` has an attribute `<dir>`).
"""

from __future__ import annotations

import json
import os

LOADER_MODULE = "dermdiff_pipeline"
INDEX_FILE = "model_index.json"

_LOADER_TEMPLATE = '''"""Loader for the generic diffusers API; needs `pip install dermdiff`. Either of:

    from dermdiff import {class_name}
    pipe = {class_name}.from_pretrained(folder)
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
"""
from dermdiff import {class_name}  # noqa: F401
'''


def plain_class_name(value) -> str | None:
    """`_class_name` as a class name: the second entry of diffusers' `[module, class]` custom form."""
    if isinstance(value, (list, tuple)):
        return value[-1] if value else None
    return value


def pipeline_class_name(folder: str) -> str | None:
    """The pipeline class a `save_pretrained` folder names in its `model_index.json` (either form)."""
    with open(os.path.join(folder, INDEX_FILE), encoding="utf-8") as handle:
        return plain_class_name(json.load(handle).get("_class_name"))


class PortablePipelineMixin:
    """Put before `DiffusionPipeline` in the bases: saving writes the loader file and the list-form
    `_class_name`; loading hands our classes the plain name."""

    def save_config(self, save_directory, push_to_hub: bool = False, **kwargs):
        os.makedirs(save_directory, exist_ok=True)
        loader = _LOADER_TEMPLATE.format(class_name=type(self).__name__)
        with open(os.path.join(save_directory, f"{LOADER_MODULE}.py"), "w", encoding="utf-8") as handle:
            handle.write(loader)
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)

    def to_json_string(self) -> str:
        config = json.loads(super().to_json_string())
        config["_class_name"] = [LOADER_MODULE, type(self).__name__]
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    @classmethod
    def _dict_from_json_file(cls, json_file):
        config = super()._dict_from_json_file(json_file)
        if "_class_name" in config:
            config["_class_name"] = plain_class_name(config["_class_name"])
        return config
