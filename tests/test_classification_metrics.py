"""Classifier metrics against hand-computed confusion matrices, AUC by brute force, bootstrap and paired tests."""

import json
import math

import numpy as np
import pytest

from dermdiff.metrics.classification import (
    bootstrap_weights,
    classification_metrics,
    compare_classifiers,
    comparison_to_markdown,
    confusion_matrix,
    mcnemar_test,
    metrics_from_confusion,
    metrics_to_markdown,
    one_vs_rest_auc,
    percentile_interval,
    plot_confusion_matrix,
    save_metrics,
)

# 10 images, 3 classes; confusion matrix (rows true, columns predicted):
#   [[2, 1, 0],
#    [0, 1, 1],
#    [1, 1, 3]]
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 2, 0, 1]


def _value(result, key, name=None):
    return result["overall"][key]["value"] if name is None else result["per_class"][name][key]["value"]


def test_confusion_matrix_by_hand():
    assert confusion_matrix(Y_TRUE, Y_PRED).tolist() == [[2, 1, 0], [0, 1, 1], [1, 1, 3]]
    assert confusion_matrix([0, 1], [0, 0], num_classes=4).shape == (4, 4)


def test_metrics_by_hand():
    result = classification_metrics(Y_TRUE, Y_PRED, label_names=["a", "b", "c"], n_boot=0)
    assert _value(result, "accuracy") == pytest.approx(0.6)
    # sensitivities 2/3, 1/2, 3/5
    assert [_value(result, "sensitivity", n) for n in "abc"] == pytest.approx([2 / 3, 1 / 2, 3 / 5])
    assert _value(result, "balanced_accuracy") == pytest.approx((2 / 3 + 1 / 2 + 3 / 5) / 3)
    # precision: column sums 3, 3, 4
    assert [_value(result, "precision", n) for n in "abc"] == pytest.approx([2 / 3, 1 / 3, 3 / 4])
    # specificity TN / (TN + FP): a 6/7, b 6/8, c 4/5
    assert [_value(result, "specificity", n) for n in "abc"] == pytest.approx([6 / 7, 6 / 8, 4 / 5])
    # F1 = 2TP / (2TP + FP + FN): 4/6, 2/5, 6/9
    assert [_value(result, "f1", n) for n in "abc"] == pytest.approx([4 / 6, 2 / 5, 6 / 9])
    assert _value(result, "macro_f1") == pytest.approx((4 / 6 + 2 / 5 + 6 / 9) / 3)
    assert [result["per_class"][n]["support"] for n in "abc"] == [3, 2, 5]
    assert "ci" not in result["overall"]["accuracy"]


def test_f1_is_harmonic_mean_where_defined():
    values = metrics_from_confusion(confusion_matrix(Y_TRUE, Y_PRED))
    precision, recall = values["precision"], values["sensitivity"]
    assert values["f1"] == pytest.approx(2 * precision * recall / (precision + recall))


def test_absent_and_never_predicted_classes():
    y_true = [0, 0, 1, 1]
    y_pred = [0, 0, 0, 1]
    prob = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1]])
    result = classification_metrics(y_true, y_pred, prob, label_names=["a", "b", "c"], n_boot=50)
    assert result["per_class"]["c"]["sensitivity"]["value"] is None
    assert result["per_class"]["c"]["auc"]["value"] is None
    assert result["per_class"]["c"]["precision"]["value"] is None
    assert result["per_class"]["c"]["specificity"]["value"] == 1.0
    assert _value(result, "balanced_accuracy") == pytest.approx((1.0 + 0.5) / 2)  # c left out
    assert any("'c' is absent from y_true" in note for note in result["notes"])
    json.dumps(result, allow_nan=False)  # NaN became None

    never = classification_metrics([0, 1, 1], [0, 0, 0], n_boot=0, label_names=["a", "b"])
    assert never["per_class"]["b"]["precision"]["value"] is None
    assert never["per_class"]["b"]["f1"]["value"] == 0.0
    assert any("never predicted" in note for note in never["notes"])


