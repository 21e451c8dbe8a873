"""GAN training for the ported models: DermGAN (Ghorbani et al. 2020), Furger et al.'s (2020) DCGAN and lesion editing.

Every update keeps pix2pix's order, written out as plain functions:

    1. generate the fakes once;
    2. D step: D learns real vs `fake.detach()` (the generator gets no gradient from it);
    3. freeze D (`requires_grad_(False)`), G step: adversarial loss + the model's own terms; unfreeze D.

| step function  | generator loss (minimised)                                                                 |
|----------------|--------------------------------------------------------------------------------------------|
| `dermgan_step` | l_gan * GAN + l_l1 * l1(whole image) + l_roi * l1(ROI) + l_fm * feature matching (DermGAN) |
| `dcgan_step`   | GAN (non-saturating, Furger et al. 2020, eq. 1)                                            |
| `edit_step`    | targeted: GAN + lambda_REL * relevancy (eq. 4); cycle: GAN + lambda_CYC * cycle (eq. 5)    |

Furger et al. 2020 state their objectives for maximisation (L_G = L_ADV - lambda * L_REL); minimising
`gan_loss + lambda * relevancy_loss` is the same thing. The losses live in `dermdiff.losses`.

`train_gan` is the shared loop (accelerate, atomic checkpoints with `save_pretrained` folders and
resume via `dermdiff.loops.common`, progress bar, tracker logs, validation grids) that the three
scripts in `training/` drive with a `GANTask`. It also writes Furger et al.'s (2020) discriminator-overfitting
monitor (figure 6): every `monitor_steps` updates, the mean discriminator prediction on training and on
held-out real images, one JSON line per discriminator in `output_dir/discriminator_gap.jsonl`
(`{"step", "discriminator", "d_train", "d_heldout", "gap"}`), plotted at the end of the run.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import torch
from accelerate.logging import get_logger
from torch import nn

from ..config_args import with_default
from ..losses import (
    GAN_LOSS_MODES,
    cycle_consistency_loss,
    feature_matching_loss,
    gan_loss,
    reconstruction_loss,
    relevancy_loss,
    roi_l1_loss,
)
from . import common
from .data_flags import DATA_GROUP
from .fid_tracking import fid_tracker
from .pair_augment import AUGMENTS, augment_pairs, check_augment
from .run_config import OPTIMISATION, RUNS, TrainingRunConfig

logger = get_logger(__name__)

EDIT_MODES = ("targeted", "cycle")
GAP_LOG = "discriminator_gap.jsonl"


# ----------------------------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class GANTrainingConfig(TrainingRunConfig):
    """Settings shared by the GAN runs; the common flags of the three `training/train_*` GAN scripts are generated
    from them. Each field's help is its documentation; the shared run settings are
    `dermdiff.loops.run_config.TrainingRunConfig`'s. An update is one D and one G step; Adam's learning rate
    and moment decays follow Furger et al. 2020 (3.2).
    """

    learning_rate: float = with_default(TrainingRunConfig, "learning_rate", 5e-5)
    gan_mode: str = field(default="vanilla", metadata={"help": "Adversarial loss (dermdiff.losses.gan_loss).",
                                                       "choices": GAN_LOSS_MODES, "group": OPTIMISATION})
    validation_steps: int = field(default=500, metadata={"help": "Log a sample grid every N updates (0 = never).",
                                                         "group": RUNS})
    monitor_steps: int = field(default=100, metadata={
        "help": "Log the discriminator train/held-out gap every N updates (0 = never).", "group": RUNS})
    augment: str = field(default="none", metadata={
        "help": "Transform each example's images and map together: 'flip' or 'dihedral' (8 flips/quarter turns), "
                "drawn from the checkpointed rng (dermdiff.loops.pair_augment).", "choices": AUGMENTS,
        "group": DATA_GROUP})

    def __post_init__(self):
        super().__post_init__()
        check_augment(self.augment)
        if self.gan_mode not in GAN_LOSS_MODES:
            raise ValueError(f"gan_mode must be one of {GAN_LOSS_MODES}, got {self.gan_mode!r}")
        if self.validation_steps < 0 or self.monitor_steps < 0:
            raise ValueError("validation_steps and monitor_steps must be >= 0 (0 = never), got "
                             f"{self.validation_steps} and {self.monitor_steps}")


@dataclass
class DermGANLossWeights:
    """Weights of DermGAN's four terms. Ghorbani et al. 2020 grid-searched them without reporting values; these
    defaults are pix2pix's (l1 = 100 with GAN = 1) and pix2pixHD's (feature matching = 10), with the ROI
    term weighted like the whole-image l1. Set a weight to 0 to ablate its term (Ghorbani et al. 2020, Table 1).
    """

    gan: float = 1.0
    l1: float = 100.0
    roi: float = 100.0
    feature_matching: float = 10.0


@dataclass
class GANStep:
    """What a step function needs: the prepared models, their optimisers, the accelerator and the randomness."""

    accelerator: object
    generators: dict[str, nn.Module]
    discriminators: dict[str, nn.Module]
    generator_optimizer: torch.optim.Optimizer
    discriminator_optimizer: torch.optim.Optimizer
    rng: torch.Generator
    gan_mode: str = "vanilla"


# ----------------------------------------------------------------------------------------------------------------
# the D step / G step pair
# ----------------------------------------------------------------------------------------------------------------
def set_requires_grad(models, flag: bool) -> None:
    """Freezes (False) or unfreezes (True) the parameters of one model or several."""
    for model in models if isinstance(models, (list, tuple)) else [models]:
        model.requires_grad_(flag)


def optimizer_step(accelerator, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """zero_grad, backward, step: one update of the models `optimizer` owns."""
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    optimizer.step()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, mode: str) -> torch.Tensor:
    """Half the sum of the real and fake terms (pix2pix halves it to slow D relative to G)."""
    return 0.5 * (gan_loss(real_logits, True, mode) + gan_loss(fake_logits, False, mode))


def roi_mask(semantic_map: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) ROI of map channels: where any condition channel is set (the condition's boxes / mask)."""
    from ..semantic_map import lesion_mask_from_channels

    return lesion_mask_from_channels(semantic_map).to(semantic_map.dtype)


