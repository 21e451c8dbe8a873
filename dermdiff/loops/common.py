"""Plumbing every dermdiff trainer shares (diffusion, the three GANs, the classifier).

Each helper is one small function so that a training loop reads top to bottom: build the
`Accelerator`, register the hooks that turn `save_state` into `save_pretrained` folders, resume,
iterate the data from the right position, save atomic checkpoints, log sample grids.

Checkpoints live in `output_dir/checkpoint-<global step>`. They are written to
`checkpoint-<step>.tmp` and renamed with `os.replace` once every process has finished writing, so a
run killed mid-save leaves a `.tmp` folder that resume ignores, never a half-written checkpoint. A
manifest lists every file with its size; resume verifies it and `"latest"` falls back past damaged
checkpoints. Nothing in a checkpoint is unpickled beyond `torch.load(weights_only=True)`: random
states are safetensors (`rng_state.py`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import shutil
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from PIL import Image
from tqdm.auto import tqdm

from ..errors import DataError
from ..image_grid import image_grid as grid_of_rows
from ..image_grid import rows_of
from . import checkpoint_files
from .rng_state import load_rng_state, save_rng_state

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
# small loop state beside the models (e.g. the best FID so far), as plain JSON: nothing to unpickle
TRAINING_STATE = "training_state.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
# argparse fields that must never reach a tracker, a log line or a model card
SECRET_KEYS = ("hub_token", "token")


# ----------------------------------------------------------------------------------------------------------------
# accelerator
# ----------------------------------------------------------------------------------------------------------------
def build_accelerator(
    output_dir: str,
    logging_dir: str = "logs",
    mixed_precision: str = "no",
    gradient_accumulation_steps: int = 1,
    report_to: str | Sequence[str] | None = "tensorboard",
    seed: int | None = None,
) -> Accelerator:
    """An `Accelerator` writing trackers under `output_dir/logging_dir`, with a reproducible data order.

    The seedable sampler makes the shuffle of epoch `e` depend only on `(seed, e)`, which is what lets
    a resumed run see the same batches as an uninterrupted one.

    Args:
        output_dir (`str`): the run folder (checkpoints, logs, the final model).
        logging_dir (`str`, defaults to `"logs"`): tracker folder, relative to `output_dir`.
        mixed_precision (`str`, defaults to `"no"`): `"no"`, `"fp16"` or `"bf16"`.
        gradient_accumulation_steps (`int`, defaults to 1): micro-batches per optimiser update.
        report_to (`str` or list, defaults to `"tensorboard"`): trackers; `None` or `"none"` for none.
        seed (`int`, *optional*): seeds Python, NumPy and torch and the data order.
    """
    if gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be >= 1, got {gradient_accumulation_steps}")
    if mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}")
    if report_to in (None, "none", "", []):
        report_to = None
    project_config = ProjectConfiguration(project_dir=output_dir, logging_dir=os.path.join(output_dir, logging_dir))
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=report_to,
        project_config=project_config,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if seed is not None:
        set_seed(seed)
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
    return accelerator


def tracker_config(args: Mapping | object) -> dict:
    """Run settings a tracker can store: secrets dropped, lists and None turned into strings."""
    items = args.items() if isinstance(args, Mapping) else vars(args).items()
    config = {}
    for key, value in items:
        if key in SECRET_KEYS:
            continue
        config[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return config


class CheckpointedGenerator:
    """A `torch.Generator` whose state travels with `save_checkpoint` and comes back with `resume`.

    Training randomness (noise, timesteps, condition dropout, flips) is drawn from it rather than from
    the global generator, which data loading and validation also touch; after a resume the stream
    continues exactly where the checkpoint left it. Each process gets its own stream, saved by that
    process as safetensors (`rng_state_<rank>.safetensors`, see `rng_state.py`), never as a pickle.

    Args:
        seed (`int`): base seed; the process index is added so ranks draw different noise.
        process_index (`int`, defaults to 0).
    """

    def __init__(self, seed: int, process_index: int = 0):
        self.seed, self.process_index = int(seed), int(process_index)
        self.generator = torch.Generator().manual_seed(self.seed + 1000 * self.process_index)

    @property
    def streams(self) -> dict[str, torch.Generator]:
        """The generators to store, by name (the key in the checkpoint's random-state file)."""
        return {"training": self.generator}


# ----------------------------------------------------------------------------------------------------------------
# save_state -> save_pretrained folders
# ----------------------------------------------------------------------------------------------------------------
def _is_pretrained(model) -> bool:
    return hasattr(model, "save_pretrained") and hasattr(type(model), "from_pretrained")


def register_pretrained_hooks(accelerator: Accelerator, subfolders: Sequence[str], ema_models: Mapping | None = None):
    """Makes `save_state` / `load_state` write and read `save_pretrained` folders.

    Models that are `ModelMixin`s (anything with `save_pretrained` / `from_pretrained`) are stored in
    `checkpoint/<subfolder>`, in the order they were passed to `accelerator.prepare`; other models are
    left to accelerate's own `model_<i>.safetensors`. Each EMA (diffusers `EMAModel`) goes to
    `checkpoint/<name>` for its key in `ema_models`, with its decay state in the config.

    Args:
        accelerator (`Accelerator`).
        subfolders (`Sequence[str]`): one folder name per prepared model, e.g. `["unet"]` or
            `["generator", "discriminator"]`.
        ema_models (`Mapping[str, EMAModel]`, *optional*): e.g. `{"unet_ema": ema}`.
    """
    ema_models = dict(ema_models or {})

    def save_hook(models, weights, output_dir):
        if not accelerator.is_main_process:
            return
        for name, ema in ema_models.items():
            ema.save_pretrained(os.path.join(output_dir, name))
        # pop from the back so the indices of the remaining weights stay valid
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            if _is_pretrained(model):
                model.save_pretrained(os.path.join(output_dir, _subfolder(subfolders, index)))
                if weights:
                    weights.pop(index)

    def load_hook(models, input_dir):
        for name, ema in ema_models.items():
            loaded = type(ema).from_pretrained(os.path.join(input_dir, name), ema.model_cls, foreach=ema.foreach)
            ema.load_state_dict(loaded.state_dict())
        for index in reversed(range(len(models))):
            model = accelerator.unwrap_model(models[index])
            if _is_pretrained(model):
                loaded = type(model).from_pretrained(os.path.join(input_dir, _subfolder(subfolders, index)))
                model.load_state_dict(loaded.state_dict())
                models.pop(index)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _subfolder(subfolders: Sequence[str], index: int) -> str:
    if index >= len(subfolders):
        raise ValueError(f"no subfolder name for prepared model {index}; got subfolders={list(subfolders)}")
    return subfolders[index]


# ----------------------------------------------------------------------------------------------------------------
# atomic checkpoints, pruning, resume
# ----------------------------------------------------------------------------------------------------------------
def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints in `output_dir`, oldest first (`.tmp` leftovers of a killed save are ignored)."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return [path for _, path in sorted(found)]


def checkpoint_step(path: str) -> int:
    """The global step a checkpoint folder was saved at (its name `checkpoint-<step>`)."""
    match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(path)))
    if match is None:
        raise ValueError(f"{path!r} is not a checkpoint folder (expected a name like 'checkpoint-500')")
    return int(match.group(1))


