"""A pixel-space `UNet2DModel` conditioned on a DermGAN semantic map by channel concatenation.

Seeds 002 and 004: the model generates a skin image for a semantic map (condition, where, skin type).
The map enters as its own argument, expanded to model channels by `SemanticMap.to_channels`
(skin-type channel + one one-hot channel per condition), resized with `mode="nearest"` when needed and
concatenated to the noisy image. Classifier-free guidance uses the all-zero null map
(`SemanticMap.null_channels`); an optional image-level class embedding gets its own null class.

Code name -> meaning:

| name                    | what it is                                                         |
|-------------------------|--------------------------------------------------------------------|
| `sample`                | noisy image x_t, (B, 3, H, W) in [-1, 1]                          |
| `semantic_map`          | map channels m, (B, 1 + K, H', W'); `None` = null map (unconditional) |
| `class_labels`          | optional image-level condition index 0..K-1; K = healthy; K + 1 = null |
| `conditions`            | the K condition names; with `registry_name` they rebuild the registry |
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DModel, UNet2DOutput

from ..conditions import BUILTIN_CONDITIONS, ConditionRegistry


class SemanticUNet2DModel(ModelMixin, ConfigMixin):
    """`UNet2DModel` whose input is the noisy image concatenated with semantic-map channels.

    Args:
        sample_size (`int`, defaults to 32): image height and width.
        in_channels (`int`, defaults to 3): image channels (the map channels are added on top).
        out_channels (`int`, defaults to 3): predicted channels (noise or v).
        conditions (`Sequence[str]`): condition names, in code order (defaults to the phantom registry).
        registry_name (`str`, defaults to `"phantom"`): the registry's name, kept for reports and reloads.
        use_class_embedding (`bool`, defaults to `False`): also embed the image-level condition index
            (K + 2 embeddings: K conditions, healthy, null).
        block_out_channels, layers_per_block, down_block_types, up_block_types, norm_num_groups,
        attention_head_dim, dropout: passed to `UNet2DModel` (see its docs).
        condition_dropout (`float`, *optional*): the null-map probability the model was trained with, recorded
            by the trainer; pipelines refuse guidance for a model that never learned the null map (0).

    Example:
        >>> model = SemanticUNet2DModel(sample_size=16, block_out_channels=(8, 16), norm_num_groups=4,
        ...     down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
        >>> smap = SemanticMap.from_annotations("nevus", 3, boxes=[(4, 4, 12, 12)], size=16, registry="phantom")
        >>> eps = model(torch.randn(1, 3, 16, 16), 10, smap.to_channels()[None]).sample
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        conditions: Sequence[str] = BUILTIN_CONDITIONS["phantom"],
        registry_name: str = "phantom",
        use_class_embedding: bool = False,
        block_out_channels: Sequence[int] = (32, 64, 128),
        layers_per_block: int = 1,
        down_block_types: Sequence[str] = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types: Sequence[str] = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups: int = 8,
        attention_head_dim: int = 8,
        dropout: float = 0.0,
        condition_dropout: float | None = None,
    ):
        super().__init__()
        if not conditions:
            raise ValueError("conditions must name at least one condition")
        if any(width % norm_num_groups for width in block_out_channels):
            raise ValueError(
                f"every block_out_channels entry must be divisible by norm_num_groups={norm_num_groups}, "
                f"got {tuple(block_out_channels)}"
            )
        self.map_channels = 1 + len(conditions)
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=in_channels + self.map_channels,
            out_channels=out_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            norm_num_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
            dropout=dropout,
            num_class_embeds=len(conditions) + 2 if use_class_embedding else None,
        )

    @property
    def registry(self) -> ConditionRegistry:
        return ConditionRegistry(list(self.config.conditions), name=self.config.registry_name)

    @property
    def null_class_label(self) -> int:
        """Class index meaning "no class information" (classifier-free guidance)."""
        return len(self.config.conditions) + 1

    @property
    def healthy_class_label(self) -> int:
        return len(self.config.conditions)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        semantic_map: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DOutput | tuple:
        """Predicts noise (or v) for `sample` at `timestep` under `semantic_map` (None = null map)."""
        batch, _, height, width = sample.shape
        if semantic_map is None:
            semantic_map = sample.new_zeros(batch, self.map_channels, height, width)
        if semantic_map.ndim != 4 or semantic_map.shape[1] != self.map_channels:
            raise ValueError(
                f"semantic_map must be (B, {self.map_channels}, H, W) (1 skin-type + {self.map_channels - 1} "
                f"condition channels), got {tuple(semantic_map.shape)}"
            )
        if semantic_map.shape[0] != batch:
            raise ValueError(f"semantic_map batch {semantic_map.shape[0]} does not match sample batch {batch}")
        if semantic_map.shape[-2:] != (height, width):
            semantic_map = F.interpolate(semantic_map.float(), size=(height, width), mode="nearest")
        model_input = torch.cat([sample, semantic_map.to(dtype=sample.dtype, device=sample.device)], dim=1)
        if self.config.use_class_embedding:
            if class_labels is None:
                class_labels = torch.full((batch,), self.null_class_label, device=sample.device, dtype=torch.long)
        else:
            class_labels = None
        return self.unet(model_input, timestep, class_labels=class_labels, return_dict=return_dict)
