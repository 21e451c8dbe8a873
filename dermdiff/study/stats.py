"""The numbers of a human study, from the stored answers.

- `select` (DermGAN §3, Turing test): per condition, TPR = real images selected as realistic / real
  images shown and FPR = synthetic images selected as realistic / synthetic images shown.
- `condition` (DermGAN §3, relevance): per condition X, recall of the images labelled X among those
  shown under the prompt X, separately for real and synthetic images; selecting a distractor counts
  as a false alarm.
- `timed` (Furger §4.1.3): F1 per rater with *synthetic* as the positive class ("is it generated?");
  the F1 with real as positive and the accuracy are reported too, since the paper does not say.
Each rate is computed per rater first, then summarised across raters as mean ± sample std (ddof=1),
as the papers' error bars are. Inter-rater agreement is Fleiss' kappa over the items every rater of
the task answered.
"""

from __future__ import annotations

import math
from collections import defaultdict

UNLABELLED = "unlabelled"
ALL = "all"


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa for N items each rated by the same number n >= 2 of raters into k categories.

    kappa = (P_bar - Pe_bar) / (1 - Pe_bar), with P_i = (sum_j n_ij^2 - n) / (n (n - 1)) the agreement on
    item i, P_bar its mean, p_j = sum_i n_ij / (N n) the share of category j and Pe_bar = sum_j p_j^2.
    Returns `nan` when every rating falls in one category (Pe_bar = 1: chance explains everything).

    Args:
        counts (`list` of `list` of `int`): `counts[i][j]` = raters who put item i in category j.

    Example:
        >>> round(fleiss_kappa([[2, 0], [0, 2], [1, 1]]), 4)
        0.3333
    """
    rows = [[int(value) for value in row] for row in counts]
    if not rows or not rows[0]:
        raise ValueError("fleiss_kappa needs at least one item and one category")
    width = len(rows[0])
    if any(len(row) != width for row in rows) or any(value < 0 for row in rows for value in row):
        raise ValueError("fleiss_kappa needs a rectangular table of non-negative counts")
    raters = sum(rows[0])
    if raters < 2 or any(sum(row) != raters for row in rows):
        raise ValueError(f"every item needs the same number (>= 2) of ratings, got {[sum(row) for row in rows]}")
    total = len(rows) * raters
    p_bar = sum((sum(v * v for v in row) - raters) / (raters * (raters - 1)) for row in rows) / len(rows)
    pe_bar = sum((sum(row[j] for row in rows) / total) ** 2 for j in range(width))
    if math.isclose(pe_bar, 1.0):
        return float("nan")
    return (p_bar - pe_bar) / (1.0 - pe_bar)


def spread(values) -> dict:
    """Mean ± sample std of the per-rater values that exist (`None` = the rater saw no such image)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "raters": 0}
    mean = sum(present) / len(present)
    std = None
    if len(present) > 1:
        std = math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1))
    return {"mean": mean, "std": std, "raters": len(present)}


def _ratio(hits: int, shown: int) -> float | None:
    return hits / shown if shown else None


def _tally(rows, key) -> dict:
    """`{key(row): [hits, shown]}` with hits = rows answered "selected"."""
    table = defaultdict(lambda: [0, 0])
    for row in rows:
        for name in key(row):
            table[name][0] += row["answer"] == "selected"
            table[name][1] += 1
    return table


def _condition_of(row) -> str:
    return row["condition"] or UNLABELLED


def _per_rater(rows) -> dict[str, list[dict]]:
    grouped = defaultdict(list)
    for row in rows:
        grouped[row["rater"]].append(row)
    return dict(sorted(grouped.items()))


def _summarise_rates(per_rater: dict[str, dict[str, dict]], names: tuple[str, ...]) -> dict:
    conditions = sorted({c for rates in per_rater.values() for c in rates if c != ALL}) + [ALL]
    return {
        condition: {
            name: {
                **spread(per_rater[r].get(condition, {}).get(name) for r in per_rater),
                "per_rater": {r: per_rater[r].get(condition, {}).get(name) for r in per_rater},
            }
            for name in names
        }
        for condition in conditions
    }


