"""Datasets that are already `datasets` datasets: a `save_to_disk` folder or a Hugging Face Hub dataset id.

Why a loader at all: the rest of dermdiff reads `image` (PIL) and an integer `label` whose names travel
with the data (a `ClassLabel`). A saved dermdiff split has both; a Hub dataset may call them something
else (`img`, `dx`) or store the labels as strings. These loaders pick the split, rename the columns and
encode string labels, and nothing more: no images are decoded here.

Hub datasets are read from the `datasets` cache when they are there and downloaded only when the
network answers; offline, a dataset that is not cached fails with one line naming the cache.
"""

from __future__ import annotations

import os

import datasets

from .records import check_limit

SAVED_MARKERS = ("state.json", "dataset_dict.json")


def is_saved_dataset(path: str) -> bool:
    """True for a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MARKERS)


def load_saved_dataset(
    path: str,
    split: str | None = None,
    limit: int | None = None,
    image_column: str = "image",
    label_column: str = "label",
) -> datasets.Dataset:
    """Loads a `save_to_disk` folder (a `Dataset`, or one split of a `DatasetDict`).

    Args:
        path (`str`): the folder.
        split (`str`, *optional*): the split of a `DatasetDict`; may be left out when it has only one.
        limit (`int`, *optional*): keep only the first `limit` rows.
        image_column (`str`, defaults to `"image"`), label_column (`str`, defaults to `"label"`): the
            columns renamed to `image` / `label`.

    Example:
        >>> splits["test"].save_to_disk("test_split")
        >>> load_saved_dataset("test_split")
    """
    loaded = datasets.load_from_disk(path)
    where = f"saved dataset {path!r}"
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _pick_split(loaded, split, where)
    elif split is not None and "split" in loaded.column_names:
        loaded = loaded.filter(lambda value: value == split, input_columns="split")
    elif split is not None:
        raise ValueError(f"split={split!r}: {where} is a single Dataset without a 'split' column")
    return _standard_columns(loaded, image_column, label_column, limit, where)


def load_hub_dataset(
    repo_id: str,
    split: str = "test",
    limit: int | None = None,
    image_column: str = "image",
    label_column: str = "label",
    revision: str | None = None,
) -> datasets.Dataset:
    """Loads one split of a Hugging Face Hub dataset (from the `datasets` cache when it is there).

    Args:
        repo_id (`str`): e.g. `"someone/ham10000"`.
        split (`str`, defaults to `"test"`): the split to load.
        limit (`int`, *optional*): keep only the first `limit` rows.
        image_column (`str`, defaults to `"image"`), label_column (`str`, defaults to `"label"`): the
            columns renamed to `image` / `label`.
        revision (`str`, *optional*): a branch, tag or commit of the dataset repo.
    """
    try:
        loaded = datasets.load_dataset(repo_id, split=split, revision=revision)
    except (FileNotFoundError, ConnectionError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(
            f"Hub dataset {repo_id!r} (split {split!r}) not found: looked for a local folder "
            f"{os.path.abspath(repo_id)} and in the datasets cache {datasets.config.HF_DATASETS_CACHE}, and "
            f"could not download it ({first})"
        ) from None
    except ValueError as error:  # e.g. an unknown split
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"Hub dataset {repo_id!r}: {first}") from None
    return _standard_columns(loaded, image_column, label_column, limit, f"Hub dataset {repo_id!r}")


def _pick_split(splits: datasets.DatasetDict, split: str | None, where: str) -> datasets.Dataset:
    names = list(splits)
    if split is None and len(names) == 1:
        return splits[names[0]]
    if split not in splits:
        raise ValueError(f"{where} holds splits {names}; pass split= one of them (got {split!r})")
    return splits[split]


def _standard_columns(dataset, image_column: str, label_column: str, limit, where: str) -> datasets.Dataset:
    """`image` and a `ClassLabel` `label`, renamed and encoded; the first `limit` rows."""
    for wanted, column in (("image", image_column), ("label", label_column)):
        if column not in dataset.column_names:
            raise ValueError(
                f"{where} has no {column!r} column for the {wanted}s; its columns: {dataset.column_names} "
                f"(pass {wanted}_column=...)"
            )
    renames = {old: new for old, new in ((image_column, "image"), (label_column, "label")) if old != new}
    clashes = [new for new in renames.values() if new in dataset.column_names]
    dataset = dataset.remove_columns(clashes).rename_columns(renames)
    limit = check_limit(limit)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    if not isinstance(dataset.features["label"], datasets.ClassLabel):
        dataset = dataset.class_encode_column("label")
    return dataset