def _images(batch: Mapping) -> torch.Tensor:
    return batch["pixel_values"]


def dermgan_step(step: GANStep, batch: Mapping, weights: DermGANLossWeights) -> dict:
    """One DermGAN update on a batch of (`pixel_values`, `semantic_map`); returns the loss terms."""
    dermgan, discriminator = step.generators["dermgan"], step.discriminators["discriminator"]
    real, maps = _images(batch), batch["semantic_map"]
    fake = dermgan(maps, generator=step.rng).sample  # `generator=` is the model's (diffusers') name for its rng

    # D step on fake.detach()
    d_loss = discriminator_loss(
        discriminator(real, maps).sample, discriminator(fake.detach(), maps).sample, step.gan_mode
    )
    optimizer_step(step.accelerator, step.discriminator_optimizer, d_loss)

    # G step with D frozen
    set_requires_grad(discriminator, False)
    fake_out = discriminator(fake, maps, return_features=True)
    terms = {"g_gan": gan_loss(fake_out.sample, True, step.gan_mode, for_discriminator=False)}
    terms["g_l1"] = reconstruction_loss(fake, real)
    terms["g_roi"] = roi_l1_loss(fake, real, roi_mask(maps))
    if weights.feature_matching:
        with torch.no_grad():
            real_features = discriminator(real, maps, return_features=True).features
        terms["g_fm"] = feature_matching_loss(real_features, fake_out.features)
    g_loss = (
        weights.gan * terms["g_gan"]
        + weights.l1 * terms["g_l1"]
        + weights.roi * terms["g_roi"]
        + weights.feature_matching * terms.get("g_fm", 0.0)
    )
    optimizer_step(step.accelerator, step.generator_optimizer, g_loss)
    set_requires_grad(discriminator, True)
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), **{k: v.item() for k, v in terms.items()}}


def dcgan_step(step: GANStep, batch: Mapping) -> dict:
    """One unconditional update: z ~ N(0, I) from the step's `rng`, multi-scale D on `pixel_values`."""
    dcgan, discriminator = step.generators["dcgan"], step.discriminators["discriminator"]
    real = _images(batch)
    latent_dim = step.accelerator.unwrap_model(dcgan).config.latent_dim
    z = torch.randn(real.shape[0], latent_dim, generator=step.rng).to(real.device)
    fake = dcgan(z).sample

    d_loss = discriminator_loss(discriminator(real).sample, discriminator(fake.detach()).sample, step.gan_mode)
    optimizer_step(step.accelerator, step.discriminator_optimizer, d_loss)

    set_requires_grad(discriminator, False)
    g_loss = gan_loss(discriminator(fake).sample, True, step.gan_mode, for_discriminator=False)
    optimizer_step(step.accelerator, step.generator_optimizer, g_loss)
    set_requires_grad(discriminator, True)
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}


