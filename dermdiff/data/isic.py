"""Load the ISIC 2019 and ISIC 2020 challenge training sets from their ground-truth CSVs.

ISIC 2019 (25,331 dermoscopic images, 8 classes; HAM10000, BCN_20000 and MSK images):
`ISIC_2019_Training_GroundTruth.csv` with `image` and one-hot columns `MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK`
(exactly one 1.0 per row), optionally `ISIC_2019_Training_Metadata.csv` with `image`, `age_approx`,
`anatom_site_general`, `lesion_id`, `sex`. Images `<image>.jpg` in `ISIC_2019_Training_Input/`, `images/` or
the folder itself. Images of one lesion share `lesion_id` (where given), so splits keep a lesion whole.
`split="test"` reads the `ISIC_2019_Test_*` files instead.

ISIC 2020 (SIIM-ISIC, 33,126 images of 2,056 patients): `ISIC_2020_Training_GroundTruth_v2.csv` (adds
`lesion_id`), `ISIC_2020_Training_GroundTruth.csv` or Kaggle's `train.csv`, with `image_name`, `patient_id`,
`sex`, `age_approx`, `anatom_site_general_challenge`, `diagnosis`, `benign_malignant` and `target` (1 =
melanoma). Images `<image_name>.jpg` in `train/`, `ISIC_2020_Training_JPEG/`, `jpeg/train/`, `images/` or the
folder. Splits keep a patient whole (`patient_id`).

Neither records a skin type: `skin_type` is unknown for every image. No masks or boxes: maps cover the photo.

Licence: both challenge sets are CC BY-NC 4.0 (the ISIC challenge data pages); images taken from the ISIC
Archive itself carry their own per-image licence (CC-0, CC BY or CC BY-NC), listed in the archive's metadata.
"""

from __future__ import annotations

import os

import datasets

from ..conditions import ConditionRegistry
from ..errors import DataError
from .records import Record, build_dataset, check_limit
from .tables import cell, check_values, find_file, index_images, read_table

ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
ISIC2019_SPLITS = {"train": "Training", "test": "Test"}
ISIC2020_FILES = ("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv", "train.csv")
ISIC2020_LABEL_COLUMNS = ("benign_malignant", "diagnosis")
ISIC2020_IMAGE_FOLDERS = ("train", "ISIC_2020_Training_JPEG", "ISIC_2020_Training_JPEG/train", "jpeg/train",
                          "images", ".")
ONE_HOT_VALUES = ("0", "1", "0.0", "1.0")


def load_isic2019(root: str, split: str = "train", size=None, skip_bad: bool = False, limit: int | None = None):
    """Loads ISIC 2019 (module docstring); labels are the one-hot column names, registry `isic2019`.

    Args:
        root (`str`): the folder with `ISIC_2019_Training_GroundTruth.csv` (or the test files).
        split (`str`, defaults to `"train"`): `train` or `test` (which published files to read).
        size, skip_bad, limit: as in `load_ham10000`.

    Example:
        >>> dataset = load_isic2019("/data/isic2019", size=64)
        >>> dataset.features["label"].names
        ['MEL', 'NV', 'BCC', 'AK', 'BKL', 'DF', 'VASC', 'SCC', 'UNK']
    """
    if split not in ISIC2019_SPLITS:
        raise ValueError(f"split must be one of {list(ISIC2019_SPLITS)}, got {split!r}")
    stem = f"ISIC_2019_{ISIC2019_SPLITS[split]}"
    path = find_file(root, (f"{stem}_GroundTruth.csv",), "ISIC 2019")
    table = read_table(path, ("image",) + ISIC2019_CLASSES, "ISIC 2019 ground truth")
    for column in ISIC2019_CLASSES:
        check_values(table, column, ONE_HOT_VALUES, path)
    lesions = _isic2019_lesions(os.path.join(root, f"{stem}_Metadata.csv"))
    limit = check_limit(limit)
    table = table.head(limit) if limit is not None else table
    images = index_images(root, (f"{stem}_Input", "images", "."))
    records = _isic2019_records(table, images, lesions, path, root)
    registry = ConditionRegistry(ISIC2019_CLASSES, name="isic2019")
    return build_dataset(records, registry, "isic2019", os.path.abspath(root), skip_bad, size)


