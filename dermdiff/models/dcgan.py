"""Furger et al.'s unconditional generator (2020, section 3.2.1) and the truncation trick (4.1.1).

A 100-d standard-normal vector goes through a dense layer to a small stack of feature maps shaped like
the target image (e.g. 20 x 15 for 640 x 480 hands), then stride-2 deconvolutions double the resolution,
halving the features at each stage, each followed by batch norm and LeakyReLU; a final convolution with
tanh gives RGB. The hands generator adds an unstrided convolution after each deconvolution.

Code name -> paper name:

| code                             | paper (Furger et al. 2020)                                                 |
|----------------------------------|----------------------------------------------------------------------------|
| `latent_dim` (100)               | "100-dimensional input vector" z ~ N(0, I)                                 |
| `dense_channels` (64)            | "dense layer to produce 64 initial feature maps" (Table 1: h x w x 64)     |
| `sample_size` / 2**num_upsamples | the dense layer's spatial shape (Table 1, "Dense layers")                  |
| `num_upsamples`                  | "Deconv" column of Table 1                                                 |
| `base_channels`                  | generator "initial features" of Table 2 (width of the first deconvolution) |
| `refine_convs`                   | "unstrided convolutions after each deconvolution" (hands only)             |
| `truncate_latents`               | the truncation trick: components beyond the threshold are re-sampled       |

`DCGAN_PRESETS` holds the three settings of Tables 1 and 2 (full hands, skin patches, skin lesions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

# Tables 1 and 2 of Furger et al. 2020: sample_size is (height, width).
DCGAN_PRESETS: dict[str, dict] = {
    "hands": {"sample_size": (480, 640), "num_upsamples": 5, "base_channels": 512, "refine_convs": True},
    "patches": {"sample_size": (128, 128), "num_upsamples": 4, "base_channels": 1024},
    "lesions": {"sample_size": (256, 256), "num_upsamples": 5, "base_channels": 512},
}


@dataclass
class DCGANGeneratorOutput(BaseOutput):
    """Args: sample (`torch.Tensor`): generated images (B, 3, H, W) in [-1, 1]."""

    sample: torch.Tensor


def _as_hw(size) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(size)
    if len(size) != 2:
        raise ValueError(f"sample_size must be an int or (height, width), got {size}")
    return (int(size[0]), int(size[1]))


def truncate_latents(
    latents: torch.Tensor, threshold: float, generator: torch.Generator | None = None, max_rounds: int = 10_000
) -> torch.Tensor:
    """The truncation trick: re-sample every component of `latents` with |z| > threshold until it is inside.

    Components already inside are kept exactly, so the trick trades variety for quality only where a
    vector is unlikely (Furger et al. 2020 use a threshold of 0.1 for hands, Table 3).

    Args:
        latents (`torch.Tensor`): standard-normal latents, any shape.
        threshold (`float`): positive bound on |z|.
        generator (`torch.Generator`, *optional*): source of the re-samples.
        max_rounds (`int`, defaults to 10000): rejection rounds before giving up (each round draws all
            remaining components at once; at threshold 0.01 a round accepts ~0.8 % of them).

    Returns:
        A new tensor; the input is not modified.
    """
    if not threshold > 0:
        raise ValueError(f"truncation threshold must be > 0, got {threshold}")
    latents = latents.clone()
    device = generator.device if generator is not None else latents.device
    outside = latents.abs() > threshold
    for _ in range(max_rounds):
        count = int(outside.sum())
        if count == 0:
            return latents
        draws = torch.randn(count, generator=generator, device=device, dtype=latents.dtype).to(latents.device)
        latents[outside] = draws
        outside = latents.abs() > threshold
    raise ValueError(f"truncation at threshold {threshold} did not converge in {max_rounds} rounds")


class DCGANGenerator(ModelMixin, ConfigMixin):
    """Unconditional DCGAN-style generator of Furger et al. 2020.

    Args:
        sample_size (`int` or `(height, width)`, defaults to 128): output resolution; each side must be
            divisible by 2 ** num_upsamples, which fixes the dense layer's aspect-ratio-shaped output.
        out_channels (`int`, defaults to 3): image channels.
        latent_dim (`int`, defaults to 100): length of z.
        dense_channels (`int`, defaults to 64): feature maps produced by the dense layer.
        num_upsamples (`int`, defaults to 4): stride-2 deconvolutions.
        base_channels (`int`, defaults to 1024): features of the first deconvolution, halved per stage.
        refine_convs (`bool`, defaults to `False`): add an unstrided 3x3 convolution after each deconvolution.
        negative_slope (`float`, defaults to 0.2): LeakyReLU slope.

    Example:
        >>> gen = DCGANGenerator(sample_size=(8, 16), num_upsamples=2, base_channels=16, dense_channels=8)
        >>> gen(torch.randn(4, 100)).sample.shape  # (4, 3, 8, 16)
        >>> DCGANGenerator(**DCGAN_PRESETS["hands"])  # 640 x 480 hands
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | Sequence[int] = 128,
        out_channels: int = 3,
        latent_dim: int = 100,
        dense_channels: int = 64,
        num_upsamples: int = 4,
        base_channels: int = 1024,
        refine_convs: bool = False,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        height, width = _as_hw(sample_size)
        if num_upsamples < 1:
            raise ValueError(f"num_upsamples must be >= 1, got {num_upsamples}")
        factor = 2**num_upsamples
        if height % factor or width % factor or height < factor or width < factor:
            raise ValueError(
                f"sample_size {(height, width)} must be a positive multiple of 2 ** num_upsamples = {factor}"
            )
        if base_channels % 2 ** (num_upsamples - 1):
            raise ValueError(
                f"base_channels={base_channels} must be divisible by 2 ** (num_upsamples - 1) = "
                f"{2 ** (num_upsamples - 1)} (features halve at each stage)"
            )
        if latent_dim < 1 or dense_channels < 1:
            raise ValueError(f"latent_dim and dense_channels must be >= 1, got {latent_dim}, {dense_channels}")
        self.initial_size = (height // factor, width // factor)

        # 1. dense layer z -> (dense_channels, h0, w0), normalised and activated like the convolutions
        self.dense = nn.Linear(latent_dim, dense_channels * self.initial_size[0] * self.initial_size[1])
        self.dense_norm = nn.Sequential(nn.BatchNorm2d(dense_channels), nn.LeakyReLU(negative_slope))

        # 2. deconvolution stages: x2 resolution, features base, base/2, base/4, ...
        stages = []
        in_ch = dense_channels
        for i in range(num_upsamples):
            width_i = base_channels // 2**i
            layers = [
                nn.ConvTranspose2d(in_ch, width_i, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width_i),
                nn.LeakyReLU(negative_slope),
            ]
            if refine_convs:
                layers += [
                    nn.Conv2d(width_i, width_i, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(width_i),
                    nn.LeakyReLU(negative_slope),
                ]
            stages.append(nn.Sequential(*layers))
            in_ch = width_i
        self.up_blocks = nn.ModuleList(stages)

        # 3. "a regular convolution with 3 output feature maps is activated with tanh"
        self.conv_out = nn.Conv2d(in_ch, out_channels, kernel_size=3, padding=1)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> DCGANGeneratorOutput | tuple:
        """Maps latents `sample` (B, latent_dim) to images (B, out_channels, H, W) in [-1, 1]."""
        if sample.ndim != 2 or sample.shape[1] != self.config.latent_dim:
            raise ValueError(f"latents must be (B, {self.config.latent_dim}), got {tuple(sample.shape)}")
        hidden = self.dense(sample.to(self.dtype))
        hidden = hidden.view(sample.shape[0], self.config.dense_channels, *self.initial_size)
        hidden = self.dense_norm(hidden)
        for block in self.up_blocks:
            hidden = block(hidden)
        image = torch.tanh(self.conv_out(hidden))
        if not return_dict:
            return (image,)
        return DCGANGeneratorOutput(sample=image)
