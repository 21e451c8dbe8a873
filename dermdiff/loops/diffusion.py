"""The diffusion training loop: noise prediction under a semantic map, with classifier-free guidance.

Ghorbani et al. 2020 and Silva & Georgieva 2024. For a clean image x_0, its map channels m and (optionally) its
class c:

    t ~ U{0, .., T-1},  eps ~ N(0, I),  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps     (scheduler.add_noise)
    with probability p_drop: m <- null map (zeros), c <- null class                        (CFG training)
    loss = || f(x_t, t, m, c) - target ||^2,  target = eps | v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 | x_0

`train_diffusion` is the library loop that `training/train_diffusion.py` exposes on the command line and
that the hard-case loop calls to fine-tune a model. It owns the accelerate plumbing through
`dermdiff.loops.common`: atomic checkpoints holding `save_pretrained` folders of the UNet and its EMA,
resume at the exact data position, validation grids with EMA weights and a fixed generator, and a
final `DermDiffPipeline` (EMA weights) in `output_dir`.

A training example is a dict with `pixel_values` (3, H, W) in [-1, 1], `semantic_map` (1 + K, H, W)
map channels (`SemanticMap.to_channels`) and, for a model with a class embedding, `class_labels`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers import DDIMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from ..config_args import with_default
from ..data.transforms import check_same_size, map_channels, pixel_values
from ..latent_cache import sample_cached_latents
from ..latent_maps import check_unet_matches_vae, record_vae, unclip_for_latents, vae_factor
from ..semantic_map import SemanticMap, validate_skin_type
from . import common
from .data_flags import DATA_GROUP
from .fid_tracking import PipelineFID, fid_tracker
from .pair_augment import AUGMENTS, BOX_MAP_KEY, augment_pairs, check_augment, mix_map_shapes, parse_map_shapes
from .run_config import OPTIMISATION, RUNS, TrainingRunConfig

logger = get_logger(__name__)

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


MODEL = "model and noise"


@dataclass
class DiffusionTrainingConfig(TrainingRunConfig):
    """Settings of one diffusion training run; `training/train_diffusion.py`'s flags are generated from them.

    Names follow diffusers' `train_unconditional.py` where the idea is the same. The prediction type and
    noise schedule are not here: they belong to the noise scheduler passed in. Each field's help is its
    documentation; the shared run settings are `dermdiff.loops.run_config.TrainingRunConfig`'s.
    """

    output_dir: str = with_default(TrainingRunConfig, "output_dir", "dermdiff-model")
    adam_beta1: float = with_default(TrainingRunConfig, "adam_beta1", 0.95)
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per update.",
                                                                  "group": OPTIMISATION})
    lr_scheduler: str = field(default="cosine", metadata={"help": "A diffusers get_scheduler name.",
                                                          "group": OPTIMISATION})
    lr_warmup_steps: int = field(default=500, metadata={"help": "Linear warm-up updates.", "group": OPTIMISATION})
    adam_weight_decay: float = field(default=1e-6, metadata={"help": "AdamW weight decay.", "group": OPTIMISATION})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon.", "group": OPTIMISATION})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm.", "group": OPTIMISATION})
    use_ema: bool = field(default=True, metadata={
        "help": "Keep an EMA of the weights (saved as the final model); --no-use_ema to disable.",
        "group": OPTIMISATION})
    ema_max_decay: float = field(default=0.9999, metadata={"help": "EMA maximum decay.", "group": OPTIMISATION})
    ema_inv_gamma: float = field(default=1.0, metadata={"help": "EMA warm-up inverse gamma.", "group": OPTIMISATION})
    ema_power: float = field(default=0.75, metadata={"help": "EMA warm-up power.", "group": OPTIMISATION})
    condition_dropout: float = field(default=0.1, metadata={
        "help": "Probability of training on the null map (and null class), for classifier-free guidance; "
                "0 disables it.", "group": MODEL})
    random_flip: bool = field(default=False, metadata={
        "help": "Flip image and map together horizontally (same as --augment flip).", "group": DATA_GROUP})
    augment: str = field(default="none", metadata={"choices": AUGMENTS,
        "help": "Transform image and map together, per example: 'flip' (left-right) or 'dihedral' (all 8 flips "
                "and quarter turns; dermoscopy has no up or down). See dermdiff.loops.pair_augment.",
        "group": DATA_GROUP})
    box_map_probability: float = field(default=0.5, metadata={
        "help": "When the examples carry a box map too (DiffusionExamples(map_shapes=('mask', 'box'))), the "
                "chance an example trains on it.", "cli": False})
    validation_steps: int = field(default=500, metadata={"help": "Sample a grid every N updates (0 = never).",
                                                         "group": RUNS})
    validation_skin_types: Sequence[int] = field(default=(1, 3, 6), metadata={
        "help": "Skin types of the grid's columns (rows are conditions); types the training data lacks are left "
                "out (grid_skin_types).", "group": RUNS})
    validation_inference_steps: int = field(default=50, metadata={
        "help": "DDIM steps for validation grids.", "flag": "ddpm_num_inference_steps", "group": RUNS})
    validation_guidance_scale: float = field(default=1.0, metadata={"help": "Guidance scale of the grid.",
                                                                    "group": RUNS})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1], got {self.condition_dropout}")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")
        if self.validation_steps < 0:
            raise ValueError(f"validation_steps must be >= 0 (0 = never), got {self.validation_steps}")
        self.validation_skin_types = tuple(None if t is None else validate_skin_type(t)
                                           for t in self.validation_skin_types)
        check_augment(self.augment)
        if self.random_flip and self.augment != "none":
            raise ValueError(f"random_flip and augment={self.augment!r} both flip; give one (augment='flip')")
        if not 0.0 <= self.box_map_probability <= 1.0:
            raise ValueError(f"box_map_probability must be in [0, 1], got {self.box_map_probability}")


@dataclass
class DiffusionRun:
    """What `train_diffusion` returns: the trained pipeline (EMA weights) and where the run ended."""

    pipeline: object
    global_step: int
    last_loss: float | None
    metrics: dict = field(default_factory=dict)


DEFAULT_PREDICTION_TYPE = "v_prediction"
DEFAULT_BETA_SCHEDULE = "squaredcos_cap_v2"


def default_noise_scheduler(
    num_train_timesteps: int = 1000,
    beta_schedule: str = DEFAULT_BETA_SCHEDULE,
    prediction_type: str = DEFAULT_PREDICTION_TYPE,
):
    """The training noise schedule dermdiff uses unless told otherwise: cosine betas with v-prediction.

    Why not DDPM's linear schedule with epsilon-prediction: at the small resolutions we train on (32-64 px)
    the linear schedule destroys the image long before the last step (Nichol & Dhariwal 2021), and epsilon
    targets carry almost no information about the clean image at high noise. Measured on the phantom at
    32 px (benchmarks/diffusion_quality_phantom.py): after 1,250 updates the linear/epsilon model still
    sampled grey noise, while cosine/v-prediction drew the requested lesion on the requested skin tone
    after 500.
    """
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, prediction_type=prediction_type
    )


# ----------------------------------------------------------------------------------------------------------------
# dataset rows -> training examples
# ----------------------------------------------------------------------------------------------------------------
class DiffusionExamples:
    """`datasets` transform: rows (image, semantic_map, label) -> training examples at `resolution`.

    Pixels and maps go through `dermdiff.data.transforms` (its resize policy: stretched to the square,
    bicubic pixels, nearest maps), so the diffusion model sees data as the GANs do. Use it as
    `dataset.with_transform(DiffusionExamples(registry_of(dataset), 32))`.

    Args:
        registry (`ConditionRegistry`): the dataset's conditions (must match the model's).
        resolution (`int`): the model's image side.
        map_shapes (`str` or `Sequence[str]`, defaults to `("mask",)`): how lesions are drawn in the training
            maps: `"mask"` as annotated, `"box"` as the filled bounding box of each region, or both, in which
            case each example also carries `semantic_map_box` and the training loop picks one per example
            (`pair_augment.mix_map_shapes`), so a box-only map yields a lesion of natural shape in its box.
    """

    def __init__(self, registry, resolution: int, map_shapes=("mask",)):
        if resolution < 8:
            raise ValueError(f"resolution must be >= 8 pixels, got {resolution}")
        self.registry, self.resolution = registry, resolution
        self.map_shapes = parse_map_shapes(map_shapes)

    def example(self, image, semantic_map, label) -> dict:
        check_same_size(image, semantic_map)
        healthy = label is None or int(label) < 0  # class index K = healthy skin (see SemanticUNet2DModel)
        class_label = len(self.registry) if healthy else int(label)
        example = {"pixel_values": pixel_values(image, self.resolution), "class_labels": class_label}
        for shape in self.map_shapes:
            key = BOX_MAP_KEY if shape == "box" and len(self.map_shapes) == 2 else "semantic_map"
            example[key] = map_channels(semantic_map, self.resolution, self.registry, box_only=shape == "box")
        return example

    def __call__(self, rows: dict) -> dict:
        examples = [self.example(*fields) for fields in zip(rows["image"], rows["semantic_map"], rows["label"])]
        return {key: [example[key] for example in examples] for key in examples[0]} if examples else {}


# ----------------------------------------------------------------------------------------------------------------
# one training step
# ----------------------------------------------------------------------------------------------------------------
def drop_conditions(
    semantic_map: torch.Tensor,
    class_labels: torch.Tensor | None,
    probability: float,
    null_class: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Classifier-free guidance training: each example loses its map (and class) with `probability`.

    The null map is all zeros (`SemanticMap.null_channels`); the map and the class are dropped
    together, since sampling's unconditional branch passes both as null.
    """
    batch = semantic_map.shape[0]
    drop = torch.rand(batch, generator=generator) < probability
    if not drop.any():
        return semantic_map, class_labels
    drop = drop.to(semantic_map.device)
    semantic_map = torch.where(drop[:, None, None, None], torch.zeros_like(semantic_map), semantic_map)
    if class_labels is not None:
        class_labels = torch.where(drop, torch.full_like(class_labels, null_class), class_labels)
    return semantic_map, class_labels


