"""DermGAN (Ghorbani et al. 2020): a pix2pix U-Net from semantic maps to skin images, and its PatchGAN.

The generator maps the semantic map (skin type + condition + where) to an image. It is pix2pix's U-Net
(stride-2 4x4 convolutions down, skip connections by concatenation, dropout as the source of
randomness) with Ghorbani et al.'s (2020) change: every transposed convolution is replaced by a nearest-neighbour
resize followed by a convolution, to mitigate the checkerboard effect. `upsample="transposed"` restores
pix2pix's layers for the ablation of Ghorbani et al. 2020, Table 1.

The discriminator is pix2pix's fully convolutional PatchGAN on (map, image) pairs. It returns the
activations of its second-to-last layer, which DermGAN's feature-matching loss compares between real
and synthetic images.

Code name -> paper name:

| code                                 | paper (Ghorbani et al. 2020)                                       |
|--------------------------------------|--------------------------------------------------------------------|
| `DermGANGenerator`                   | generator, "modified U-Net" (Fig. 3)                               |
| `semantic_map` (B, 1 + K, H, W)      | semantic map m (R = skin colour, G/B = condition in its ROI),      |
|                                      | expanded by `SemanticMap.to_channels`                              |
| `upsample="resize_conv"`             | "nearest-neighbor resizing layer followed by a convolution"        |
| `upsample="transposed"`              | the deconvolution of original pix2pix (ablation "No checkerboard   |
|                                      | effect mitigation")                                                |
| `dropout`, `num_dropout_blocks`      | pix2pix's dropout noise, used at train and test time               |
| `noise_channels`                     | optional explicit noise z concatenated to m (pix2pix's option)     |
| `PatchGANDiscriminator`              | discriminator, "fully-convolutional architecture"                  |
| `return_features=True` -> `features` | "output of the discriminator's second to last convolutional layer" |
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

from ..conditions import BUILTIN_CONDITIONS, DEFAULT_REGISTRY, ConditionRegistry
from .gan_blocks import NORM_TYPES, UPSAMPLE_TYPES, check_choice, check_widths, norm_layer, upsample_layer


@dataclass
class DermGANGeneratorOutput(BaseOutput):
    """Args: sample (`torch.Tensor`): generated images (B, 3, H, W) in [-1, 1]."""

    sample: torch.Tensor


@dataclass
class PatchDiscriminatorOutput(BaseOutput):
    """Args:
    sample (`torch.Tensor`): real/fake logits per patch, (B, 1, H', W').
    features (`torch.Tensor` or None): second-to-last layer activations (with `return_features=True`).
    """

    sample: torch.Tensor
    features: torch.Tensor | None = None


def _resize_map(semantic_map: torch.Tensor, size, like: torch.Tensor) -> torch.Tensor:
    semantic_map = semantic_map.to(dtype=like.dtype, device=like.device)
    if semantic_map.shape[-2:] != tuple(size):
        semantic_map = F.interpolate(semantic_map, size=tuple(size), mode="nearest")
    return semantic_map


def _check_map(semantic_map: torch.Tensor, channels: int) -> None:
    if semantic_map.ndim != 4 or semantic_map.shape[1] != channels:
        raise ValueError(
            f"semantic_map must be (B, {channels}, H, W) (1 skin-type + {channels - 1} condition channels, "
            f"see SemanticMap.to_channels), got {tuple(semantic_map.shape)}"
        )


class DermGANGenerator(ModelMixin, ConfigMixin):
    """pix2pix U-Net generator with resize + conv upsampling (Ghorbani et al. 2020).

    Args:
        sample_size (`int`, defaults to 256): image height and width (Ghorbani et al. 2020 train on 256 x 256 crops);
            any size divisible by 2 ** len(block_out_channels) works at inference.
        out_channels (`int`, defaults to 3): image channels.
        conditions (`Sequence[str]`): condition names in code order; the map has 1 + len(conditions)
            channels. Defaults to the `ham10000` registry (`DEFAULT_REGISTRY`).
        registry_name (`str`, defaults to `"ham10000"`): the registry's name, kept to rebuild it.
        block_out_channels (`Sequence[int]`, defaults to pix2pix's unet_256 widths): encoder widths, one
            stride-2 level each; the decoder mirrors them.
        upsample (`str`, defaults to `"resize_conv"`): `"resize_conv"` (DermGAN) or `"transposed"` (pix2pix).
        norm (`str`, defaults to `"batch"`): `"batch"`, `"instance"` or `"none"`.
        dropout (`float`, defaults to 0.5): dropout probability in the innermost decoder blocks.
        num_dropout_blocks (`int`, defaults to 3): how many innermost decoder blocks use dropout.
        noise_channels (`int`, defaults to 0): channels of N(0, 1) noise concatenated to the map.

    Example:
        >>> gen = DermGANGenerator(sample_size=16, block_out_channels=(8, 16, 32))
        >>> smap = SemanticMap.from_annotations("mel", 3, boxes=[(4, 4, 12, 12)], size=16)  # both ham10000
        >>> image = gen(smap.to_channels()[None]).sample  # (1, 3, 16, 16)
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 256,
        out_channels: int = 3,
        conditions: Sequence[str] = BUILTIN_CONDITIONS[DEFAULT_REGISTRY],
        registry_name: str = DEFAULT_REGISTRY,
        block_out_channels: Sequence[int] = (64, 128, 256, 512, 512, 512, 512, 512),
        upsample: str = "resize_conv",
        norm: str = "batch",
        dropout: float = 0.5,
        num_dropout_blocks: int = 3,
        noise_channels: int = 0,
    ):
        super().__init__()
        if not conditions:
            raise ValueError("conditions must name at least one condition")
        widths = check_widths("block_out_channels", block_out_channels)
        check_choice("upsample", upsample, UPSAMPLE_TYPES)
        check_choice("norm", norm, NORM_TYPES)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0 <= num_dropout_blocks <= len(widths):
            raise ValueError(f"num_dropout_blocks must be in [0, {len(widths)}], got {num_dropout_blocks}")
        if noise_channels < 0:
            raise ValueError(f"noise_channels must be >= 0, got {noise_channels}")
        if sample_size % 2 ** len(widths):
            raise ValueError(
                f"sample_size={sample_size} must be divisible by 2 ** {len(widths)} (one halving per "
                f"block_out_channels entry)"
            )
        self.map_channels = 1 + len(conditions)
        use_bias = norm != "batch"  # batch norm has its own shift

        # 1. encoder: level i halves the resolution; pix2pix puts no norm on the first and the innermost
        self.down_blocks = nn.ModuleList()
        in_ch = self.map_channels + noise_channels
        for i, width in enumerate(widths):
            layers = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(in_ch, width, kernel_size=4, stride=2, padding=1, bias=use_bias))
            if 0 < i < len(widths) - 1:
                layers.append(norm_layer(norm, width))
            self.down_blocks.append(nn.Sequential(*layers))
            in_ch = width

        # 2. decoder: up_blocks[j] undoes down level n-1-j; its input is the previous up output
        #    concatenated with the matching encoder output (except the innermost, which has no skip)
        self.up_blocks = nn.ModuleList()
        n = len(widths)
        for j in range(n):
            level = n - 1 - j
            in_ch = widths[level] if j == 0 else 2 * widths[level]
            if level == 0:
                self.up_blocks.append(nn.Sequential(nn.ReLU(), upsample_layer(in_ch, out_channels, upsample)))
            else:
                self.up_blocks.append(
                    nn.Sequential(
                        nn.ReLU(),
                        upsample_layer(in_ch, widths[level - 1], upsample, bias=use_bias),
                        norm_layer(norm, widths[level - 1]),
                    )
                )

    @property
    def registry(self) -> ConditionRegistry:
        return ConditionRegistry(list(self.config.conditions), name=self.config.registry_name)

    def _dropout(self, hidden: torch.Tensor, stochastic: bool, generator: torch.Generator | None) -> torch.Tensor:
        """pix2pix dropout, drawn from `generator` so seeded pipelines are reproducible."""
        p = self.config.dropout
        if not stochastic or p == 0.0:
            return hidden
        keep = torch.rand(hidden.shape, generator=generator, device=_generator_device(generator, hidden))
        return hidden * (keep.to(hidden.device) >= p).to(hidden.dtype) / (1.0 - p)

    def forward(
        self,
        semantic_map: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        stochastic: bool | None = None,
        return_dict: bool = True,
    ) -> DermGANGeneratorOutput | tuple:
        """Generates images for `semantic_map` (B, 1 + K, H, W).

        Args:
            semantic_map (`torch.Tensor`): map channels from `SemanticMap.to_channels` / `stack_channels`.
            noise (`torch.Tensor`, *optional*): (B, noise_channels, H, W); drawn from `generator` if omitted.
            generator (`torch.Generator`, *optional*): source of the noise and dropout masks.
            stochastic (`bool`, *optional*): apply dropout; defaults to `self.training`. pix2pix and
                `DermGANPipeline` keep it on at inference, where it is the only source of variety.
            return_dict (`bool`, defaults to `True`): return a `DermGANGeneratorOutput` or a tuple.
        """
        _check_map(semantic_map, self.map_channels)
        height, width = semantic_map.shape[-2:]
        factor = 2 ** len(self.config.block_out_channels)
        if height % factor or width % factor:
            raise ValueError(f"semantic_map size {(height, width)} must be divisible by {factor}")
        stochastic = self.training if stochastic is None else stochastic
        dtype = self.dtype  # the compute dtype, also under layerwise (fp8 storage) casting
        hidden = semantic_map.to(dtype=dtype)
        if self.config.noise_channels:
            if noise is None:
                shape = (hidden.shape[0], self.config.noise_channels, height, width)
                noise = torch.randn(shape, generator=generator, device=_generator_device(generator, hidden))
            hidden = torch.cat([hidden, noise.to(device=hidden.device, dtype=dtype)], dim=1)

        skips = []
        for block in self.down_blocks:
            hidden = block(hidden)
            skips.append(hidden)
        skips.pop()  # the innermost output is the decoder's input, not a skip
        for j, block in enumerate(self.up_blocks):
            hidden = block(hidden)
            if skips:
                if j < self.config.num_dropout_blocks:
                    hidden = self._dropout(hidden, stochastic, generator)
                hidden = torch.cat([hidden, skips.pop()], dim=1)
        sample = torch.tanh(hidden)
        if not return_dict:
            return (sample,)
        return DermGANGeneratorOutput(sample=sample)


