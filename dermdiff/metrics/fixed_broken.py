"""Fixed vs broken: which test images a new classifier gets right that the baseline got wrong, and back.

Why: the hard-case loop's claim is that it helps "particularly for challenging cases". Accuracy before
and after cannot show that, since a gain on the baseline's mistakes can be paid for by new mistakes on
images it used to get right. Counting both on the same images makes the trade visible:

- `fixed`  = images the baseline got wrong and the new model gets right; `fixed_rate` = fixed / wrong before.
- `broken` = images the baseline got right and the new model gets wrong; `broken_rate` = broken / right before.
- `net`    = (fixed - broken) / n, which equals accuracy(new) - accuracy(baseline) on these images, with a
  paired percentile bootstrap interval over images (both models scored on the same resampled images).

`fixed` and `broken` are McNemar's discordant counts `c` and `b`. Per class, the rows are the images whose
TRUE label is that class, so `net` there is the change in that class's sensitivity; per group (e.g.
Fitzpatrick skin type), the group's own rows, each resampled on its own with the same seed.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .classification import _check_inputs, _clean, _entry, bootstrap_weights, format_entry, percentile_interval
from .subgroups import group_indices


def fixed_broken(
    y_true,
    y_pred_before,
    y_pred_after,
    *,
    label_names: Optional[Sequence[str]] = None,
    groups: Optional[Sequence] = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Counts, rates and a paired bootstrap interval of (fixed - broken) / n, overall, per class and per group.

    Args:
        y_true (`Sequence[int]`): true labels of the shared test set.
        y_pred_before (`Sequence[int]`): the baseline's predictions.
        y_pred_after (`Sequence[int]`): the new model's predictions, same images in the same order.
        label_names (`Sequence[str]`, *optional*): class names (default `class_0`, ...).
        groups (`Sequence`, *optional*): one group per image (e.g. skin type; None/NaN = `"unknown"`).
        n_boot (`int`, defaults to 1000): bootstrap replicates; 0 = counts only, no interval.
        confidence (`float`, defaults to 0.95), seed (`int`, defaults to 0): as in `classification_metrics`.

    Returns:
        `dict` with `overall`, `per_class` (`{name: row}`), `by_group` (`{group: row}`, only with `groups`)
        and `bootstrap`; a row is `{n, wrong_before, fixed, fixed_rate, right_before, broken, broken_rate,
        net: {value, ci, n_valid}}` (a rate is None when its denominator is 0).

    Example:
        >>> fixed_broken([0, 0, 1, 1], [1, 0, 0, 1], [0, 0, 0, 0], n_boot=0)["overall"]["fixed"]
        1
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0 (0 = counts only), got {n_boot}")
    y_true, before, _, num_classes, names = _check_inputs(y_true, y_pred_before, None, None, label_names)
    _, after, _, _, _ = _check_inputs(y_true, y_pred_after, None, num_classes, names)
    right_before, right_after = before == y_true, after == y_true
    settings = (n_boot, confidence, seed)

    def row(rows: np.ndarray) -> dict:
        return _row(right_before[rows], right_after[rows], *settings)

    result = {
        "overall": row(np.arange(y_true.size)),
        "per_class": {name: row(np.flatnonzero(y_true == k)) for k, name in enumerate(names)},
        "bootstrap": {"n_boot": n_boot, "confidence": confidence, "seed": seed},
    }
    if groups is not None:
        result["by_group"] = {key: row(rows) for key, rows in group_indices(groups, y_true.size).items()}
    return result


def _row(right_before: np.ndarray, right_after: np.ndarray, n_boot: int, confidence: float, seed: int) -> dict:
    n = int(right_before.size)
    fixed = int(np.sum(~right_before & right_after))
    broken = int(np.sum(right_before & ~right_after))
    wrong_before = int(np.sum(~right_before))
    right = n - wrong_before
    row = {
        "n": n,
        "wrong_before": wrong_before,
        "fixed": fixed,
        "fixed_rate": _clean(fixed / wrong_before) if wrong_before else None,
        "right_before": right,
        "broken": broken,
        "broken_rate": _clean(broken / right) if right else None,
    }
    if n == 0:
        return dict(row, net={"value": None})
    change = right_after.astype(np.float64) - right_before.astype(np.float64)  # +1 fixed, -1 broken
    if n_boot == 0:
        return dict(row, net=_entry(change.mean()))
    # each replicate's (fixed - broken) / n: multiplicities (b, n) times the per-image change
    replicates = np.concatenate([weights @ change / n for weights in bootstrap_weights(n, n_boot, seed)])
    low, high, n_valid = percentile_interval(replicates, confidence)
    return dict(row, net=_entry(change.mean(), low, high, n_valid))


def fixed_broken_markdown(result: dict, names: Sequence[str] = ("baseline", "new"), group_name: str = "group") -> str:
    """Markdown table of a [`fixed_broken`] result: one row overall, per class and per group.

    Each row: n, the baseline's wrong images and how many the new model fixes (rate), the baseline's right
    images and how many it breaks (rate), and (fixed - broken) / n with its interval.
    """
    before, after = names
    level = int(round(result["bootstrap"]["confidence"] * 100))
    lines = [
        f"| rows | n | {before} wrong | fixed by {after} (rate) | {before} right | broken by {after} (rate) "
        f"| (fixed - broken) / n [{level}% CI] |",
        "|---|---|---|---|---|---|---|",
    ]

    def line(label: str, row: dict) -> str:
        fixed = f"{row['fixed']} ({_rate(row['fixed_rate'])})"
        broken = f"{row['broken']} ({_rate(row['broken_rate'])})"
        net = format_entry(row["net"], 3, signed=True)
        return f"| {label} | {row['n']} | {row['wrong_before']} | {fixed} | {row['right_before']} | {broken} | {net} |"

    lines.append(line("all", result["overall"]))
    lines += [line(f"class {name}", row) for name, row in result["per_class"].items()]
    lines += [line(f"{group_name} {key}", row) for key, row in result.get("by_group", {}).items()]
    return "\n".join(lines) + "\n"


def _rate(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
