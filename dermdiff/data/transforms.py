"""Rows of a dermdiff dataset -> the tensors models take: the one home of the resize policy.

`pixel_values` is the image as a float (3, H, W) tensor in [-1, 1]; `semantic_map` is
`SemanticMap.to_channels()` of the row's map at the same resolution, (1 + K, H, W); `label` is the int.
Every model (diffusion, autoencoder, DermGAN, DCGAN, lesion edit) is trained through this module.

Resize policy: the whole picture is stretched to the model's size, pixels bicubic, map nearest (codes
never blend). An int `resolution` means a square; a `(height, width)` pair is taken as it is.
Why stretching and not shorter side + centre crop (what diffusers' `train_unconditional.py` does):
- a crop can cut a lesion out of the map while the row's label still names it, so the model would
  learn "melanoma" for healthy skin; stretching keeps every region, so label and map agree;
- everything else in dermdiff already sees the whole picture stretched: the preprocessing resize
  (`records.build_dataset`), the hard-case synthesis (`case_source`), the FID/KID references
  (`metrics.sources`, clean-fid's bicubic resizer) and the memorisation search. Training on crops would
  make the generator's distribution differ from the reference it is measured against;
- dermatology photos are close to square (HAM10000 is 4:3), so the stretch is mild.
A horizontal flip, when asked for, flips pixels and map together.

Classifiers keep the same geometry (the whole picture stretched, no crop) with another filter:
`resize_pixels` (bilinear, antialiased, on tensors); why is in its docstring.

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

RESIZE_FILTER = Image.BICUBIC


def target_size(resolution) -> tuple[int, int]:
    """(height, width) of an int (square) or a (height, width) pair; `ValueError` for anything else."""
    if isinstance(resolution, (int, np.integer)):
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        return int(resolution), int(resolution)
    try:
        size = tuple(int(v) for v in resolution)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"resolution must be an int or (height, width) of positive ints, got {resolution!r}")
    return size


def pixel_values(image: Image.Image, resolution) -> torch.Tensor:
    """(3, H, W) float tensor in [-1, 1] of a PIL image stretched to `resolution` (bicubic)."""
    height, width = target_size(resolution)
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), RESIZE_FILTER)
    return torch.from_numpy(np.asarray(image, dtype=np.float32).transpose(2, 0, 1).copy()) / 127.5 - 1.0


def map_channels(semantic_map, resolution, registry, box_only: bool = False) -> torch.Tensor:
    """(1 + K, H, W) channels of an RGB map stretched to `resolution` (nearest).

    With `box_only` every region is drawn as its filled bounding box (measured after the resize); that
    needs the regions, so only then is the map decoded into a `SemanticMap`; else the fast path
    `SemanticMap.channels_from_rgb` reads the channels straight off the RGB codes.
    """
    size = target_size(resolution)
    if box_only:
        smap = SemanticMap.decode(semantic_map, registry)
        return (smap.resize(size) if smap.size != size else smap).to_box_map().to_channels()
    return SemanticMap.channels_from_rgb(semantic_map, registry, size=size)


def check_same_size(image: Image.Image, semantic_map) -> None:
    """A row's map must be drawn on its image: `ValueError` naming both sizes otherwise."""
    if isinstance(semantic_map, Image.Image) and semantic_map.size != image.size:
        raise ValueError(f"semantic map size {semantic_map.size[::-1]} differs from the image's {image.size[::-1]} "
                         "(height, width)")


def example_to_tensors(example: dict, resolution, registry, flip: bool = False) -> dict:
    """One row (`image`, `semantic_map`, `label`) -> `{"pixel_values", "semantic_map", "label"}` tensors."""
    registry = get_registry(registry)
    check_same_size(example["image"], example["semantic_map"])
    pixels = pixel_values(example["image"], resolution)
    channels = map_channels(example["semantic_map"], resolution, registry)
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
    target_size(resolution)  # validates resolution early
    rng = torch.Generator().manual_seed(seed) if seed is not None else None

    def transform(batch: dict) -> dict:
        count = len(batch["image"])
        flips = torch.rand(count, generator=rng) < 0.5 if random_flip else torch.zeros(count, dtype=torch.bool)
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


def resize_pixels(pixels: torch.Tensor, resolution) -> torch.Tensor:
    """A (..., 3, H, W) float image tensor stretched to `resolution` (bilinear, antialiased): the classifier's resize.

    The geometry is the policy above (`target_size`: the whole picture stretched, so no crop cuts the lesion
    out of a labelled image); the filter differs because a classifier resizes tensors, not PIL images: its
    inputs may be tensors already (a torch `Dataset` of tensors, generated batches) and its augmentations
    run on tensors, and a PIL bicubic resize would first quantise a float image to 8 bits. The result is
    torchvision's `v2.Resize(antialias=True)`, bit for bit, which the classifier loop has always used, so
    trained classifiers keep their numbers. Normalisation is not part of it: `SkinClassifier` maps [-1, 1]
    to its `image_mean` / `image_std` (ImageNet's by default) itself, so every model takes [-1, 1] input.
    Returns `pixels` itself when it already has the size.
    """
    from torchvision.transforms.v2 import functional as TF

    height, width = target_size(resolution)
    if tuple(pixels.shape[-2:]) == (height, width):
        return pixels
    return TF.resize(pixels, [height, width], antialias=True)