def _generator_device(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


class PatchGANDiscriminator(ModelMixin, ConfigMixin):
    """pix2pix's PatchGAN on the channel concatenation of a semantic map and an image.

    Args:
        in_channels (`int`, defaults to 3): image channels.
        conditions (`Sequence[str]`): condition names; the map has 1 + len(conditions) channels.
        registry_name (`str`, defaults to `"ham10000"`): the registry's name.
        block_out_channels (`Sequence[int]`, defaults to `(64, 128, 256, 512)`): widths of the 4x4
            convolutions; all but the last have stride 2 (pix2pix's 70 x 70 "basic" PatchGAN). The last
            one's activations are the feature-matching layer; a final 4x4 convolution gives the logits.
        norm (`str`, defaults to `"batch"`): `"batch"`, `"instance"` or `"none"`.

    Example:
        >>> disc = PatchGANDiscriminator(block_out_channels=(8, 16))
        >>> out = disc(image, semantic_map, return_features=True)  # out.sample logits, out.features
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        conditions: Sequence[str] = BUILTIN_CONDITIONS[DEFAULT_REGISTRY],
        registry_name: str = DEFAULT_REGISTRY,
        block_out_channels: Sequence[int] = (64, 128, 256, 512),
        norm: str = "batch",
    ):
        super().__init__()
        if not conditions:
            raise ValueError("conditions must name at least one condition")
        widths = check_widths("block_out_channels", block_out_channels)
        check_choice("norm", norm, NORM_TYPES)
        self.map_channels = 1 + len(conditions)
        use_bias = norm != "batch"
        layers = []
        in_ch = in_channels + self.map_channels
        for i, width in enumerate(widths):
            stride = 1 if i == len(widths) - 1 and len(widths) > 1 else 2
            layers.append(nn.Conv2d(in_ch, width, kernel_size=4, stride=stride, padding=1, bias=i == 0 or use_bias))
            if i > 0:
                layers.append(norm_layer(norm, width))
            layers.append(nn.LeakyReLU(0.2))
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(in_ch, 1, kernel_size=4, stride=1, padding=1)

    @staticmethod
    def min_sample_size(block_out_channels: Sequence[int] = (64, 128, 256, 512)) -> int:
        """The smallest image side that leaves a patch map of at least 1 x 1 (4x4 convolutions, padding 1).

        A stride-2 convolution halves the side (floor); a stride-1 one takes one pixel off. With k stride-2
        and m stride-1 convolutions (the last feature layer and `conv_out`) a side s gives s // 2**k - m.
        """
        halvings = max(len(block_out_channels) - 1, 1)
        trims = (1 if len(block_out_channels) > 1 else 0) + 1
        return 2**halvings * (trims + 1)

    def forward(
        self,
        sample: torch.Tensor,
        semantic_map: torch.Tensor,
        return_features: bool = False,
        return_dict: bool = True,
    ) -> PatchDiscriminatorOutput | tuple:
        """Logits per patch for (map, image) pairs; `return_features` adds the second-to-last activations."""
        _check_map(semantic_map, self.map_channels)
        if semantic_map.shape[0] != sample.shape[0]:
            raise ValueError(
                f"semantic_map batch {semantic_map.shape[0]} does not match sample batch {sample.shape[0]}"
            )
        semantic_map = _resize_map(semantic_map, sample.shape[-2:], sample)
        features = self.features(torch.cat([semantic_map, sample], dim=1))
        logits = self.conv_out(features)
        features = features if return_features else None
        if not return_dict:
            return (logits, features)
        return PatchDiscriminatorOutput(sample=logits, features=features)
