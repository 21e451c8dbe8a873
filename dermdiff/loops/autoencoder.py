"""The autoencoder training loop of latent DermDiff: a diffusers `AutoencoderKL` trained with L1 + KL (+ GAN).

Rombach et al. 2022 (LDM), section 3 and appendix G; MONAI GenerativeModels trains the same model for
medical images. For an image x, the encoder gives a diagonal Gaussian q(z | x) = N(mu, sigma^2) on a grid
f = 4 times smaller, z ~ q, and the decoder reconstructs x_hat = D(z):

    L_rec = mean |x - x_hat|                                   (L1 per pixel and channel)
    L_KL  = KL(q(z | x) || N(0, I)) / (3 H W)                  (per image, divided by the pixel count)
    L_G   = L_rec + kl_weight L_KL [+ lambda_adv gan_loss(D(x_hat), real)  once step >= discriminator_start]

Dividing the KL by the number of pixel values makes `kl_weight` mean what it means in LDM, where both terms
are summed over the image (LDM's f=4 "KL" models use 1e-6). The adversarial weight lambda_adv is LDM's
adaptive weight ||grad L_rec|| / ||grad L_adv|| at the decoder's last layer, times `discriminator_weight`,
so the GAN term can never swamp reconstruction. The discriminator is the project's PatchGAN
(`dermdiff.models.PatchGANDiscriminator`), conditioned on the semantic map like DermGAN's, with the GAN
loss of `dermdiff.losses.gan_loss`; the order is pix2pix's: D step on `x_hat.detach()`, freeze D, G step.
No perceptual (LPIPS) term: it needs downloaded VGG weights.

Training may use random `crop_size` crops of the `resolution` images: the autoencoder is convolutional (the
mid-block attention is off by default), so it learns on 64 px crops what it applies to 128 px images at a
quarter of the cost per image, as LDM trains its autoencoders on 256 px crops.

After training, `scaling_factor` in the model's config is set to 1 / std of the latents of (up to)
`scaling_num_images` training images, so the diffusion model sees latents of unit variance (LDM 4.3.2);
`DermDiffPipeline` multiplies by it before denoising and divides after.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers import AutoencoderKL
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from PIL import Image

from ..config_args import with_default
from ..latent_maps import from_model_latents, to_model_latents, vae_factor
from ..losses import GAN_LOSS_MODES, gan_loss
from . import common
from .balanced_sampling import balanced_sampler
from .diffusion import _EMAWeights
from .gan import discriminator_loss, set_requires_grad
from .run_config import OPTIMISATION, RUNS, TrainingRunConfig

logger = get_logger(__name__)


def default_autoencoder_config(resolution: int = 128, latent_channels: int = 4) -> dict:
    """The f=4 `AutoencoderKL` dermdiff trains by default: three levels (32, 64, 128 wide), 2.6 M parameters.

    Why this small: it has to train on a CPU in an hour. Three encoder levels halve the side twice
    (f = 4); the mid-block attention is switched off because at 128 px it attends over 32 x 32 = 1,024
    positions and cost more than the convolutions, and without it the model is convolutional, so it can
    train on crops.
    """
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "block_out_channels": [32, 64, 128],
        "layers_per_block": 1,
        "latent_channels": latent_channels,
        "norm_num_groups": 32,
        "sample_size": resolution,
        "mid_block_add_attention": False,
    }


def load_vae(name_or_path: str, **kwargs) -> AutoencoderKL:
    """Any diffusers `AutoencoderKL`: a model folder, a pipeline folder with `vae/`, or a Hub id of either.

    Args:
        name_or_path (`str`): e.g. `outputs/ae-128` (this trainer's output), `stabilityai/sd-vae-ft-mse`,
            or a Stable Diffusion pipeline repo (its `vae` subfolder is used).
        **kwargs: passed to `AutoencoderKL.from_pretrained` (`cache_dir`, `token`, `revision`, ...).
    """
    if os.path.isdir(name_or_path):
        if os.path.isfile(os.path.join(name_or_path, "config.json")):
            return AutoencoderKL.from_pretrained(name_or_path, **kwargs)
        if os.path.isfile(os.path.join(name_or_path, "vae", "config.json")):
            return AutoencoderKL.from_pretrained(name_or_path, subfolder="vae", **kwargs)
        raise ValueError(f"VAE {name_or_path!r}: no config.json in the folder or in its vae/ subfolder")
    if os.path.exists(name_or_path):
        raise ValueError(f"VAE {name_or_path!r} is a file; give an AutoencoderKL folder or a Hub id")
    if os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")):
        raise FileNotFoundError(f"VAE folder {name_or_path} does not exist")
    try:
        return AutoencoderKL.from_pretrained(name_or_path, **kwargs)
    except OSError:
        try:
            return AutoencoderKL.from_pretrained(name_or_path, subfolder="vae", **kwargs)
        except OSError as error:  # offline, unknown repo, gated: one line, not diffusers' paragraph
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"could not load VAE {name_or_path!r} from the Hugging Face Hub ({first_line[:300]})") \
                from None


MODEL = "model and losses"


@dataclass
class AutoencoderTrainingConfig(TrainingRunConfig):
    """Settings of one autoencoder run; `training/train_autoencoder.py`'s flags are generated from them.

    Each field's help is its documentation; the shared run settings are
    `dermdiff.loops.run_config.TrainingRunConfig`'s. Adam's betas default to LDM's autoencoders' (0.5, 0.9).
    """

    output_dir: str = with_default(TrainingRunConfig, "output_dir", "dermdiff-autoencoder")
    train_batch_size: int = with_default(TrainingRunConfig, "train_batch_size", 8)
    adam_beta1: float = with_default(TrainingRunConfig, "adam_beta1", 0.5)
    adam_beta2: float = with_default(TrainingRunConfig, "adam_beta2", 0.9)
    lr_scheduler: str = field(default="constant", metadata={"help": "A diffusers get_scheduler name.",
                                                            "group": OPTIMISATION})
    lr_warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up updates.", "group": OPTIMISATION})
    adam_weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay.", "group": OPTIMISATION})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm.", "group": OPTIMISATION})
    kl_weight: float = field(default=1e-6, metadata={
        "help": "Weight of the per-pixel KL term (LDM: 1e-6; see the module docstring).", "group": MODEL})
    crop_size: int | None = field(default=None, metadata={
        "help": "Train on random crops of this side (a multiple of the model's factor f).", "group": MODEL})
    discriminator_start: int | None = field(default=None, metadata={
        "help": "Update from which a patch discriminator trains and its loss enters L_G (default: no "
                "discriminator).", "group": MODEL})
    discriminator_weight: float = field(default=0.5, metadata={"help": "Factor on the adaptive GAN weight.",
                                                               "group": MODEL})
    discriminator_channels: tuple[int, ...] = field(default=(32, 64, 128), metadata={"help": "PatchGAN widths.",
                                                                                     "group": MODEL})
    gan_mode: str = field(default="hinge", metadata={"help": "Adversarial loss (dermdiff.losses.gan_loss).",
                                                     "choices": GAN_LOSS_MODES, "group": MODEL})
    use_ema: bool = field(default=False, metadata={"help": "Keep an EMA of the weights (saved as the model).",
                                                   "group": OPTIMISATION})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay.", "group": OPTIMISATION})
    validation_steps: int = field(default=500, metadata={
        "help": "Save a reconstruction grid every N updates (0 = only at the end).", "group": RUNS})
    num_validation_images: int = field(default=8, metadata={"help": "Images in the reconstruction grid.",
                                                            "group": RUNS})
    scaling_num_images: int = field(default=512, metadata={
        "help": "Training images whose latent std gives the saved scaling_factor.", "group": OPTIMISATION})
    train_decoder_only: bool = field(default=False, metadata={
        "help": "Fine-tune only the decoder (and post_quant_conv): the encoder, so the latent space and the "
                "scaling_factor, stay exactly as they were, and diffusion models trained on this autoencoder's "
                "latents still fit it (Stability's sd-vae-ft-mse was made this way).", "group": MODEL})
    per_channel_latents: bool = field(default=False, metadata={
        "help": "Save per-channel latents_mean / latents_std (and scaling_factor 1) instead of one scaling_factor, "
                "so every latent channel reaches the UNet at mean 0, std 1 (diffusers' SDXL convention).",
        "group": OPTIMISATION})
    balance_classes: bool = field(default=False, metadata={
        "help": "Draw training images class-balanced (weight n / (K n_k)), so rare conditions' colours count in "
                "the reconstruction loss.", "group": OPTIMISATION})

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_validation_images", "scaling_num_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.validation_steps < 0:
            raise ValueError(f"validation_steps must be >= 0, got {self.validation_steps}")
        if self.kl_weight < 0 or self.discriminator_weight < 0:
            raise ValueError(f"kl_weight and discriminator_weight must be >= 0, got {self.kl_weight}, "
                             f"{self.discriminator_weight}")
        if self.discriminator_start is not None and self.discriminator_start < 0:
            raise ValueError(f"discriminator_start must be >= 0 or None, got {self.discriminator_start}")
        if self.gan_mode not in GAN_LOSS_MODES:
            raise ValueError(f"gan_mode must be one of {GAN_LOSS_MODES}, got {self.gan_mode!r}")
        if self.crop_size is not None and self.crop_size < 8:
            raise ValueError(f"crop_size must be >= 8 pixels or None, got {self.crop_size}")
        self.discriminator_channels = tuple(self.discriminator_channels)


@dataclass
class AutoencoderRun:
    """What `train_autoencoder` returns: the trained model (EMA weights if kept) and where the run ended."""

    vae: AutoencoderKL | None
    global_step: int
    last_losses: dict
    validation_psnr: float | None = None


# ----------------------------------------------------------------------------------------------------------------
# pieces of one step
# ----------------------------------------------------------------------------------------------------------------
def random_crops(batch: dict, size: int | None, generator: torch.Generator) -> dict:
    """The same random `size` x `size` window of each image and its map (one window per example)."""
    images = batch["pixel_values"]
    height, width = images.shape[-2:]
    if size is None or (size == height and size == width):
        return batch
    if size > min(height, width):
        raise ValueError(f"crop_size {size} is larger than the training images ({height} x {width})")
    tops = torch.randint(0, height - size + 1, (images.shape[0],), generator=generator).tolist()
    lefts = torch.randint(0, width - size + 1, (images.shape[0],), generator=generator).tolist()
    out = dict(batch)
    for key in ("pixel_values", "semantic_map"):
        out[key] = torch.stack([x[:, t : t + size, s : s + size] for x, t, s in zip(batch[key], tops, lefts)])
    return out


def reconstruction_terms(vae, images: torch.Tensor, generator: torch.Generator | None = None):
    """Encodes, samples z ~ q(z | x), decodes; returns (x_hat, L_rec, L_KL) as in the module docstring."""
    posterior = vae.encode(images).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator).to(images.device, posterior.mean.dtype)
    latents = posterior.mean + posterior.std * noise
    reconstruction = vae.decode(latents).sample
    rec = F.l1_loss(reconstruction.float(), images.float())
    kl = posterior.kl().mean() / images[0].numel()
    return reconstruction, rec, kl


def adaptive_gan_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """LDM's lambda_adv = ||grad_L L_rec|| / (||grad_L L_adv|| + 1e-4), clamped to [0, 1e4], L the last layer."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def psnr(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB, of [-1, 1] images quantised as 8-bit would be."""
    a = ((reconstruction.float().clamp(-1, 1) + 1) * 127.5).round()
    b = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(255.0**2 / mse)


# ----------------------------------------------------------------------------------------------------------------
# latent scale, validation
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def sampled_latents(vae, images: torch.Tensor, batch_size: int = 16, seed: int = 0) -> torch.Tensor:
    """Raw latents z ~ q(z | x) of `images` (float32), drawn from their own generator seeded by `seed`."""
    generator = torch.Generator(images.device).manual_seed(seed)
    return torch.cat([vae.encode(images[i : i + batch_size]).latent_dist.sample(generator)
                      for i in range(0, len(images), batch_size)]).float()


@torch.no_grad()
def latent_scaling_factor(vae, images: torch.Tensor, batch_size: int = 16, seed: int = 0) -> float:
    """1 / std of sampled latents z ~ q(z | x) over `images` (LDM's scale; SD's VAE has 0.18215).

    The samples draw from their own generator (`seed`), never the global one, so measuring at a checkpoint
    leaves the training run's random stream, and its exact resume, as they were.
    """
    std = sampled_latents(vae, images, batch_size, seed).std().item()
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"latents of the training images have std {std}; cannot set scaling_factor")
    return 1.0 / std


