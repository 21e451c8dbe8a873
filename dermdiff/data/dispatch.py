"""One call for any supported dataset: recognise the layout of a path (or a known name) and load it.

| layout        | recognised by                                                          | loader              |
|---------------|------------------------------------------------------------------------|---------------------|
| `imagefolder` | `metadata.csv` with a `file_name` column                               | `load_dataset_dir`  |
| `ham10000`    | `metadata.csv` / `HAM10000_metadata.csv` with `image_id` and `dx`      | `load_ham10000`     |
| `pad_ufes20`  | `metadata.csv` with `diagnostic` and `patient_id`                      | `load_pad_ufes20`   |
| `dermamnist`  | a `.npz` with `{split}_images` (or a folder holding exactly one)       | `load_dermamnist`   |
| `saved`       | a `save_to_disk` folder (`state.json` or `dataset_dict.json`)          | `load_saved_dataset`|
| `hub`         | `owner/name` that is not a local path: a Hugging Face Hub dataset id   | `load_hub_dataset`  |
| `fitzpatrick17k` | `fitzpatrick17k.csv`                                                | `load_fitzpatrick17k` |
| `ddi`         | `ddi_metadata.csv`                                                     | `load_ddi`          |
| `scin`        | `scin_cases.csv` (in the folder or its `dataset/`)                     | `load_scin`         |
| `isic2019`    | `ISIC_2019_Training_GroundTruth.csv` / `ISIC_2019_Test_GroundTruth.csv` | `load_isic2019`     |
| `isic2020`    | `ISIC_2020_Training_GroundTruth[_v2].csv`, or `train.csv` with `image_name` + `target` | `load_isic2020` |

The source-specific files are looked for first. A bare name (`"ham10000"`, `"dermamnist"`, `"pad_ufes20"`,
`"fitzpatrick17k"`, `"ddi"`, `"scin"`, `"isic2019"`, `"isic2020"`) is looked up as a folder under `data_root`
or the `DERMDIFF_DATA` environment variable; `"phantom"` (when no such path exists) builds the
built-in phantom with `dermdiff.data.phantom_dataset(**kwargs)`.

Loader options (`**kwargs`) are checked against the chosen loader's signature, so an option meant for
another source (`split=` for a HAM10000 folder) fails with one line naming the allowed ones instead of
a TypeError deep inside.
"""

from __future__ import annotations

import inspect
import os

from ..errors import DataError
from ..hub import looks_like_repo_id
from .ddi import load_ddi
from .dermamnist import load_dermamnist
from .files import open_npz, read_table
from .fitzpatrick17k import load_fitzpatrick17k
from .folder import load_dataset_dir
from .ham10000 import METADATA_NAMES as HAM_METADATA_NAMES
from .ham10000 import load_ham10000
from .hub_source import is_saved_dataset, load_hub_dataset, load_saved_dataset
from .isic import ISIC2020_FILES, load_isic2019, load_isic2020
from .pad_ufes20 import load_pad_ufes20
from .scin import load_scin

LAYOUTS = ("imagefolder", "ham10000", "pad_ufes20", "dermamnist", "saved", "hub", "fitzpatrick17k", "ddi",
           "scin", "isic2019", "isic2020")
KNOWN_NAMES = ("ham10000", "dermamnist", "pad_ufes20", "fitzpatrick17k", "ddi", "scin", "isic2019", "isic2020")
# source-specific metadata files -> layout, looked for before metadata.csv
SOURCE_FILES = (
    ("fitzpatrick17k.csv", "fitzpatrick17k"),
    ("ddi_metadata.csv", "ddi"),
    ("scin_cases.csv", "scin"),
    ("dataset/scin_cases.csv", "scin"),
    ("ISIC_2019_Training_GroundTruth.csv", "isic2019"),
    ("ISIC_2019_Test_GroundTruth.csv", "isic2019"),
) + tuple((name, "isic2020") for name in ISIC2020_FILES if name != "train.csv")
DATA_ROOT_VARIABLE = "DERMDIFF_DATA"
_LOADERS = {
    "imagefolder": load_dataset_dir,
    "ham10000": load_ham10000,
    "pad_ufes20": load_pad_ufes20,
    "dermamnist": load_dermamnist,
    "saved": load_saved_dataset,
    "hub": load_hub_dataset,
    "fitzpatrick17k": load_fitzpatrick17k,
    "ddi": load_ddi,
    "scin": load_scin,
    "isic2019": load_isic2019,
    "isic2020": load_isic2020,
}