def test_auc_by_hand_and_brute_force():
    # class 1 positives score 0.35 and 0.8, negatives 0.1 and 0.4: 3 of 4 pairs ordered -> 0.75
    scores = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert one_vs_rest_auc([0, 0, 1, 1], scores)[1] == pytest.approx(0.75)

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    prob = np.round(rng.random((300, 4)) + 0.3 * np.eye(4)[y], 1)  # rounding makes ties
    for k, auc in enumerate(one_vs_rest_auc(y, prob)):
        pos, neg = prob[y == k, k], prob[y != k, k]
        wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
        assert auc == pytest.approx(wins / (pos.size * neg.size))


def _synthetic(n, seed=0, accuracy=0.7, k=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < accuracy, y, rng.integers(0, k, n))
    return y, pred


def test_bootstrap_matches_a_plain_loop():
    y, pred = _synthetic(60)
    result = classification_metrics(y, pred, n_boot=200, seed=7)
    rng = np.random.default_rng(7)
    draws = rng.integers(0, y.size, size=(200, y.size))
    accuracies = np.array([np.mean(y[d] == pred[d]) for d in draws])
    low, high = np.quantile(accuracies, [0.025, 0.975])
    assert result["overall"]["accuracy"]["ci"] == pytest.approx([low, high])
    assert sum(w.shape[0] for w in bootstrap_weights(60, 200, 7)) == 200


def test_bootstrap_ci_covers_is_seeded_and_shrinks():
    y, pred = _synthetic(200)
    first = classification_metrics(y, pred, n_boot=300, seed=1)
    again = classification_metrics(y, pred, n_boot=300, seed=1)
    other = classification_metrics(y, pred, n_boot=300, seed=2)
    assert first == again
    assert first["overall"]["accuracy"]["ci"] != other["overall"]["accuracy"]["ci"]
    for key, entry in first["overall"].items():
        assert entry["ci"][0] <= entry["value"] <= entry["ci"][1], key

    y_big, pred_big = _synthetic(5000)
    big = classification_metrics(y_big, pred_big, n_boot=300, seed=1)

    def width(result):
        low, high = result["overall"]["accuracy"]["ci"]
        return high - low

    assert width(big) < 0.4 * width(first)  # ~ 1/sqrt(25) = 0.2 expected


def test_rare_class_bootstrap_counts_valid_replicates():
    y = np.array([0] * 98 + [1] * 2)
    result = classification_metrics(y, y, n_boot=500, seed=0)
    entry = result["per_class"]["class_1"]["sensitivity"]
    assert 0 < entry["n_valid"] < 500  # some replicates draw no image of class 1
    assert entry["ci"] == [1.0, 1.0]


def test_percentile_interval_ignores_nan():
    samples = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, np.nan]])
    low, high, n_valid = percentile_interval(samples, 0.5)
    assert low[0] == pytest.approx(1.5) and high[0] == pytest.approx(2.5)
    assert math.isnan(low[1]) and n_valid.tolist() == [3, 0]


