"""Deterministic train / validation / mining / test splits that keep groups whole and look like the whole.

The hard-case loop (Aveiro thesis proposal) needs four disjoint parts: `train` for the classifier and the
generator, `validation` for model selection, `mining` where misclassified cases are looked for, and
`test`, touched once at the end. HAM10000 has several images of one lesion and PAD-UFES-20 several
lesions of one patient; if copies of a lesion sat in train and test, accuracy would measure memory.
So whole groups are assigned. A test split only estimates accuracy on unseen cases if it also looks
like them: HAM10000's multi-image lesions are mostly `follow_up` nevi, which are easy, and an earlier
version of this module (largest groups first into the split with the largest image deficit) put 56%
of train's images but 3% of test's in such lesions, so its test accuracy (0.774) overstated the
accuracy on lesion-disjoint unseen images (0.684). The method now:

1. every row belongs to a group: its `patient_id`, else its `lesion_id`, else itself;
2. each group gets categories: its label (the most frequent; ties go to the lower label), its size
   (`single` or `multi`-image), its label x size, and its value of each `stratify_by` column (the
   most frequent; empty -> `unknown`); every group is also in the category `all`;
3. groups are visited in a seeded random order, rarest category first, and each goes to the split
   whose share of the group's categories would be least filled with it: the smallest sum, over the
   group's categories, of `(images of the category already there + the group's images) / (fraction *
   images of the category)` (ties: the earlier split). Every split thus fills every category at the
   same relative pace; a category of 20 images steers as much as one of 5,000; and a category with a
   single group goes to the largest split (train), where a classifier can learn from it.

So every split gets close to its fraction of every label, of single- and multi-image groups and of
every stratification value, not just of the images; `split_composition` measures how close.
If the dataset already has a `split` column (the metadata decided), it is used as is.

Example:
    >>> parts = make_splits(load_ham10000("/data/ham10000"), seed=0, stratify_by=["dx_type"])
    >>> {name: len(part) for name, part in parts.items()}
    {'train': 4805, 'validation': 801, 'mining': 1201, 'test': 1202}
    >>> print(composition_markdown(split_composition(parts, ["dx_type"])))
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence

import datasets
import numpy as np

DEFAULT_FRACTIONS = {"train": 0.6, "validation": 0.1, "mining": 0.15, "test": 0.15}
GROUP_COLUMNS = ("patient_id", "lesion_id")
UNKNOWN = "unknown"


def make_splits(
    dataset: datasets.Dataset,
    fractions: dict[str, float] | None = None,
    seed: int = 0,
    group_by: str | None = "auto",
    use_split_column: bool = True,
    stratify_by: Sequence[str] = (),
) -> datasets.DatasetDict:
    """Splits a dermdiff dataset into a `DatasetDict` (see the module docstring for the method).

    Args:
        dataset (`datasets.Dataset`): with a `label` column (and ids to group by).
        fractions (`dict[str, float]`, *optional*): split name -> fraction, summing to 1; defaults to
            train 0.6, validation 0.1, mining 0.15, test 0.15. A fraction may be 0 (an empty split).
        seed (`int`): the same seed and data give the same splits.
        group_by (`str`, *optional*): the id column to keep together; `"auto"` takes `patient_id`, else
            `lesion_id`, when present; `None` splits single images.
        use_split_column (`bool`): honour an existing `split` column.
        stratify_by (`list[str]`): more columns whose mix every split should share (e.g. `dx_type`,
            `skin_type`, a body site). Label and group size are always matched.

    Returns:
        `datasets.DatasetDict` with one entry per split name, rows in their original order.
    """
    if use_split_column and "split" in dataset.column_names:
        return _from_split_column(dataset, group_by)
    fractions = _check_fractions(fractions)
    stratify_by = check_stratify_columns(dataset, stratify_by)
    extra = {name: dataset[name] for name in stratify_by}
    groups = _group_ids(dataset, group_by)
    assignment = assign_groups(dataset["label"], groups, list(fractions.values()), seed, extra)
    return datasets.DatasetDict(
        {name: dataset.select(np.flatnonzero(assignment == index)) for index, name in enumerate(fractions)}
    )


def assign_groups(
    labels, groups, fractions: list[float], seed: int = 0, extra: dict[str, Sequence] | None = None
) -> np.ndarray:
    """The split index (position in `fractions`) of every row; rows of one group share it.

    Args:
        labels: one label per row.
        groups: one group key per row.
        fractions (`list[float]`): the split fractions, in split order.
        seed (`int`): seeds the visiting order.
        extra (`dict[str, Sequence]`, *optional*): more stratification columns, one value per row.
    """
    labels = np.asarray(labels)
    members: dict[str, list[int]] = defaultdict(list)
    for row, group in enumerate(groups):
        members[group].append(row)
    names = sorted(members)
    categories = [_categories(labels, members[group], extra or {}) for group in names]
    sizes = np.array([len(members[group]) for group in names], dtype=float)

    category_images: Counter = Counter()
    for group_categories, size in zip(categories, sizes):
        for category in group_categories:
            category_images[category] += size

    # 1. seeded random order, then the groups of the rarest categories first (a stable sort)
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(len(names)))
    order.sort(key=lambda index: min(category_images[category] for category in categories[index]))

    # 2. each group into the split furthest below its share of the group's categories
    targets = np.asarray(fractions, dtype=float)
    open_splits = targets > 0
    filled: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(targets)))
    assignment = np.full(len(labels), -1, dtype=np.int64)
    for index in order:
        fill = np.zeros(len(targets))
        for category in categories[index]:
            fill += (filled[category] + sizes[index]) / np.maximum(targets * category_images[category], 1e-12)
        split = int(np.argmin(np.where(open_splits, fill, np.inf)))  # ties: the earlier split
        assignment[members[names[index]]] = split
        for category in categories[index]:
            filled[category][split] += sizes[index]
    return assignment


def _categories(labels: np.ndarray, rows: list[int], extra: dict[str, Sequence]) -> list[tuple]:
    """The categories a group counts towards (module docstring, step 2)."""
    label = _most_frequent(labels[rows].tolist())
    size = "multi" if len(rows) > 1 else "single"
    found = [("all",), ("label", label), ("size", size), ("label x size", label, size)]
    for name, values in extra.items():
        found.append((name, _most_frequent([_value(values[row]) for row in rows])))
    return found


def _most_frequent(values: list):
    counts = Counter(values)
    return min(counts, key=lambda value: (-counts[value], str(value)))


def _value(value) -> str:
    return UNKNOWN if value is None or str(value).strip() in ("", "nan", "None") else str(value)


def check_stratify_columns(dataset: datasets.Dataset, stratify_by: Sequence[str]) -> list[str]:
    """The stratification columns, each checked to exist and to hold more than one value."""
    if isinstance(stratify_by, str):
        stratify_by = [stratify_by]
    columns = list(stratify_by or ())
    reserved = {"image", "mask", "semantic_map", "boxes"}
    allowed = [name for name in dataset.column_names if name not in reserved]
    for name in columns:
        if name not in allowed:
            raise ValueError(f"stratify_by column {name!r} is not in the dataset; columns to stratify by: {allowed}")
        values = {_value(value) for value in dataset[name]}
        if len(values) < 2:
            raise ValueError(
                f"stratify_by column {name!r} has one value only ({sorted(values)}); nothing to stratify by"
            )
    return columns


def split_composition(
    parts: datasets.DatasetDict, stratify_by: Sequence[str] = (), group_by: str | None = "auto"
) -> dict:
    """Each split's make-up, to check that every split looks like the whole.

    Returns:
        `dict` with `splits` (name -> images, groups and, per aspect, value -> share of the split's
        images), `aspects` (aspect -> values) and `max_gap` (aspect -> the largest difference between two
        splits' shares of one value, in share units). Aspects: `label`, `group size` (images from
        single- vs multi-image groups) and each `stratify_by` column.
    """
    splits, values = {}, defaultdict(set)
    for name, part in parts.items():
        if len(part) == 0:
            continue
        groups = _group_ids(part, group_by)
        group_sizes = Counter(groups)
        names = part.features["label"].names if hasattr(part.features["label"], "names") else None
        aspects = {
            "label": [names[label] if names and label >= 0 else str(label) for label in part["label"]],
            "group size": ["multi" if group_sizes[group] > 1 else "single" for group in groups],
        }
        aspects.update({column: [_value(value) for value in part[column]] for column in stratify_by})
        shares = {}
        for aspect, column in aspects.items():
            counts = Counter(column)
            shares[aspect] = {value: counts[value] / len(part) for value in counts}
            values[aspect].update(counts)
        splits[name] = {"images": len(part), "groups": len(group_sizes), "shares": shares}
    max_gap = {}
    for aspect, aspect_values in values.items():
        gaps = []
        for value in aspect_values:
            shares = [split["shares"][aspect].get(value, 0.0) for split in splits.values()]
            gaps.append(max(shares) - min(shares))
        max_gap[aspect] = max(gaps)
    return {"splits": splits, "aspects": {k: sorted(v) for k, v in values.items()}, "max_gap": max_gap}


def composition_markdown(composition: dict) -> str:
    """`split_composition` as a Markdown table: one row per split, one column per aspect value (% of images)."""
    columns = [(aspect, value) for aspect, aspect_values in composition["aspects"].items() for value in aspect_values]
    header = "| split | images | groups | " + " | ".join(f"{aspect}: {value}" for aspect, value in columns) + " |"
    lines = [header, "|" + "---|" * (3 + len(columns))]
    for name, split in composition["splits"].items():
        cells = [f"{100 * split['shares'][aspect].get(value, 0.0):.1f}%" for aspect, value in columns]
        lines.append(f"| {name} | {split['images']} | {split['groups']} | " + " | ".join(cells) + " |")
    gaps = ", ".join(f"{aspect} {100 * gap:.1f} pp" for aspect, gap in composition["max_gap"].items())
    return "\n".join(lines) + f"\n\nLargest difference between two splits' shares: {gaps}."


def save_composition(parts, output_dir: str, stratify_by: Sequence[str] = ()) -> str:
    """Writes `splits.md` and `splits.json` (`split_composition`) into `output_dir`; returns the Markdown."""
    composition = split_composition(parts, stratify_by)
    text = composition_markdown(composition)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "splits.md"), "w", encoding="utf-8") as handle:
        handle.write("# Split composition (share of each split's images)\n\n" + text + "\n")
    with open(os.path.join(output_dir, "splits.json"), "w", encoding="utf-8") as handle:
        json.dump(composition, handle, indent=2)
    return text


def parse_stratify_by(text: str | None) -> list[str]:
    """`--stratify_by dx_type,skin_type` -> `["dx_type", "skin_type"]` (empty -> none)."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _group_ids(dataset: datasets.Dataset, group_by: str | None) -> list[str]:
    """One group key per row: the chosen id column, falling back to the row itself where it is empty."""
    column = None
    if group_by == "auto":
        column = next((name for name in GROUP_COLUMNS if _has_values(dataset, name)), None)
    elif group_by is not None:
        if group_by not in dataset.column_names:
            raise ValueError(f"group_by={group_by!r} is not a column; columns: {dataset.column_names}")
        column = group_by
    if column is None:
        return [f"row:{row}" for row in range(len(dataset))]
    return [f"{column}:{value}" if value not in (None, "") else f"row:{row}" for row, value in enumerate(dataset[column])]


