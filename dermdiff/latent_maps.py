"""Semantic maps and masks brought from the image grid to the latent grid (f x f pixels per latent cell).

A latent DermDiff UNet denoises a (C, H / f, W / f) latent; its map must sit on the same grid, and its
codes must stay the codes the model was trained on, not blends of them. So each channel is reduced the
way its meaning allows:

| channels                | reduction                          | why                                                |
|-------------------------|------------------------------------|----------------------------------------------------|
| 0: skin type / 6        | mean over the f x f block, snapped | constant over an image, so the mean is the code;   |
|                         | to the nearest code k / 6          | snapping removes float rounding (0 = unknown/null) |
| 1..K: condition one-hot | majority vote over the f x f block | each cell keeps exactly one code (one-hot, or none |
|                         | (background counts as a vote;      | = healthy skin), as in training at pixel level;    |
|                         | ties go to the condition)          | area fractions would invent in-between codes, and  |
|                         |                                    | nearest would take the block's top-left pixel and  |
|                         |                                    | shift every boundary by (f - 1) / 2 pixels         |

Each f x f block is read as a small map through `SemanticMap`'s channel views (`skin_type_from_channels`,
`dominant_condition_from_channels` with the background voting) and written back with `channels_from_labels`,
so the channel layout stays known in `dermdiff.semantic_map` only.

The lesion-transfer mask is reduced differently (`mask_to_latent_grid`): a cell is regenerated if any of
its pixels is, because the decoder's receptive field spreads each latent cell over its neighbours, and a
latent blend that kept a cell partly covered by the new lesion would cut it off. The pipeline pastes the
photo back outside the pixel mask at the end, so the photo is exact there regardless.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .semantic_map import channels_from_labels, dominant_condition_from_channels, skin_type_from_channels


def vae_factor(vae) -> int:
    """Pixels per latent cell along a side of an `AutoencoderKL`: 2 ** (number of encoder levels - 1); 1 for None."""
    return 1 if vae is None else 2 ** (len(vae.config.block_out_channels) - 1)


def _check_grid(tensor: torch.Tensor, factor: int, what: str) -> None:
    if factor < 1:
        raise ValueError(f"latent factor must be >= 1, got {factor}")
    if tensor.ndim != 4:
        raise ValueError(f"{what} must be (B, C, H, W), got shape {tuple(tensor.shape)}")
    height, width = tensor.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"{what} is {height} x {width}, not a multiple of the VAE's factor {factor}")


def map_to_latent_grid(channels: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 1 + K, H, W) map channels -> (B, 1 + K, H / f, W / f) with exact codes (see the module table).

    Example:
        >>> smap = SemanticMap.from_annotations("melanoma", 5, boxes=[(32, 32, 96, 96)], size=128)
        >>> map_to_latent_grid(smap.to_channels()[None], 4).shape
        torch.Size([1, 8, 32, 32])
    """
    _check_grid(channels, factor, "semantic map")
    if factor == 1:
        return channels
    batch, _, height, width = channels.shape
    grid = (batch, height // factor, width // factor)
    cells = _cells(channels, factor)
    skin_type = skin_type_from_channels(cells).reshape(grid)
    condition = dominant_condition_from_channels(cells, healthy_label=-1, background_votes=True).reshape(grid)
    return channels_from_labels(skin_type, condition, like=channels)


def _cells(tensor: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * H / f * W / f, C, f, f): each latent cell's f x f block as a small map, row-major."""
    batch, channels, height, width = tensor.shape
    blocks = tensor.reshape(batch, channels, height // factor, factor, width // factor, factor)
    return blocks.permute(0, 2, 4, 1, 3, 5).reshape(-1, channels, factor, factor)


def mask_to_latent_grid(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 1, H, W) region to regenerate -> (B, 1, H / f, W / f): a cell is regenerated if any pixel is."""
    _check_grid(mask, factor, "mask")
    return F.max_pool2d(mask.float(), factor).to(mask.dtype) if factor > 1 else mask


def latent_normalisation(vae) -> tuple[list[float], list[float]]:
    """(shift, scale) per latent channel: what the UNet denoises is (z - shift) * scale, z the VAE's latent.

    diffusers' three conventions, read from the VAE's config: `latents_mean` / `latents_std` (per channel,
    SDXL-style: shift = mean, scale = scaling_factor / std), else `shift_factor` (SD3: one shift for all
    channels), else `scaling_factor` alone (SD 1.x and dermdiff's default: shift 0). Per-channel statistics
    matter when channels differ in width: the 27.7 dB HAM10000 autoencoder's scaled latents have channel
    stds of about 1.5 / 0.29 / 0.61 / 0.31, so one scale leaves the narrow channels drowned in noise early
    in the forward process and the wide one late (`train_autoencoder.py --per_channel_latents` writes them).
    """
    config = vae.config
    channels = int(config.latent_channels)
    factor = float(config.scaling_factor)
    mean, std = config.get("latents_mean"), config.get("latents_std")
    if mean is not None and std is not None:
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"vae latents_mean / latents_std have {len(mean)} / {len(std)} values but "
                             f"latent_channels is {channels}")
        return [float(m) for m in mean], [factor / float(s) for s in std]
    shift = float(config.get("shift_factor") or 0.0)
    return [shift] * channels, [factor] * channels


def _per_channel(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)


def to_model_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """VAE latents z -> what the UNet denoises, (z - shift) * scale (`latent_normalisation`)."""
    shift, scale = latent_normalisation(vae)
    return ((latents.float() - _per_channel(shift, latents)) * _per_channel(scale, latents)).to(latents.dtype)


def from_model_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_model_latents`: what the UNet drew -> VAE latents for the decoder."""
    shift, scale = latent_normalisation(vae)
    return (latents.float() / _per_channel(scale, latents) + _per_channel(shift, latents)).to(latents.dtype)


def record_vae(unet, vae) -> None:
    """Writes into the UNet's config which latents it learned: the VAE's factor f, `scaling_factor` and the
    per-channel (shift, scale) of `latent_normalisation`.

    The pipeline compares them with the VAE it is given (`check_unet_matches_vae`), so a UNet is never
    run on latents of another scale or grid without an error.
    """
    shift, scale = latent_normalisation(vae)
    unet.register_to_config(
        latent_downsampling=vae_factor(vae), latent_scaling_factor=float(vae.config.scaling_factor),
        latent_shift=shift, latent_scale=scale,
    )


def unclip_for_latents(scheduler) -> bool:
    """Turns off a scheduler's `clip_sample` for denoising latents; returns whether it was on.

    DDPM and DDIM clip the predicted clean sample to [-1, 1] by default: right for pixels, which live there,
    wrong for latents, which `scaling_factor` brings to unit standard deviation, so about a third of their
    values lie outside [-1, 1]. Clipped at every step, a latent sample decodes to texture: seen on the
    HAM10000 latent 128 px model (DDIM 25 steps, guidance 2, same seeds), clipping drew orange-blue speckle
    where the unclipped sampler drew skin with the lesion asked for. Stable Diffusion's schedulers ship with
    `clip_sample=False` for the same reason. Schedulers without the option (DPM-Solver++, Euler, UniPC) are
    left alone.
    """
    if not scheduler.config.get("clip_sample", False):
        return False
    scheduler.register_to_config(clip_sample=False)
    return True


def trained_normalisation(unet_config, channels: int) -> tuple[list[float], list[float]] | None:
    """The per-channel (shift, scale) a latent UNet was trained with (`record_vae`); None for a pixel UNet.

    A UNet saved before per-channel normalisation existed recorded only `latent_scaling_factor`: it learned
    (z - 0) * scaling_factor.
    """
    scale = getattr(unet_config, "latent_scaling_factor", None)
    if scale is None:
        return None
    shift = getattr(unet_config, "latent_shift", None) or [0.0] * channels
    return list(shift), list(getattr(unet_config, "latent_scale", None) or [scale] * channels)


def _all_close(a: list[float], b: list[float], rel: float = 1e-6) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rel * max(abs(x), 1e-6) for x, y in zip(a, b))


def check_unet_matches_vae(unet_config, vae, image_size: int | None = None) -> None:
    """Raises a one-line `ValueError` when a UNet cannot denoise this VAE's latents (or needs a VAE and has none).

    Args:
        unet_config: the UNet's config (`in_channels`, `out_channels`, `sample_size`, and the
            `latent_downsampling` / `latent_scaling_factor` that `record_vae` wrote at training time).
        vae (`AutoencoderKL` or None): the autoencoder.
        image_size (`int`, *optional*): the image side; the UNet's `sample_size` must be image_size / f.
    """
    trained_factor = getattr(unet_config, "latent_downsampling", None)
    trained_scale = getattr(unet_config, "latent_scaling_factor", None)
    if vae is None:
        if trained_factor is not None:
            raise ValueError(f"vae is missing: this unet denoises latents of an AutoencoderKL (factor "
                             f"{trained_factor}, scaling_factor {trained_scale}); pass vae=")
        return
    latent = vae.config.latent_channels
    for name in ("in_channels", "out_channels"):
        if getattr(unet_config, name) != latent:
            raise ValueError(f"unet {name} is {getattr(unet_config, name)} but the VAE's latent_channels is {latent}")
    factor = vae_factor(vae)
    if trained_factor is not None and trained_factor != factor:
        raise ValueError(f"vae downsamples by {factor} but the unet was trained on latents of a factor-"
                         f"{trained_factor} VAE")
    if trained_scale is not None and abs(trained_scale - vae.config.scaling_factor) > 1e-6 * abs(trained_scale):
        raise ValueError(f"vae scaling_factor is {vae.config.scaling_factor} but the unet was trained on latents "
                         f"scaled by {trained_scale}")
    trained = trained_normalisation(unet_config, latent)
    if trained is not None:
        for name, learned, given in zip(("shift", "scale"), trained, latent_normalisation(vae)):
            if not _all_close(learned, given):
                raise ValueError(f"vae per-channel latent {name} is {[round(v, 6) for v in given]} but the unet was "
                                 f"trained on {[round(v, 6) for v in learned]} (latents_mean / latents_std / "
                                 "shift_factor of the VAE's config)")
    if image_size is not None:
        size = unet_config.sample_size
        size = size if isinstance(size, int) else size[0]
        if image_size % factor or size != image_size // factor:
            raise ValueError(
                f"unet sample_size is {size} but {image_size} px images give {image_size / factor:g} x "
                f"{image_size / factor:g} latents with this VAE (factor {factor})"
            )
