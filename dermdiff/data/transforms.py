"""Rows of a dermdiff dataset -> the tensors models take, as diffusers' training examples prepare them.

`pixel_values` is the image as a float (3, H, W) tensor in [-1, 1]; `semantic_map` is
`SemanticMap.to_channels()` of the row's map at the same resolution, (1 + K, H, W); `label` is the int.
An int `resolution` resizes the shorter side (bilinear for pixels, nearest for the map, so codes never
blend) and centre-crops a square; a `(height, width)` pair resizes straight to it. A horizontal flip,
when asked for, flips pixels and map together.

Example:
    >>> dataset = load_dataset_dir("outputs/phantom").with_transform(model_transform(32, registry_of(dataset)))
    >>> batch = dataset[:4]
    >>> batch["pixel_values"].shape, batch["semantic_map"].shape
    (torch.Size([4, 3, 32, 32]), torch.Size([4, 6, 32, 32]))
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..conditions import get_registry
from ..semantic_map import SemanticMap


def example_to_tensors(example: dict, resolution, registry, flip: bool = False) -> dict:
    """One row (`image`, `semantic_map`, `label`) -> `{"pixel_values", "semantic_map", "label"}` tensors."""
    registry = get_registry(registry)
    image = example["image"].convert("RGB")
    smap = SemanticMap.decode(example["semantic_map"], registry)
    if smap.size != (image.height, image.width):
        raise ValueError(f"semantic map size {smap.size} differs from the image's {(image.height, image.width)}")
    size, box = _plan(image.height, image.width, resolution)
    image = image.resize((size[1], size[0]), Image.BILINEAR).crop(box)
    smap = smap.resize(size).crop(box)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).transpose(2, 0, 1).copy()) / 127.5 - 1.0
    channels = smap.to_channels()
    if flip:
        pixels, channels = pixels.flip(-1), channels.flip(-1)
    return {"pixel_values": pixels, "semantic_map": channels, "label": int(example["label"])}


def model_transform(resolution, registry, random_flip: bool = False, seed: int | None = None):
    """A batch transform for `Dataset.with_transform`: stacks `pixel_values`, `semantic_map` and `label`.

    Args:
        resolution (`int` or `(height, width)`): output size (see the module docstring).
        registry: the dataset's registry (`registry_of(dataset)`); fixes the number of map channels.
        random_flip (`bool`, defaults to `False`): flip half the rows horizontally (pixels and map together).
        seed (`int`, *optional*): seeds the flips, so a fresh transform with the same seed flips the same rows.
    """
    registry = get_registry(registry)
    _plan(1, 1, resolution)  # validates resolution early
    generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def transform(batch: dict) -> dict:
        count = len(batch["image"])
        flips = torch.rand(count, generator=generator) < 0.5 if random_flip else torch.zeros(count, dtype=torch.bool)
        rows = [
            example_to_tensors({name: batch[name][i] for name in ("image", "semantic_map", "label")}, resolution,
                               registry, bool(flips[i]))
            for i in range(count)
        ]
        return {
            "pixel_values": torch.stack([row["pixel_values"] for row in rows]),
            "semantic_map": torch.stack([row["semantic_map"] for row in rows]),
            "label": torch.tensor([row["label"] for row in rows], dtype=torch.long),
        }

    return transform


def _plan(height: int, width: int, resolution) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(resize size (h, w), crop box) for a source size and a resolution."""
    if isinstance(resolution, (int, np.integer)):
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        scale = resolution / min(height, width)
        size = (max(resolution, round(height * scale)), max(resolution, round(width * scale)))
        top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        return size, (left, top, left + resolution, top + resolution)
    target = tuple(int(v) for v in resolution)
    if len(target) != 2 or min(target) < 1:
        raise ValueError(f"resolution must be an int or (height, width) of positive ints, got {resolution!r}")
    return target, (0, 0, target[1], target[0])
