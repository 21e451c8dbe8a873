"""A pixel-space `UNet2DModel` conditioned on a DermGAN semantic map by channel concatenation.

Ghorbani et al. 2020 and Silva & Georgieva 2024: the model generates a skin image for a semantic map (condition,
where, skin type).
The map enters as its own argument, expanded to model channels by `SemanticMap.to_channels`
(skin-type channel + one one-hot channel per condition), resized with `mode="nearest"` when needed and
concatenated to the noisy image: that says *where* each condition is. What holds for the whole picture —
the skin type and which conditions are present — is also read off the same map and added to the
timestep embedding (`global_conditioning`), so every ResNet block is modulated by it, as a class label
is in class-conditional diffusion. A lone constant input channel is a weak signal for a global property:
without this, short CPU trainings learn the lesion layout long before they learn the skin colour.
Classifier-free guidance uses the all-zero null map (`SemanticMap.null_channels`), which maps to the
null skin-type embedding and no conditions; an optional image-level class embedding gets its own null class.

Code name -> meaning:

| name                    | what it is                                                         |
|-------------------------|--------------------------------------------------------------------|
| `sample`                | noisy image x_t, (B, 3, H, W) in [-1, 1]                          |
| `semantic_map`          | map channels m, (B, 1 + K, H', W'); `None` = null map (unconditional) |
| `class_labels`          | optional image-level condition index 0..K-1; K = healthy; K + 1 = null |
| `skin_embedding`        | Fitzpatrick type 0 (unknown / null map), 1..6 -> a timestep-sized vector |
| `presence_embedding`    | which of the K conditions the map contains (multi-hot) -> a timestep-sized vector |
| `conditions`            | the K condition names; with `registry_name` they rebuild the registry |
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DModel, UNet2DOutput
from torch import nn

from ..conditions import BUILTIN_CONDITIONS, DEFAULT_REGISTRY, ConditionRegistry
from ..semantic_map import SKIN_TYPES, conditions_present_from_channels, skin_type_from_channels


class SemanticUNet2DModel(ModelMixin, ConfigMixin):
    """`UNet2DModel` whose input is the noisy image concatenated with semantic-map channels.

    Args:
        sample_size (`int`, defaults to 32): image height and width.
        in_channels (`int`, defaults to 3): image channels (the map channels are added on top).
        out_channels (`int`, defaults to 3): predicted channels (noise or v).
        conditions (`Sequence[str]`): condition names, in code order (defaults to the `ham10000` registry,
            `DEFAULT_REGISTRY`; `registry.model_kwargs()` gives both arguments for another registry).
        registry_name (`str`, defaults to `"ham10000"`): the registry's name, kept for reports and reloads.
        use_class_embedding (`bool`, defaults to `False`): also embed the image-level condition index
            (K + 2 embeddings: K conditions, healthy, null).
        global_conditioning (`bool`, defaults to `True`): add the map's skin type and the set of conditions it
            contains to the timestep embedding (see the module docstring).
        block_out_channels, layers_per_block, down_block_types, up_block_types, norm_num_groups,
        attention_head_dim, dropout: passed to `UNet2DModel` (see its docs).
        condition_dropout (`float`, *optional*): the null-map probability the model was trained with, recorded
            by the trainer; pipelines refuse guidance for a model that never learned the null map (0).

    Example:
        >>> model = SemanticUNet2DModel(sample_size=16, block_out_channels=(8, 16), norm_num_groups=4,
        ...     down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
        >>> smap = SemanticMap.from_annotations("mel", 3, boxes=[(4, 4, 12, 12)], size=16)  # both ham10000
        >>> eps = model(torch.randn(1, 3, 16, 16), 10, smap.to_channels()[None]).sample
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        conditions: Sequence[str] = BUILTIN_CONDITIONS[DEFAULT_REGISTRY],
        registry_name: str = DEFAULT_REGISTRY,
        use_class_embedding: bool = False,
        global_conditioning: bool = True,
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
        embedding_dim = block_out_channels[0] * 4  # UNet2DModel's timestep embedding width
        self.skin_embedding = nn.Embedding(1 + len(SKIN_TYPES), embedding_dim) if global_conditioning else None
        self.presence_embedding = nn.Linear(len(conditions), embedding_dim) if global_conditioning else None
        self.class_embedding = nn.Embedding(len(conditions) + 2, embedding_dim) if use_class_embedding else None
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
            # our embeddings arrive ready-made and are added to the timestep embedding as they are
            class_embed_type="identity" if global_conditioning or use_class_embedding else None,
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
        semantic_map = semantic_map.to(dtype=sample.dtype, device=sample.device)
        model_input = torch.cat([sample, semantic_map], dim=1)
        embedding = self.global_embedding(semantic_map, class_labels)
        return self.unet(model_input, timestep, class_labels=embedding, return_dict=return_dict)

    def global_embedding(self, semantic_map: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor | None:
        """The vector added to the timestep embedding: skin type + conditions present (+ class label)."""
        embedding = None
        if self.skin_embedding is not None:
            skin_type = skin_type_from_channels(semantic_map)  # 0 for unknown and for the null map
            present = conditions_present_from_channels(semantic_map)
            # the map's dtype is the compute dtype; the weight's may be a storage dtype (layerwise fp8 casting)
            embedding = self.skin_embedding(skin_type.clamp(0, len(SKIN_TYPES))) + self.presence_embedding(
                present.to(semantic_map.dtype)
            )
        if self.class_embedding is not None:
            if class_labels is None:
                class_labels = torch.full((semantic_map.shape[0],), self.null_class_label, dtype=torch.long)
            class_embedding = self.class_embedding(class_labels.to(semantic_map.device))
            embedding = class_embedding if embedding is None else embedding + class_embedding
        return None if embedding is None else embedding.to(semantic_map.dtype)
