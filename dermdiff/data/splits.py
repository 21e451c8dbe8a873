"""Deterministic train / validation / mining / test splits, stratified by label, grouped by lesion or patient.

The hard-case loop (seed 004) needs four disjoint parts: `train` for the classifier and the
generator, `validation` for model selection, `mining` where misclassified cases are looked for, and
`test`, touched once at the end. HAM10000 has several images of one lesion and PAD-UFES-20 several
lesions of one patient; if copies of a lesion sat in train and test, accuracy would measure memory.
So whole groups are assigned, class by class:

1. every row belongs to a group: its `patient_id`, else its `lesion_id`, else itself;
2. a group's class is its most frequent label (ties: the lower label);
3. within each class the groups are shuffled with the seed, then placed largest first, each into
   the split whose image count is furthest below its target (`fraction * images of the class`),
   ties going to the earlier split. A class with fewer groups than splits fills `train` first.

If the dataset already has a `split` column (the metadata decided), it is used as is.

Example:
    >>> parts = make_splits(load_ham10000("/data/ham10000"), seed=0)
    >>> {name: len(part) for name, part in parts.items()}
    {'train': 4805, 'validation': 801, 'mining': 1201, 'test': 1202}
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict

import datasets
import numpy as np

DEFAULT_FRACTIONS = {"train": 0.6, "validation": 0.1, "mining": 0.15, "test": 0.15}
GROUP_COLUMNS = ("patient_id", "lesion_id")


def make_splits(
    dataset: datasets.Dataset,
    fractions: dict[str, float] | None = None,
    seed: int = 0,
    group_by: str | None = "auto",
    use_split_column: bool = True,
) -> datasets.DatasetDict:
    """Splits a dermdiff dataset into a `DatasetDict` (see the module docstring for the method).

    Args:
        dataset (`datasets.Dataset`): with a `label` column (and ids to group by).
        fractions (`dict[str, float]`, *optional*): split name -> fraction, summing to 1; defaults to
            train 0.6, validation 0.1, mining 0.15, test 0.15. A fraction may be 0 (an empty split).
        seed (`int`, defaults to 0): the same seed and data give the same splits.
        group_by (`str`, *optional*): the id column to keep together; `"auto"` takes `patient_id`, else
            `lesion_id`, when present; `None` splits single images.
        use_split_column (`bool`, defaults to `True`): honour an existing `split` column.

    Returns:
        `datasets.DatasetDict` with one entry per split name, rows in their original order.
    """
    if use_split_column and "split" in dataset.column_names:
        return _from_split_column(dataset, group_by)
    fractions = _check_fractions(fractions)
    names = list(fractions)
    assignment = assign_groups(dataset["label"], _group_ids(dataset, group_by), list(fractions.values()), seed)
    return datasets.DatasetDict(
        {name: dataset.select(np.flatnonzero(assignment == index)) for index, name in enumerate(names)}
    )


def assign_groups(labels, groups, fractions: list[float], seed: int = 0) -> np.ndarray:
    """The split index (position in `fractions`) of every row; rows of one group share it."""
    labels = np.asarray(labels)
    members: dict[str, list[int]] = defaultdict(list)
    for row, group in enumerate(groups):
        members[group].append(row)
    by_class: dict[int, list[str]] = defaultdict(list)
    for group, rows in members.items():
        counts = Counter(labels[rows].tolist())
        by_class[min(counts, key=lambda label: (-counts[label], label))].append(group)

    rng = np.random.default_rng(seed)
    targets = np.asarray(fractions, dtype=float)
    assignment = np.full(len(labels), -1, dtype=np.int64)
    for label in sorted(by_class):
        class_groups = sorted(by_class[label])
        order = rng.permutation(len(class_groups))
        shuffled = [class_groups[i] for i in order]
        shuffled.sort(key=lambda group: -len(members[group]))  # stable: ties keep the shuffled order
        total = sum(len(members[group]) for group in shuffled)
        filled = np.zeros(len(targets))
        for group in shuffled:
            deficit = np.where(targets > 0, targets * total - filled, -np.inf)
            split = int(np.argmax(deficit))
            assignment[members[group]] = split
            filled[split] += len(members[group])
    return assignment


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