def prune_checkpoints(output_dir: str, total_limit: int | None) -> list[str]:
    """Deletes the oldest checkpoints so that at most `total_limit` remain; returns the deleted paths.

    Also removes `checkpoint-N.deleting` folders a kill left in the middle of an earlier deletion.
    """
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if name.startswith(CHECKPOINT_PREFIX) and name.endswith(".deleting"):
                shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"checkpoints_total_limit must be >= 1 or None, got {total_limit}")
    checkpoints = list_checkpoints(output_dir)
    doomed = checkpoints[: max(0, len(checkpoints) - total_limit)]
    for path in doomed:
        remove_checkpoint(path)
    return doomed


def remove_checkpoint(path: str) -> None:
    """Deletes a checkpoint so that a kill midway never leaves a half-deleted `checkpoint-N` behind.

    The folder is first renamed to `checkpoint-N.deleting` (atomic; `list_checkpoints` ignores it), then
    removed.
    """
    trash = f"{os.path.normpath(path)}.deleting"
    if os.path.exists(trash):
        shutil.rmtree(trash)
    os.replace(path, trash)
    shutil.rmtree(trash)


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str,
    global_step: int,
    total_limit: int | None = None,
    rng: CheckpointedGenerator | None = None,
    state: Mapping | None = None,
) -> str:
    """Saves the full training state atomically as `output_dir/checkpoint-<global_step>`.

    1. every process writes into `checkpoint-<step>.tmp` (the main process clears a stale one first);
    2. each process stores its random-generator states (global ones and `rng`'s) as safetensors and
       drops accelerate's pickled `random_states_<rank>.pkl`, so the checkpoint holds no pickle that
       resume would have to trust beyond `weights_only=True`;
    3. after all have finished, the main process writes the manifest (`dermdiff_checkpoint.json`, every
       file with its size) and renames the folder with `os.replace` (atomic on POSIX);
    4. then, and only then, old checkpoints beyond `total_limit` are deleted.

    `state` (main process, JSON-serialisable) is written as `training_state.json` and comes back as
    `ResumePosition.state`: loop values that are not tensors, such as the best FID so far.
    """
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{global_step}")
    staging = final + ".tmp"
    if accelerator.is_main_process and os.path.exists(staging):
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(staging)
    pickled = os.path.join(staging, f"random_states_{accelerator.process_index}.pkl")
    if os.path.exists(pickled):
        os.remove(pickled)
    save_rng_state(staging, accelerator.process_index, rng.streams if rng else None)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if state:
            with open(os.path.join(staging, TRAINING_STATE), "w", encoding="utf-8") as handle:
                json.dump(dict(state), handle, indent=1)
        checkpoint_files.write_manifest(staging, global_step)
        if os.path.exists(final):  # the same step saved again (e.g. a resumed run's last step)
            remove_checkpoint(final)
        os.replace(staging, final)
        for path in prune_checkpoints(output_dir, total_limit):
            logger.info(f"removed old checkpoint {path}")
        logger.info(f"saved checkpoint {final}")
    accelerator.wait_for_everyone()
    return final