def _isic2019_lesions(path: str) -> dict[str, str]:
    """image -> lesion_id from the metadata CSV (empty when the file is absent)."""
    if not os.path.isfile(path):
        return {}
    table = read_table(path, ("image",), "ISIC 2019 metadata")
    if "lesion_id" not in table.columns:  # the test metadata has none
        return {}
    return dict(zip(table["image"].str.strip(), table["lesion_id"].str.strip(), strict=True))


def _isic2019_records(table, images: dict, lesions: dict, path: str, root: str):
    name = os.path.basename(path)
    for position, row in enumerate(table.to_dict("records")):
        image = cell(row, "image")
        hot = [column for column in ISIC2019_CLASSES if float(cell(row, column)) == 1.0]
        if len(hot) != 1:
            raise DataError(f"{path} line {position + 2} (image={image!r}): {len(hot)} of the one-hot columns "
                             f"{list(ISIC2019_CLASSES)} are 1 ({hot}); exactly one must be")
        yield Record(
            where=f"{name} line {position + 2} (image={image!r})",
            image=images.get(image, os.path.join(root, "images", f"{image}.jpg")),
            label=hot[0],
            image_id=image,
            ids={"lesion_id": lesions.get(image, "")},
        )


def load_isic2020(
    root: str,
    label_column: str = "benign_malignant",
    size=None,
    skip_bad: bool = False,
    limit: int | None = None,
) -> datasets.Dataset:
    """Loads ISIC 2020 (module docstring), grouped by `patient_id` (and `lesion_id` from the v2 CSV).

    Args:
        root (`str`): the folder with one of `ISIC2020_FILES`.
        label_column (`str`, defaults to `"benign_malignant"`): `benign_malignant` (registry benign, malignant)
            or `diagnosis` (nevus, melanoma, unknown, ...: the sorted distinct values of the whole CSV).
        size, skip_bad, limit: as in `load_ham10000`.

    Example:
        >>> dataset = load_isic2020("/data/isic2020", size=64)
        >>> dataset[0]["patient_id"], dataset[0]["label_name"]
    """
    if label_column not in ISIC2020_LABEL_COLUMNS:
        raise ValueError(f"label_column must be one of {list(ISIC2020_LABEL_COLUMNS)}, got {label_column!r}")
    path = find_file(root, ISIC2020_FILES, "ISIC 2020")
    required = ("image_name", "patient_id", "diagnosis", "benign_malignant", "target")
    table = read_table(path, required, "ISIC 2020 ground truth")
    check_values(table, "benign_malignant", ("benign", "malignant"), path)
    check_values(table, "target", ("0", "1"), path)
    if label_column == "benign_malignant":
        registry = ConditionRegistry(["benign", "malignant"], name="isic2020-benign_malignant")
    else:
        names = sorted({value.strip() for value in table["diagnosis"] if value.strip()})
        registry = ConditionRegistry(names, name="isic2020-diagnosis")
    limit = check_limit(limit)
    table = table.head(limit) if limit is not None else table
    images = index_images(root, ISIC2020_IMAGE_FOLDERS)
    records = _isic2020_records(table, images, label_column, os.path.basename(path), root)
    return build_dataset(records, registry, "isic2020", os.path.abspath(root), skip_bad, size)


def _isic2020_records(table, images: dict, label_column: str, name: str, root: str):
    for position, row in enumerate(table.to_dict("records")):
        image = cell(row, "image_name")
        yield Record(
            where=f"{name} line {position + 2} (image_name={image!r})",
            image=images.get(image, os.path.join(root, "train", f"{image}.jpg")),
            label=cell(row, label_column),
            image_id=image,
            ids={"patient_id": cell(row, "patient_id"), "lesion_id": cell(row, "lesion_id")},
        )