def test_mcnemar_by_hand():
    # A right & B wrong on 1 image, A wrong & B right on 6: exact p = 2 P(X <= 1 | 7, 1/2) = 16/128
    y = np.zeros(20, dtype=int)
    a = np.zeros(20, dtype=int)
    b = np.zeros(20, dtype=int)
    a[:6] = 1  # A wrong on 0..5, B right there
    b[6] = 1  # B wrong on 6, A right there
    exact = mcnemar_test(y, a, b)
    assert (exact["b"], exact["c"], exact["method"]) == (1, 6, "exact")
    assert exact["p_value"] == pytest.approx(16 / 128)

    # b = 30, c = 10: chi2 = (|30 - 10| - 1)^2 / 40 = 9.025; with 1 dof, sf(x) = erfc(sqrt(x / 2))
    y = np.zeros(100, dtype=int)
    a = np.zeros(100, dtype=int)
    b = np.zeros(100, dtype=int)
    b[:30] = 1
    a[30:40] = 1
    chi2 = mcnemar_test(y, a, b)
    assert (chi2["b"], chi2["c"], chi2["method"]) == (30, 10, "chi2")
    assert chi2["statistic"] == pytest.approx(9.025)
    assert chi2["p_value"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert mcnemar_test(y, a, a)["p_value"] == 1.0
    with pytest.raises(ValueError, match="method"):
        mcnemar_test(y, a, b, method="fisher")


def test_paired_comparison():
    y, pred_a = _synthetic(400, seed=4, accuracy=0.5)
    same = compare_classifiers(y, pred_a, pred_a, n_boot=200)
    assert same["difference"]["overall"]["accuracy"]["ci"] == [0.0, 0.0]
    assert same["difference"]["overall"]["accuracy"]["p_value"] == 1.0
    assert same["mcnemar"]["p_value"] == 1.0

    pred_b = np.where(np.random.default_rng(5).random(y.size) < 0.6, y, pred_a)  # fixes ~60% of A's errors
    comparison = compare_classifiers(y, pred_a, pred_b, names=("baseline", "augmented"), n_boot=500, seed=0)
    diff = comparison["difference"]["overall"]["accuracy"]
    assert diff["value"] == pytest.approx(np.mean(pred_b == y) - np.mean(pred_a == y))
    assert diff["ci"][0] > 0 and diff["p_value"] < 0.05
    assert comparison["mcnemar"]["p_value"] < 0.001
    assert comparison["mcnemar"]["c"] > 0 and comparison["mcnemar"]["b"] == 0
    for name, metrics in comparison["difference"]["per_class"].items():
        entry = metrics["sensitivity"]
        assert entry["value"] == pytest.approx(
            comparison["b"]["per_class"][name]["sensitivity"]["value"]
            - comparison["a"]["per_class"][name]["sensitivity"]["value"]
        )
    text = comparison_to_markdown(comparison)
    assert "| metric | baseline | augmented | augmented - baseline [CI] | p |" in text
    json.dumps(comparison, allow_nan=False)


def test_paired_comparison_with_probabilities():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    prob_a = rng.random((150, 3))
    prob_b = prob_a + np.eye(3)[y]
    comparison = compare_classifiers(y, y_prob_a=prob_a, y_prob_b=prob_b, n_boot=200)
    assert comparison["difference"]["overall"]["macro_auc"]["ci"][0] > 0
    with pytest.raises(ValueError, match="both"):
        compare_classifiers(y, y_prob_a=prob_a, y_pred_b=y)


def test_markdown_json_and_png(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    prob = rng.dirichlet(np.ones(3), 50)
    result = classification_metrics(y, y_prob=prob, label_names=["nevus", "melanoma", "vascular"], n_boot=100)
    text = metrics_to_markdown(result)
    assert "| melanoma |" in text and "| balanced_accuracy |" in text and "[" in text
    paths = save_metrics(result, str(tmp_path), title="test")
    with open(paths["json"]) as handle:
        assert json.load(handle)["label_names"] == ["nevus", "melanoma", "vascular"]
    with open(paths["confusion_matrix"], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    figure = plot_confusion_matrix(result["confusion_matrix"], normalize=False)
    assert len(figure.axes) == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(y_true=[0, 1], y_pred=[0]), "entries"),
        (dict(y_true=[0, 1], y_pred=[0, 3], num_classes=3), "out of range"),
        (dict(y_true=[0, 1], y_pred=[0, -1]), ">= 0"),
        (dict(y_true=[], y_pred=[]), "empty"),
        (dict(y_true=[0, 1]), "give y_pred"),
        (dict(y_true=[0, 1], y_pred=[0, 1], n_boot=-1), "n_boot"),
        (dict(y_true=[0, 1], y_pred=[0, 1], confidence=1.5), "confidence"),
        (dict(y_true=[0, 1], y_pred=[0, 1], label_names=["a"]), "label_names"),
        (dict(y_true=[0, 1], y_prob=np.ones((3, 2))), "shape"),
    ],
)
def test_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(**kwargs)
