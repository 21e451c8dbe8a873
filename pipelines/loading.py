"""`load_pipeline`: any dermdiff pipeline from a saved folder or a Hub id, as one call for every face.

`dermdiff generate`, `dermdiff evaluate`, the hard-case scripts, the demo and the benchmarks all take a
pipeline as a path or a Hub id. They share this loader so every one of them knows every pipeline kind
(`DermDiffPipeline` with or without a VAE, `DermGANPipeline`, `DCGANPipeline`, `LesionEditPipeline`),
loads only safetensors weights, and says what is wrong in one line:

- a local folder goes through `saved_folder.load_saved_pipeline` (damage named by file, exit status 1);
  a path that is not there, or has no `model_index.json`, is a usage error (exit status 2);
- a Hub id is loaded with diffusers' `from_pretrained`; any Hub failure (offline, unknown or gated
  repository) becomes one `ValueError` line with the first line of the Hub's message;
- a pipeline of another kind than the caller can use (`kinds=`) is a `UsageError` naming what it holds.

Example:
    >>> pipe = load_pipeline("runs/phantom-32", scheduler="dpm")
    >>> pipe = load_pipeline("someone/dermdiff-ham10000", kinds=("DermDiffPipeline",))
"""

from __future__ import annotations

import os
from typing import Sequence

from dermdiff.errors import UsageError

from .portable import plain_class_name
from .saved_folder import load_saved_pipeline, read_model_index


def pipeline_classes() -> dict:
    """Every dermdiff pipeline class by name."""
    from dermdiff import pipelines

    return {name: getattr(pipelines, name) for name in pipelines._EXPORTS if name.endswith("Pipeline")}


def is_local(path_or_hub_id: str) -> bool:
    """A path (absolute, `./`, `~`, or something that exists here) rather than a Hub id `owner/name`."""
    text = str(path_or_hub_id)
    return os.path.isabs(text) or text.startswith((".", "~")) or os.path.exists(text)


def load_pipeline(
    path_or_hub_id: str,
    kinds: Sequence[str] | None = None,
    scheduler: str | None = None,
    device: str | None = None,
    progress_bar: bool = True,
):
    """A dermdiff pipeline from a `save_pretrained` folder or a Hub id, its class read from `model_index.json`.

    Args:
        path_or_hub_id (`str`): a saved pipeline folder or a Hugging Face Hub id.
        kinds (`Sequence[str]`, *optional*): the pipeline class names the caller can use (default: all).
        scheduler (`str`, *optional*): swap a diffusion pipeline's scheduler by name
            (`dermdiff.pipelines.scheduler_names`); a `ValueError` for a pipeline without one.
        device (`str`, *optional*): move the pipeline there.
        progress_bar (`bool`, defaults to `True`): `False` silences the denoising bar (loops that call the
            pipeline many times show their own).
    """
    classes = pipeline_classes()
    kinds = tuple(kinds or classes)
    unknown = [kind for kind in kinds if kind not in classes]
    if unknown:
        raise ValueError(f"unknown pipeline kinds {unknown}; dermdiff pipelines are {sorted(classes)}")
    if is_local(path_or_hub_id):
        folder = os.path.expanduser(str(path_or_hub_id))
        _check_kind(read_model_index(folder)["_class_name"], kinds, folder)
        pipe = load_saved_pipeline(folder)
    else:
        pipe = _from_hub(str(path_or_hub_id), kinds, classes)
    if scheduler:
        from .scheduler_names import use_scheduler

        use_scheduler(pipe, scheduler)
    if not progress_bar:
        pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if device else pipe


def _check_kind(name: str, kinds: Sequence[str], source: str) -> None:
    if name not in kinds:
        raise UsageError(f"{source} holds a {name}; this needs a {' or a '.join(kinds)}")


def _from_hub(hub_id: str, kinds: Sequence[str], classes: dict):
    """One Hub load; the class is the one kind asked for, else the one the repository's index names."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # the error below is the one line; no "Couldn't connect" chatter
    try:
        if len(kinds) == 1:
            name = kinds[0]
        else:
            from diffusers import DiffusionPipeline

            name = plain_class_name(DiffusionPipeline.load_config(hub_id).get("_class_name"))
            if name not in classes:
                raise UsageError(f"{hub_id} holds a {name}, not a dermdiff pipeline ({sorted(classes)})")
            _check_kind(name, kinds, hub_id)
        return classes[name].from_pretrained(hub_id, use_safetensors=True)
    except UsageError:
        raise
    except Exception as error:  # offline, unknown repo, gated, ...: the Hub raises many types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"could not load pipeline {hub_id!r}: not a local folder, and the Hugging Face Hub failed "
            f"({type(error).__name__}: {first_line[:300]})"
        ) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
