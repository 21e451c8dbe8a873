"""Semantic-map inputs of the map-conditioned pipelines (`DermDiffPipeline`, `DermGANPipeline`).

Every map-conditioned pipeline takes the same map arguments, so that nobody has to draw a map by hand
and every pipeline rejects the same mistakes with the same message:

- `semantic_map=`: a `SemanticMap`, an RGB map image (PIL or (H, W, 3) uint8 array, decoded with the
  model's registry), a list of those, or a float channel tensor (C, H, W) / (B, C, H, W) as
  `SemanticMap.to_channels` makes it;
- or `condition=` (+ `skin_type=`, `boxes=` or `mask=`): the map is drawn with
  `SemanticMap.from_annotations`. `condition` and `skin_type` may be lists (one map per entry; a single
  value is repeated). A condition with neither boxes nor a mask gets one centred box of half the image
  side (`default_box`). `skin_type` alone means healthy skin of that type.
- `num_images_per_prompt`: each map is repeated that many times (map 0 n times, then map 1, ...).

The encoding itself lives in `dermdiff.semantic_map`; this module only validates and batches.

Example:
    >>> maps = resolve_semantic_maps(condition="melanoma", skin_type=5, size=32, registry="phantom")
    >>> channels = map_channels(maps, size=32, registry="phantom", num_images_per_prompt=2)
    >>> channels.shape
    torch.Size([2, 6, 32, 32])
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from dermdiff.conditions import ConditionRegistry, get_registry
from dermdiff.semantic_map import SemanticMap, _as_size, _to_bool_mask

MapInput = Union[SemanticMap, Image.Image, np.ndarray, torch.Tensor, Sequence]


def default_box(size) -> tuple[int, int, int, int]:
    """A centred box of half the image side: where a lesion goes when only the condition is named."""
    height, width = _as_size(size)
    return (width // 4, height // 4, width - width // 4, height - height // 4)


def to_mask_array(mask, size=None, what: str = "mask") -> np.ndarray:
    """A boolean (H, W) array from a PIL / numpy / torch mask (lesion = white / 1 / True).

    Raises `ValueError` when its size is not `size` (height, width).
    """
    if isinstance(mask, (list, tuple)):
        raise ValueError(f"{what} must be one (H, W) mask (PIL image, array or tensor), got a {type(mask).__name__}")
    array = _to_bool_mask(mask)
    if size is not None and array.shape != _as_size(size):
        raise ValueError(f"{what} is {array.shape} (height, width) but the image is {_as_size(size)}")
    return array


def _as_list(value) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _check_map(smap: SemanticMap, size: tuple[int, int], registry: ConditionRegistry, index: int) -> SemanticMap:
    if smap.registry != registry:
        raise ValueError(
            f"semantic map {index} uses registry {smap.registry.registry_name!r} {smap.registry.names} but the model "
            f"was trained on {registry.registry_name!r} {registry.names}; build the map with registry=pipe.unet.registry"
        )
    if smap.size != size:
        raise ValueError(
            f"semantic map {index} is {smap.size} (height, width) but the model generates {size}; "
            f"use smap.resize({size}) or draw the map at the model's size"
        )
    return smap


def _decode(item, size, registry, index: int) -> SemanticMap:
    if isinstance(item, SemanticMap):
        return _check_map(item, size, registry, index)
    if isinstance(item, Image.Image):
        item = item.convert("RGB") if item.mode != "RGB" else item
    elif isinstance(item, torch.Tensor):
        raise ValueError(f"semantic map {index}: pass channel tensors as one (B, C, H, W) tensor, not in a list")
    elif not isinstance(item, np.ndarray):
        raise ValueError(
            f"semantic map {index} is a {type(item).__name__}; expected a SemanticMap, an RGB PIL image, an "
            f"(H, W, 3) uint8 array or a (B, C, H, W) channel tensor"
        )
    decoded = SemanticMap.decode(item, registry=registry, source=f"semantic map {index}")
    return _check_map(decoded, size, registry, index)


def resolve_semantic_maps(
    semantic_map: MapInput | None = None,
    condition=None,
    skin_type=None,
    boxes=None,
    mask=None,
    *,
    size,
    registry,
) -> list[SemanticMap] | torch.Tensor | None:
    """The maps a pipeline call asks for, checked against the model's size and registry.

    Returns a list of `SemanticMap`s, a (B, C, H, W) channel tensor when channels were passed, or `None`
    when no map information was given at all (unconditional sampling).

    Raises:
        `ValueError`: both `semantic_map` and annotations given; a map of another size or registry; an
        unknown condition or skin type; a box outside the image; a mask of the wrong size; channels of
        the wrong shape.
    """
    size, registry = _as_size(size), get_registry(registry)
    annotations = {"condition": condition, "skin_type": skin_type, "boxes": boxes, "mask": mask}
    given = [name for name, value in annotations.items() if value is not None]
    if semantic_map is not None:
        if given:
            raise ValueError(f"pass either semantic_map or {'/'.join(given)}, not both")
        if isinstance(semantic_map, torch.Tensor):
            return _check_channels(semantic_map, size, registry)
        items = semantic_map if isinstance(semantic_map, (list, tuple)) else [semantic_map]
        if not items:
            raise ValueError("semantic_map is an empty list")
        return [_decode(item, size, registry, index) for index, item in enumerate(items)]
    if not given:
        return None
    conditions, skin_types = _as_list(condition), _as_list(skin_type)
    count = max(len(conditions), len(skin_types))
    for name, values in (("condition", conditions), ("skin_type", skin_types)):
        if len(values) not in (1, count):
            raise ValueError(f"{name} has {len(values)} entries but another argument has {count}; use 1 or {count}")
    conditions, skin_types = conditions * (count // len(conditions)), skin_types * (count // len(skin_types))
    lesion_mask = None if mask is None else to_mask_array(mask, size)
    maps = []
    for cond, skin in zip(conditions, skin_types):
        if cond is None and (boxes is not None or lesion_mask is not None):
            raise ValueError("boxes or a mask were given without a condition; name the condition")
        where = boxes
        if cond is not None and boxes is None and lesion_mask is None:
            where = [default_box(size)]
        smap = SemanticMap.from_annotations(cond, skin, boxes=where, mask=lesion_mask, size=size, registry=registry)
        maps.append(smap)
    return maps


def _check_channels(channels: torch.Tensor, size, registry) -> torch.Tensor:
    expected = SemanticMap.num_channels(registry)
    if channels.ndim == 3:
        channels = channels[None]
    if channels.ndim != 4 or channels.shape[1] != expected:
        raise ValueError(
            f"a channel semantic_map is (B, {expected}, H, W) (1 skin-type + {expected - 1} condition channels of "
            f"registry {registry.registry_name!r}), got {tuple(channels.shape)}; pass RGB maps as SemanticMap or PIL"
        )
    if not torch.is_floating_point(channels):
        raise ValueError(f"channel semantic_map must be a float tensor, got {channels.dtype}")
    if tuple(channels.shape[-2:]) != size:
        raise ValueError(f"channel semantic_map is {tuple(channels.shape[-2:])} but the model generates {size}")
    return channels


def map_channels(
    maps: list[SemanticMap] | torch.Tensor,
    *,
    size,
    registry,
    num_images_per_prompt: int = 1,
    dtype=None,
    device=None,
) -> torch.Tensor:
    """(B * num_images_per_prompt, C, H, W) model channels of `resolve_semantic_maps`'s result."""
    if num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
    if isinstance(maps, torch.Tensor):
        channels = _check_channels(maps, _as_size(size), get_registry(registry))
    else:
        channels = SemanticMap.stack_channels(maps)
    channels = channels.to(device=device, dtype=dtype or torch.float32)
    if num_images_per_prompt > 1:
        channels = channels.repeat_interleave(num_images_per_prompt, dim=0)
    return channels