def real_and_fake_logits(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor):
    """(real logits, fake logits) from ONE discriminator pass over the concatenated batch.

    The multi-scale discriminator uses batch norm. Fed a batch of only fakes, its batch norm rescales
    them by their own statistics, which hides exactly what an edit gets wrong when fakes are the real
    photos plus a small change: a batch-wide shift in colour or noise energy is normalised away before
    the discriminator can judge it. On the phantom (benchmarks/gan_phantom.py) the CycleGAN pair then
    added ever more noise, moving away from the data; with real and fake in one batch the statistics
    are shared, such differences stay visible, and both directions moved toward their domain.
    """
    logits = discriminator(torch.cat([real, fake])).sample
    return logits[: real.shape[0]], logits[real.shape[0] :]


def edit_step(
    step: GANStep,
    batch: Mapping,
    mode: str = "targeted",
    lambda_rel: float = 10.0,
    lambda_cyc: float = 10.0,
    cycle_distance: str = "mse",
) -> dict:
    """One update of both edit directions on a batch of `healthy`, `lesion` photos and `lesion_mask`.

    `add` turns healthy skin into skin with a lesion (judged by the `lesion` discriminator against real
    lesion photos); `remove` does the reverse (the `healthy` discriminator). Targeted mode feeds the
    lesion mask to both generators (for `add`, a mask borrowed from a lesion photo, so one segmentation
    serves several healthy photos as in Furger et al. 2020, 4.2) and adds the relevancy loss; cycle mode uses no
    masks and adds the cycle-consistency loss of both round trips (`cycle_distance`: "mse" as Furger
    et al.'s eq. 3, or "l1" as the CycleGAN paper). Each discriminator sees its real photos and the fakes
    in one batch (`real_and_fake_logits`), so its batch norm cannot hide batch-wide differences.
    """
    if mode not in EDIT_MODES:
        raise ValueError(f"edit mode must be one of {EDIT_MODES}, got {mode!r}")
    add, remove = step.generators["add_model"], step.generators["remove_model"]
    d_lesion, d_healthy = step.discriminators["lesion_discriminator"], step.discriminators["healthy_discriminator"]
    healthy, lesion = batch["healthy"], batch["lesion"]
    mask = batch["lesion_mask"] if mode == "targeted" else None
    fake_lesion = add(healthy, mask=mask).sample
    fake_healthy = remove(lesion, mask=mask).sample

    # D step (both discriminators) on detached fakes, each batched with its domain's real photos
    d_loss = discriminator_loss(*real_and_fake_logits(d_lesion, lesion, fake_lesion.detach()), step.gan_mode)
    d_loss = d_loss + discriminator_loss(
        *real_and_fake_logits(d_healthy, healthy, fake_healthy.detach()), step.gan_mode
    )
    optimizer_step(step.accelerator, step.discriminator_optimizer, d_loss)

    # G step (both generators) with the discriminators frozen; the same real + fake batches
    set_requires_grad([d_lesion, d_healthy], False)
    adversarial = gan_loss(
        real_and_fake_logits(d_lesion, lesion, fake_lesion)[1], True, step.gan_mode, for_discriminator=False
    ) + gan_loss(
        real_and_fake_logits(d_healthy, healthy, fake_healthy)[1], True, step.gan_mode, for_discriminator=False
    )
    if mode == "targeted":
        pairing = relevancy_loss(fake_lesion, healthy, mask) + relevancy_loss(fake_healthy, lesion, mask)
        g_loss = adversarial + lambda_rel * pairing
        name = "g_relevancy"
    else:
        pairing = cycle_consistency_loss(remove(fake_lesion).sample, healthy, cycle_distance) + cycle_consistency_loss(
            add(fake_healthy).sample, lesion, cycle_distance
        )
        g_loss = adversarial + lambda_cyc * pairing
        name = "g_cycle"
    optimizer_step(step.accelerator, step.generator_optimizer, g_loss)
    set_requires_grad([d_lesion, d_healthy], True)
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "g_gan": adversarial.item(), name: pairing.item()}


