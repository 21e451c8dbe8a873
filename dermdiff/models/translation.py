"""Furger et al.'s image translation generator (2020, section 3.2.2), for adding / removing lesions.

A U-Net encoder with 2 strided convolutions, 4 residual blocks at the bottleneck (32 x 32 for 128 x 128
patches), 2 upsampling stages and skip connections by concatenation. The network outputs a residual
that is added to the input photo, so it only has to learn the change. For targeted editing (section
4.2) the lesion mask is an extra input channel; for the untargeted CycleGAN (4.3) there is none.

Code name -> paper name:

| code                      | paper (Furger et al. 2020)                                      |
|---------------------------|-----------------------------------------------------------------|
| `TranslationGenerator`    | image translation generator G (G_XY, G_YX in the CycleGAN)      |
| `sample`                  | input photo x                                                   |
| `mask`, `mask_channels=1` | segmentation y, G(x y) in eq. 2 (targeted modification)         |
| `block_out_channels`      | encoder widths: stem + one per strided convolution (2)          |
| `num_residual_blocks` (4) | residual blocks translating the bottleneck features (He et al.) |
| `upsample="transposed"`   | the decoder's deconvolutions (`"resize_conv"` also available)   |
| `.residual`, `.sample`    | generated residual r, and the output x + r                      |
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

from .gan_blocks import NORM_TYPES, UPSAMPLE_TYPES, check_choice, check_widths, norm_layer, upsample_layer


@dataclass
class TranslationGeneratorOutput(BaseOutput):
    """Args:
    sample (`torch.Tensor`): the edited image, input + residual, (B, C, H, W) (not clamped).
    residual (`torch.Tensor`): the generated residual.
    """

    sample: torch.Tensor
    residual: torch.Tensor


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            norm_layer(norm, channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            norm_layer(norm, channels),
        )

    def forward(self, hidden):
        return hidden + self.block(hidden)


class TranslationGenerator(ModelMixin, ConfigMixin):
    """U-Net + residual-block generator whose output is a residual added to the input photo.

    Args:
        in_channels (`int`, defaults to 3): photo channels (also the output channels).
        mask_channels (`int`, defaults to 0): 1 for targeted editing (the lesion mask is an input), 0 for
            the untargeted CycleGAN generators.
        block_out_channels (`Sequence[int]`, defaults to `(256, 512, 1024)`): stem width then one width
            per strided convolution; the last is the bottleneck width (Furger et al. 2020, Table 2 gives 1024 as the
            generator's features, read here as the widest layer).
        num_residual_blocks (`int`, defaults to 4): residual blocks at the bottleneck.
        upsample (`str`, defaults to `"transposed"`): the decoder's x2 layers, `"transposed"` (the paper's
            deconvolutions) or `"resize_conv"`.
        norm (`str`, defaults to `"batch"`): `"batch"`, `"instance"` or `"none"`.
        zero_init_residual (`bool`, defaults to `True`): zero the output convolution so the untrained
            model is the identity and training starts from "change nothing". The paper does not say how
            it initialises; with PyTorch's default init the untrained residual is per-pixel noise (about
            0.06 RMS in [-1, 1] units) over the whole photo, and on the phantom (benchmarks/gan_phantom.py)
            the adversarial game amplified that noise instead of removing it, so edits moved away from the
            target domain. The output convolution still gets gradients, so the model leaves the identity
            at the first update. `False` gives the default init (for ablations).

    Example:
        >>> gen = TranslationGenerator(mask_channels=1, block_out_channels=(8, 16, 32), num_residual_blocks=1)
        >>> edited = gen(photo, mask=mask).sample  # photo (B, 3, H, W), mask (B, 1, H, W)
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        mask_channels: int = 0,
        block_out_channels: Sequence[int] = (256, 512, 1024),
        num_residual_blocks: int = 4,
        upsample: str = "transposed",
        norm: str = "batch",
        zero_init_residual: bool = True,
    ):
        super().__init__()
        widths = check_widths("block_out_channels", block_out_channels)
        if len(widths) < 2:
            raise ValueError(f"block_out_channels needs a stem width and at least one strided level, got {widths}")
        if mask_channels not in (0, 1):
            raise ValueError(f"mask_channels must be 0 (untargeted) or 1 (targeted), got {mask_channels}")
        if num_residual_blocks < 0:
            raise ValueError(f"num_residual_blocks must be >= 0, got {num_residual_blocks}")
        check_choice("upsample", upsample, UPSAMPLE_TYPES)
        check_choice("norm", norm, NORM_TYPES)

        # 1. encoder: stem at full resolution, then stride-2 convolutions
        self.conv_in = nn.Sequential(
            nn.Conv2d(in_channels + mask_channels, widths[0], kernel_size=3, padding=1),
            norm_layer(norm, widths[0]),
            nn.LeakyReLU(0.2),
        )
        self.down_blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i - 1], widths[i], kernel_size=4, stride=2, padding=1),
                norm_layer(norm, widths[i]),
                nn.LeakyReLU(0.2),
            )
            for i in range(1, len(widths))
        )
        # 2. bottleneck translation
        self.mid_blocks = nn.Sequential(*(_ResidualBlock(widths[-1], norm) for _ in range(num_residual_blocks)))
        # 3. decoder: each stage upsamples, then concatenates the encoder features of its resolution
        self.up_blocks = nn.ModuleList()
        in_ch = widths[-1]
        for i in range(len(widths) - 1, 0, -1):
            self.up_blocks.append(
                nn.Sequential(
                    upsample_layer(in_ch, widths[i - 1], upsample), norm_layer(norm, widths[i - 1]), nn.ReLU()
                )
            )
            in_ch = 2 * widths[i - 1]
        self.conv_out = nn.Conv2d(in_ch, in_channels, kernel_size=3, padding=1)
        if zero_init_residual:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(
        self, sample: torch.Tensor, mask: torch.Tensor | None = None, return_dict: bool = True
    ) -> TranslationGeneratorOutput | tuple:
        """Edits photos `sample` (B, C, H, W) in [-1, 1]; `mask` (B, 1, H, W), 1 = edit here, if targeted."""
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(f"sample must be (B, {self.config.in_channels}, H, W), got {tuple(sample.shape)}")
        factor = 2 ** (len(self.config.block_out_channels) - 1)
        if sample.shape[-2] % factor or sample.shape[-1] % factor:
            raise ValueError(f"sample size {tuple(sample.shape[-2:])} must be divisible by {factor}")
        hidden = sample.to(self.dtype)  # the compute dtype, also under layerwise casting
        if self.config.mask_channels:
            if mask is None:
                raise ValueError("this generator is targeted (mask_channels=1): pass a mask")
            if mask.ndim == 3:
                mask = mask[:, None]
            if mask.shape[0] != sample.shape[0] or mask.shape[1] != 1:
                raise ValueError(f"mask must be (B, 1, H, W) matching sample, got {tuple(mask.shape)}")
            mask = mask.to(dtype=hidden.dtype, device=hidden.device)
            if mask.shape[-2:] != sample.shape[-2:]:
                mask = F.interpolate(mask, size=sample.shape[-2:], mode="nearest")
            hidden = torch.cat([hidden, mask], dim=1)
        elif mask is not None:
            raise ValueError("this generator is untargeted (mask_channels=0); it takes no mask")

        hidden = self.conv_in(hidden)
        skips = [hidden]
        for block in self.down_blocks:
            hidden = block(hidden)
            skips.append(hidden)
        skips.pop()
        hidden = self.mid_blocks(hidden)
        for block in self.up_blocks:
            hidden = torch.cat([block(hidden), skips.pop()], dim=1)
        residual = self.conv_out(hidden)
        edited = sample.to(residual.dtype) + residual
        if not return_dict:
            return (edited, residual)
        return TranslationGeneratorOutput(sample=edited, residual=residual)
