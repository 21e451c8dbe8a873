"""Classifier metrics with bootstrap confidence intervals and a paired test of two classifiers.

Why hand-rolled numpy: every metric here is a function of the confusion matrix (plus, for AUC, the
ranks of the scores). A bootstrap replicate is the same test set drawn with replacement, i.e. a vector
of multiplicities `w` over the n test images. Given `w`, each replicate's confusion matrix is one matrix
product and each replicate's AUC is a weighted Mann-Whitney sum over the *original* score order, so
1,000 replicates of every metric cost a few array operations instead of 1,000 Python loops.

Conventions (the same as scikit-learn's where one exists):

- sensitivity (recall) of class k = TP / (TP + FN); NaN when k is absent from `y_true`.
- specificity = TN / (TN + FP); precision = TP / (TP + FP), NaN when k is never predicted.
- F1 = 2 TP / (2 TP + FP + FN): equals the harmonic mean of precision and recall where both exist, is 0
  when a present class is never predicted, NaN when k is neither present nor predicted.
- balanced accuracy = mean sensitivity over the classes present in `y_true`; macro-F1 = mean F1 over
  the classes present or predicted; macro AUC = mean one-vs-rest AUC over the classes it is defined for.
- one-vs-rest AUC of class k needs positives and negatives in `y_true`; otherwise NaN with a note.
- CIs: non-parametric percentile bootstrap over test images, seeded; a replicate where a metric is
  undefined (a rare class not drawn) is left out of that metric's interval, and `n_valid` says so.

Results are plain dicts of floats/lists (NaN becomes None) so `json.dump` writes them as they are.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np
from scipy import stats

PER_CLASS_METRICS = ("sensitivity", "specificity", "precision", "f1", "auc")
OVERALL_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")

# Rows of the bootstrap that are materialised at once: bounds memory to ~ _CHUNK_ELEMENTS counts.
_CHUNK_ELEMENTS = 4_000_000


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------


def _as_labels(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of integer labels, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name} must hold integer labels, got dtype {array.dtype}")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must hold labels >= 0, got {int(array.min())}")
    return array.astype(np.int64)


def _check_inputs(y_true, y_pred, y_prob, num_classes, label_names):
    """Validates and aligns labels, predictions and probabilities; infers the number of classes."""
    y_true = _as_labels(y_true, "y_true")
    if y_true.size == 0:
        raise ValueError("y_true is empty: metrics need at least one test sample")
    if y_prob is not None:
        y_prob = np.asarray(y_prob, dtype=np.float64)
        if y_prob.ndim != 2 or y_prob.shape[0] != y_true.shape[0]:
            raise ValueError(f"y_prob must have shape (n={y_true.shape[0]}, num_classes), got {y_prob.shape}")
    if y_pred is None:
        if y_prob is None:
            raise ValueError("give y_pred, y_prob or both")
        y_pred = y_prob.argmax(axis=1)
    y_pred = _as_labels(y_pred, "y_pred")
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred has {y_pred.shape[0]} entries but y_true has {y_true.shape[0]}")
    if num_classes is None:
        candidates = [int(y_true.max()) + 1, int(y_pred.max()) + 1]
        if y_prob is not None:
            candidates.append(y_prob.shape[1])
        if label_names is not None:
            candidates.append(len(label_names))
        num_classes = max(candidates)
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    largest = max(int(y_true.max()), int(y_pred.max()))
    if largest >= num_classes:
        raise ValueError(
            f"label {largest} is out of range for num_classes={num_classes} (allowed 0..{num_classes - 1})"
        )
    if y_prob is not None and y_prob.shape[1] != num_classes:
        raise ValueError(f"y_prob has {y_prob.shape[1]} columns but num_classes is {num_classes}")
    if label_names is None:
        label_names = [f"class_{k}" for k in range(num_classes)]
    label_names = [str(name) for name in label_names]
    if len(label_names) != num_classes:
        raise ValueError(f"got {len(label_names)} label_names for num_classes={num_classes}")
    return y_true, y_pred, y_prob, num_classes, label_names


# ----------------------------------------------------------------------------------------------------
# Point metrics (vectorised over a leading batch of confusion matrices)
# ----------------------------------------------------------------------------------------------------


def confusion_matrix(y_true, y_pred, num_classes: Optional[int] = None) -> np.ndarray:
    """Counts `C[i, j]` = number of samples with true class i predicted as j.

    Args:
        y_true (`Sequence[int]`): true labels (0-based).
        y_pred (`Sequence[int]`): predicted labels.
        num_classes (`int`, *optional*): matrix size; default `max(label) + 1`.

    Example:
        >>> confusion_matrix([0, 1, 1], [0, 1, 0]).tolist()
        [[1, 0], [1, 1]]
    """
    y_true, y_pred, _, num_classes, _ = _check_inputs(y_true, y_pred, None, num_classes, None)
    codes = y_true * num_classes + y_pred
    return np.bincount(codes, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _divide(numerator, denominator):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _nanmean(values, axis=-1):
    """Mean ignoring NaN; NaN (no warning) when every entry is NaN."""
    valid = ~np.isnan(values)
    count = valid.sum(axis=axis)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    return _divide(total, count)


def metrics_from_confusion(cm: np.ndarray) -> dict:
    """All confusion-matrix metrics for one matrix `(K, K)` or a stack `(B, K, K)`.

    Returns a dict of arrays: per-class entries have shape `(..., K)`, overall ones shape `(...)`.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim < 2 or cm.shape[-1] != cm.shape[-2]:
        raise ValueError(f"a confusion matrix must be square (..., K, K), got shape {cm.shape}")
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    total = cm.sum(axis=(-2, -1))
    fn = support - tp
    fp = predicted - tp
    tn = total[..., None] - support - fp
    f1 = _divide(2 * tp, 2 * tp + fp + fn)
    sensitivity = _divide(tp, support)
    return {
        "sensitivity": sensitivity,
        "specificity": _divide(tn, tn + fp),
        "precision": _divide(tp, predicted),
        "f1": f1,
        "support": support,
        "accuracy": _divide(tp.sum(axis=-1), total),
        "balanced_accuracy": _nanmean(sensitivity),
        "macro_f1": _nanmean(f1),
    }