# ----------------------------------------------------------------------------------------------------------------
# discriminator-overfitting monitor (Furger et al. 2020, figure 6)
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def mean_prediction(
    discriminator: nn.Module, images: torch.Tensor, gan_mode: str, *args, batch_size: int = 64
) -> float:
    """Mean discriminator output on real `images` (extra inputs such as maps in `args`), in eval mode.

    "vanilla" reports the probability of "real" (sigmoid of the logits), the other modes the raw score.
    """
    was_training = discriminator.training
    discriminator.eval()
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        extra = [a[start : start + batch_size] for a in args]
        logits = discriminator(images[start : start + batch_size], *extra).sample
        outputs.append(torch.sigmoid(logits) if gan_mode == "vanilla" else logits)
    discriminator.train(was_training)
    return float(torch.cat([o.flatten() for o in outputs]).mean())


def discriminator_gap(
    discriminator: nn.Module, train: Mapping, heldout: Mapping, gan_mode: str = "vanilla", inputs=("pixel_values",)
) -> dict:
    """Mean prediction on training vs held-out real images and their difference (> 0: D memorises training data).

    Args:
        discriminator: the discriminator.
        train, heldout (`Mapping[str, torch.Tensor]`): fixed real batches; `inputs` names the tensors fed
            to the discriminator in order (e.g. `("pixel_values", "semantic_map")` for DermGAN).
    """
    first, rest = inputs[0], inputs[1:]
    train_mean = mean_prediction(discriminator, train[first], gan_mode, *[train[k] for k in rest])
    heldout_mean = mean_prediction(discriminator, heldout[first], gan_mode, *[heldout[k] for k in rest])
    return {"d_train": train_mean, "d_heldout": heldout_mean, "gap": train_mean - heldout_mean}


def read_gap_log(path: str) -> list[dict]:
    """The records of a `discriminator_gap.jsonl` file."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _trim_gap_log(path: str, step: int) -> None:
    """After a resume, drops records written after the checkpoint so the log has each step once."""
    if not os.path.exists(path):
        return
    kept = [record for record in read_gap_log(path) if record["step"] <= step]
    with open(path, "w", encoding="utf-8") as handle:
        for record in kept:
            handle.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# the shared loop
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class GANTask:
    """One kind of GAN run, handed to `train_gan` by a script.

    Args:
        name (`str`): tracker project name, e.g. `"train_dermgan"`.
        generators (`dict[str, nn.Module]`): generator models by the pipeline component name they get.
        discriminators (`dict[str, nn.Module]`): discriminators by name (checkpoint subfolder).
        step (`Callable[[GANStep, dict], dict]`): one update on a batch; returns float logs.
        make_pipeline (`Callable[[dict[str, nn.Module]], DiffusionPipeline]`): the pipeline of unwrapped generators.
        validation (`Callable[[pipeline, int], list[PIL.Image]]`, *optional*): grid images for a step,
            from a fixed seed; `validation_cols` per row.
        monitor (`dict[str, tuple]`, *optional*): discriminator name -> (train batch, held-out batch,
            input names) for the overfitting log.
    """

    name: str
    generators: dict[str, nn.Module]
    discriminators: dict[str, nn.Module]
    step: Callable[[GANStep, Mapping], dict]
    make_pipeline: Callable[[dict], object]
    validation: Callable[[object, int], list] | None = None
    validation_cols: int = 4
    monitor: dict[str, tuple] | None = None


@dataclass
class GANRun:
    """What `train_gan` returns: the final pipeline (main process), the step reached and the last logs."""

    pipeline: object
    global_step: int
    last_logs: dict
    gap_log: str | None
    metrics: dict = field(default_factory=dict)
    best_fid: dict | None = None


def _log_gap(
    accelerator, task: GANTask, discriminators: dict, config: GANTrainingConfig, step: int, path: str
) -> None:
    records = []
    for name, (train, heldout, inputs) in task.monitor.items():
        model = accelerator.unwrap_model(discriminators[name])
        device = next(model.parameters()).device
        train = {k: v.to(device) for k, v in train.items()}
        heldout = {k: v.to(device) for k, v in heldout.items()}
        record = {
            "step": step,
            "discriminator": name,
            **discriminator_gap(model, train, heldout, config.gan_mode, inputs),
        }
        records.append(record)
        accelerator.log({f"{name}/{k}": record[k] for k in ("d_train", "d_heldout", "gap")}, step=step)
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def plot_gap_log(path: str) -> list[str]:
    """One PNG per discriminator next to the JSON-lines log (`dermdiff.metrics.report.plot_discriminator_gap`)."""
    from ..metrics.report import plot_discriminator_gap

    records = read_gap_log(path)
    written = []
    for name in sorted({record["discriminator"] for record in records}):
        target = os.path.join(os.path.dirname(path), f"discriminator_gap_{name}.png")
        plot_discriminator_gap([r for r in records if r["discriminator"] == name], target, f"{name} overfitting")
        written.append(target)
    return written


@contextmanager
def _eval_pipeline(accelerator, task: GANTask, generators: dict):
    """The task's pipeline of the unwrapped generators, in eval mode inside the block, training mode after."""
    models = {name: accelerator.unwrap_model(model) for name, model in generators.items()}
    for model in models.values():
        model.eval()
    try:
        pipeline = task.make_pipeline(models)
        pipeline.set_progress_bar_config(disable=True)
        yield pipeline
    finally:
        for model in models.values():
            model.train()


