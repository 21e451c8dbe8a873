"""Load HAM10000 / ISIC 2018 data in the layouts it is published and mirrored in.

Recognised pieces (any combination), all under `root`:

- metadata: `metadata.csv`, `HAM10000_metadata.csv` or `HAM10000_metadata` with `image_id` and `dx`;
  optional `lesion_id` (used to group splits) and `bbox_x0, bbox_y0, bbox_x1, bbox_y1` (pixels of
  the images at hand, x1/y1 exclusive).
- images `<image_id>.jpg` (or .jpeg/.png) in `images/`, `HAM10000_images_part_1/`, `HAM10000_images_part_2/`
  or `root` itself.
- masks, either `masks.npz` (arrays `image_ids` (N,) and `masks` (N, H, W), non-zero = lesion) or an
  ISIC 2018 task 1 folder of `<image_id>_segmentation.png` (`masks/`, `HAM10000_segmentations_lesion_tschandl/`,
  `ISIC2018_Task1_Training_GroundTruth/`). Masks larger than the images with the same aspect
  ratio are reduced by majority vote; an image without a mask falls back to its box.

Labels use the built-in "ham10000" registry (akiec, bcc, bkl, df, mel, nv, vasc = labels 0..6, the
MedMNIST order). HAM10000 records no skin type, so it is unknown for every image.
"""

from __future__ import annotations

import os

import datasets
import numpy as np
import pandas as pd

from ..conditions import get_registry
from .files import open_npz, read_table
from .records import Record, build_dataset, check_limit
from .tables import find_file, index_images

METADATA_NAMES = ("metadata.csv", "HAM10000_metadata.csv", "HAM10000_metadata")
IMAGE_FOLDERS = ("images", "HAM10000_images_part_1", "HAM10000_images_part_2", ".")
MASK_FOLDERS = ("masks", "HAM10000_segmentations_lesion_tschandl", "ISIC2018_Task1_Training_GroundTruth")
BOX_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")


# HAM10000's case description, kept as string columns so splits can be stratified by them (`dx_type`:
# histo / follow_up / consensus / confocal, which differ in difficulty).
CASE_COLUMNS = ("dx_type", "localization", "sex", "age")


def load_ham10000(
    root: str,
    masks: bool | str = True,
    size=None,
    skip_bad: bool = False,
    limit: int | None = None,
) -> datasets.Dataset:
    """Loads a HAM10000-style folder into a `datasets.Dataset` (columns: see `dermdiff.data.records`).

    Args:
        root (`str`): the folder with the metadata file.
        masks (`bool` or `str`, defaults to `True`): use masks when found (`masks.npz` or an ISIC mask
            folder); `False` ignores them (maps then come from the boxes); a path names the npz or folder.
        size (`int` or `(height, width)`, *optional*): resize images, masks and maps.
        skip_bad (`bool`, defaults to `False`): warn and drop bad rows instead of raising.
        limit (`int`, *optional*): read only the first `limit` rows.

    Example:
        >>> dataset = load_ham10000("/data/ham10000", size=64)
        >>> dataset.features["label"].names
        ['akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc']
    """
    metadata_path = find_metadata(root)
    table = read_table(metadata_path, dtype=str, keep_default_na=False)
    missing = [name for name in ("image_id", "dx") if name not in table.columns]
    if missing:
        raise ValueError(f"{metadata_path} lacks column(s) {missing}; it has {list(table.columns)}")
    limit = check_limit(limit)
    if limit is not None:
        table = table.head(limit)
    images = index_images(root, IMAGE_FOLDERS)
    mask_source = _MaskSource(root, masks, set(table["image_id"]))
    records = _records(table, images, mask_source, os.path.basename(metadata_path), root)
    return build_dataset(records, get_registry("ham10000"), "ham10000", os.path.abspath(root), skip_bad, size)


def find_metadata(root: str) -> str:
    """The HAM10000 metadata file under `root` (see `METADATA_NAMES`)."""
    return find_file(root, METADATA_NAMES, "HAM10000")


class _MaskSource:
    """Masks by image id from a `masks.npz` or an ISIC `<image_id>_segmentation.png` folder."""

    def __init__(self, root: str, masks: bool | str, wanted: set[str]):
        self.arrays: dict[str, np.ndarray] = {}
        self.folder: str | None = None
        if masks is False or masks is None:
            return
        candidates = [masks] if isinstance(masks, str) else [os.path.join(root, "masks.npz")]
        candidates += [] if isinstance(masks, str) else [os.path.join(root, name) for name in MASK_FOLDERS]
        for candidate in candidates:
            if os.path.isfile(candidate) and candidate.endswith(".npz"):
                self._load_npz(candidate, wanted)
                return
            if os.path.isdir(candidate):
                self.folder = candidate
                return
        if isinstance(masks, str):
            raise FileNotFoundError(f"mask source {masks!r} is neither a .npz file nor a folder")

    def _load_npz(self, path: str, wanted: set[str]) -> None:
        with open_npz(path) as archive:
            missing = [key for key in ("image_ids", "masks") if key not in archive.files]
            if missing:
                raise ValueError(f"{path} lacks array(s) {missing}; it has {archive.files}")
            ids = archive["image_ids"].astype(str)
            rows = [i for i, image_id in enumerate(ids) if image_id in wanted]
            stack = archive["masks"]
            if len(stack) != len(ids):
                raise ValueError(f"{path}: {len(ids)} image_ids but {len(stack)} masks")
            self.arrays = {ids[i]: stack[i] for i in rows}

    def get(self, image_id: str):
        """An (H, W) array, a file path, or `None` when this image has no mask."""
        if image_id in self.arrays:
            return self.arrays[image_id]
        if self.folder is not None:
            path = os.path.join(self.folder, f"{image_id}_segmentation.png")
            return path if os.path.isfile(path) else None
        return None


def _records(table: pd.DataFrame, images: dict[str, str], mask_source: _MaskSource, metadata_name: str, root: str):
    has_boxes = all(name in table.columns for name in BOX_COLUMNS)
    for position, row in enumerate(table.to_dict("records")):
        image_id = row["image_id"].strip()
        where = f"{metadata_name} line {position + 2} (image_id={image_id!r})"
        boxes = None
        if has_boxes and all(row[name].strip() for name in BOX_COLUMNS):
            boxes = [[_pixel(row[name]) for name in BOX_COLUMNS]]
        yield Record(
            where=where,
            image=images.get(image_id, os.path.join(root, "images", f"{image_id}.jpg")),
            label=row["dx"],
            image_id=image_id,
            boxes=boxes,
            mask=mask_source.get(image_id),
            ids={"lesion_id": row.get("lesion_id", ""), **{name: row.get(name, "") for name in CASE_COLUMNS}},
        )


def _pixel(text: str):
    """A box coordinate cell; a non-integer is passed on as text so the row's validation names it."""
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value == int(value) else value
