"""Load an image folder with a `metadata.csv` (the Hugging Face `imagefolder` convention) into a dataset.

This is the layout dermdiff writes (the phantom) and the one users are asked to put their own data in:

    my_data/
      metadata.csv          file_name,label,skin_type,boxes,mask_file,lesion_id,patient_id,split,map_file
      images/a.png          images/a.png,mel,3,"[[10, 12, 40, 44]]",masks/a.png,L1,P1,train,
      masks/a.png           (optional binary PNG, lesion = 255)
      maps/a.png            (optional semantic-map PNG, wins over mask and boxes)
      dataset_info.json     (optional: {"registry": {"name": ..., "conditions": [...]}})

Only `file_name` and `label` are required; every other column may be missing or empty per row.
"""

from __future__ import annotations

import os

import datasets
import pandas as pd

from ..conditions import ConditionRegistry, get_registry
from ..errors import read_json
from .files import read_table
from .records import Record, build_dataset, check_limit

METADATA_FILE = "metadata.csv"
INFO_FILE = "dataset_info.json"
REQUIRED_COLUMNS = ("file_name", "label")


def load_dataset_dir(
    path: str,
    registry=None,
    skip_bad: bool = False,
    with_masks: bool = True,
    size=None,
    limit: int | None = None,
) -> datasets.Dataset:
    """Loads `path/metadata.csv` and its images into a `datasets.Dataset` (columns: see `records.py`).

    The registry is, in order: the `registry` argument; the one in `path/dataset_info.json`; else a
    registry named after the folder holding the sorted distinct label names. An explicit argument
    wins so a user can load a folder into a larger registry; a label outside it is still an error.
    An empty label is healthy skin (label -1), as in the phantom's `healthy/` folder.

    Args:
        path (`str`): the folder holding `metadata.csv`.
        registry (`str`, `ConditionRegistry`, `dict` or `list`, *optional*): the conditions.
        skip_bad (`bool`, defaults to `False`): warn and drop bad rows instead of raising.
        with_masks (`bool`, defaults to `True`): read `mask_file`; when `False` maps come from boxes.
        size (`int` or `(height, width)`, *optional*): resize everything to this size.
        limit (`int`, *optional*): read only the first `limit` rows (quick looks, tests).

    Returns:
        `datasets.Dataset`; `dermdiff.data.registry_of(dataset)` gives its registry back.

    Example:
        >>> dataset = load_dataset_dir("outputs/phantom")
        >>> dataset[0]["semantic_map"], registry_of(dataset).names
    """
    table = read_metadata(path)
    registry = resolve_registry(path, registry, table["label"])
    if limit is not None:
        table = table.head(check_limit(limit))
    return build_dataset(_records(path, table, with_masks), registry, "imagefolder", os.path.abspath(path), skip_bad, size)


_READ_COLUMNS = {"file_name", "label", "image_id", "skin_type", "boxes", "mask_file", "map_file", "image", "mask",
                 "semantic_map", "label_name"}


def read_metadata(path: str) -> pd.DataFrame:
    """`metadata.csv` as strings (empty cells stay ""), with the required columns checked."""
    csv_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"{csv_path} not found; an image folder needs a {METADATA_FILE} (file_name,label,...)")
    table = read_table(csv_path, dtype=str, keep_default_na=False)
    missing = [name for name in REQUIRED_COLUMNS if name not in table.columns]
    if missing:
        raise ValueError(f"{csv_path} lacks column(s) {missing}; it has {list(table.columns)}")
    return table


def resolve_registry(path: str, registry, labels) -> ConditionRegistry:
    """Argument, else `dataset_info.json`, else the sorted label names (see `load_dataset_dir`)."""
    if registry is not None:
        return get_registry(registry)
    info_path = os.path.join(path, INFO_FILE)
    if os.path.isfile(info_path):
        info = read_json(info_path, "dataset info")
        stored = info.get("registry", info if "conditions" in info else None) if isinstance(info, dict) else None
        if stored is None:
            raise ValueError(f"{info_path} has no 'registry' entry; expected {{'registry': {{'name', 'conditions'}}}}")
        return get_registry(stored)
    names = sorted({str(label).strip() for label in labels if str(label).strip()})
    return ConditionRegistry(names, name=os.path.basename(os.path.abspath(path)) or "custom")


def _records(path: str, table: pd.DataFrame, with_masks: bool):
    columns = set(table.columns)
    # ids and any other metadata column (e.g. `site`, `dx_type`) pass through as string columns
    extra = [name for name in table.columns if name not in _READ_COLUMNS]
    for position, row in enumerate(table.to_dict("records")):
        file_name = row["file_name"].strip()
        where = f"{METADATA_FILE} line {position + 2} (file_name={file_name!r})"
        mask_file = row.get("mask_file", "").strip() if with_masks else ""
        map_file = row.get("map_file", "").strip()
        yield Record(
            where=where,
            image=os.path.join(path, file_name),
            label=row["label"],
            image_id=os.path.splitext(file_name)[0] if "image_id" not in columns else row["image_id"],
            skin_type=row.get("skin_type"),
            boxes=row.get("boxes"),
            mask=os.path.join(path, mask_file) if mask_file else None,
            map_file=os.path.join(path, map_file) if map_file else None,
            ids={name: row[name].strip() for name in extra},
        )

