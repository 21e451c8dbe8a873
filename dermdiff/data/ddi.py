"""Load DDI, the Diverse Dermatology Images (Daneshjou et al. 2022): 656 biopsy-proven clinical photos.

Published layout (Stanford AIMI; the reference loader is github.com/DDI-Dataset/DDI-Code): `ddi_metadata.csv`
with `DDI_ID`, `DDI_file` (e.g. `000001.png`), `skin_tone`, `malignant` (True/False) and `disease` (78
biopsy diagnoses); the images beside it or in `images/`.

Skin type, honestly: DDI grades skin in three pairs of Fitzpatrick types, `skin_tone` 12 (I-II), 34 (III-IV)
and 56 (V-VI). A pair does not name one type, so `skin_type` stays unknown and the pair is kept in its own
string column `skin_type_range` ("1-2", "3-4", "5-6"); group by that column for per-tone results. DDI
publishes no patient or lesion id, so splits are per image. No masks or boxes: every map covers the photo.

Licence: the Stanford AIMI dataset research use agreement (accepted on download; research use only).
"""

from __future__ import annotations

import os

import datasets

from ..conditions import ConditionRegistry
from .records import Record, build_dataset, check_limit
from .tables import cell, check_values, find_file, locate, read_table

METADATA_FILE = "ddi_metadata.csv"
IMAGE_FOLDERS = ("images", ".")
SKIN_TONE_RANGES = {"12": "1-2", "34": "3-4", "56": "5-6"}
MALIGNANT_VALUES = {"True": "malignant", "False": "benign", "1": "malignant", "0": "benign"}
LABEL_COLUMNS = ("disease", "malignant")


def load_ddi(
    root: str,
    label_column: str = "disease",
    size=None,
    skip_bad: bool = False,
    limit: int | None = None,
) -> datasets.Dataset:
    """Loads a DDI folder (module docstring) into a `datasets.Dataset` (`dermdiff.data.records` columns).

    Args:
        root (`str`): the folder with `ddi_metadata.csv`.
        label_column (`str`, defaults to `"disease"`): the condition: `disease` (the biopsy diagnosis) or
            `malignant` (labels "benign" / "malignant").
        size (`int` or `(height, width)`, *optional*): resize images and maps.
        skip_bad (`bool`, defaults to `False`): warn and drop bad rows instead of raising.
        limit (`int`, *optional*): read only the first `limit` rows.

    Example:
        >>> dataset = load_ddi("/data/ddi", label_column="malignant", size=64)
        >>> dataset[0]["skin_type"], dataset[0]["skin_type_range"]
        (None, '5-6')
    """
    if label_column not in LABEL_COLUMNS:
        raise ValueError(f"label_column must be one of {list(LABEL_COLUMNS)}, got {label_column!r}")
    path = find_file(root, (METADATA_FILE,), "DDI")
    table = read_table(path, ("DDI_file", "skin_tone", "malignant", "disease"), "DDI")
    check_values(table, "skin_tone", SKIN_TONE_RANGES, path)
    check_values(table, "malignant", MALIGNANT_VALUES, path)
    if label_column == "malignant":
        registry = ConditionRegistry(["benign", "malignant"], name="ddi-malignant")
    else:
        registry = ConditionRegistry(sorted({value.strip() for value in table["disease"] if value.strip()}),
                                     name="ddi-disease")
    limit = check_limit(limit)
    table = table.head(limit) if limit is not None else table
    return build_dataset(_records(table, label_column, root), registry, "ddi", os.path.abspath(root), skip_bad, size)


def _records(table, label_column: str, root: str):
    for position, row in enumerate(table.to_dict("records")):
        name = cell(row, "DDI_file")
        malignant = MALIGNANT_VALUES[cell(row, "malignant")]
        yield Record(
            where=f"{METADATA_FILE} line {position + 2} (DDI_file={name!r})",
            image=locate(root, IMAGE_FOLDERS, name),
            label=malignant if label_column == "malignant" else cell(row, "disease"),
            image_id=cell(row, "DDI_ID") or os.path.splitext(name)[0],
            ids={"skin_type_range": SKIN_TONE_RANGES[cell(row, "skin_tone")]},
        )
