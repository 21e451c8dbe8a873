"""From per-image annotations to one `datasets.Dataset` with the columns every dermdiff tool reads.

Each layout loader (image folder, HAM10000, DermaMNIST, PAD-UFES-20) only knows how to read its own
metadata; it yields one `Record` per image and hands them to `build_dataset`, which validates every
row, derives the semantic map through `SemanticMap` and fixes the schema:

| column         | feature                     | meaning                                                    |
|----------------|-----------------------------|------------------------------------------------------------|
| `image`        | `Image(mode="RGB")`         | the picture (kept as a file path when unchanged, else PNG)  |
| `label`        | `ClassLabel(registry.names)`| `registry.index(condition)`; -1 for healthy skin (no label) |
| `label_name`   | `string`, nullable          | the registry's name of the condition; `None` when healthy   |
| `skin_type`    | `int8`, nullable            | Fitzpatrick 1..6, `None` when unknown                       |
| `boxes`        | list of `[x0, y0, x1, y1]`  | lesion boxes (x1, y1 exclusive); derived when not given     |
| `mask`         | `Image(mode="L")`, nullable | binary lesion mask (255 = lesion) or `None`                 |
| `semantic_map` | `Image(mode="RGB")`         | the DermGAN map (`SemanticMap.to_pil()`)                    |
| `image_id`     | `string`                    | a stable id of the image                                    |
| `lesion_id`, `patient_id`, `split` | `string` | only when the source has them                             |
| other metadata (`dx_type`, ...) | `string`  | passed through from the source's table (stratify splits by them) |

Fallbacks (issue 3): an unknown skin type is encoded as unknown; without a mask the map uses the
boxes; without boxes the whole image is the lesion's region. An empty label means healthy skin
(the phantom's `healthy/` folder): label -1, no boxes, a map with only the skin type.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import datasets
import numpy as np
from PIL import Image

from ..conditions import ConditionRegistry
from ..errors import DataError
from ..limits import check_image_size
from ..semantic_map import SemanticMap, _validate_box, validate_skin_type
from .files import fit_mask, mask_image, png_bytes, read_image, read_mask, resize_mask, to_rgb
from .info import dataset_info

ID_COLUMNS = ("lesion_id", "patient_id", "split")
MAX_LISTED_BAD_ROWS = 20


@dataclass
class Record:
    """One image's annotations as a loader read them, before validation.

    Args:
        where (`str`): how to find the row again, e.g. `"metadata.csv line 7 (file_name='a.png')"`.
        image (`str`, `np.ndarray` or `PIL.Image.Image`): a file path or the pixels.
        label (`str`): the condition name (any spelling the registry knows); empty for healthy skin.
        image_id (`str`): a stable id.
        skin_type: 1..6, "I".."VI", a float like `3.0`, or empty / `None` / NaN for unknown.
        boxes (`list` of 4-int lists or a JSON string, *optional*): lesion boxes in pixels.
        mask (`str` or `np.ndarray`, *optional*): a mask file path or a (H, W) array (non-zero = lesion).
        map_file (`str`, *optional*): a semantic-map PNG that wins over mask and boxes (the phantom's maps).
        ids (`dict`, *optional*): `lesion_id`, `patient_id`, `split` and any other metadata strings of the
            source (e.g. HAM10000's `dx_type`); each key becomes a string column (empty = `None`).
    """

    where: str
    image: object
    label: str
    image_id: str
    skin_type: object = None
    boxes: list | str | None = None
    mask: object = None
    map_file: str | None = None
    ids: dict = field(default_factory=dict)


def parse_boxes(text, where: str) -> list[list[int]] | None:
    """The `boxes` CSV cell: JSON `[[x0, y0, x1, y1], ...]` (a single box `[x0, y0, x1, y1]` is accepted)."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == "":
        return None
    try:
        boxes = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        raise ValueError(f"{where}: boxes {text!r} is not JSON; expected [[x0, y0, x1, y1], ...]") from None
    if isinstance(boxes, list) and len(boxes) == 4 and all(_is_number(v) for v in boxes):
        boxes = [boxes]
    valid = isinstance(boxes, list) and all(
        isinstance(box, list) and len(box) == 4 and all(_is_number(v) and v == int(v) for v in box) for box in boxes
    )
    if not valid:
        raise ValueError(
            f"{where}: boxes {text!r} must be a JSON list of [x0, y0, x1, y1] boxes of whole numbers "
            "(no true/false, NaN or Infinity)"
        )
    return [[int(v) for v in box] for box in boxes] or None


def _is_number(value) -> bool:
    """A finite int or float; JSON's true/false are Python bools (ints) and must not pass as 1 and 0."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_skin_type(value, where: str) -> int | None:
    """1..6 (or I..VI); empty, `None`, NaN or "unknown" mean unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "unknown", "na", "n/a"):
        return None
    try:
        return validate_skin_type(value)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def build_dataset(
    records: Iterable[Record],
    registry: ConditionRegistry,
    layout: str,
    source: str | None = None,
    skip_bad: bool = False,
    size=None,
) -> datasets.Dataset:
    """Validates the records and builds the dataset (schema in the module docstring).

    Args:
        records: the loader's rows.
        registry (`ConditionRegistry`): the conditions; stored in the dataset (see `registry_of`).
        layout (`str`): which loader made it (stored beside the registry).
        source (`str`, *optional*): the folder or file loaded (stored beside the registry).
        skip_bad (`bool`, defaults to `False`): drop bad rows with one warning instead of raising.
        size (`int` or `(height, width)`, *optional*): resize every image, mask and map to this size.

    Raises:
        ValueError: the first bad row (missing or unreadable file, unknown label, bad skin type, bad
            box or mask), naming the row and the allowed values; or no usable row at all.
    """
    size = _as_size(size)
    columns: dict[str, list] = {name: [] for name in _BASE_COLUMNS}
    ids: dict[str, list] = {name: [] for name in ID_COLUMNS}
    kept = 0
    bad: list[str] = []
    seen: dict[str, str] = {}  # image_id -> where it was first read
    total = 0
    for record in records:
        total += 1
        try:
            _check_unique(record, seen)
            row = _row(record, registry, size)
        except ValueError as error:
            message = str(error) if str(error).startswith(record.where) else f"{record.where}: {error}"
            if not skip_bad:
                raise DataError(message) from None
            bad.append(message)
            continue
        seen[str(record.image_id)] = record.where
        for name in _BASE_COLUMNS:
            columns[name].append(row[name])
        for name in record.ids:
            if name not in ids and name not in _BASE_COLUMNS:
                ids[name] = [None] * kept
        for name, values in ids.items():
            value = record.ids.get(name)
            values.append(None if value is None or str(value) == "" else str(value))
        kept += 1
    if bad:
        listed = "\n  ".join(bad[:MAX_LISTED_BAD_ROWS])
        more = f"\n  ... and {len(bad) - MAX_LISTED_BAD_ROWS} more" if len(bad) > MAX_LISTED_BAD_ROWS else ""
        warnings.warn(f"skipped {len(bad)} of {total} rows of {source or layout}:\n  {listed}{more}", stacklevel=3)
    if not columns["image_id"]:
        raise ValueError(f"no usable rows in {source or layout} ({total} rows read, {len(bad)} bad)")
    present = [name for name, values in ids.items() if any(value is not None for value in values)]
    columns.update({name: ids[name] for name in present})
    features = dataset_features(registry, present)
    return datasets.Dataset.from_dict(columns, features=features, info=dataset_info(registry, layout, source, features))


def _check_unique(record: Record, seen: dict) -> None:
    """One row per image: a second row (even with another label) would train and score the image twice."""
    first = seen.get(str(record.image_id))
    if first is not None:
        raise ValueError(f"image_id {record.image_id!r} appears again (first at {first}); each image may appear once")


_BASE_COLUMNS = ("image", "label", "label_name", "skin_type", "boxes", "mask", "semantic_map", "image_id")


def dataset_features(registry: ConditionRegistry, id_columns=()) -> datasets.Features:
    """The dermdiff schema for a registry (plus the given id columns)."""
    features = {
        "image": datasets.Image(mode="RGB"),
        "label": datasets.ClassLabel(names=registry.names),
        "label_name": datasets.Value("string"),
        "skin_type": datasets.Value("int8"),
        "boxes": datasets.List(datasets.List(datasets.Value("int32"))),
        "mask": datasets.Image(mode="L"),
        "semantic_map": datasets.Image(mode="RGB"),
        "image_id": datasets.Value("string"),
    }
    features.update({name: datasets.Value("string") for name in id_columns})
    return datasets.Features(features)


def check_limit(limit) -> int | None:
    """`None` or a positive row count (the loaders' `limit=`)."""
    if limit is None:
        return None
    if isinstance(limit, bool) or int(limit) != limit or int(limit) < 1:
        raise ValueError(f"limit must be a positive number of rows, got {limit!r}")
    return int(limit)


def _as_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    height, width = (size, size) if isinstance(size, (int, np.integer)) else (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (an int or (height, width)), got {size!r}")
    check_image_size(width, height, "resize target size")
    return int(height), int(width)


def _row(record: Record, registry: ConditionRegistry, size: tuple[int, int] | None) -> dict:
    # 1. label (empty = healthy skin, label -1 as in datasets' ClassLabel) and skin type
    text = "" if record.label is None else str(record.label).strip()
    name = registry.name(registry.code(text)) if text else None
    skin_type = parse_skin_type(record.skin_type, record.where)

    # 2. pixels (a path is decoded once to prove it is readable and to learn its size)
    if isinstance(record.image, str):
        image = read_image(record.image, record.where)
    elif isinstance(record.image, Image.Image):
        image = record.image
    else:
        image = Image.fromarray(np.asarray(record.image))
    height, width = image.height, image.width

    # 3. the semantic map: map file, else mask, else boxes, else the whole image
    given_boxes = parse_boxes(record.boxes, record.where)
    for box in given_boxes or []:
        _validate_box(box, (height, width))  # also when a mask or map file draws the region
    mask = None
    if record.mask is not None:
        raw = read_mask(record.mask, record.where) if isinstance(record.mask, str) else np.asarray(record.mask)
        mask = fit_mask(raw, (height, width), record.where)
    if record.map_file is not None:
        smap = _read_map(record.map_file, registry, (height, width), skin_type, record.where)
        if (name is None) != (not smap.regions) or (name is not None and name not in smap.conditions):
            state = "healthy skin" if not smap.regions else f"regions of {smap.conditions}"
            raise ValueError(f"label {text!r} contradicts the semantic map {record.map_file!r}, which shows {state}")
        if skin_type is None:  # the map knows the skin type the row left empty
            skin_type = smap.skin_type
        elif smap.skin_type is None:
            smap = smap.with_skin_type(skin_type)
    elif name is None:
        smap = SemanticMap.from_annotations(None, skin_type, boxes=given_boxes, mask=mask, size=(height, width),
                                            registry=registry)
    elif mask is not None:
        if not mask.any():
            raise ValueError("the lesion mask is empty (no lesion pixel)")
        smap = SemanticMap.from_annotations(name, skin_type, mask=mask, registry=registry)
    else:
        boxes = given_boxes or [[0, 0, width, height]]
        smap = SemanticMap.from_annotations(name, skin_type, boxes=boxes, size=(height, width), registry=registry)
    boxes = [list(box) for box in (given_boxes or smap.boxes)]

    # 4. optional resize: bicubic pixels, nearest codes and masks
    resized = size is not None and size != (height, width)
    if resized:
        image = to_rgb(image).resize((size[1], size[0]), Image.BICUBIC)
        mask = None if mask is None else resize_mask(mask, size)
        smap = smap.resize(size)
        boxes = [list(box) for box in smap.boxes]

    if isinstance(record.image, str) and not resized:
        stored_image = {"path": os.path.abspath(record.image), "bytes": None}
    else:
        stored_image = {"path": None, "bytes": png_bytes(to_rgb(image))}
    return {
        "image": stored_image,
        "label": -1 if name is None else registry.index(name),
        "label_name": name,
        "skin_type": skin_type,
        "boxes": boxes,
        "mask": None if mask is None else {"path": None, "bytes": png_bytes(mask_image(mask))},
        "semantic_map": {"path": None, "bytes": png_bytes(smap.to_pil())},
        "image_id": str(record.image_id),
    }


def _read_map(path: str, registry, size, skin_type, where: str) -> SemanticMap:
    image = read_image(path, where, "semantic map file").convert("RGB")
    smap = SemanticMap.decode(image, registry, source=path)
    if smap.size != size:
        raise ValueError(f"{where}: semantic map {path!r} has size {smap.size}, the image {size} (height, width)")
    if skin_type is not None and smap.skin_type not in (None, skin_type):
        raise ValueError(f"{where}: semantic map {path!r} encodes skin type {smap.skin_type}, the row says {skin_type}")
    return smap
