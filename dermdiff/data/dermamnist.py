"""Load MedMNIST DermaMNIST `.npz` files (`{split}_images` (N, H, W, 3) uint8, `{split}_labels` (N, 1)).

DermaMNIST holds HAM10000 images shrunk to 28 px (or 64/128/224 px in MedMNIST+) with the seven
HAM10000 classes in MedMNIST order, which is the order of the built-in "ham10000" registry, so the
npz label is the dataset label. It has no masks, boxes, skin types or lesion ids: every image's map
is its whole frame, skin type unknown. Image ids are `{split}_{index:05d}`.
"""

from __future__ import annotations

import os

import datasets
import numpy as np

from ..conditions import get_registry
from ..errors import DataError
from .files import open_npz
from .records import Record, build_dataset, check_limit

SPLITS = ("train", "val", "test")


def load_dermamnist(
    npz_path: str,
    split: str = "train",
    size=None,
    skip_bad: bool = False,
    limit: int | None = None,
) -> datasets.Dataset:
    """Loads one split (or `"all"` splits in the file, with a `split` column) of a DermaMNIST npz.

    Args:
        npz_path (`str`): the `.npz` file (e.g. `dermamnist.npz`, `dermamnist_64.npz`).
        split (`str`, defaults to `"train"`): `"train"`, `"val"`, `"test"` or `"all"`.
        size (`int` or `(height, width)`, *optional*): resize images and maps.
        skip_bad (`bool`, defaults to `False`): warn and drop bad rows (a label outside 0..6) instead of raising.
        limit (`int`, *optional*): read only the first `limit` images (of each split for `"all"`).

    Example:
        >>> train = load_dermamnist("dermamnist.npz", split="train")
        >>> train[0]["image"].size
        (28, 28)
    """
    if not os.path.isfile(npz_path):
        raise FileNotFoundError(f"DermaMNIST file {npz_path!r} does not exist")
    limit = check_limit(limit)
    with open_npz(npz_path) as archive:
        available = [name for name in SPLITS if f"{name}_images" in archive.files and f"{name}_labels" in archive.files]
        if split != "all" and split not in available:
            raise ValueError(f"split {split!r} is not in {npz_path}; available: {available + ['all']}")
        chosen = available if split == "all" else [split]
        arrays = {name: (archive[f"{name}_images"], archive[f"{name}_labels"]) for name in chosen}
    registry = get_registry("ham10000")
    records = _records(arrays, registry, os.path.basename(npz_path), limit, tag_split=split == "all")
    return build_dataset(records, registry, "dermamnist", os.path.abspath(npz_path), skip_bad, size)


def _records(arrays: dict, registry, file_name: str, limit: int | None, tag_split: bool):
    for split, (images, labels) in arrays.items():
        if images.ndim == 3:  # grey-scale MedMNIST sets store (N, H, W)
            images = np.repeat(images[..., None], 3, axis=-1)
        if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
            raise DataError(
                f"{file_name}: {split}_images has shape {images.shape} and {split}_labels {labels.shape}; "
                "expected (N, H, W, 3) images and (N, 1) labels"
            )
        if images.dtype != np.uint8:  # floats would be cast (and wrapped) silently, or fail inside PIL
            raise DataError(f"{file_name}: {split}_images has dtype {images.dtype}; MedMNIST images are uint8 0..255")
        count = len(images) if limit is None else min(limit, len(images))
        flat = np.asarray(labels).reshape(len(labels), -1)[:, 0]
        for index in range(count):
            where = f"{file_name} {split}_labels[{index}]"
            yield Record(
                where=where,
                image=images[index],
                label=_label_name(flat[index], registry),
                image_id=f"{split}_{index:05d}",
                ids={"split": split} if tag_split else {},
            )


def _label_name(value, registry) -> str:
    """The condition name of a 0-based class index; anything else (2.7, -1, 9, NaN) becomes a name the
    registry rejects with the allowed range, so the row fails (or is skipped) instead of being truncated."""
    allowed = f"(allowed integers 0..{len(registry) - 1})"
    number = float(value)
    if not np.isfinite(number) or number != int(number) or not 0 <= int(number) < len(registry):
        return f"label {value!r} {allowed}"
    return registry.name(int(number) + 1)
