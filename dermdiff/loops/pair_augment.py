"""Training-time augmentations that move an image and its semantic map together, and box/mask map mixing.

Dermoscopy has no up or down: a lesion photographed rotated by 90 degrees or mirrored is just as real. The
8 symmetries of the square (the dihedral group D4: 4 rotations, each with or without a mirror) are drawn
per example from the training loop's checkpointed generator, so a resumed run draws the same ones, and
the SAME symmetry is applied to every spatial tensor of the example (image, map channels, box map, mask):
a condition channel always covers the lesion it labels.

Box maps (issue 12 item 6): a DermGAN map gives only boxes, and a model trained on mask-drawn maps paints
the whole box as lesion. Training on a mix of the two shapes (`map_shapes=("mask", "box")`) teaches the
model that a box means "a lesion of natural shape somewhere inside"; `DiffusionExamples` then emits the
example's map twice (`semantic_map` as drawn, `semantic_map_box` with every region replaced by its
bounding box, `SemanticMap.to_box_map`) and `mix_map_shapes` picks one per example.

Latent training (cached VAE latents) calls the same two pieces: draw `dihedral_indices`, rotate the map
with `apply_dihedral`, and take the latent of the rotated image from a cache of the encoded orientations
(`AUGMENT_ORIENTATIONS`, `select_variants`) instead of rotating a latent: a convolutional encoder is not
equivariant (measured in `benchmarks/latent_equivariance.py`), so a rotated latent is not the latent of the
rotated image. The latent-grid map, on the other hand, may be rotated: its block reduction commutes exactly
with every symmetry of the square when the side is a multiple of the factor.

Example:
    >>> indices = dihedral_indices(batch["pixel_values"].shape[0], generator)
    >>> batch = apply_dihedral(batch, indices)               # every 4-D tensor of the batch, same symmetry
    >>> batch = mix_map_shapes(batch, generator)             # box map for about half the examples
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

AUGMENTS = ("none", "flip", "dihedral")
MAP_SHAPES = ("mask", "box")
DIHEDRAL_ORDER = 8
BOX_MAP_KEY = "semantic_map_box"
# the symmetries each augmentation draws; a latent cache encodes exactly these orientations of every image
AUGMENT_ORIENTATIONS = {"none": (0,), "flip": (0, 4), "dihedral": tuple(range(DIHEDRAL_ORDER))}


def parse_map_shapes(value: str | Sequence[str]) -> tuple[str, ...]:
    """`"mask,box"` (or a sequence) -> `("mask", "box")`; one clear `ValueError` for anything else."""
    names = [part.strip() for part in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    names = [name for name in names if name]
    unknown = [name for name in names if name not in MAP_SHAPES]
    if not names or unknown:
        raise ValueError(f"map shapes must be a non-empty comma list of {list(MAP_SHAPES)}, got {value!r}")
    return tuple(dict.fromkeys(names))


def check_augment(name: str) -> str:
    if name not in AUGMENTS:
        raise ValueError(f"augment must be one of {list(AUGMENTS)}, got {name!r}")
    return name


def dihedral(tensor: torch.Tensor, index: int) -> torch.Tensor:
    """Symmetry `index` (0..7) of the square on the last two dimensions: `index % 4` quarter turns
    (counter-clockwise, `torch.rot90`), then a left-right mirror when `index >= 4`. Index 0 is the identity."""
    if not 0 <= index < DIHEDRAL_ORDER:
        raise ValueError(f"dihedral index must be in 0..7, got {index}")
    out = torch.rot90(tensor, k=index % 4, dims=(-2, -1))
    return out.flip(-1) if index >= 4 else out


def dihedral_indices(batch_size: int, generator: torch.Generator, augment: str = "dihedral") -> torch.Tensor:
    """One symmetry per example: uniform over the 8 for `"dihedral"`, identity or mirror for `"flip"`."""
    check_augment(augment)
    if augment == "dihedral":
        return torch.randint(0, DIHEDRAL_ORDER, (batch_size,), generator=generator)
    if augment == "flip":
        return (torch.rand(batch_size, generator=generator) < 0.5).long() * 4
    return torch.zeros(batch_size, dtype=torch.long)


def _transform_batch(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    if tensor.shape[-1] != tensor.shape[-2] and bool((indices % 2 == 1).any()):
        raise ValueError(f"quarter turns need square images; got {tuple(tensor.shape[-2:])} (use augment='flip')")
    return torch.stack([dihedral(item, int(index)) for item, index in zip(tensor, indices)])


def apply_dihedral(batch: Mapping, indices: torch.Tensor, keys: Sequence[str] | None = None) -> dict:
    """Example `b` of every spatial tensor (default: every 4-D tensor, (B, C, H, W)) gets symmetry `indices[b]`."""
    out = dict(batch)
    if not bool(indices.any()):
        return out
    chosen = keys if keys is not None else [k for k, v in batch.items() if torch.is_tensor(v) and v.dim() == 4]
    for key in chosen:
        out[key] = _transform_batch(batch[key], indices)
    return out


def augment_pairs(batch: Mapping, augment: str, generator: torch.Generator) -> dict:
    """`apply_dihedral` with symmetries drawn for `augment` (`"none"` returns the batch unchanged)."""
    if check_augment(augment) == "none":
        return dict(batch)
    first = next(v for v in batch.values() if torch.is_tensor(v) and v.dim() == 4)
    return apply_dihedral(batch, dihedral_indices(first.shape[0], generator, augment))


def select_variants(variants: torch.Tensor, indices: torch.Tensor, orientations: Sequence[int] | None = None):
    """(B, V, ...) cached per-symmetry tensors (e.g. latents of the V rotated images) -> (B, ...) picked ones.

    `orientations` names the symmetry held at each of the V positions (default: all 8 in index order);
    asking for a symmetry that was not cached is an error, never a silent substitute.
    """
    orientations = tuple(range(DIHEDRAL_ORDER)) if orientations is None else tuple(orientations)
    if variants.shape[1] != len(orientations):
        raise ValueError(f"expected {len(orientations)} cached variants on dim 1, got shape {tuple(variants.shape)}")
    lookup = torch.full((DIHEDRAL_ORDER,), -1, dtype=torch.long)
    lookup[list(orientations)] = torch.arange(len(orientations))
    positions = lookup[indices.cpu()]
    if bool((positions < 0).any()):
        missing = sorted({int(i) for i in indices[positions < 0]})
        raise ValueError(f"symmetries {missing} were not cached (the cache holds {list(orientations)})")
    return variants[torch.arange(variants.shape[0], device=variants.device), positions.to(variants.device)]


def mix_map_shapes(batch: Mapping, generator: torch.Generator, box_probability: float = 0.5) -> dict:
    """Replaces `semantic_map` by `semantic_map_box` for each example with `box_probability`; drops the box key.

    A batch without a box map (map_shapes without "box") passes through; the random draw happens only when
    there is a choice, so runs without box maps keep their random stream.
    """
    if BOX_MAP_KEY not in batch:
        return dict(batch)
    out = {key: value for key, value in batch.items() if key != BOX_MAP_KEY}
    boxes = batch[BOX_MAP_KEY]
    if box_probability >= 1.0:
        out["semantic_map"] = boxes
        return out
    choose = torch.rand(boxes.shape[0], generator=generator) < box_probability
    out["semantic_map"] = torch.where(choose.to(boxes.device)[:, None, None, None], boxes, batch["semantic_map"])
    return out