def _validate(accelerator, task: GANTask, generators: dict, step: int, output_dir: str) -> str:
    with _eval_pipeline(accelerator, task, generators) as pipeline:
        images = task.validation(pipeline, step)
    return common.log_image_grid(
        accelerator, common.image_grid(images, task.validation_cols), "samples", step, output_dir
    )


def train_gan(
    task: GANTask,
    train_dataset,
    config: GANTrainingConfig,
    accelerator=None,
    on_checkpoint: Callable | None = None,
    evaluate: Callable | None = None,
    evaluate_every: int = 0,
    save_best_fid: bool = False,
) -> GANRun:
    """Trains `task`'s generators and discriminators on `train_dataset`; saves the pipeline in `output_dir`.

    Generators share one Adam optimiser and discriminators another (Furger et al. 2020: lr 5e-5, betas 0.9 / 0.999).
    Checkpoints hold `save_pretrained` folders of every model (named by `task.generators` /
    `task.discriminators`), both optimisers and the training random stream; `--resume_from_checkpoint
    latest` continues at the same batch. At the end, the pipeline (generators in eval mode) is saved in
    `output_dir` and the discriminators in `output_dir/discriminators/<name>`. `on_checkpoint(path)` is
    called on the main process after each checkpoint is complete (e.g. `CheckpointPusher.checkpoint_saved`).

    `evaluate(pipeline, step) -> dict` (e.g. `fid_tracking.PipelineFID`) runs on the main process every
    `evaluate_every` updates (before that step's checkpoint, so the checkpoint knows the result) and at the
    end, with the generators in eval mode; its numbers go to the trackers and `GANRun.metrics`. With
    `save_best_fid` the pipeline with the lowest `"fid"` so far is kept in `output_dir/best_fid/`
    (`GANRun.best_fid` says its step and FID); the best value is in every checkpoint, so resume keeps it.

    Example:
        >>> task = dermgan_task(generator, discriminator, registry, resolution=32)  # see training/train_dermgan.py
        >>> run = train_gan(task, examples, GANTrainingConfig(output_dir="runs/dermgan", max_train_steps=2000))
    """
    # 1. accelerator, seeds, trackers
    if accelerator is None:
        accelerator = common.build_accelerator(
            config.output_dir, config.logging_dir, config.mixed_precision, 1, config.report_to, config.seed
        )
    streams = common.CheckpointedGenerator(config.seed, accelerator.process_index)  # saved in every checkpoint
    rng = streams.generator  # the torch.Generator all training randomness is drawn from
    fid = fid_tracker(evaluate, evaluate_every, config.output_dir, save_best_fid)

    # 2. data, optimisers, prepare (models in a fixed order: generators, then discriminators)
    dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=config.train_batch_size,
        shuffle=True,
        num_workers=config.dataloader_num_workers,
        drop_last=len(train_dataset) >= config.train_batch_size,
    )
    betas = (config.adam_beta1, config.adam_beta2)
    g_params = [p for model in task.generators.values() for p in model.parameters()]
    d_params = [p for model in task.discriminators.values() for p in model.parameters()]
    g_optimizer = torch.optim.Adam(g_params, lr=config.learning_rate, betas=betas)
    d_optimizer = torch.optim.Adam(d_params, lr=config.learning_rate, betas=betas)
    names = list(task.generators) + list(task.discriminators)
    common.register_pretrained_hooks(accelerator, names)
    prepared = accelerator.prepare(
        *task.generators.values(), *task.discriminators.values(), g_optimizer, d_optimizer, dataloader
    )
    models = dict(zip(names, prepared[: len(names)]))
    g_optimizer, d_optimizer, dataloader = prepared[len(names) :]
    generators = {name: models[name] for name in task.generators}
    discriminators = {name: models[name] for name in task.discriminators}
    per_epoch = common.updates_per_epoch(len(dataloader), 1)
    max_steps = config.max_train_steps or config.num_epochs * per_epoch
    num_epochs = math.ceil(max_steps / per_epoch)
    if accelerator.is_main_process:
        run_config = {**common.tracker_config(asdict(config)), **config.extra_tracker_config}
        run_config.pop("extra_tracker_config", None)
        accelerator.init_trackers(task.name, config=run_config)

    # 3. resume (and forget monitor records written after the checkpoint)
    position = common.resume(
        accelerator, config.output_dir, config.resume_from_checkpoint, per_epoch, streams, config.allow_inexact_resume
    )
    global_step = position.global_step
    if fid is not None and position.path:
        fid.load_state(position.state)
    gap_path = os.path.join(config.output_dir, GAP_LOG) if task.monitor and config.monitor_steps else None
    if gap_path and accelerator.is_main_process:
        _trim_gap_log(gap_path, global_step)
    logger.info(
        f"{task.name}: {max_steps} updates ({num_epochs} epochs of {per_epoch}), {len(train_dataset)} examples, "
        f"batch {config.train_batch_size}; starting at step {global_step}",
        main_process_only=True,
    )
    step = GANStep(accelerator, generators, discriminators, g_optimizer, d_optimizer, rng, config.gan_mode)
    bar = common.progress_bar(accelerator, max_steps, global_step)
    logs: dict = {}
    if gap_path and accelerator.is_main_process and global_step == 0:
        _log_gap(accelerator, task, discriminators, config, 0, gap_path)

    # 4. train: one D step and one G step per batch
    for epoch in range(position.epoch, num_epochs):
        for model in models.values():
            model.train()
        skip = position.batch_in_epoch if epoch == position.epoch else 0
        for batch in common.epoch_batches(accelerator, dataloader, epoch, skip):
            if global_step >= max_steps:
                break
            logs = task.step(step, augment_pairs(batch, config.augment, rng))
            global_step += 1
            bar.update(1)
            bar.set_postfix(d=f"{logs['d_loss']:.3f}", g=f"{logs['g_loss']:.3f}")
            accelerator.log(logs, step=global_step)
            if fid is not None and accelerator.is_main_process and fid.due(global_step):
                with _eval_pipeline(accelerator, task, generators) as pipeline:
                    fid(accelerator, pipeline, global_step)
            if config.checkpointing_steps and global_step % config.checkpointing_steps == 0:
                saved = common.save_checkpoint(
                    accelerator, config.output_dir, global_step, config.checkpoints_total_limit, streams,
                    state=fid.state() if fid is not None else None,
                )
                if on_checkpoint is not None and accelerator.is_main_process:
                    on_checkpoint(saved)
            if accelerator.is_main_process:
                if gap_path and global_step % config.monitor_steps == 0:
                    _log_gap(accelerator, task, discriminators, config, global_step, gap_path)
                if task.validation and config.validation_steps and global_step % config.validation_steps == 0:
                    _validate(accelerator, task, generators, global_step, config.output_dir)
        if global_step >= max_steps:
            break

    # 5. final pipeline and discriminators
    bar.close()
    accelerator.wait_for_everyone()
    pipeline = None
    if accelerator.is_main_process:
        final = {name: accelerator.unwrap_model(model).eval() for name, model in generators.items()}
        pipeline = task.make_pipeline(final)
        if fid is not None and not fid.due(global_step):
            fid(accelerator, pipeline, global_step)
        pipeline.save_pretrained(config.output_dir)
        for name, model in discriminators.items():
            accelerator.unwrap_model(model).save_pretrained(os.path.join(config.output_dir, "discriminators", name))
        if gap_path and os.path.exists(gap_path):
            plot_gap_log(gap_path)
        logger.info(f"saved the pipeline to {config.output_dir}")
    accelerator.end_training()
    metrics, best = (fid.metrics, fid.best) if fid is not None else ({}, None)
    return GANRun(pipeline, global_step, logs, gap_path, metrics, best)