def _has_values(dataset: datasets.Dataset, column: str) -> bool:
    return column in dataset.column_names and any(value not in (None, "") for value in dataset[column])


def _check_fractions(fractions: dict[str, float] | None) -> dict[str, float]:
    fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    if not fractions or any(not isinstance(v, (int, float)) or v < 0 for v in fractions.values()):
        raise ValueError(f"fractions must map split names to numbers >= 0, got {fractions}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions} (sum {sum(fractions.values()):.4f})")
    return fractions


def _from_split_column(dataset: datasets.Dataset, group_by: str | None) -> datasets.DatasetDict:
    values = dataset["split"]
    empty = [row for row, value in enumerate(values) if value in (None, "")]
    if empty:
        raise ValueError(
            f"the split column is empty in {len(empty)} rows (first rows {empty[:5]}); fill every row or "
            "pass use_split_column=False to compute splits"
        )
    groups = _group_ids(dataset, group_by)
    seen: dict[str, set] = defaultdict(set)
    for group, split in zip(groups, values):
        seen[group].add(split)
    leaking = [group for group, splits in seen.items() if len(splits) > 1]
    if leaking:
        warnings.warn(f"the given split column puts {len(leaking)} groups in several splits, e.g. {leaking[:3]}")
    order = list(dict.fromkeys(values))
    return datasets.DatasetDict(
        {name: dataset.select([row for row, value in enumerate(values) if value == name]) for name in order}
    )
