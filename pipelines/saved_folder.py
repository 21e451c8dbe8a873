"""Loading a saved pipeline folder so that damage is one clear line, not a diffusers traceback.

diffusers' `from_pretrained` reports a damaged folder late and in its own words: an `OSError` about a
config "not a valid JSON file", a fallback to pickled `.bin` weights when the safetensors file is gone,
or a model whose missing tensor stays on the meta device until `.to()` fails with "Cannot copy out of
meta tensor". `load_saved_pipeline` checks the folder first (model_index.json, every component's config,
every model's safetensors header) and the loaded modules after (no tensor left unloaded), so each kind
of damage names its file and what is wrong (`dermdiff.errors.DataError`, exit status 1).
"""

from __future__ import annotations

import json
import os

from dermdiff.errors import DataError, read_json

from .portable import plain_class_name

CONFIG_NAMES = ("config.json", "scheduler_config.json", "preprocessor_config.json", "tokenizer_config.json")


def read_model_index(folder: str) -> dict:
    """`model_index.json` of a saved pipeline as a dict; `FileNotFoundError` (usage) when there is none.

    `_class_name` is given back as the plain class name (either saved form, see `portable`).
    """
    path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} is not a saved pipeline folder (no model_index.json)")
    index = read_json(path, "pipeline index")
    name = plain_class_name(index.get("_class_name")) if isinstance(index, dict) else None
    if not isinstance(name, str):
        raise DataError(f"pipeline index {path} must be a JSON object with a \"_class_name\"")
    return {**index, "_class_name": name}


def check_pipeline_folder(folder: str) -> dict:
    """Checks every file `from_pretrained` will read, before it reads them; returns the model index.

    Each component named in `model_index.json` needs its sub-folder with a readable config; a model
    (a `config.json`) needs a safetensors file whose header is intact (pickled weights are never loaded).
    """
    from safetensors import SafetensorError, safe_open

    index = read_model_index(folder)
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or None in entry:
            continue  # metadata, or an optional component saved as [null, null]
        sub = os.path.join(folder, name)
        configs = [os.path.join(sub, file) for file in CONFIG_NAMES if os.path.isfile(os.path.join(sub, file))]
        if not configs:
            raise DataError(f"pipeline component {name!r} has no {sub}/config.json (or scheduler_config.json); "
                            f"the folder {folder} is incomplete")
        for config in configs:
            if not isinstance(read_json(config, f"{name} config"), dict):
                raise DataError(f"{name} config {config} must be a JSON object")
        if not configs[0].endswith(os.sep + "config.json"):
            continue  # schedulers and processors have no weights
        weights = sorted(file for file in os.listdir(sub) if file.endswith(".safetensors"))
        if not weights:
            raise DataError(f"{sub} has no diffusion_pytorch_model.safetensors (the weights of {name!r}); "
                            "dermdiff loads only safetensors weights")
        for file in weights:
            try:
                with safe_open(os.path.join(sub, file), framework="pt") as handle:
                    handle.keys()
            except (SafetensorError, OSError) as error:
                raise DataError(f"{os.path.join(sub, file)} is damaged or truncated ({error})") from None
    return index


def check_loaded_modules(pipe, folder: str) -> None:
    """Refuses a pipeline in which some model tensor was not in its weights file (left on the meta device)."""
    import torch

    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        tensors = list(component.named_parameters()) + list(component.named_buffers())
        unloaded = [key for key, tensor in tensors if tensor.is_meta]
        if unloaded:
            raise DataError(
                f"{os.path.join(folder, name)}/diffusion_pytorch_model.safetensors lacks {len(unloaded)} tensor(s) "
                f"the model needs, e.g. {unloaded[:3]}; the file is damaged or from another model version"
            )


def load_saved_pipeline(folder: str, pipeline_class=None, **kwargs):
    """A pipeline from a local `save_pretrained` folder, checked before and after loading.

    Args:
        folder (`str`): the saved pipeline.
        pipeline_class (*optional*): the class to load with (default: `model_index.json`'s `_class_name`
            among dermdiff's pipelines).
        **kwargs: passed to `from_pretrained`.
    """
    from diffusers.utils import logging as diffusers_logging

    from dermdiff import pipelines

    index = check_pipeline_folder(folder)
    if pipeline_class is not None and index["_class_name"] != pipeline_class.__name__:
        raise DataError(f"{folder} holds a {index['_class_name']}; this needs a {pipeline_class.__name__}")
    if pipeline_class is None:
        name = index["_class_name"]
        if name not in pipelines._EXPORTS or not name.endswith("Pipeline"):
            raise DataError(f"{folder}/model_index.json names {name!r}, not a dermdiff pipeline "
                            f"({sorted(n for n in pipelines._EXPORTS if n.endswith('Pipeline'))})")
        pipeline_class = getattr(pipelines, name)
    verbosity, bar = diffusers_logging.get_verbosity(), diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()  # the "newly initialized" warning becomes the error below
    diffusers_logging.disable_progress_bar()  # a bar for two components is noise above an error line
    try:
        pipe = pipeline_class.from_pretrained(folder, use_safetensors=True, **kwargs)
    except (OSError, json.JSONDecodeError) as error:  # what the checks above did not foresee, in one line
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataError(f"cannot load the pipeline in {folder}: {first_line[:300]}") from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
        if bar:
            diffusers_logging.enable_progress_bar()
    check_loaded_modules(pipe, folder)
    return pipe
