"""Load PAD-UFES-20 (smartphone clinical photos with Fitzpatrick skin type and patient ids).

Layout: `root/metadata.csv` with the dataset's columns `diagnostic` (ACK, BCC, MEL, NEV, SCC, SEK),
`fitspatrick` (sic; 1..6 or empty), `patient_id`, `lesion_id` and `img_id`, and the images either
at the path in a `file` column (as in the copy in `shared/data/pad_ufes20`) or as `img_id` under
`images/` (the original release splits them into `imgs_part_*` folders, also searched). PAD-UFES-20
has no lesion masks or boxes, so every map covers the whole photo. Registry: "pad_ufes20".
"""

from __future__ import annotations

import os

import datasets
import pandas as pd

from ..conditions import get_registry
from .files import read_table
from .records import Record, build_dataset, check_limit

METADATA_FILE = "metadata.csv"
IMAGE_FOLDERS = ("images", "imgs_part_1", "imgs_part_2", "imgs_part_3", ".")


def load_pad_ufes20(
    root: str,
    size=None,
    skip_bad: bool = False,
    limit: int | None = None,
) -> datasets.Dataset:
    """Loads a PAD-UFES-20 folder into a `datasets.Dataset` (columns: see `dermdiff.data.records`).

    Lesion ids are prefixed with the patient id (`PAT_1008/59`) since the release numbers lesions per
    patient; splits group by `patient_id`.

    Args:
        root (`str`): the folder with `metadata.csv`.
        size (`int` or `(height, width)`, *optional*): resize images and maps.
        skip_bad (`bool`, defaults to `False`): warn and drop bad rows instead of raising.
        limit (`int`, *optional*): read only the first `limit` rows.

    Example:
        >>> dataset = load_pad_ufes20("/data/pad_ufes20")
        >>> dataset[0]["skin_type"], dataset[0]["patient_id"]
    """
    path = os.path.join(root, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; PAD-UFES-20 needs its {METADATA_FILE}")
    table = read_table(path, dtype=str, keep_default_na=False)
    missing = [name for name in ("diagnostic", "patient_id") if name not in table.columns]
    if "file" not in table.columns and "img_id" not in table.columns:
        missing.append("file or img_id")
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; it has {list(table.columns)}")
    limit = check_limit(limit)
    if limit is not None:
        table = table.head(limit)
    return build_dataset(_records(root, table), get_registry("pad_ufes20"), "pad_ufes20", os.path.abspath(root), skip_bad, size)


def _image_path(root: str, row: dict) -> str:
    if row.get("file", "").strip():
        return os.path.join(root, row["file"].strip())
    name = row["img_id"].strip()
    for folder in IMAGE_FOLDERS:
        candidate = os.path.join(root, folder, name)
        if os.path.isfile(candidate):
            return candidate
    return os.path.join(root, "images", name)


def _records(root: str, table: pd.DataFrame):
    for position, row in enumerate(table.to_dict("records")):
        path = _image_path(root, row)
        image_id = os.path.splitext(row.get("img_id", "").strip() or os.path.basename(path))[0]
        patient = row["patient_id"].strip()
        lesion = row.get("lesion_id", "").strip()
        yield Record(
            where=f"{METADATA_FILE} line {position + 2} (image {os.path.relpath(path, root)!r})",
            image=path,
            label=row["diagnostic"],
            image_id=image_id,
            skin_type=row.get("fitspatrick"),
            ids={"patient_id": patient, "lesion_id": f"{patient}/{lesion}" if lesion else ""},
        )
