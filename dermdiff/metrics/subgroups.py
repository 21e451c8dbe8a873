"""Classifier metrics per subgroup of the test set, e.g. per Fitzpatrick skin type.

Why: an overall gain can hide a loss on a group that is rare in the data, and in dermatology the rare
groups are usually the darker skin types. Each group is scored on its own rows by the same
`classification_metrics` / `compare_classifiers` as the whole set, so a group's confidence interval
reflects its own (often small) n, and a before/after comparison stays paired on the same images.

Group values are keys as strings: `3`, `3.0` and `"3"` are all group `"3"`; `None`, `""` and NaN are
collected under `"unknown"`. Groups are listed in natural order: numbers numerically (skin types 1..6),
then other names alphabetically, then `"unknown"`.

Results are plain dicts (NaN becomes None), so `json.dump` writes them as they are.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .classification import _check_inputs, classification_metrics, compare_classifiers, format_entry

UNKNOWN = "unknown"
TABLE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def group_key(value) -> str:
    """The group a value names, as a string: `3` / `3.0` / `"3"` -> `"3"`; `None`, `""`, NaN -> `"unknown"`."""
    if value is None:
        return UNKNOWN
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return UNKNOWN
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = str(value).strip()
    return text if text else UNKNOWN


def natural_order(key: str):
    """Sort key: numbers numerically, then other names, then `"unknown"`."""
    if key == UNKNOWN:
        return (2, 0.0, key)
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


def group_indices(groups: Sequence, n: int) -> dict:
    """`{group: row indices}` in natural order, for `n` rows."""
    keys = [group_key(value) for value in groups]
    if len(keys) != n:
        raise ValueError(f"groups has {len(keys)} entries but there are {n} test samples")
    indices = {}
    for index, key in enumerate(keys):
        indices.setdefault(key, []).append(index)
    return {key: np.array(indices[key]) for key in sorted(indices, key=natural_order)}


def metrics_by_group(
    y_true,
    y_pred,
    y_prob,
    groups: Sequence,
    num_classes: Optional[int] = None,
    label_names: Optional[Sequence[str]] = None,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_size: int = 1,
) -> dict:
    """[`classification_metrics`] of each group's rows, all groups sharing the classes of the whole set.

    Args:
        y_true, y_pred, y_prob: as in [`classification_metrics`] (`y_pred` or `y_prob` may be None).
        groups (`Sequence`): the group of each row (e.g. the Fitzpatrick skin type), same order as `y_true`.
        num_classes, label_names: default inferred from the whole set, so a group missing a class keeps it.
        n_boot, confidence, seed: as in [`classification_metrics`]; every group is resampled with `seed`.
        min_size (`int`, defaults to 1): a group with fewer rows gets `"metrics": None` (listed, not scored).

    Returns:
        `dict` `{group: {"n": int, "metrics": classification_metrics result or None}}` in natural order.
    """
    y_true, y_pred, y_prob, num_classes, label_names = _check_inputs(y_true, y_pred, y_prob, num_classes, label_names)
    common = dict(num_classes=num_classes, label_names=label_names, n_boot=n_boot, confidence=confidence, seed=seed)

    def score(rows):
        return classification_metrics(y_true[rows], _take(y_pred, rows), _take(y_prob, rows), **common)

    return _per_group(groups, y_true.size, min_size, "metrics", score)


def compare_by_group(
    y_true,
    y_pred_a,
    y_pred_b,
    groups: Sequence,
    *,
    y_prob_a=None,
    y_prob_b=None,
    num_classes: Optional[int] = None,
    label_names: Optional[Sequence[str]] = None,
    names: Sequence[str] = ("before", "after"),
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_size: int = 1,
) -> dict:
    """[`compare_classifiers`] of A and B on each group's rows: paired, since both saw the same images.

    Returns:
        `dict` `{group: {"n": int, "comparison": compare_classifiers result or None}}` in natural order
        (None for a group smaller than `min_size`).
    """
    y_true, y_pred_a, y_prob_a, num_classes, label_names = _check_inputs(
        y_true, y_pred_a, y_prob_a, num_classes, label_names
    )
    _, y_pred_b, y_prob_b, _, _ = _check_inputs(y_true, y_pred_b, y_prob_b, num_classes, label_names)
    common = dict(num_classes=num_classes, label_names=label_names, names=names, n_boot=n_boot,
                  confidence=confidence, seed=seed)

    def compare(rows):
        return compare_classifiers(
            y_true[rows], y_pred_a[rows], y_pred_b[rows],
            y_prob_a=_take(y_prob_a, rows), y_prob_b=_take(y_prob_b, rows), **common
        )

    return _per_group(groups, y_true.size, min_size, "comparison", compare)


def _take(values, rows):
    return None if values is None else values[rows]


def _per_group(groups, size: int, min_size: int, name: str, compute) -> dict:
    """`{group: {"n": rows, name: compute(rows) or None below min_size}}`, groups in natural order."""
    return {
        key: {"n": int(rows.size), name: compute(rows) if rows.size >= min_size else None}
        for key, rows in group_indices(groups, size).items()
    }


def subgroups_to_markdown(
    by_group_a: dict,
    by_group_b: Optional[dict] = None,
    comparison: Optional[dict] = None,
    metrics: Sequence[str] = TABLE_METRICS,
    group_name: str = "group",
    digits: int = 3,
) -> str:
    """Markdown table, one row per group: n and each overall metric.

    With one result each cell is `value [CI]`. With two (`by_group_a` before, `by_group_b` after) each
    cell is `before → after (after - before [CI])`; the CI of the difference comes from `comparison`
    ([`compare_by_group`]'s paired bootstrap) and is left out without it.
    """
    keys = sorted(set(by_group_a) | set(by_group_b or {}), key=natural_order)
    lines = [f"| {group_name} | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for key in keys:
        a = (by_group_a.get(key) or {}).get("metrics")
        b = (by_group_b.get(key) or {}).get("metrics") if by_group_b is not None else None
        n = (by_group_a.get(key) or (by_group_b or {}).get(key))["n"]
        cells = []
        for metric in metrics:
            entry_a = a["overall"].get(metric) if a else None
            if by_group_b is None:
                cells.append(format_entry(entry_a, digits))
                continue
            entry_b = b["overall"].get(metric) if b else None
            paired = ((comparison or {}).get(key) or {}).get("comparison")
            diff = paired["difference"]["overall"].get(metric) if paired else _point_difference(entry_a, entry_b)
            value_a = format_entry(entry_a and {"value": entry_a["value"]}, digits)
            value_b = format_entry(entry_b and {"value": entry_b["value"]}, digits)
            cells.append(f"{value_a} → {value_b} ({format_entry(diff, digits, signed=True)})")
        lines.append(f"| {key} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _point_difference(entry_a: Optional[dict], entry_b: Optional[dict]) -> Optional[dict]:
    if not entry_a or not entry_b or entry_a["value"] is None or entry_b["value"] is None:
        return None
    return {"value": entry_b["value"] - entry_a["value"]}