def load_any(path_or_name: str, data_root: str | None = None, **kwargs):
    """Loads a dataset whatever its layout (see the module table); extra keywords go to the loader.

    Args:
        path_or_name (`str`): a folder, a DermaMNIST `.npz`, a `save_to_disk` folder, a known name,
            `"phantom"`, or a Hub dataset id (`owner/name`, when no such local path exists).
        data_root (`str`, *optional*): where known names live (default: `$DERMDIFF_DATA`).
        **kwargs: the chosen loader's options, e.g. `limit=100`, `size=64`, `skip_bad=True`, `split="val"`;
            one it does not take is a `ValueError` naming the ones it does (`loader_options(layout)`).

    Returns:
        `datasets.Dataset` with the dermdiff columns (a Hub or saved dataset: at least `image` and a
        `ClassLabel` `label`); `registry_of(dataset)` gives its registry.

    Example:
        >>> load_any("/data/ham10000", size=64)
        >>> load_any("dermamnist", data_root="/data", split="val")
        >>> load_any("someone/skin-lesions", split="test", label_column="dx")
    """
    if is_hub_id(path_or_name):
        check_loader_options("hub", path_or_name, kwargs)
        return load_hub_dataset(path_or_name, **kwargs)
    path = resolve_path(path_or_name, data_root)
    if path is None:  # "phantom" with no folder of that name
        from .phantom import phantom_dataset

        check_loader_options("phantom", "phantom", kwargs, phantom_dataset)
        return phantom_dataset(**kwargs)
    layout, target = detect_layout(path)
    check_loader_options(layout, target, kwargs)
    return _LOADERS[layout](target, **kwargs)


def is_hub_id(path_or_name) -> bool:
    """`owner/name` that is neither an existing path nor a known name: read as a Hub dataset id."""
    return looks_like_repo_id(path_or_name) and os.fspath(path_or_name) not in KNOWN_NAMES


def loader_options(layout: str, loader=None) -> list:
    """The keyword options the loader of `layout` accepts (its parameters after the path)."""
    parameters = list(inspect.signature(loader or _LOADERS[layout]).parameters.values())
    if layout != "phantom":
        parameters = parameters[1:]  # the path itself
    return [item.name for item in parameters if item.kind in (item.POSITIONAL_OR_KEYWORD, item.KEYWORD_ONLY)]


def check_loader_options(layout: str, source: str, kwargs: dict, loader=None) -> None:
    """One line naming the option(s) and the source's allowed options when an option does not apply."""
    allowed = loader_options(layout, loader)
    bad = sorted(set(kwargs) - set(allowed))
    if bad:
        raise ValueError(
            f"loader option(s) {bad} do not apply to {source!r} ({layout} layout); its options: {allowed}"
        )


def resolve_path(path_or_name: str, data_root: str | None = None) -> str | None:
    """The path to load; `None` means the built-in phantom."""
    path = os.fspath(path_or_name)
    if os.path.exists(path):
        return path
    if path in KNOWN_NAMES:
        root = data_root or os.environ.get(DATA_ROOT_VARIABLE)
        if not root:
            raise FileNotFoundError(
                f"{path!r} is a known dataset name but no data root is set; pass data_root= or set "
                f"${DATA_ROOT_VARIABLE} to the folder that holds {path}/"
            )
        candidate = os.path.join(root, path)
        if not os.path.exists(candidate):
            raise FileNotFoundError(f"{candidate!r} does not exist (data root {root!r})")
        return candidate
    if path == "phantom":
        return None
    raise FileNotFoundError(
        f"{path!r} is neither an existing path nor a known name ({list(KNOWN_NAMES) + ['phantom']}), nor a Hub "
        "dataset id (owner/name)"
    )


def detect_layout(path: str) -> tuple[str, str]:
    """`(layout, what to pass the loader)` for a folder or file; `ValueError` if nothing fits."""
    if os.path.isfile(path):
        if path.endswith(".npz") and _is_medmnist(path):
            return "dermamnist", path
        raise ValueError(f"{path!r} is a file but not a MedMNIST npz; supported layouts: {list(LAYOUTS)}")
    if is_saved_dataset(path):
        return "saved", path
    for name, layout in SOURCE_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return layout, path
    kaggle = os.path.join(path, "train.csv")  # the SIIM-ISIC Kaggle copy of ISIC 2020
    if os.path.isfile(kaggle) and {"image_name", "target"} <= set(read_table(kaggle, nrows=0).columns):
        return "isic2020", path
    for name in ("metadata.csv",) + HAM_METADATA_NAMES:
        csv_path = os.path.join(path, name)
        if os.path.isfile(csv_path):
            columns = set(read_table(csv_path, nrows=0).columns)
            if "file_name" in columns:
                return "imagefolder", path
            if {"image_id", "dx"} <= columns:
                return "ham10000", path
            if {"diagnostic", "patient_id"} <= columns:
                return "pad_ufes20", path
            raise DataError(
                f"{csv_path} has columns {sorted(columns)}; expected file_name (image folder), image_id+dx "
                "(HAM10000) or diagnostic+patient_id (PAD-UFES-20)"
            )
    npz_files = sorted(name for name in os.listdir(path) if name.endswith(".npz"))
    medmnist = [os.path.join(path, name) for name in npz_files if _is_medmnist(os.path.join(path, name))]
    if len(medmnist) == 1:
        return "dermamnist", medmnist[0]
    if len(medmnist) > 1:
        raise ValueError(f"{path!r} holds several MedMNIST files {medmnist}; pass the one to load")
    raise ValueError(
        f"cannot tell the layout of {path!r}: no metadata.csv / HAM10000_metadata.csv, no source file "
        f"{[name for name, _ in SOURCE_FILES]} and no MedMNIST npz (supported layouts: {list(LAYOUTS)})"
    )


def _is_medmnist(path: str) -> bool:
    with open_npz(path) as archive:
        return any(key.endswith("_images") for key in archive.files)