@torch.no_grad()
def measured_latent_normalisation(vae, images: torch.Tensor, per_channel: bool = False, batch_size: int = 16,
                                  seed: int = 0) -> dict:
    """The config entries that bring sampled latents z ~ q(z | x) of `images` to unit variance.

    Without `per_channel`: LDM's one `scaling_factor` = 1 / std over all channels (and no per-channel entries,
    which would otherwise take precedence). With it: diffusers' SDXL-style `latents_mean` / `latents_std` per
    channel and `scaling_factor` 1, so each channel reaches the UNet at mean 0 and std 1
    (`dermdiff.latent_maps.latent_normalisation` says why that matters). Seeded apart from the global stream,
    as `latent_scaling_factor`.
    """
    if not per_channel:
        return {"scaling_factor": latent_scaling_factor(vae, images, batch_size, seed), "latents_mean": None,
                "latents_std": None}
    per = sampled_latents(vae, images, batch_size, seed).transpose(0, 1).flatten(1)
    mean, std = per.mean(1), per.std(1)
    if not (torch.isfinite(std).all() and (std > 0).all() and torch.isfinite(mean).all()):
        raise ValueError(f"latents of the training images have per-channel std {std.tolist()}; cannot set "
                         "latents_std")
    return {"scaling_factor": 1.0, "latents_mean": mean.tolist(), "latents_std": std.tolist()}


