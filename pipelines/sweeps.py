"""DermGAN's figure sweeps for any map-conditioned pipeline: one map on six skin types, one map growing.

Ghorbani et al. 2020, figures 5 and 6: the same semantic map rendered on Fitzpatrick types I..VI, and the same map with
its lesion boxes scaled up. Both work with every pipeline that takes `semantic_map=` (DermDiffPipeline,
DermGANPipeline); the maps come from `SemanticMap.skin_type_sweep` / `size_sweep`, the grid from
`diffusers.utils.make_image_grid`.

Example:
    >>> images = skin_type_sweep(pipe, smap, generator=torch.manual_seed(0), save_to="sweep.png", with_maps=True)
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from diffusers.utils import make_image_grid
from PIL import Image

from dermdiff.semantic_map import SemanticMap


def _sweep(pipe, maps: list[SemanticMap], save_to, with_maps: bool, call_kwargs: dict) -> list[Image.Image]:
    for name in ("semantic_map", "condition", "skin_type", "boxes", "num_images_per_prompt", "output_type"):
        if name in call_kwargs:
            raise ValueError(f"{name}= is set by the sweep; pass only sampling arguments (steps, generator, ...)")
    generator = call_kwargs.pop("generator", None)
    if isinstance(generator, torch.Generator):
        # one generator state per image, so every column starts from the same noise: only the map changes
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        generator = [torch.Generator(generator.device).manual_seed(seed) for _ in maps]
    images = pipe(semantic_map=maps, generator=generator, output_type="pil", **call_kwargs).images
    if save_to is not None:
        rows = [images]
        if with_maps:
            rows.append([smap.to_pil().resize(image.size, Image.NEAREST) for smap, image in zip(maps, images)])
        grid = make_image_grid([image for row in rows for image in row], rows=len(rows), cols=len(maps))
        os.makedirs(os.path.dirname(os.path.abspath(save_to)), exist_ok=True)
        grid.save(save_to)
    return images


def skin_type_sweep(
    pipe, semantic_map: SemanticMap, save_to: str | None = None, with_maps: bool = False, **call_kwargs
) -> list[Image.Image]:
    """Six images of one map on skin types I..VI (DermGAN figure 5).

    Args:
        pipe: a map-conditioned pipeline (`DermDiffPipeline`, `DermGANPipeline`).
        semantic_map (`SemanticMap`): the map; its skin type is replaced.
        save_to (`str`, *optional*): write the grid (one row, or two with `with_maps`) to this file.
        with_maps (`bool`, defaults to `False`): add the maps as a second row of the grid.
        call_kwargs: passed to the pipeline (e.g. `num_inference_steps`, `generator`); a `torch.Generator`
            is split so that all six images start from the same noise.
    """
    return _sweep(pipe, semantic_map.skin_type_sweep(), save_to, with_maps, call_kwargs)


def size_sweep(
    pipe,
    semantic_map: SemanticMap,
    factors: Sequence[float] = (0.5, 0.75, 1.0, 1.5, 2.0),
    save_to: str | None = None,
    with_maps: bool = False,
    **call_kwargs,
) -> list[Image.Image]:
    """One image per scale factor of the map's lesion regions (DermGAN figure 6); arguments as `skin_type_sweep`."""
    return _sweep(pipe, semantic_map.size_sweep(factors), save_to, with_maps, call_kwargs)