def select_rates(rows) -> dict:
    """TPR/FPR per condition (and `"all"`), per rater and across raters, for the `select` task."""
    per_rater = {}
    for rater, mine in _per_rater(rows).items():
        table = _tally(mine, lambda row: [(row["source"], _condition_of(row)), (row["source"], ALL)])
        conditions = {condition for _, condition in table}
        per_rater[rater] = {
            c: {"tpr": _ratio(*table.get(("real", c), (0, 0))), "fpr": _ratio(*table.get(("synthetic", c), (0, 0)))}
            for c in conditions
        }
    return _summarise_rates(per_rater, ("tpr", "fpr"))


def condition_recall(rows) -> dict:
    """Recall of real and of synthetic images per prompted condition, and the false-alarm rate."""
    per_rater = {}
    for rater, mine in _per_rater(rows).items():
        targets = [row for row in mine if row["condition"] == row["prompt"]]
        table = _tally(targets, lambda row: [(row["source"], row["prompt"]), (row["source"], ALL)])
        alarms = _tally([row for row in mine if row["condition"] != row["prompt"]], lambda row: [ALL])
        rates = {
            c: {
                "recall_real": _ratio(*table.get(("real", c), (0, 0))),
                "recall_synthetic": _ratio(*table.get(("synthetic", c), (0, 0))),
            }
            for c in {condition for _, condition in table}
        }
        rates.setdefault(ALL, {})["false_alarm"] = _ratio(*alarms.get(ALL, (0, 0)))
        per_rater[rater] = rates
    return _summarise_rates(per_rater, ("recall_real", "recall_synthetic", "false_alarm"))


def binary_scores(rows, positive: str = "synthetic") -> dict:
    """Precision, recall, F1 and accuracy of real-or-synthetic answers with `positive` as positive class."""
    tp = sum(row["answer"] == positive and row["source"] == positive for row in rows)
    fp = sum(row["answer"] == positive and row["source"] != positive for row in rows)
    fn = sum(row["answer"] != positive and row["source"] == positive for row in rows)
    correct = sum(row["answer"] == row["source"] for row in rows)
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(correct, len(rows)),
        "answers": len(rows),
    }


def timed_scores(rows) -> dict:
    """Per-rater F1 (synthetic positive, and real positive) and accuracy, overall and per condition."""
    per_rater = {}
    per_condition = {}
    for rater, mine in _per_rater(rows).items():
        per_rater[rater] = {**binary_scores(mine), "f1_real_positive": binary_scores(mine, "real")["f1"]}
        groups = defaultdict(list)
        for row in mine:
            groups[_condition_of(row)].append(row)
        per_condition[rater] = {c: binary_scores(group) for c, group in groups.items()}
    conditions = sorted({c for scores in per_condition.values() for c in scores})
    return {
        "per_rater": per_rater,
        **{name: spread(s[name] for s in per_rater.values()) for name in ("f1", "f1_real_positive", "accuracy")},
        "per_condition": {
            c: {name: spread(per_condition[r].get(c, {}).get(name) for r in per_condition) for name in ("f1", "accuracy")}
            for c in conditions
        },
    }


def agreement(rows) -> dict:
    """Fleiss' kappa of one task over the items (image, prompt) that every rater of the task answered."""
    raters = sorted({row["rater"] for row in rows})
    ratings = defaultdict(dict)
    for row in rows:
        ratings[(row["item_id"], row["prompt"])][row["rater"]] = row["answer"]
    shared = [answers for answers in ratings.values() if len(answers) == len(raters)]
    result = {"kappa": None, "items": len(shared), "raters": len(raters)}
    if len(raters) < 2 or not shared:
        return result
    categories = sorted({answer for answers in shared for answer in answers.values()})
    counts = [[list(answers.values()).count(c) for c in categories] for answers in shared]
    kappa = fleiss_kappa(counts)
    result["kappa"] = None if math.isnan(kappa) else kappa
    return result


def summarize(rows) -> dict:
    """All numbers of a study from its answer rows (`StudyStore.answer_rows()`), task by task."""
    summary = {"raters": sorted({row["rater"] for row in rows}), "answers": len(rows), "tasks": {}}
    compute = {"select": select_rates, "condition": condition_recall, "timed": timed_scores}
    for task, function in compute.items():
        mine = [row for row in rows if row["task"] == task]
        if mine:
            summary["tasks"][task] = {
                "raters": sorted({row["rater"] for row in mine}),
                "answers": len(mine),
                "images": len({row["item_id"] for row in mine}),
                "rates": function(mine),
                "fleiss_kappa": agreement(mine),
            }
    return summary
