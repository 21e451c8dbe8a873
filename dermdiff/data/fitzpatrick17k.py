"""Load Fitzpatrick17k (Groh et al. 2021): 16,577 clinical atlas photos with a Fitzpatrick type each.

Published layout (github.com/mattgroh/fitzpatrick17k): `fitzpatrick17k.csv` with the columns `md5hash`,
`fitzpatrick_scale` (1..6, -1 = unknown), `fitzpatrick_centaur`, `label` (114 conditions),
`nine_partition_label`, `three_partition_label`, `qc`, `url`, `url_alphanum`. The images are not in the
repository: each is downloaded from its `url` and kept as `<md5hash>.jpg` (or .jpeg/.png), here looked for in
`images/`, `data/` or the folder of the CSV. No patient or lesion id is published, so splits are per image.
No masks or boxes: every map covers the whole photo.

Licence: CC BY-NC-SA 3.0 (the repository's licence; the photos come from the Atlas Dermatologico and
DermaAmin atlases).
"""

from __future__ import annotations

import os

import datasets

from ..conditions import ConditionRegistry
from .records import Record, build_dataset, check_limit
from .tables import cell, check_values, find_file, index_images, read_table

METADATA_FILE = "fitzpatrick17k.csv"
IMAGE_FOLDERS = ("images", "data", ".")
LABEL_COLUMNS = ("label", "nine_partition_label", "three_partition_label")
SKIN_TYPE_VALUES = ("-1", "1", "2", "3", "4", "5", "6")


def load_fitzpatrick17k(
    root: str,
    label_column: str = "label",
    size=None,
    skip_bad: bool = False,
    limit: int | None = None,
) -> datasets.Dataset:
    """Loads a Fitzpatrick17k folder (module docstring) into a `datasets.Dataset` (`dermdiff.data.records` columns).

    Args:
        root (`str`): the folder with `fitzpatrick17k.csv`.
        label_column (`str`, defaults to `"label"`): the condition: `label` (114 conditions),
            `nine_partition_label` or `three_partition_label`. The registry is the sorted distinct values of the
            whole CSV, so `limit` does not change label indices.
        size (`int` or `(height, width)`, *optional*): resize images and maps.
        skip_bad (`bool`, defaults to `False`): warn and drop bad rows (e.g. images whose download failed).
        limit (`int`, *optional*): read only the first `limit` rows.

    Example:
        >>> dataset = load_fitzpatrick17k("/data/fitzpatrick17k", label_column="three_partition_label", size=64)
        >>> dataset[0]["skin_type"]  # 1..6, None where fitzpatrick_scale is -1
    """
    if label_column not in LABEL_COLUMNS:
        raise ValueError(f"label_column must be one of {list(LABEL_COLUMNS)}, got {label_column!r}")
    path = find_file(root, (METADATA_FILE,), "Fitzpatrick17k")
    table = read_table(path, ("md5hash", "fitzpatrick_scale", label_column), "Fitzpatrick17k")
    check_values(table, "fitzpatrick_scale", SKIN_TYPE_VALUES, path)
    names = sorted({value.strip() for value in table[label_column] if value.strip()})
    registry = ConditionRegistry(names, name=f"fitzpatrick17k-{label_column}")
    limit = check_limit(limit)
    table = table.head(limit) if limit is not None else table
    images = index_images(root, IMAGE_FOLDERS)
    records = _records(table, images, label_column, root)
    return build_dataset(records, registry, "fitzpatrick17k", os.path.abspath(root), skip_bad, size)


def _records(table, images: dict[str, str], label_column: str, root: str):
    for position, row in enumerate(table.to_dict("records")):
        md5 = cell(row, "md5hash")
        skin_type = cell(row, "fitzpatrick_scale")
        yield Record(
            where=f"{METADATA_FILE} line {position + 2} (md5hash={md5!r})",
            image=images.get(md5, os.path.join(root, "images", f"{md5}.jpg")),
            label=cell(row, label_column),
            image_id=md5,
            skin_type=None if skin_type == "-1" else skin_type,
        )
