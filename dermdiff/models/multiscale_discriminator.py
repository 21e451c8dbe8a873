"""Furger et al.'s multi-scale discriminator (2020, section 3.2.3; after Wang et al. 2018, pix2pixHD).

Two discriminators of the same architecture see the image and a 2x downscaled copy, so one attends to
fine texture and the other to larger structure; their outputs are averaged. Each is a stack of stride-2
convolutions with batch norm and LeakyReLU, features doubling per layer, then a dense layer with one
output. The number of convolutions matches the generator's deconvolutions (Table 1); the translation
experiments use 4.

Code name -> paper name:

| code                  | paper (Furger et al. 2020)                                                      |
|-----------------------|---------------------------------------------------------------------------------|
| `num_scales` (2)      | "two individual discriminators process an input image and a downscaled version" |
| `num_layers`          | number of strided convolutions (= generator deconvolutions)                     |
| `base_channels`       | discriminator "initial features" of Table 2, doubled per convolution            |
| `sample` -> `.sample` | averaged prediction (logit) per image                                           |
| `.per_scale`          | the individual discriminators' predictions                                      |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .dcgan import _as_hw


@dataclass
class MultiScaleDiscriminatorOutput(BaseOutput):
    """Args:
    sample (`torch.Tensor`): the averaged logit per image, (B,).
    per_scale (`torch.Tensor`): each discriminator's logit, (B, num_scales); scale 0 = full resolution.
    """

    sample: torch.Tensor
    per_scale: torch.Tensor


class _ScaleDiscriminator(nn.Module):
    """Strided conv + BN + LeakyReLU stack, then one dense output neuron."""

    def __init__(self, in_channels, size, num_layers, base_channels, negative_slope):
        super().__init__()
        layers = []
        in_ch = in_channels
        for i in range(num_layers):
            width = base_channels * 2**i
            layers += [
                nn.Conv2d(in_ch, width, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(negative_slope),
            ]
            in_ch = width
        self.convs = nn.Sequential(*layers)
        out_h, out_w = size[0] // 2**num_layers, size[1] // 2**num_layers
        self.dense = nn.Linear(in_ch * out_h * out_w, 1)

    def forward(self, sample):
        return self.dense(self.convs(sample).flatten(1)).squeeze(1)


class MultiScaleDiscriminator(ModelMixin, ConfigMixin):
    """Averaged predictions of discriminators on the image and its downscaled copies.

    Args:
        sample_size (`int` or `(height, width)`, defaults to 128): input resolution (the dense layers
            need it); each side must be divisible by 2 ** (num_layers + num_scales - 1).
        in_channels (`int`, defaults to 3): image channels.
        num_scales (`int`, defaults to 2): discriminators; scale s sees the image downscaled by 2 ** s.
        num_layers (`int`, defaults to 4): strided convolutions per discriminator.
        base_channels (`int`, defaults to 64): features of the first convolution (doubled per layer).
        negative_slope (`float`, defaults to 0.2): LeakyReLU slope.

    Example:
        >>> disc = MultiScaleDiscriminator(sample_size=16, num_layers=2, base_channels=8)
        >>> disc(torch.randn(4, 3, 16, 16)).sample.shape  # (4,)
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | Sequence[int] = 128,
        in_channels: int = 3,
        num_scales: int = 2,
        num_layers: int = 4,
        base_channels: int = 64,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        height, width = _as_hw(sample_size)
        if num_scales < 1 or num_layers < 1 or base_channels < 1:
            raise ValueError(
                "num_scales, num_layers and base_channels must be >= 1, "
                f"got {num_scales}, {num_layers}, {base_channels}"
            )
        factor = 2 ** (num_layers + num_scales - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"sample_size {(height, width)} must be divisible by 2 ** (num_layers + num_scales - 1) = {factor}"
            )
        self.discriminators = nn.ModuleList(
            _ScaleDiscriminator(
                in_channels, (height // 2**s, width // 2**s), num_layers, base_channels, negative_slope
            )
            for s in range(num_scales)
        )

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> MultiScaleDiscriminatorOutput | tuple:
        """Logits for images `sample` (B, C, H, W) at the configured `sample_size`."""
        expected = _as_hw(self.config.sample_size)
        if sample.ndim != 4 or tuple(sample.shape[-2:]) != expected or sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"sample must be (B, {self.config.in_channels}, {expected[0]}, {expected[1]}), "
                f"got {tuple(sample.shape)}"
            )
        predictions = []
        for scale, discriminator in enumerate(self.discriminators):
            if scale:
                sample = F.avg_pool2d(sample, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            predictions.append(discriminator(sample))
        per_scale = torch.stack(predictions, dim=1)
        averaged = per_scale.mean(dim=1)
        if not return_dict:
            return (averaged, per_scale)
        return MultiScaleDiscriminatorOutput(sample=averaged, per_scale=per_scale)
