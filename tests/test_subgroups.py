"""Per-subgroup (per skin type) classifier metrics against hand-computed values."""

import json

import numpy as np
import pytest

from dermdiff.metrics import compare_by_group, metrics_by_group, subgroups_to_markdown

# group "1": 3 of 4 right (the second class-1 image is missed); group "6": 1 of 2 right.
Y_TRUE = [0, 1, 0, 1, 0, 1]
BEFORE = [0, 1, 0, 0, 0, 0]
AFTER = [0, 1, 0, 1, 1, 0]  # group "1": 4 of 4; group "6": 0 of 2
GROUPS = [1, 1.0, "1", np.int8(1), 6, 6]  # the same group however it is spelt
NAMES = ["nevus", "melanoma", "vascular"]  # class 2 appears nowhere: each group keeps all three


def one_hot(labels, k=3):
    return np.eye(k)[labels] * 0.8 + 0.2 / k


def accuracy(by_group, group):
    return by_group[group]["metrics"]["overall"]["accuracy"]["value"]


def test_metrics_by_group_matches_hand_computation():
    by_group = metrics_by_group(Y_TRUE, BEFORE, one_hot(BEFORE), GROUPS, label_names=NAMES, n_boot=50)
    assert list(by_group) == ["1", "6"]
    assert [by_group[g]["n"] for g in by_group] == [4, 2]
    assert accuracy(by_group, "1") == pytest.approx(0.75)
    assert accuracy(by_group, "6") == pytest.approx(0.5)
    one = by_group["1"]["metrics"]
    assert one["overall"]["balanced_accuracy"]["value"] == pytest.approx(0.75)  # (1 + 1/2) / 2
    assert one["num_classes"] == 3 and one["label_names"] == NAMES and one["overall"]["accuracy"]["ci"]
    assert one["confusion_matrix"] == [[2, 0, 0], [1, 1, 0], [0, 0, 0]]
    json.dumps(by_group, allow_nan=False)  # JSON-ready as it is


def test_unknown_groups_and_natural_order():
    groups = [10, 2, None, "b", 1, float("nan"), "", " 2 "]
    labels = [0, 1, 0, 1, 0, 1, 0, 1]
    by_group = metrics_by_group(labels, labels, None, groups, n_boot=0)
    assert list(by_group) == ["1", "2", "10", "b", "unknown"]  # numbers numerically, names, then unknown
    assert by_group["unknown"]["n"] == 3 and by_group["2"]["n"] == 2
    with pytest.raises(ValueError, match="groups has 2 entries"):
        metrics_by_group(labels, labels, None, [1, 2])


def test_min_size_lists_a_small_group_without_scoring_it():
    by_group = metrics_by_group(Y_TRUE, BEFORE, None, GROUPS, n_boot=0, min_size=3)
    assert by_group["6"] == {"n": 2, "metrics": None} and accuracy(by_group, "1") == pytest.approx(0.75)
    table = subgroups_to_markdown(by_group, group_name="skin type")
    assert "| 6 | 2 | n/a | n/a | n/a |" in table


def test_compare_by_group_differences_and_mcnemar():
    comparison = compare_by_group(
        Y_TRUE, BEFORE, AFTER, GROUPS, y_prob_a=one_hot(BEFORE), y_prob_b=one_hot(AFTER), label_names=NAMES, n_boot=50
    )
    assert list(comparison) == ["1", "6"]
    one, six = comparison["1"]["comparison"], comparison["6"]["comparison"]
    assert one["names"] == ["before", "after"]
    assert one["difference"]["overall"]["accuracy"]["value"] == pytest.approx(1.0 - 0.75)
    assert six["difference"]["overall"]["accuracy"]["value"] == pytest.approx(0.0 - 0.5)
    assert (one["mcnemar"]["b"], one["mcnemar"]["c"]) == (0, 1)  # only "after" gets image 3 right
    assert (six["mcnemar"]["b"], six["mcnemar"]["c"]) == (1, 0)  # only "before" gets image 4 right
    assert one["a"]["overall"]["accuracy"]["value"] == pytest.approx(0.75)


def test_markdown_has_one_row_per_group_with_before_after_and_difference():
    groups = GROUPS[:5] + [None]  # the last image has no skin type
    a = metrics_by_group(Y_TRUE, BEFORE, None, groups, n_boot=50)
    b = metrics_by_group(Y_TRUE, AFTER, None, groups, n_boot=50)
    comparison = compare_by_group(Y_TRUE, BEFORE, AFTER, groups, n_boot=50)
    table = subgroups_to_markdown(a, b, comparison, group_name="skin type")
    lines = table.strip().splitlines()
    assert lines[0] == "| skin type | n | accuracy | balanced_accuracy | macro_f1 |"
    rows = lines[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 6", "| unknown"]
    assert rows[0].startswith("| 1 | 4 | 0.750 → 1.000 (+0.250 [")  # paired CI of the difference
    assert rows[1].startswith("| 6 | 1 | 1.000 → 0.000 (-1.000")
    # without the paired comparison the difference is the point value only
    assert "0.750 → 1.000 (+0.250) |" in subgroups_to_markdown(a, b)
    # one result: value [CI] per cell
    assert subgroups_to_markdown(a).splitlines()[2].startswith("| 1 | 4 | 0.750 [")