def flip_pairs(batch: dict, generator: torch.Generator) -> dict:
    """Horizontally flips a random half of the images together with their maps."""
    flip = torch.rand(batch["pixel_values"].shape[0], generator=generator) < 0.5
    if not flip.any():
        return batch
    flip = flip.to(batch["pixel_values"].device)[:, None, None, None]
    out = dict(batch)
    for key in ("pixel_values", "semantic_map"):
        out[key] = torch.where(flip, batch[key].flip(-1), batch[key])
    return out


def diffusion_loss(model, noise_scheduler, batch: dict, condition_dropout: float, null_class: int, generator):
    """Mean-squared error of the model's prediction (epsilon, v or x_0, per the scheduler's config)."""
    clean = batch["pixel_values"]
    semantic_map, class_labels = drop_conditions(
        batch["semantic_map"], batch.get("class_labels"), condition_dropout, null_class, generator
    )
    noise = torch.randn(clean.shape, generator=generator).to(clean.device, clean.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator)
    timesteps = timesteps.to(clean.device)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    prediction = model(noisy, timesteps, semantic_map, class_labels=class_labels).sample
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(clean, noise, timesteps)
    elif prediction_type == "sample":
        target = clean
    else:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return F.mse_loss(prediction.float(), target.float())


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------
def grid_skin_types(requested: Sequence[int | None], present: Sequence[int | None] | None) -> tuple[int | None, ...]:
    """The validation grid's columns: the requested skin types the training data has (`present`: its
    `skin_type` column; None when the data has no such column, and then `requested` is kept as it is).

    Why: a model trained only on images of unknown skin type (HAM10000, ISIC: no Fitzpatrick labels) has never
    seen a map whose skin channel says I, III or VI, and draws texture instead of lesions for one; a grid of
    those hides what the model has learnt. Requested types the data lacks are dropped with a warning; when
    none is left, the grid shows up to three types the data does have (lightest, middle, darkest), or one
    column of unknown skin (`None`) when it has no labelled type at all.

    Example:
        >>> grid_skin_types((1, 3, 6), [None, None])
        (None,)
        >>> grid_skin_types((1, 3, 6), [1, 2, 3, None])
        (1, 3)
    """
    if present is None:
        return tuple(requested)
    known = sorted({int(t) for t in present if t is not None})
    kept = tuple(t for t in requested if t is None and None in present or t in known)
    if len(kept) < len(requested):
        missing = [t for t in requested if t not in kept]
        # the standard logger: this runs before any Accelerator exists (accelerate's logger needs one)
        logging.getLogger(__name__).warning(
            f"validation_skin_types {missing} do not occur in the training data (its types: "
            f"{known + ['unknown'] * (None in present) or 'none'}); the grid leaves them out")
    if kept:
        return kept
    if not known:
        return (None,)
    return tuple(dict.fromkeys([known[0], known[len(known) // 2], known[-1]]))


def skin_type_column(dataset) -> list | None:
    """The `skin_type` column of training rows (None where unknown), or None when the rows have no such column."""
    names = getattr(dataset, "column_names", None) or []
    return list(dataset["skin_type"]) if "skin_type" in names else None


def validation_maps(registry, resolution: int, skin_types: Sequence[int | None] = (1, 3, 6)) -> list[SemanticMap]:
    """Fixed maps for the validation grid: one row per condition, one column per skin type.

    Each map holds one centred box half the image wide, so rows differ only in condition and columns
    only in skin type.
    """
    low, high = resolution // 4, resolution - resolution // 4
    maps = []
    for condition in registry.names:
        for skin_type in skin_types:
            maps.append(
                SemanticMap.from_annotations(
                    condition, skin_type, boxes=[(low, low, high, high)], size=resolution, registry=registry
                )
            )
    return maps


def sample_grid(pipeline, maps: Sequence[SemanticMap], cols: int, steps: int, guidance_scale: float, seed: int):
    """Samples one image per map with DDIM and a fixed CPU generator; returns the grid image."""
    scheduler = pipeline.scheduler
    pipeline.scheduler = DDIMScheduler.from_config(scheduler.config)
    try:
        images = pipeline(
            semantic_map=list(maps),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed),
            output_type="pil",
        ).images
    finally:
        pipeline.scheduler = scheduler
    return common.image_grid(images, cols)


def _pipeline(unet, noise_scheduler, vae=None):
    from ..pipelines.pipeline_dermdiff import DermDiffPipeline

    pipeline = DermDiffPipeline(unet=unet, scheduler=noise_scheduler, vae=vae)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


class FIDEvaluation(PipelineFID):
    """`evaluate` hook for `train_diffusion`: `fid_tracking.PipelineFID` sampling with DDIM.

    Samples one image per held-out map (a fixed seed per image), so generated and reference sets request
    the same conditions, places and skin types; the training scheduler is put back afterwards.

    Args:
        reference: held-out real images (a `datasets` split with dermdiff columns, or a folder).
        maps (`Sequence[SemanticMap]`): the maps to sample, e.g. the held-out images' own maps.
        resolution (`int`): images of both sets are compared at this side.
        extractor (`str` or `nn.Module`, defaults to `"inception"`): a `dermdiff.metrics.load_extractor` spec.
        settings (`GenerationSettings`, *optional*): steps, guidance scale and images per call (default
            `GenerationSettings.for_evaluation()`); the scheduler is always DDIM.
        seed (`int`, defaults to 0): image i is seeded `seed + i`.
        registry (*optional*): the reference's condition registry (default: the pipeline UNet's).
    """

    def __init__(self, reference, maps, resolution: int, extractor="inception", settings=None, seed: int = 0,
                 registry=None):
        if len(maps) < 2:
            raise ValueError(f"FID needs at least 2 held-out maps, got {len(maps)}")
        super().__init__(reference, registry, resolution, extractor, maps=maps, settings=settings, seed=seed)

    def __call__(self, pipeline, step: int) -> dict:
        if self.registry is None:
            self.registry = pipeline.unet.registry
        scheduler = pipeline.scheduler
        pipeline.scheduler = DDIMScheduler.from_config(scheduler.config)
        try:
            return super().__call__(pipeline, step)
        finally:
            pipeline.scheduler = scheduler


class _EMAWeights:
    """Context manager: the EMA weights sit in `model` inside the block, the trained ones after."""

    def __init__(self, ema: EMAModel | None, model):
        self.ema, self.model = ema, model

    def __enter__(self):
        if self.ema is not None:
            self.ema.store(self.model.parameters())
            self.ema.copy_to(self.model.parameters())
        return self.model

    def __exit__(self, *exc):
        if self.ema is not None:
            self.ema.restore(self.model.parameters())
        return False


# ----------------------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------------------
def train_diffusion(
    unet,
    noise_scheduler,
    train_dataset,
    config: DiffusionTrainingConfig,
    accelerator=None,
    evaluate: Callable | None = None,
    evaluate_every: int = 0,
    vae=None,
    save_best_fid: bool = False,
    on_checkpoint: Callable | None = None,
) -> DiffusionRun:
    """Trains (or fine-tunes) `unet` to denoise `train_dataset` images under their semantic maps.

    Args:
        unet (`SemanticUNet2DModel`): the model, freshly built or loaded to fine-tune.
        noise_scheduler: a diffusers noise scheduler (e.g. `DDPMScheduler`); its `prediction_type`
            and schedule define the training target. It is saved with the final pipeline.
        train_dataset: a map-style dataset of training examples (see the module docstring).
        config (`DiffusionTrainingConfig`): run settings.
        accelerator (`Accelerator`, *optional*): built from `config` when None.
        evaluate (`Callable[[pipeline, int], dict]`, *optional*): called on the main process every
            `evaluate_every` updates (before that step's checkpoint) and at the end with the EMA pipeline and
            the step; its returned numbers are logged and kept in `DiffusionRun.metrics`.
        vae (`AutoencoderKL`, *optional*): train a latent model: `train_dataset` rows are then latent-cache rows
            (`dermdiff.latent_cache.cached_latents`), each batch draws z ~ q(z | x) from them, and the VAE
            joins the validation and final pipelines (it is not trained). With `config.augment`, the cache
            must hold the orientations it draws (`cached_latents(..., augment=config.augment)`).
        save_best_fid (`bool`, defaults to False): keep the EMA pipeline with the lowest `"fid"` of `evaluate`
            so far in `output_dir/best_fid/` (`dermdiff.loops.fid_tracking`); resume keeps the best value.
        on_checkpoint (`Callable[[str], None]`, *optional*): called on the main process with each complete
            checkpoint folder (e.g. `dermdiff.hub_sync.CheckpointPusher.checkpoint_saved` for `--hub_strategy`).

    Returns:
        `DiffusionRun`: the `DermDiffPipeline` with EMA weights (also saved in `config.output_dir`).

    Example:
        >>> config = DiffusionTrainingConfig(output_dir="runs/phantom", max_train_steps=3000)
        >>> unet = SemanticUNet2DModel(**registry_of(dataset).model_kwargs())  # the phantom's registry
        >>> run = train_diffusion(unet, DDPMScheduler(), dataset, config)
        >>> run.pipeline(condition="melanoma", skin_type=5).images[0]
    """
    if noise_scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"noise scheduler prediction_type must be one of {PREDICTION_TYPES}")
    # 1. accelerator, seeds, trackers
    if accelerator is None:
        accelerator = common.build_accelerator(
            config.output_dir,
            config.logging_dir,
            config.mixed_precision,
            config.gradient_accumulation_steps,
            config.report_to,
            config.seed,
        )
    rng = common.CheckpointedGenerator(config.seed, accelerator.process_index)
    fid = fid_tracker(evaluate, evaluate_every, config.output_dir, save_best_fid)
    null_class = unet.null_class_label if unet.config.use_class_embedding else -1

    # 2. data, optimiser, learning-rate schedule, EMA
    dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=config.train_batch_size,
        shuffle=True,
        num_workers=config.dataloader_num_workers,
    )
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon,
    )
    per_epoch = common.updates_per_epoch(
        math.ceil(len(dataloader) / accelerator.num_processes), config.gradient_accumulation_steps
    )
    max_steps = config.max_train_steps or config.num_epochs * per_epoch
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes,
    )
    ema = None
    if config.use_ema:
        ema = EMAModel(
            unet.parameters(),
            decay=config.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=config.ema_inv_gamma,
            power=config.ema_power,
            foreach=True,
            model_cls=type(unet),
            model_config=unet.config,
        )
        ema.to(accelerator.device)
    # the pipeline reads it to refuse guidance_scale != 1 for a model that never saw the null map (recorded
    # after the EMA copied the config, so EMA checkpoints rebuild the model without an unknown-key warning)
    unet.register_to_config(condition_dropout=config.condition_dropout)
    if vae is not None:
        check_unet_matches_vae(unet.config, vae)
        record_vae(unet, vae)
        if unclip_for_latents(noise_scheduler):  # for the validation grids and the saved pipeline's sampler
            logger.info("noise scheduler: clip_sample turned off for latents", main_process_only=True)
        if config.random_flip:
            raise ValueError("random_flip would flip cached latents, which is not exact; use augment='flip' "
                             "(the cache then holds the latent of each flipped image)")
    common.register_pretrained_hooks(accelerator, ["unet"], {"unet_ema": ema} if ema else None)
    unet, optimizer, dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, dataloader, lr_scheduler)
    per_epoch = common.updates_per_epoch(len(dataloader), config.gradient_accumulation_steps)
    num_epochs = math.ceil(max_steps / per_epoch)
    if accelerator.is_main_process:
        run_config = {**common.tracker_config(asdict(config)), **config.extra_tracker_config}
        accelerator.init_trackers("train_diffusion", config=run_config)

    # 3. resume
    position = common.resume(
        accelerator, config.output_dir, config.resume_from_checkpoint, per_epoch, rng, config.allow_inexact_resume
    )
    global_step = position.global_step
    if fid is not None and position.path:
        fid.load_state(position.state)
    logger.info(
        f"training {max_steps} updates ({num_epochs} epochs of {per_epoch}), {len(train_dataset)} examples, "
        f"{accelerator.num_processes} process(es), batch {config.train_batch_size} per process, "
        f"accumulation {config.gradient_accumulation_steps}; starting at step {global_step}",
        main_process_only=True,
    )
    bar = common.progress_bar(accelerator, max_steps, global_step)
    maps = validation_maps(accelerator.unwrap_model(unet).registry, unet_size(unet, accelerator) * vae_factor(vae),
                           config.validation_skin_types)
    last_loss = None
    window_loss = 0.0

    # 4. train
    for epoch in range(position.epoch, num_epochs):
        unet.train()
        skip = position.batch_in_epoch if epoch == position.epoch else 0
        for batch in common.epoch_batches(accelerator, dataloader, epoch, skip):
            if global_step >= max_steps:  # resumed from the last checkpoint of a finished run
                break
            if "latent_mean" in batch:  # cached posteriors -> one latent each, of the image in the drawn orientation
                batch = sample_cached_latents(batch, rng.generator, config.augment)
            else:
                if config.random_flip:
                    batch = flip_pairs(batch, rng.generator)
                batch = augment_pairs(batch, config.augment, rng.generator)  # before the shape choice: both maps turn
            batch = mix_map_shapes(batch, rng.generator, config.box_map_probability)
            with accelerator.accumulate(unet):
                loss = diffusion_loss(
                    unet, noise_scheduler, batch, config.condition_dropout, null_class, rng.generator
                )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window_loss += loss.detach().item() / config.gradient_accumulation_steps
            if not accelerator.sync_gradients:
                continue
            # 5. once per optimiser update: EMA, logs, checkpoint, samples
            global_step += 1
            if ema is not None:
                ema.step(unet.parameters())
            last_loss, window_loss = window_loss, 0.0
            logs = {"loss": last_loss, "lr": lr_scheduler.get_last_lr()[0]}
            if ema is not None:
                logs["ema_decay"] = ema.cur_decay_value
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{logs['lr']:.2e}")
            accelerator.log(logs, step=global_step)
            if fid is not None and accelerator.is_main_process and fid.due(global_step):
                run_evaluation(accelerator, unet, ema, noise_scheduler, fid, global_step, vae=vae)
            if config.checkpointing_steps and global_step % config.checkpointing_steps == 0:
                saved = common.save_checkpoint(accelerator, config.output_dir, global_step,
                                               config.checkpoints_total_limit, rng,
                                               state=fid.state() if fid is not None else None)
                if on_checkpoint is not None and accelerator.is_main_process:
                    on_checkpoint(saved)
            if accelerator.is_main_process and config.validation_steps and global_step % config.validation_steps == 0:
                log_validation(accelerator, unet, ema, noise_scheduler, maps, config, global_step, vae=vae)
            if global_step >= max_steps:
                break
        if global_step >= max_steps:
            break

    # 6. final pipeline with EMA weights
    bar.close()
    accelerator.wait_for_everyone()
    pipeline = None
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(unet).eval()
        if ema is not None:
            ema.copy_to(model.parameters())
        pipeline = _pipeline(model, noise_scheduler, vae)
        if fid is not None and not fid.due(global_step):
            fid(accelerator, pipeline, global_step)
        pipeline.save_pretrained(config.output_dir)
        logger.info(f"saved the pipeline (EMA weights) to {config.output_dir}")
    accelerator.end_training()
    return DiffusionRun(pipeline, global_step, last_loss, fid.metrics if fid is not None else {})


