"""Load SCIN, the Skin Condition Image Network (Ward et al. 2024): 5,000+ crowd-sourced cases, 10,000+ photos.

Published layout (github.com/google-research-datasets/scin, `dataset_schema.md`; bucket `dx-scin-public-data`):

- `scin_cases.csv`: `case_id`, the self-reported `fitzpatrick_skin_type` (FST1..FST6, NONE_SELECTED or empty),
  up to three photos per case in `image_1_path`, `image_2_path`, `image_3_path` (e.g. `dataset/images/<id>.png`);
- `scin_labels.csv`: `case_id`, `weighted_skin_condition_label` (the dermatologists' differential as a dict of
  condition -> weight, e.g. `{'Eczema': 0.69, 'Psoriasis': 0.31}`), up to three dermatologist Fitzpatrick
  estimates `dermatologist_fitzpatrick_skin_type_label_1..3` (FST1..FST6) and lay Monk skin tone estimates
  `monk_skin_tone_label_us` / `monk_skin_tone_label_india` (1..10).

Both CSVs sit in the folder or in its `dataset/` subfolder (the bucket's layout); a photo is found at its path
relative to the folder, or by file name in `images/` or `dataset/images/`.

One row per photo; the photos of a case share `lesion_id` = `case_id`, so splits keep a case whole. The
condition is the differential's heaviest entry (ties: alphabetical); a case without a condition label
(dermatologists found it ungradable) is left out with one warning saying how many.

Skin type, honestly: `skin_type` is the dermatologists' Fitzpatrick estimate (the type most of them gave;
unknown when they tie or gave none), or with `skin_type_source="self_reported"` the contributor's own answer.
The other Fitzpatrick source is kept as a string column (`skin_type_self_reported` or
`skin_type_dermatologist`), and the Monk tones, a 10-point scale with no one-to-one Fitzpatrick equivalent,
as `monk_skin_tone_us` and `monk_skin_tone_india`.

Licence: the SCIN Data Use License (modelled on CC BY 4.0: use, share and adapt with attribution; any attempt
to re-identify contributors is forbidden).
"""

from __future__ import annotations

import ast
import os
import warnings
from collections import Counter

import datasets

from ..conditions import MAX_CONDITIONS, ConditionRegistry
from ..errors import DataError
from .records import Record, build_dataset, check_limit
from .tables import cell, check_values, find_file, locate, read_table

CASES_FILE, LABELS_FILE = "scin_cases.csv", "scin_labels.csv"
FOLDERS = (".", "dataset")
IMAGE_COLUMNS = ("image_1_path", "image_2_path", "image_3_path")
DERMATOLOGIST_COLUMNS = tuple(f"dermatologist_fitzpatrick_skin_type_label_{i}" for i in (1, 2, 3))
MONK_COLUMNS = {"monk_skin_tone_label_us": "monk_skin_tone_us", "monk_skin_tone_label_india": "monk_skin_tone_india"}
FST_VALUES = ("FST1", "FST2", "FST3", "FST4", "FST5", "FST6", "NONE_SELECTED", "")
MONK_VALUES = tuple(str(tone) for tone in range(1, 11)) + tuple(f"{tone}.0" for tone in range(1, 11)) + ("",)
SKIN_TYPE_SOURCES = ("dermatologist", "self_reported")