@dataclass(frozen=True)
class ResumePosition:
    """Where a run continues: optimiser updates done, the epoch, and micro-batches done in that epoch; the
    checkpoint it came from (None for a new run) and its `training_state.json` (see `save_checkpoint`)."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    path: str | None = None
    state: Mapping = field(default_factory=dict)


INEXACT_HINT = "pass --allow_inexact_resume to continue with fresh random streams (the run will then differ)"


def _usable(problems: list, allow_inexact: bool) -> bool:
    return not problems or (allow_inexact and all(problem.only_random_state for problem in problems))


def resolve_checkpoint(
    output_dir: str, resume_from_checkpoint: str | None, allow_inexact_resume: bool = False
) -> str | None:
    """The checkpoint to resume from, verified (see `checkpoint_files.verify_checkpoint`).

    `"latest"` -> the newest checkpoint in `output_dir` that passes verification; each newer damaged one
    is skipped with a warning naming the file and the fault. None when there is no checkpoint at all
    (a fresh run). A path -> itself, if it passes. A damaged random-generator state alone is accepted,
    with a warning, under `allow_inexact_resume` (and only when no exact checkpoint is left).

    Raises:
        `DataError` (a one-line `ValueError`) when checkpoints exist but none can be resumed from, or the named one cannot.
    """
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint != "latest":
        if not os.path.isdir(resume_from_checkpoint):
            raise ValueError(f"resume_from_checkpoint {resume_from_checkpoint!r} is neither 'latest' nor a folder")
        checkpoint_step(resume_from_checkpoint)
        problems = checkpoint_files.verify_checkpoint(resume_from_checkpoint)
        if not _usable(problems, allow_inexact_resume):
            hint = f"; {INEXACT_HINT}" if all(problem.only_random_state for problem in problems) else ""
            raise DataError(f"cannot resume from {resume_from_checkpoint}: {'; '.join(map(str, problems))}{hint}")
        return resume_from_checkpoint
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        return None
    verdicts = []
    for path in reversed(checkpoints):
        problems = checkpoint_files.verify_checkpoint(path)
        if not problems:
            return path
        logger.warning(f"skipping damaged checkpoint {path}: {'; '.join(map(str, problems))}")
        verdicts.append((path, problems))
    for path, problems in verdicts:
        if _usable(problems, allow_inexact_resume):
            return path
    newest, problems = verdicts[0]
    raise DataError(
        f"no checkpoint in {output_dir} can be resumed from ({len(checkpoints)} found, all damaged; newest "
        f"{os.path.basename(newest)}: {'; '.join(map(str, problems))}); move them away to start a new run"
    )


def resume(
    accelerator: Accelerator,
    output_dir: str,
    resume_from_checkpoint: str | None,
    updates_per_epoch: int,
    rng: CheckpointedGenerator | None = None,
    allow_inexact_resume: bool = False,
) -> ResumePosition:
    """Loads the newest good (or the given) checkpoint and says where the data loop continues.

    `updates_per_epoch` is the number of optimiser updates in one epoch, i.e.
    `ceil(len(dataloader) / gradient_accumulation_steps)`. With no checkpoint to resume from (e.g.
    `"latest"` on a fresh run) training starts at step 0. Nothing is unpickled beyond
    `torch.load(weights_only=True)`; a damaged random state stops the resume unless `allow_inexact_resume`.
    """
    path = resolve_checkpoint(output_dir, resume_from_checkpoint, allow_inexact_resume)
    if path is None:
        if resume_from_checkpoint:
            logger.info(f"no checkpoint in {output_dir}; starting a new run")
        return ResumePosition()
    logger.info(f"resuming from {path}")
    _load_state(accelerator, path)
    _restore_random_state(path, accelerator.process_index, rng, allow_inexact_resume)
    global_step = checkpoint_step(path)
    epoch, update_in_epoch = divmod(global_step, updates_per_epoch)
    return ResumePosition(global_step, epoch, update_in_epoch * accelerator.gradient_accumulation_steps, path,
                          read_training_state(path))


def read_training_state(path: str) -> dict:
    """A checkpoint's `training_state.json` (empty when it has none, e.g. saved before such state existed)."""
    file = os.path.join(path, TRAINING_STATE)
    if not os.path.isfile(file):
        return {}
    with open(file, encoding="utf-8") as handle:
        return json.load(handle)