def unet_size(unet, accelerator) -> int:
    """The model's image side (its `sample_size`)."""
    size = accelerator.unwrap_model(unet).config.sample_size
    return size if isinstance(size, int) else size[0]


def log_validation(
    accelerator, unet, ema, noise_scheduler, maps, config: DiffusionTrainingConfig, step: int, vae=None
) -> str:
    """Samples the fixed validation maps with EMA weights and logs the grid (tracker + PNG)."""
    model = accelerator.unwrap_model(unet)
    model.eval()
    with _EMAWeights(ema, model):
        grid = sample_grid(
            _pipeline(model, noise_scheduler, vae),
            maps,
            cols=len(config.validation_skin_types),
            steps=config.validation_inference_steps,
            guidance_scale=config.validation_guidance_scale,
            seed=config.seed,
        )
    model.train()
    return common.log_image_grid(accelerator, grid, "validation", step, config.output_dir)


def run_evaluation(accelerator, unet, ema, noise_scheduler, fid, step: int, vae=None) -> dict:
    """Runs the `fid_tracking.FIDTracker` `fid` on the pipeline with EMA weights swapped in (it logs the numbers)."""
    model = accelerator.unwrap_model(unet)
    model.eval()
    with _EMAWeights(ema, model):
        metrics = fid(accelerator, _pipeline(model, noise_scheduler, vae), step)
    model.train()
    return metrics