@torch.no_grad()
def latent_channel_statistics(vae, images: torch.Tensor, batch_size: int = 16) -> dict:
    """Per channel of the posterior means as the UNet sees them (normalised by `to_model_latents`): mean, std,
    max |z| and the share beyond 4 (a unit-variance Gaussian has 6e-5 there).

    Why: the UNet adds the same noise to every latent channel, and one `scaling_factor` brings them only to
    unit variance together. A channel much wider than the others, or one whose values reach 10 and beyond
    (a weak KL lets the encoder park rare colours there), is denoised on another schedule than the rest and
    decoded into artefacts where the UNet misses its tail.

    Returns:
        `dict` of lists, one value per channel: `mean`, `std`, `max_abs`, `beyond_4` (a fraction).
    """
    means = to_model_latents(vae, torch.cat([vae.encode(images[i : i + batch_size]).latent_dist.mean
                                             for i in range(0, len(images), batch_size)]).float())
    per_channel = means.transpose(0, 1).flatten(1)
    return {"mean": per_channel.mean(1).tolist(), "std": per_channel.std(1).tolist(),
            "max_abs": per_channel.abs().amax(1).tolist(),
            "beyond_4": (per_channel.abs() > 4).float().mean(1).tolist()}


def measure_scaling_factors(model, ema: EMAModel | None, images: torch.Tensor, per_channel: bool = False) -> None:
    """Set the `scaling_factor` (or per-channel statistics) a checkpoint saves to what its own weights give.

    Without this a checkpoint's `vae/` folder carries the starting model's factor (0.18215, or a pretrained
    model's), and a user who trains a diffusion model on that folder gets latents of the wrong variance: a
    fine-tune's checkpoint here said 0.232 where its weights measure 0.256.
    """
    was_training = model.training
    model.eval()
    model.register_to_config(**measured_latent_normalisation(model, images, per_channel))
    if ema is not None:
        with _EMAWeights(ema, model):
            entries = measured_latent_normalisation(model, images, per_channel)
        # from_config resets keys listed in _use_default_values to their defaults, so unlist them
        defaults = [key for key in ema.model_config.get("_use_default_values", []) if key not in entries]
        ema.model_config = {**ema.model_config, **entries, "_use_default_values": defaults}
    model.train(was_training)