def _load_state(accelerator: Accelerator, path: str) -> None:
    """`accelerator.load_state` with every pickle read as `weights_only=True`; a refused file named in one line."""
    try:
        accelerator.load_state(path, load_kwargs={"weights_only": True})
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        culprit = checkpoint_files.refused_pickle(path)
        if culprit is None:
            raise
        raise DataError(
            f"cannot resume from {path}: {culprit[0]} holds more than tensors and plain values, so it is not "
            f"unpickled (torch.load(weights_only=True): {culprit[1]})"
        ) from error


def _restore_random_state(path: str, process_index: int, rng: CheckpointedGenerator | None, allow_inexact: bool):
    saved = checkpoint_files.saved_ranks(path)
    if 0 < saved <= process_index:  # resumed with more processes than saved: a fresh, distinct seeded stream
        logger.warning(f"no saved random state for process {process_index} ({saved} saved); it starts a new stream",
                       main_process_only=False)  # fmt: skip
        return
    try:
        load_rng_state(path, process_index, rng.streams if rng else None)
    except (FileNotFoundError, ValueError) as error:
        if not allow_inexact:
            raise DataError(f"cannot resume exactly: {error}; {INEXACT_HINT}") from None
        logger.warning(f"{error}; resuming anyway (--allow_inexact_resume): the random streams start afresh, so "
                       f"this run will not repeat an uninterrupted one", main_process_only=False)  # fmt: skip


def updates_per_epoch(num_batches: int, gradient_accumulation_steps: int) -> int:
    """Optimiser updates per epoch; accelerate also steps at the end of an epoch's last partial window."""
    return max(1, math.ceil(num_batches / gradient_accumulation_steps))


def epoch_batches(accelerator: Accelerator, dataloader, epoch: int, skip: int = 0) -> Iterable:
    """The batches of `epoch`, in that epoch's seeded order, without the first `skip` (already trained on)."""
    loader = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
    loader.set_epoch(epoch)
    return loader


# ----------------------------------------------------------------------------------------------------------------
# progress and images
# ----------------------------------------------------------------------------------------------------------------
def progress_bar(accelerator: Accelerator, total: int, initial: int = 0) -> tqdm:
    """A tqdm bar on the main process only (it/s comes with tqdm; loss and lr go in `set_postfix`)."""
    bar = tqdm(total=total, initial=initial, disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    bar.set_description("steps")
    return bar


def image_grid(images: Sequence[Image.Image], cols: int) -> Image.Image:
    """Images in rows of `cols` (the last row padded with black): `dermdiff.image_grid` on a flat list."""
    return grid_of_rows(rows_of(images, cols))


def log_image_grid(accelerator: Accelerator, grid: Image.Image, tag: str, step: int, output_dir: str) -> str:
    """Writes `grid` to `output_dir/samples/<tag>-<step>.png` and to every tracker; returns the PNG path."""
    folder = os.path.join(output_dir, "samples")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{tag}-{step:07d}.png")
    grid.save(path)
    array = np.asarray(grid.convert("RGB"))[None]
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({tag: array}, step=step, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):
            tracker.log_images({tag: [grid]}, step=step)
    return path