def _weighted_ovr_auc(y_true: np.ndarray, y_prob: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC per class for each row of `weights` (multiplicities), shape `(B, K)`.

    AUC = P(score of a positive > score of a negative) + 0.5 P(tie), the Mann-Whitney statistic. With
    the scores sorted once, the negative weight below each positive is a cumulative sum, so each
    replicate costs O(n) instead of a fresh sort.
    """
    n_rows = weights.shape[0]
    num_classes = y_prob.shape[1]
    auc = np.full((n_rows, num_classes), np.nan)
    for k in range(num_classes):
        order = np.argsort(y_prob[:, k], kind="stable")
        scores = y_prob[order, k]
        positive = y_true[order] == k
        if positive.all() or not positive.any():
            continue
        # tie groups: [start, end) in sorted order
        new_group = np.r_[True, scores[1:] != scores[:-1]]
        group_id = np.cumsum(new_group) - 1
        starts = np.flatnonzero(new_group)
        ends = np.r_[starts[1:], scores.size]
        w = weights[:, order]
        w_pos = np.where(positive, w, 0.0)
        w_neg = w - w_pos
        cum_neg = np.concatenate([np.zeros((n_rows, 1)), np.cumsum(w_neg, axis=1)], axis=1)
        below = cum_neg[:, starts[group_id]]
        tied = cum_neg[:, ends[group_id]] - below
        wins = (w_pos * (below + 0.5 * tied)).sum(axis=1)
        auc[:, k] = _divide(wins, w_pos.sum(axis=1) * w_neg.sum(axis=1))
    return auc


def one_vs_rest_auc(y_true, y_prob) -> np.ndarray:
    """One-vs-rest ROC AUC per class, NaN for a class without positives or negatives in `y_true`.

    Args:
        y_true (`Sequence[int]`): true labels.
        y_prob (`np.ndarray` of shape `(n, K)`): scores, e.g. softmax probabilities.
    """
    y_true, _, y_prob, _, _ = _check_inputs(y_true, None, y_prob, None, None)
    return _weighted_ovr_auc(y_true, y_prob, np.ones((1, y_true.size)))[0]


# ----------------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------------


def bootstrap_weights(n: int, n_boot: int = 1000, seed: int = 0):
    """Yields chunks of bootstrap multiplicities, arrays `(b, n)` whose rows sum to `n`.

    Row r says how often each test image appears in replicate r. Chunk sizes depend only on `n`, so a
    given (`n`, `n_boot`, `seed`) always yields the same replicates, and two classifiers evaluated in
    one pass (the paired comparison) see identical resamples.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    done = 0
    while done < n_boot:
        rows = min(chunk, n_boot - done)
        draws = rng.integers(0, n, size=(rows, n))
        flat = draws + (np.arange(rows) * n)[:, None]
        yield np.bincount(flat.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)
        done += rows


def _replicate_metrics(y_true, y_pred, y_prob, num_classes, weights) -> dict:
    """Metric arrays for each row of `weights` (`(B, n)` multiplicities)."""
    codes = y_true * num_classes + y_pred
    onehot = np.zeros((y_true.size, num_classes * num_classes))
    onehot[np.arange(y_true.size), codes] = 1.0
    cms = (weights @ onehot).reshape(-1, num_classes, num_classes)
    values = metrics_from_confusion(cms)
    if y_prob is not None:
        values["auc"] = _weighted_ovr_auc(y_true, y_prob, weights)
        values["macro_auc"] = _nanmean(values["auc"])
    return values


def percentile_interval(samples: np.ndarray, confidence: float = 0.95):
    """Percentile CI along axis 0 (the replicates), ignoring NaN replicates.

    Returns:
        `(low, high, n_valid)`, each shaped like one replicate (`samples.shape[1:]`).
    """
    samples = np.asarray(samples, dtype=np.float64)
    flat = samples.reshape(samples.shape[0], -1)
    n_valid = (~np.isnan(flat)).sum(axis=0)
    low = np.full(flat.shape[1], np.nan)
    high = np.full(flat.shape[1], np.nan)
    alpha = (1.0 - confidence) / 2.0
    columns = n_valid > 0
    if columns.any():
        low[columns], high[columns] = np.nanquantile(flat[:, columns], [alpha, 1.0 - alpha], axis=0)
    shape = samples.shape[1:]
    return low.reshape(shape), high.reshape(shape), n_valid.reshape(shape)


def _check_confidence(confidence: float, n_boot: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0 (0 = no intervals), got {n_boot}")


def _bootstrap(arrays_list, num_classes, n_boot, seed):
    """Replicate metrics for one or more (y_true, y_pred, y_prob) on the same resamples."""
    n = arrays_list[0][0].size
    collected = [dict() for _ in arrays_list]
    for weights in bootstrap_weights(n, n_boot, seed):
        for store, (y_true, y_pred, y_prob) in zip(collected, arrays_list, strict=True):
            for key, value in _replicate_metrics(y_true, y_pred, y_prob, num_classes, weights).items():
                store.setdefault(key, []).append(value)
    return [{key: np.concatenate(value, axis=0) for key, value in store.items()} for store in collected]


# ----------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------


def _clean(value):
    """float or None (for NaN), so the result is valid JSON."""
    value = float(value)
    return None if math.isnan(value) else value


def _entry(value, low=None, high=None, n_valid=None) -> dict:
    entry = {"value": _clean(value)}
    if low is not None:
        entry["ci"] = [_clean(low), _clean(high)]
        entry["n_valid"] = int(n_valid)
    return entry


def classification_metrics(
    y_true,
    y_pred=None,
    y_prob=None,
    *,
    num_classes: Optional[int] = None,
    label_names: Optional[Sequence[str]] = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Every classifier metric of the project, with percentile-bootstrap confidence intervals.

    Args:
        y_true (`Sequence[int]`): true labels, 0-based class indices.
        y_pred (`Sequence[int]`, *optional*): predicted labels; default `argmax(y_prob)`.
        y_prob (`np.ndarray` `(n, K)`, *optional*): class probabilities; enables one-vs-rest AUC.
        num_classes (`int`, *optional*): K; default from the labels, `y_prob` and `label_names`.
        label_names (`Sequence[str]`, *optional*): names of the K classes; default `class_0`, ...
        n_boot (`int`, defaults to 1000): bootstrap replicates; 0 skips the intervals.
        confidence (`float`, defaults to 0.95): coverage of the intervals.
        seed (`int`, defaults to 0): seed of the resampling; the same seed gives the same intervals.

    Returns:
        `dict` with `n`, `num_classes`, `label_names`, `confusion_matrix` (list of lists), `overall`
        (`accuracy`, `balanced_accuracy`, `macro_f1`, and `macro_auc` when `y_prob` is given; each
        `{"value", "ci", "n_valid"}`), `per_class` (name -> `support` and the per-class metrics),
        `bootstrap` settings and `notes` (why a value is missing).

    Example:
        >>> result = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], n_boot=200)
        >>> result["overall"]["accuracy"]["value"]
        0.75
    """
    _check_confidence(confidence, n_boot)
    y_true, y_pred, y_prob, num_classes, label_names = _check_inputs(y_true, y_pred, y_prob, num_classes, label_names)
    replicates = _bootstrap([(y_true, y_pred, y_prob)], num_classes, n_boot, seed)[0] if n_boot > 0 else None
    return _summarise(y_true, y_pred, y_prob, num_classes, label_names, replicates, n_boot, confidence, seed)


def _summarise(y_true, y_pred, y_prob, num_classes, label_names, replicates, n_boot, confidence, seed) -> dict:
    """Point metrics plus (when `replicates` is given) their percentile intervals, as a JSON-ready dict."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    point = metrics_from_confusion(cm)
    if y_prob is not None:
        point["auc"] = _weighted_ovr_auc(y_true, y_prob, np.ones((1, y_true.size)))[0]
        point["macro_auc"] = _nanmean(point["auc"])
    intervals = {}
    if replicates is not None:
        intervals = {key: percentile_interval(value, confidence) for key, value in replicates.items()}

    def entry(key, index=None):
        value = point[key] if index is None else point[key][index]
        if key not in intervals:
            return _entry(value)
        low, high, n_valid = intervals[key]
        if index is not None:
            low, high, n_valid = low[index], high[index], n_valid[index]
        return _entry(value, low, high, n_valid)

    overall = {key: entry(key) for key in OVERALL_METRICS if key in point}
    per_class = {}
    for k, name in enumerate(label_names):
        per_class[name] = {"support": int(point["support"][k])}
        per_class[name].update({key: entry(key, k) for key in PER_CLASS_METRICS if key in point})
    return {
        "n": int(y_true.size),
        "num_classes": num_classes,
        "label_names": label_names,
        "confusion_matrix": cm.tolist(),
        "overall": overall,
        "per_class": per_class,
        "bootstrap": {"n_boot": int(n_boot), "confidence": confidence, "seed": seed, "method": "percentile"},
        "notes": _notes(y_true, y_pred, y_prob, label_names),
    }


def _notes(y_true, y_pred, y_prob, label_names) -> list:
    notes = []
    present = np.bincount(y_true, minlength=len(label_names)) > 0
    predicted = np.bincount(y_pred, minlength=len(label_names)) > 0
    for k, name in enumerate(label_names):
        if not present[k]:
            what = "sensitivity and AUC are undefined (NaN/None)" if y_prob is not None else "sensitivity is undefined"
            notes.append(f"class {name!r} is absent from y_true: {what}; it is left out of balanced accuracy")
        elif present.sum() == 1 and y_prob is not None:
            notes.append(f"class {name!r} is the only class in y_true: its AUC is undefined")
        if present[k] and not predicted[k]:
            notes.append(f"class {name!r} is never predicted: precision is undefined, F1 is 0")
    return notes


# ----------------------------------------------------------------------------------------------------
# Paired comparison
# ----------------------------------------------------------------------------------------------------


def mcnemar_test(y_true, y_pred_a, y_pred_b, method: str = "auto") -> dict:
    """McNemar's test that two classifiers have the same accuracy on the same test images.

    Only the discordant pairs count: `b` = images A gets right and B wrong, `c` = the reverse. Under
    the null each discordant image is a fair coin, so `exact` is a two-sided binomial test of
    b ~ Bin(b + c, 1/2); `chi2` is the continuity-corrected (|b - c| - 1)^2 / (b + c) on 1 dof.
    `auto` uses the exact test when b + c < 25 (where the chi-square approximation is poor).

    Returns:
        `dict` with `b`, `c`, `statistic`, `p_value`, `method`.
    """
    if method not in ("auto", "exact", "chi2"):
        raise ValueError(f"method must be 'auto', 'exact' or 'chi2', got {method!r}")
    y_true = _as_labels(y_true, "y_true")
    correct_a = _as_labels(y_pred_a, "y_pred_a") == y_true
    correct_b = _as_labels(y_pred_b, "y_pred_b") == y_true
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    if method == "auto":
        method = "exact" if b + c < 25 else "chi2"
    if b + c == 0:
        return {"b": b, "c": c, "statistic": 0.0, "p_value": 1.0, "method": method}
    if method == "exact":
        statistic = float(min(b, c))
        p_value = float(stats.binomtest(min(b, c), b + c, 0.5).pvalue)
    else:
        statistic = float((abs(b - c) - 1) ** 2 / (b + c))
        p_value = float(stats.chi2.sf(statistic, df=1))
    return {"b": b, "c": c, "statistic": statistic, "p_value": min(1.0, p_value), "method": method}


def _bootstrap_p_value(differences: np.ndarray) -> np.ndarray:
    """Two-sided p-value from the bootstrap distribution of B - A, by inverting the percentile CI.

    p = 2 min(P*(d <= 0), P*(d >= 0)) with the add-one correction, so p < 1 - confidence exactly when
    the percentile interval of the same replicates excludes 0 (up to quantile interpolation).
    """
    valid = ~np.isnan(differences)
    n_valid = valid.sum(axis=0)
    below = (np.where(valid, differences, np.nan) <= 0).sum(axis=0)
    above = (np.where(valid, differences, np.nan) >= 0).sum(axis=0)
    p = 2 * np.minimum(below + 1, above + 1) / (n_valid + 1)
    return np.where(n_valid > 0, np.minimum(p, 1.0), np.nan)


def compare_classifiers(
    y_true,
    y_pred_a=None,
    y_pred_b=None,
    *,
    y_prob_a=None,
    y_prob_b=None,
    num_classes: Optional[int] = None,
    label_names: Optional[Sequence[str]] = None,
    names: Sequence[str] = ("A", "B"),
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    mcnemar_method: str = "auto",
) -> dict:
    """Paired comparison of classifiers A and B on the same test set: is B better than A?

    Accuracy gets McNemar's test (exact or continuity-corrected); every metric, accuracy included, gets
    the difference B - A with a paired bootstrap CI (both classifiers scored on identical resamples, so
    the per-image correlation between them is kept) and a two-sided bootstrap p-value.

    Args:
        y_true (`Sequence[int]`): true labels of the shared test set.
        y_pred_a, y_pred_b (`Sequence[int]`, *optional*): predictions; default argmax of the probabilities.
        y_prob_a, y_prob_b (`np.ndarray` `(n, K)`, *optional*): probabilities; AUC is compared when both are given.
        names (`Sequence[str]`, defaults to `("A", "B")`): how the two appear in the report.
        n_boot, confidence, seed: as in [`classification_metrics`].
        mcnemar_method (`str`, defaults to `"auto"`): see [`mcnemar_test`].

    Returns:
        `dict` with `names`, `a` and `b` (each a [`classification_metrics`] result), `mcnemar`,
        `difference` (`overall` and `per_class`: `{"value", "ci", "p_value", "n_valid"}`), `notes`.
    """
    _check_confidence(confidence, n_boot)
    if n_boot < 1:
        raise ValueError(f"the paired bootstrap needs n_boot >= 1, got {n_boot}")
    if len(names) != 2:
        raise ValueError(f"names must hold two names, got {names!r}")
    if (y_prob_a is None) != (y_prob_b is None):
        raise ValueError("give probabilities for both classifiers or for neither")
    if num_classes is None:
        num_classes = max(
            _check_inputs(y_true, pred, prob, None, label_names)[3]
            for pred, prob in ((y_pred_a, y_prob_a), (y_pred_b, y_prob_b))
        )
    y_true, y_pred_a, y_prob_a, num_classes, label_names = _check_inputs(
        y_true, y_pred_a, y_prob_a, num_classes, label_names
    )
    _, y_pred_b, y_prob_b, _, _ = _check_inputs(y_true, y_pred_b, y_prob_b, num_classes, label_names)
    reps_a, reps_b = _bootstrap(
        [(y_true, y_pred_a, y_prob_a), (y_true, y_pred_b, y_prob_b)], num_classes, n_boot, seed
    )
    settings = (n_boot, confidence, seed)
    result_a = _summarise(y_true, y_pred_a, y_prob_a, num_classes, label_names, reps_a, *settings)
    result_b = _summarise(y_true, y_pred_b, y_prob_b, num_classes, label_names, reps_b, *settings)

    difference = {"overall": {}, "per_class": {name: {} for name in label_names}}
    for key in reps_a:
        if key == "support":
            continue
        delta = reps_b[key] - reps_a[key]
        low, high, n_valid = percentile_interval(delta, confidence)
        p_value = _bootstrap_p_value(delta)
        if key in OVERALL_METRICS:
            point = _difference_of(result_a["overall"][key], result_b["overall"][key])
            difference["overall"][key] = dict(_entry(point, low, high, n_valid), p_value=_clean(p_value))
        else:
            for k, name in enumerate(label_names):
                point = _difference_of(result_a["per_class"][name][key], result_b["per_class"][name][key])
                entry = _entry(point, low[k], high[k], n_valid[k])
                difference["per_class"][name][key] = dict(entry, p_value=_clean(p_value[k]))
    return {
        "names": list(names),
        "a": result_a,
        "b": result_b,
        "mcnemar": mcnemar_test(y_true, y_pred_a, y_pred_b, method=mcnemar_method),
        "difference": difference,
        "bootstrap": result_a["bootstrap"],
        "notes": [f"difference = {names[1]} - {names[0]}; paired bootstrap over the same resampled test images"]
        + sorted(set(result_a["notes"]) | set(result_b["notes"])),
    }


def _difference_of(entry_a: dict, entry_b: dict) -> float:
    if entry_a["value"] is None or entry_b["value"] is None:
        return float("nan")
    return entry_b["value"] - entry_a["value"]


# ----------------------------------------------------------------------------------------------------
# Presentation
# ----------------------------------------------------------------------------------------------------


def format_entry(entry: Optional[dict], digits: int = 3, signed: bool = False) -> str:
    """`{"value", "ci"}` -> `"0.812 [0.770, 0.851]"` (`"n/a"` for a missing value); `signed` adds `+`."""
    if entry is None or entry.get("value") is None:
        return "n/a"
    sign = "+" if signed else ""
    text = f"{entry['value']:{sign}.{digits}f}"
    ci = entry.get("ci")
    if ci and ci[0] is not None:
        text += f" [{ci[0]:{sign}.{digits}f}, {ci[1]:{sign}.{digits}f}]"
    return text


def metrics_to_markdown(result: dict, digits: int = 3) -> str:
    """Markdown tables of a [`classification_metrics`] result: overall metrics, then one row per class."""
    level = int(round(result["bootstrap"]["confidence"] * 100))
    lines = [f"| metric | value [{level}% CI] |", "|---|---|"]
    for key, entry in result["overall"].items():
        lines.append(f"| {key} | {format_entry(entry, digits)} |")
    columns = [key for key in PER_CLASS_METRICS if key in next(iter(result["per_class"].values()))]
    lines += ["", "| class | support | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for name, row in result["per_class"].items():
        cells = " | ".join(format_entry(row[key], digits) for key in columns)
        lines.append(f"| {name} | {row['support']} | {cells} |")
    lines.append("")
    settings = result["bootstrap"]
    lines.append(f"n = {result['n']}; bootstrap: {settings['n_boot']} replicates, seed {settings['seed']}.")
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def comparison_to_markdown(comparison: dict, digits: int = 3) -> str:
    """Markdown table of a [`compare_classifiers`] result: A, B, B - A with CI and p-value per metric."""
    name_a, name_b = comparison["names"]
    header = f"| metric | {name_a} | {name_b} | {name_b} - {name_a} [CI] | p |"
    lines = [header, "|---|---|---|---|---|"]

    def row(label, entry_a, entry_b, diff):
        p = "n/a" if diff["p_value"] is None else f"{diff['p_value']:.3g}"
        cells = [format_entry(entry_a, digits), format_entry(entry_b, digits), format_entry(diff, digits, True), p]
        return f"| {label} | " + " | ".join(cells) + " |"

    for key, diff in comparison["difference"]["overall"].items():
        lines.append(row(key, comparison["a"]["overall"][key], comparison["b"]["overall"][key], diff))
    for name, metrics in comparison["difference"]["per_class"].items():
        for key, diff in metrics.items():
            lines.append(
                row(
                    f"{name} {key}",
                    comparison["a"]["per_class"][name][key],
                    comparison["b"]["per_class"][name][key],
                    diff,
                )
            )
    mcnemar = comparison["mcnemar"]
    lines += [
        "",
        f"McNemar ({mcnemar['method']}) on accuracy: b = {mcnemar['b']} ({name_a} right, {name_b} wrong), "
        f"c = {mcnemar['c']} ({name_a} wrong, {name_b} right), p = {mcnemar['p_value']:.3g}.",
    ]
    lines += [f"- {note}" for note in comparison["notes"]]
    return "\n".join(lines) + "\n"


def plot_confusion_matrix(
    cm,
    label_names: Optional[Sequence[str]] = None,
    path: Optional[str] = None,
    normalize: bool = True,
    title: Optional[str] = None,
):
    """Draws the confusion matrix (rows = true class) as a heatmap; saves a PNG when `path` is given.

    With `normalize=True` colours are row fractions (each row is a class's sensitivity profile, so rare
    classes stay visible) and each cell prints the fraction and the count. Uses the Agg canvas directly,
    so it works headless and leaves pyplot's global state alone.

    Returns:
        `matplotlib.figure.Figure`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square matrix, got shape {cm.shape}")
    k = cm.shape[0]
    label_names = list(label_names) if label_names is not None else [str(i) for i in range(k)]
    if len(label_names) != k:
        raise ValueError(f"got {len(label_names)} label_names for a {k}x{k} matrix")
    rows = cm.sum(axis=1, keepdims=True)
    shown = _divide(cm, rows) if normalize else cm.astype(np.float64)
    shown = np.nan_to_num(shown)
    size = 1.5 + 0.6 * k
    figure = Figure(figsize=(size + 1.0, size))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, shown.max()))
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(k), label_names, rotation=45, ha="right")
    axes.set_yticks(range(k), label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))
    threshold = (1.0 if normalize else shown.max()) / 2.0
    for i in range(k):
        for j in range(k):
            text = f"{shown[i, j]:.2f}\n({cm[i, j]})" if normalize else f"{cm[i, j]}"
            colour = "white" if shown[i, j] > threshold else "black"
            axes.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    figure.tight_layout()
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, dpi=120)
    return figure


def save_metrics(result: dict, folder: str, stem: str = "metrics", title: Optional[str] = None) -> dict:
    """Writes a [`classification_metrics`] result as `<stem>.json`, `<stem>.md` and `<stem>_confusion_matrix.png`.

    Returns:
        `dict` mapping `"json"`, `"markdown"`, `"confusion_matrix"` to the written paths.
    """
    import json

    os.makedirs(folder, exist_ok=True)
    paths = {
        "json": os.path.join(folder, f"{stem}.json"),
        "markdown": os.path.join(folder, f"{stem}.md"),
        "confusion_matrix": os.path.join(folder, f"{stem}_confusion_matrix.png"),
    }
    with open(paths["json"], "w") as handle:
        json.dump(result, handle, indent=2, allow_nan=False)
    with open(paths["markdown"], "w") as handle:
        handle.write((f"# {title}\n\n" if title else "") + metrics_to_markdown(result))
    plot_confusion_matrix(result["confusion_matrix"], result["label_names"], paths["confusion_matrix"], title=title)
    return paths