def load_scin(
    root: str,
    skin_type_source: str = "dermatologist",
    conditions=None,
    size=None,
    skip_bad: bool = False,
    limit: int | None = None,
) -> datasets.Dataset:
    """Loads a SCIN folder (module docstring) into a `datasets.Dataset` (`dermdiff.data.records` columns).

    Args:
        root (`str`): the folder with `scin_cases.csv` and `scin_labels.csv` (or with them in `dataset/`).
        skin_type_source (`str`, defaults to `"dermatologist"`): where `skin_type` comes from:
            `dermatologist` (their majority estimate) or `self_reported`.
        conditions (`list[str]`, *optional*): keep only cases whose condition is one of these (SCIN's
            differentials name a few hundred conditions; a map holds at most 255).
        size (`int` or `(height, width)`, *optional*): resize images and maps.
        skip_bad (`bool`, defaults to `False`): warn and drop bad rows instead of raising.
        limit (`int`, *optional*): read only the first `limit` cases.

    Example:
        >>> dataset = load_scin("/data/scin", conditions=["Eczema", "Psoriasis", "Urticaria"], size=64)
        >>> dataset[0]["lesion_id"], dataset[0]["skin_type"], dataset[0]["monk_skin_tone_us"]
    """
    if skin_type_source not in SKIN_TYPE_SOURCES:
        raise ValueError(f"skin_type_source must be one of {list(SKIN_TYPE_SOURCES)}, got {skin_type_source!r}")
    cases_path = find_file(root, [os.path.join(folder, CASES_FILE) for folder in FOLDERS], "SCIN")
    labels_path = find_file(root, [os.path.join(folder, LABELS_FILE) for folder in FOLDERS], "SCIN")
    cases = read_table(cases_path, ("case_id", "fitzpatrick_skin_type") + IMAGE_COLUMNS, "SCIN cases")
    labels = read_table(labels_path, ("case_id", "weighted_skin_condition_label") + DERMATOLOGIST_COLUMNS
                        + tuple(MONK_COLUMNS), "SCIN labels")
    check_values(cases, "fitzpatrick_skin_type", FST_VALUES, cases_path)
    for column in DERMATOLOGIST_COLUMNS:
        check_values(labels, column, FST_VALUES, labels_path)
    for column in MONK_COLUMNS:
        check_values(labels, column, MONK_VALUES, labels_path)

    # 1. one condition per case: the heaviest entry of the weighted differential
    label_rows = {cell(row, "case_id"): (position, row) for position, row in enumerate(labels.to_dict("records"))}
    condition = {case_id: _top_condition(row["weighted_skin_condition_label"], labels_path, position)
                 for case_id, (position, row) in label_rows.items()}
    wanted = None if conditions is None else {str(name) for name in conditions}
    names = sorted({name for name in condition.values() if name and (wanted is None or name in wanted)})
    if len(names) > MAX_CONDITIONS:
        raise DataError(f"{labels_path}: {len(names)} distinct conditions, a map holds at most {MAX_CONDITIONS}; "
                         "pass conditions=[...] to keep the ones you study")
    registry = ConditionRegistry(names, name="scin")

    # 2. the cases to load: labelled (and wanted), in the order of scin_cases.csv
    kept, unlabelled = [], 0
    for position, row in enumerate(cases.to_dict("records")):
        name = condition.get(cell(row, "case_id"))
        if not name:
            unlabelled += 1
        elif name in names:
            kept.append((position, row))
    if unlabelled:
        warnings.warn(f"{cases_path}: left out {unlabelled} case(s) without a condition label in {labels_path}",
                      stacklevel=2)
    limit = check_limit(limit)
    kept = kept[:limit] if limit is not None else kept
    records = _records(kept, label_rows, condition, skin_type_source, root)
    return build_dataset(records, registry, "scin", os.path.abspath(root), skip_bad, size)


def _top_condition(text: str, path: str, position: int) -> str:
    """The heaviest condition of a `weighted_skin_condition_label` cell ("" when the cell is empty)."""
    if not text.strip():
        return ""
    try:
        weights = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        weights = None
    if not isinstance(weights, dict) or not all(isinstance(v, (int, float)) for v in weights.values()):
        raise DataError(f"{path} line {position + 2}: column 'weighted_skin_condition_label' has {text!r}; "
                         "allowed values: a dict of condition -> weight, e.g. {'Eczema': 0.69, 'Psoriasis': 0.31}")
    return min(weights, key=lambda name: (-weights[name], str(name))) if weights else ""


def _fitzpatrick(value: str) -> str:
    """"FST3" -> "3"; NONE_SELECTED and empty -> ""."""
    return value[3:] if value.startswith("FST") else ""


def _majority(values: list[str]) -> str:
    """The type most dermatologists gave; "" when none did or the top two tie."""
    counts = Counter(value for value in values if value).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return ""
    return counts[0][0]


def _records(kept, label_rows: dict, condition: dict, skin_type_source: str, root: str):
    for position, case in kept:
        case_id = cell(case, "case_id")
        labels = label_rows[case_id][1]
        self_reported = _fitzpatrick(cell(case, "fitzpatrick_skin_type"))
        dermatologist = _majority([_fitzpatrick(cell(labels, column)) for column in DERMATOLOGIST_COLUMNS])
        if skin_type_source == "dermatologist":
            skin_type, other = dermatologist, {"skin_type_self_reported": self_reported}
        else:
            skin_type, other = self_reported, {"skin_type_dermatologist": dermatologist}
        monk = {name: cell(labels, column).removesuffix(".0") for column, name in MONK_COLUMNS.items()}
        for column in IMAGE_COLUMNS:
            relative = cell(case, column)
            if not relative:
                continue
            name = os.path.basename(relative)
            yield Record(
                where=f"{CASES_FILE} line {position + 2} (case_id={case_id!r}, {column}={relative!r})",
                image=locate(root, (os.path.dirname(relative), "images", "dataset/images"), name),
                label=condition[case_id],
                image_id=os.path.splitext(name)[0],
                skin_type=skin_type or None,
                ids={"lesion_id": case_id, **other, **monk},
            )
