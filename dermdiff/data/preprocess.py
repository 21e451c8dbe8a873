"""The two crops of the seeds: DermGAN's ROI-centred random crop and Furger's skin-patch extraction.

Both act on an image together with its `SemanticMap` (and mask, when there is one) and cut all of
them with the same box, so the map stays aligned with the pixels. Both are seeded: the same seed
gives the same crops. Each has a per-image function and a `*_dataset` version that runs through
`datasets.Dataset.map` (per-row seeds come from `(seed, row index)`, so batching and `num_proc`
do not change the result).

DermGAN (Ghorbani et al. 2020, section 2): "a simple heuristic that crops a random window around an ROI or a
group of adjacent ROIs while removing the presence of background information". Here:

1. the map's regions whose boxes lie within `merge_distance` (a fraction of the image side) of each
   other form groups; one group is drawn at random;
2. a square window of side `context * max(group width, group height)` is drawn, `context` uniform in
   the given range and the side capped by the image;
3. the window is placed at a random position that still contains the whole group (centred on it
   when the group is wider than the window); everything outside, the background, is cut away.

Furger et al. (2020, section 4.1.2): patches "of skin only (no background) with a specified amount
of skin being afflicted", e.g. 10-80 % of the skin pixels lesion, or 0 % for healthy skin. Here
every window on a grid (step `stride`) qualifies if its skin fraction reaches `min_skin_fraction`
and its lesion fraction (lesion pixels / skin pixels) lies in `lesion_fraction`; up to
`max_patches` of them are drawn at random. Without a skin mask every pixel counts as skin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import datasets
import numpy as np
from PIL import Image

from ..semantic_map import SemanticMap
from .files import mask_image, resize_mask
from .info import registry_of


class Crop(NamedTuple):
    """One cut: the pixels, the map and mask cut with the same `box` (x0, y0, x1, y1 in the source)."""

    image: Image.Image
    semantic_map: SemanticMap
    mask: np.ndarray | None
    box: tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------------------------
# DermGAN ROI-centred crop
# --------------------------------------------------------------------------------------------------------------
def roi_groups(boxes: Sequence[Sequence[int]], distance: float) -> list[list[int]]:
    """Indices of boxes grouped by adjacency: boxes closer than `distance` pixels (both axes) join."""
    parent = list(range(len(boxes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[i], boxes[j]
            gap_x = max(ax0, bx0) - min(ax1, bx1)
            gap_y = max(ay0, by0) - min(ay1, by1)
            if gap_x <= distance and gap_y <= distance:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(boxes)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def roi_crop_box(
    boxes: Sequence[Sequence[int]],
    size: tuple[int, int],
    seed=None,
    context: tuple[float, float] = (1.2, 2.0),
    merge_distance: float = 0.1,
) -> tuple[int, int, int, int]:
    """The DermGAN crop window (x0, y0, x1, y1) for ROI `boxes` in an image of `size` (height, width).

    With no ROI (healthy skin) the window is a random square of the image's shorter side.
    """
    low, high = context
    if not 1.0 <= low <= high:
        raise ValueError(f"context must satisfy 1 <= low <= high (the window holds the ROIs), got {context}")
    if merge_distance < 0:
        raise ValueError(f"merge_distance must be >= 0 (a fraction of the image side), got {merge_distance}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    height, width = size
    limit = min(height, width)
    if not boxes:
        x0, y0 = int(rng.integers(0, width - limit + 1)), int(rng.integers(0, height - limit + 1))
        return x0, y0, x0 + limit, y0 + limit
    groups = roi_groups(boxes, merge_distance * max(height, width))
    group = [boxes[i] for i in groups[int(rng.integers(len(groups)))]]
    gx0, gy0 = min(b[0] for b in group), min(b[1] for b in group)
    gx1, gy1 = max(b[2] for b in group), max(b[3] for b in group)
    side = round(max(gx1 - gx0, gy1 - gy0) * rng.uniform(low, high))
    side = max(1, min(side, limit))
    x0 = _place(gx0, gx1, side, width, rng)
    y0 = _place(gy0, gy1, side, height, rng)
    return x0, y0, x0 + side, y0 + side


def _place(start: int, stop: int, side: int, extent: int, rng: np.random.Generator) -> int:
    """A window start in [0, extent - side] that keeps [start, stop) inside, or centres on it if too wide."""
    low, high = max(0, stop - side), min(start, extent - side)
    if low > high:
        return int(np.clip(round((start + stop) / 2 - side / 2), 0, extent - side))
    return int(rng.integers(low, high + 1))


def roi_crop(
    image: Image.Image,
    semantic_map: SemanticMap,
    mask: np.ndarray | None = None,
    seed=None,
    context: tuple[float, float] = (1.2, 2.0),
    merge_distance: float = 0.1,
    output_size=None,
) -> Crop:
    """DermGAN's ROI-centred random crop of an image, its map and its mask (see the module docstring).

    Args:
        image (`PIL.Image.Image`): the picture.
        semantic_map (`SemanticMap`): its map (same size); the ROIs are the map's regions.
        mask (`np.ndarray`, *optional*): a lesion mask cut alongside.
        seed (`int` or `np.random.Generator`, *optional*): the same seed gives the same crop.
        context (`(float, float)`, defaults to `(1.2, 2.0)`): window side / ROI-group side, drawn uniformly.
        merge_distance (`float`, defaults to 0.1): ROIs closer than this fraction of the image side form a group.
        output_size (`int` or `(height, width)`, *optional*): resize the crop (bicubic pixels, nearest map/mask).

    Example:
        >>> crop = roi_crop(row["image"], SemanticMap.decode(row["semantic_map"], registry), seed=0, output_size=64)
        >>> crop.image.size, crop.semantic_map.boxes
    """
    _check_same_size(image, semantic_map, mask)
    box = roi_crop_box(semantic_map.boxes, semantic_map.size, seed, context, merge_distance)
    return _cut(image, semantic_map, mask, box, output_size)


# --------------------------------------------------------------------------------------------------------------
# Furger skin patches
# --------------------------------------------------------------------------------------------------------------
def skin_patch_boxes(
    lesion_mask: np.ndarray,
    patch_size: int = 128,
    lesion_fraction: tuple[float, float] = (0.1, 0.8),
    skin_mask: np.ndarray | None = None,
    min_skin_fraction: float = 1.0,
    stride: int | None = None,
    max_patches: int | None = None,
    seed=None,
) -> list[tuple[tuple[int, int, int, int], float]]:
    """Windows that are skin only and hold the wanted share of lesion: `[(box, lesion fraction), ...]`.

    Args:
        lesion_mask (`np.ndarray`): (H, W), non-zero = lesion.
        patch_size (`int`, defaults to 128): patch side in pixels (Furger et al. use 128).
        lesion_fraction (`(float, float)`, defaults to `(0.1, 0.8)`): inclusive range of lesion pixels
            / skin pixels; `(0, 0)` gives healthy-skin patches.
        skin_mask (`np.ndarray`, *optional*): (H, W), non-zero = skin; `None` = all skin.
        min_skin_fraction (`float`, defaults to 1.0): share of skin a patch needs (1.0 = skin only).
        stride (`int`, *optional*): grid step; defaults to `patch_size // 4`.
        max_patches (`int`, *optional*): draw at most this many (at random); `None` keeps all, in grid order.
        seed (`int` or `np.random.Generator`, *optional*): for the draw.
    """
    lesion = np.asarray(lesion_mask).astype(bool)
    skin = np.ones_like(lesion) if skin_mask is None else np.asarray(skin_mask).astype(bool)
    if skin.shape != lesion.shape:
        raise ValueError(f"skin mask has shape {skin.shape}, lesion mask {lesion.shape}; they must match")
    low, high = lesion_fraction
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"lesion_fraction must satisfy 0 <= low <= high <= 1, got {lesion_fraction}")
    if not 0.0 < min_skin_fraction <= 1.0:
        raise ValueError(f"min_skin_fraction must be in (0, 1], got {min_skin_fraction}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    stride = max(1, patch_size // 4) if stride is None else int(stride)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    height, width = lesion.shape
    if patch_size > min(height, width):
        return []

    # 1. window sums of skin and lesion-on-skin pixels from summed-area tables
    tops = np.arange(0, height - patch_size + 1, stride)
    lefts = np.arange(0, width - patch_size + 1, stride)
    skin_sums = _window_sums(skin, tops, lefts, patch_size)
    lesion_sums = _window_sums(lesion & skin, tops, lefts, patch_size)

    # 2. the criteria of Furger et al.: enough skin, lesion share in range
    area = patch_size * patch_size
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(skin_sums > 0, lesion_sums / np.maximum(skin_sums, 1), 0.0)
    eps = 1e-9
    valid = (skin_sums >= min_skin_fraction * area - eps) & (skin_sums > 0)
    valid &= (fractions >= low - eps) & (fractions <= high + eps)
    rows, cols = np.nonzero(valid)
    order = np.arange(len(rows))

    # 3. a seeded draw of at most max_patches
    if max_patches is not None:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        order = rng.permutation(len(rows))[:max_patches]
    return [
        (
            (int(lefts[cols[i]]), int(tops[rows[i]]), int(lefts[cols[i]]) + patch_size, int(tops[rows[i]]) + patch_size),
            float(fractions[rows[i], cols[i]]),
        )
        for i in order
    ]


def _window_sums(mask: np.ndarray, tops: np.ndarray, lefts: np.ndarray, side: int) -> np.ndarray:
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    t, l = tops[:, None], lefts[None, :]
    return table[t + side, l + side] - table[t, l + side] - table[t + side, l] + table[t, l]


def skin_patches(
    image: Image.Image,
    semantic_map: SemanticMap,
    mask: np.ndarray | None = None,
    patch_size: int = 128,
    lesion_fraction: tuple[float, float] = (0.1, 0.8),
    skin_mask: np.ndarray | None = None,
    min_skin_fraction: float = 1.0,
    stride: int | None = None,
    max_patches: int | None = 8,
    seed=None,
) -> list[Crop]:
    """Furger et al.'s skin patches of one image; the lesion is the mask if given, else the map's regions.

    Arguments as in `skin_patch_boxes`. Returns the cut image, map and mask of each patch.
    """
    _check_same_size(image, semantic_map, mask)
    lesion = semantic_map.lesion_mask if mask is None else np.asarray(mask).astype(bool)
    boxes = skin_patch_boxes(
        lesion, patch_size, lesion_fraction, skin_mask, min_skin_fraction, stride, max_patches, seed
    )
    return [_cut(image, semantic_map, mask, box, None) for box, _ in boxes]


# --------------------------------------------------------------------------------------------------------------
# shared cutting and the datasets.map versions
# --------------------------------------------------------------------------------------------------------------
def _check_same_size(image: Image.Image, semantic_map: SemanticMap, mask) -> None:
    size = (image.height, image.width)
    if semantic_map.size != size:
        raise ValueError(f"semantic map size {semantic_map.size} differs from the image's {size} (height, width)")
    if mask is not None and np.asarray(mask).shape != size:
        raise ValueError(f"mask shape {np.asarray(mask).shape} differs from the image's {size} (height, width)")


def _cut(image, semantic_map: SemanticMap, mask, box, output_size) -> Crop:
    x0, y0, x1, y1 = box
    image = image.crop(box)
    smap = semantic_map.crop(box)
    mask = None if mask is None else np.asarray(mask).astype(bool)[y0:y1, x0:x1]
    if output_size is not None:
        height, width = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        image = image.resize((width, height), Image.BICUBIC)
        smap = smap.resize((height, width))
        mask = None if mask is None else resize_mask(mask, (height, width))
    return Crop(image, smap, mask, tuple(int(v) for v in box))


def roi_crop_dataset(
    dataset: datasets.Dataset,
    output_size=None,
    crops_per_image: int = 1,
    seed: int = 0,
    context: tuple[float, float] = (1.2, 2.0),
    merge_distance: float = 0.1,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """`roi_crop` over a dermdiff dataset: `crops_per_image` rows per image, plus a `crop_box` column.

    Example:
        >>> crops = roi_crop_dataset(load_ham10000(root), output_size=64, crops_per_image=2, seed=0)
    """
    if crops_per_image < 1:
        raise ValueError(f"crops_per_image must be >= 1, got {crops_per_image}")

    def cut(row, rng):
        crop_args = (rng, context, merge_distance, output_size)
        return [roi_crop(row["image"], row["smap"], row["mask"], *crop_args) for _ in range(crops_per_image)]

    return _map_crops(dataset, cut, seed, "crop_box", num_proc)


def skin_patch_dataset(
    dataset: datasets.Dataset,
    patch_size: int = 128,
    lesion_fraction: tuple[float, float] = (0.1, 0.8),
    max_patches: int | None = 8,
    stride: int | None = None,
    seed: int = 0,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """`skin_patches` over a dermdiff dataset (every pixel counted as skin), plus `patch_box` and `lesion_fraction`.

    Rows keep their source image's label; `lesion_fraction` tells healthy patches (0) from lesion ones.
    """

    def cut(row, rng):
        lesion = row["smap"].lesion_mask if row["mask"] is None else row["mask"]
        boxes = skin_patch_boxes(lesion, patch_size, lesion_fraction, None, 1.0, stride, max_patches, rng)
        crops = [_cut(row["image"], row["smap"], row["mask"], box, None) for box, _ in boxes]
        return crops, [fraction for _, fraction in boxes]

    return _map_crops(dataset, cut, seed, "patch_box", num_proc, with_fraction=True)


def _map_crops(dataset, cut, seed, box_column, num_proc, with_fraction=False) -> datasets.Dataset:
    registry = registry_of(dataset)
    features = dataset.features.copy()
    features[box_column] = datasets.List(datasets.Value("int32"))
    if with_fraction:
        features["lesion_fraction"] = datasets.Value("float32")

    def batch_cut(batch, indices):
        out = {name: [] for name in features}
        for position, index in enumerate(indices):
            row = {name: batch[name][position] for name in batch}
            row["smap"] = SemanticMap.decode(row["semantic_map"], registry)
            row["mask"] = None if row.get("mask") is None else np.asarray(row["mask"]) > 0
            rng = np.random.default_rng([seed, index])
            result = cut(row, rng)
            crops, fractions = result if with_fraction else (result, None)
            for number, crop in enumerate(crops):
                for name in batch:
                    out[name].append(batch[name][position])
                out["image"][-1] = crop.image
                out["semantic_map"][-1] = crop.semantic_map.to_pil()
                if "mask" in out:
                    out["mask"][-1] = None if crop.mask is None else mask_image(crop.mask)
                out["boxes"][-1] = [list(box) for box in crop.semantic_map.boxes]
                out["image_id"][-1] = f"{batch['image_id'][position]}_{box_column.split('_')[0]}{number}"
                out[box_column].append(list(crop.box))
                if with_fraction:
                    out["lesion_fraction"].append(fractions[number])
        return out

    return dataset.map(
        batch_cut, batched=True, batch_size=16, with_indices=True, features=features, num_proc=num_proc,
        remove_columns=dataset.column_names, desc=f"cutting ({box_column})",
    )