def stack_examples(dataset, count: int, key: str = "pixel_values") -> torch.Tensor:
    """The first `count` examples' `key` tensors as one batch (fixed validation / scaling images)."""
    return torch.stack([torch.as_tensor(dataset[i][key]) for i in range(min(count, len(dataset)))])


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[-1, 1] (B, 3, H, W) -> PIL images."""
    arrays = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arrays]


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch_size: int = 16, clamp_latents: float | None = None) -> torch.Tensor:
    """Deterministic reconstructions D(mu(x)) (the posterior mode), as they are measured and shown.

    `clamp_latents` K clamps the normalised latent (`to_model_latents`: per channel when the VAE has
    per-channel statistics) to [-K, K] before decoding: a probe of what the latent's outliers cost.
    """
    out = []
    for i in range(0, len(images), batch_size):
        latents = vae.encode(images[i : i + batch_size]).latent_dist.mode()
        if clamp_latents is not None:
            latents = from_model_latents(vae, to_model_latents(vae, latents).clamp(-clamp_latents, clamp_latents))
        out.append(vae.decode(latents).sample)
    return torch.cat(out).clamp(-1, 1)


def log_reconstructions(accelerator, vae, images: torch.Tensor, step: int, output_dir: str) -> float:
    """Top row originals, bottom row reconstructions (PNG + trackers); returns their mean PSNR."""
    vae.eval()
    reconstruction = reconstruct(vae, images.to(accelerator.device))
    vae.train()
    value = psnr(reconstruction, images.to(reconstruction.device)).mean().item()
    grid = make_image_grid(to_pil(images) + to_pil(reconstruction), rows=2, cols=len(images))
    common.log_image_grid(accelerator, grid, "reconstruction", step, output_dir)
    accelerator.log({"validation_psnr": value}, step=step)
    return value


# ----------------------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------------------
def build_discriminator(registry, config: AutoencoderTrainingConfig, in_channels: int = 3):
    """The PatchGAN that judges (map, image) pairs; None when the run has no discriminator."""
    if config.discriminator_start is None:
        return None
    from ..models.dermgan import PatchGANDiscriminator

    return PatchGANDiscriminator(in_channels=in_channels, conditions=list(registry.names),
                                 registry_name=registry.registry_name,
                                 block_out_channels=tuple(config.discriminator_channels))


def trainable_parameters(vae, config: AutoencoderTrainingConfig) -> list[torch.nn.Parameter]:
    """All of `vae`'s parameters, or with `train_decoder_only` the decoder's and post_quant_conv's.

    The encoder and quant_conv of a decoder-only run get `requires_grad=False`, so autograd builds no graph
    through them and the step costs about the decoder's forward and backward alone.
    """
    if not config.train_decoder_only:
        return list(vae.parameters())
    decoder = [vae.decoder] + ([vae.post_quant_conv] if getattr(vae, "post_quant_conv", None) is not None else [])
    trainable = {id(p) for module in decoder for p in module.parameters()}
    for parameter in vae.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
    return [p for p in vae.parameters() if id(p) in trainable]


def training_dataloader(train_dataset, config: AutoencoderTrainingConfig, labels=None):
    """Shuffled batches, or class-balanced ones (`balance_classes`, which needs one label per example)."""
    sampler = None
    if config.balance_classes:
        if labels is None or len(labels) != len(train_dataset):
            raise ValueError(f"balance_classes needs one label per training example ({len(train_dataset)}), got "
                             f"{'none' if labels is None else len(labels)}")
        sampler = balanced_sampler(labels, config.seed)
    return torch.utils.data.DataLoader(train_dataset, batch_size=config.train_batch_size, shuffle=sampler is None,
                                       sampler=sampler, num_workers=config.dataloader_num_workers,
                                       drop_last=len(train_dataset) >= config.train_batch_size)


def _adam(parameters, config: AutoencoderTrainingConfig):
    return torch.optim.AdamW(parameters, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                             weight_decay=config.adam_weight_decay)


def train_autoencoder(vae, train_dataset, config: AutoencoderTrainingConfig, registry, accelerator=None,
                      validation_dataset=None, on_checkpoint=None, labels=None) -> AutoencoderRun:
    """Trains (or fine-tunes) `vae` to reconstruct `train_dataset` images; saves it in `config.output_dir`.

    Args:
        vae (`AutoencoderKL`): freshly built (`default_autoencoder_config`) or loaded to fine-tune.
        train_dataset: map-style examples with `pixel_values` (3, H, W) in [-1, 1] and `semantic_map`
            (`dermdiff.loops.diffusion.DiffusionExamples` makes them from dermdiff rows).
        config (`AutoencoderTrainingConfig`): run settings.
        registry (`ConditionRegistry`): the data's conditions (the discriminator reads the map).
        accelerator (`Accelerator`, *optional*): built from `config` when None.
        validation_dataset (*optional*): the grid's images; the first training images when None.
        on_checkpoint (`Callable[[str], None]`, *optional*): called on the main process with each complete
            checkpoint folder (e.g. `dermdiff.hub_sync.CheckpointPusher.checkpoint_saved` for `--hub_strategy`).
        labels (*optional*): one integer class per training example, in order; needed by `balance_classes`.

    Returns:
        `AutoencoderRun` with the model whose config holds the measured `scaling_factor`.

    Example:
        >>> vae = AutoencoderKL(**default_autoencoder_config(128))
        >>> run = train_autoencoder(vae, examples, AutoencoderTrainingConfig(output_dir="runs/ae", max_train_steps=2000), reg)
    """
    factor = vae_factor(vae)
    if config.crop_size is not None and config.crop_size % factor:
        raise ValueError(f"crop_size {config.crop_size} must be a multiple of the autoencoder's factor {factor}")
    # 1. accelerator, models, optimisers
    if accelerator is None:
        accelerator = common.build_accelerator(config.output_dir, config.logging_dir, config.mixed_precision, 1,
                                               config.report_to, config.seed)
    rng = common.CheckpointedGenerator(config.seed, accelerator.process_index)
    discriminator = build_discriminator(registry, config, vae.config.in_channels)
    dataloader = training_dataloader(train_dataset, config, labels)
    per_epoch = common.updates_per_epoch(math.ceil(len(dataloader) / accelerator.num_processes), 1)
    max_steps = config.max_train_steps or config.num_epochs * per_epoch
    optimizer = _adam(trainable_parameters(vae, config), config)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=max_steps * accelerator.num_processes)
    ema = None
    if config.use_ema:
        ema = EMAModel(vae.parameters(), decay=config.ema_decay, foreach=True, model_cls=AutoencoderKL,
                       model_config=vae.config)
        ema.to(accelerator.device)
    common.register_pretrained_hooks(accelerator, ["vae", "discriminator"], {"vae_ema": ema} if ema else None)
    if discriminator is not None:
        d_optimizer = _adam(discriminator.parameters(), config)
        vae, discriminator, optimizer, d_optimizer, dataloader, lr_scheduler = accelerator.prepare(
            vae, discriminator, optimizer, d_optimizer, dataloader, lr_scheduler)
    else:
        vae, optimizer, dataloader, lr_scheduler = accelerator.prepare(vae, optimizer, dataloader, lr_scheduler)
    per_epoch = common.updates_per_epoch(len(dataloader), 1)
    num_epochs = math.ceil(max_steps / per_epoch)
    if accelerator.is_main_process:
        accelerator.init_trackers("train_autoencoder",
                                  config={**common.tracker_config(asdict(config)), **config.extra_tracker_config})
    shown = train_dataset if validation_dataset is None else validation_dataset
    validation_images = stack_examples(shown, config.num_validation_images)

    # 2. resume
    position = common.resume(accelerator, config.output_dir, config.resume_from_checkpoint, per_epoch, rng,
                             config.allow_inexact_resume)
    global_step = position.global_step
    logger.info(f"training {max_steps} updates ({num_epochs} epochs of {per_epoch}), {len(train_dataset)} images, "
                f"crops {config.crop_size or 'none'}, discriminator from step {config.discriminator_start}; "
                f"starting at step {global_step}", main_process_only=True)
    bar = common.progress_bar(accelerator, max_steps, global_step)
    model = accelerator.unwrap_model(vae)
    losses: dict = {}
    validation_psnr = None
    # the images every checkpoint's and the final model's scaling_factor is measured on
    scale_images = stack_examples(train_dataset, config.scaling_num_images).to(accelerator.device)
    cpu_start = time.process_time()  # logged as cpu_minutes: this process's CPU time since (re)start

    # 3. train
    for epoch in range(position.epoch, num_epochs):
        vae.train()
        skip = position.batch_in_epoch if epoch == position.epoch else 0
        for batch in common.epoch_batches(accelerator, dataloader, epoch, skip):
            if global_step >= max_steps:
                break
            batch = random_crops(batch, config.crop_size, rng.generator)
            images = batch["pixel_values"]
            reconstruction, rec, kl = reconstruction_terms(vae, images, rng.generator)
            loss = rec + config.kl_weight * kl
            losses = {"rec_l1": rec.item(), "kl": kl.item()}
            use_gan = discriminator is not None and global_step >= config.discriminator_start
            if use_gan:
                # 3a. D step on x_hat.detach(); 3b. freeze D, generator loss with the adaptive weight
                set_requires_grad(discriminator, True)
                real_logits = discriminator(images, batch["semantic_map"]).sample
                fake_logits = discriminator(reconstruction.detach(), batch["semantic_map"]).sample
                d_loss = discriminator_loss(real_logits, fake_logits, config.gan_mode)
                d_optimizer.zero_grad(set_to_none=True)
                accelerator.backward(d_loss)
                d_optimizer.step()
                set_requires_grad(discriminator, False)
                adv = gan_loss(discriminator(reconstruction, batch["semantic_map"]).sample, True, config.gan_mode,
                               for_discriminator=False)
                weight = adaptive_gan_weight(rec, adv, model.decoder.conv_out.weight) * config.discriminator_weight
                loss = loss + weight * adv
                losses.update(d_loss=d_loss.item(), g_adv=adv.item(), adv_weight=weight.item())
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(vae.parameters(), config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            # 4. once per update: EMA, logs, checkpoint, reconstruction grid
            global_step += 1
            if ema is not None:
                ema.step(vae.parameters())
            losses.update(loss=loss.item(), lr=lr_scheduler.get_last_lr()[0],
                          cpu_minutes=(time.process_time() - cpu_start) / 60)
            bar.update(1)
            bar.set_postfix(l1=f"{losses['rec_l1']:.4f}", kl=f"{losses['kl']:.3g}")
            accelerator.log(losses, step=global_step)
            if config.checkpointing_steps and global_step % config.checkpointing_steps == 0:
                if not config.train_decoder_only:  # a decoder-only run keeps the encoder's latents and scale
                    measure_scaling_factors(model, ema, scale_images, config.per_channel_latents)
                saved = common.save_checkpoint(accelerator, config.output_dir, global_step,
                                               config.checkpoints_total_limit, rng)
                if on_checkpoint is not None and accelerator.is_main_process:
                    on_checkpoint(saved)
            if accelerator.is_main_process and config.validation_steps and global_step % config.validation_steps == 0:
                with _EMAWeights(ema, model):
                    validation_psnr = log_reconstructions(accelerator, model, validation_images, global_step,
                                                          config.output_dir)
            if global_step >= max_steps:
                break
        if global_step >= max_steps:
            break

    # 5. final model: EMA weights, measured latent scale, saved with save_pretrained
    bar.close()
    accelerator.wait_for_everyone()
    final = None
    if accelerator.is_main_process:
        final = model.eval()
        if ema is not None:
            ema.copy_to(final.parameters())
        validation_psnr = log_reconstructions(accelerator, final, validation_images, global_step, config.output_dir)
        final.eval()
        if not config.train_decoder_only:
            final.register_to_config(**measured_latent_normalisation(final, scale_images,
                                                                     config.per_channel_latents))
        final.save_pretrained(config.output_dir)
        logger.info(f"saved the autoencoder to {config.output_dir} (scaling_factor "
                    f"{final.config.scaling_factor:.4f}, validation PSNR {validation_psnr:.2f} dB)")
    accelerator.end_training()
    return AutoencoderRun(final, global_step, losses, validation_psnr)
