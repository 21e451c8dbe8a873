"""Fixed vs broken on a hand-made example whose counts are known."""

import numpy as np
import pytest

from dermdiff.metrics.fixed_broken import fixed_broken, fixed_broken_markdown

# 12 images, 3 classes, two skin types. Per image: right before? right after?
#   class 0 (rows 0-3): wrong->right, wrong->right, right->right, right->wrong  : fixed 2, broken 1
#   class 1 (rows 4-7): wrong->wrong, right->right, right->right, right->right  : fixed 0, broken 0
#   class 2 (rows 8-11): wrong->right, right->wrong, right->wrong, wrong->wrong : fixed 1, broken 2
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
BEFORE = [1, 2, 0, 0, 0, 1, 1, 1, 0, 2, 2, 1]
AFTER = [0, 0, 0, 1, 2, 1, 1, 1, 2, 0, 1, 0]
SKIN = [1, 1, 5, 5, 1, 5, 5, None, 1, 1, 5, 5]


def test_counts_rates_and_net_by_hand():
    result = fixed_broken(Y_TRUE, BEFORE, AFTER, label_names=["a", "b", "c"], groups=SKIN, n_boot=500, seed=3)
    overall = result["overall"]
    assert (overall["n"], overall["wrong_before"], overall["fixed"], overall["right_before"], overall["broken"]) == (
        12, 5, 3, 7, 3)
    assert overall["fixed_rate"] == pytest.approx(3 / 5) and overall["broken_rate"] == pytest.approx(3 / 7)
    assert overall["net"]["value"] == pytest.approx(0.0)
    low, high = overall["net"]["ci"]
    assert low < 0 < high and overall["net"]["n_valid"] == 500
    a, b, c = (result["per_class"][name] for name in "abc")
    assert (a["fixed"], a["broken"], a["wrong_before"]) == (2, 1, 2) and a["net"]["value"] == pytest.approx(0.25)
    assert (b["fixed"], b["broken"], b["fixed_rate"]) == (0, 0, 0.0) and b["net"]["ci"] == [0.0, 0.0]
    assert (c["fixed"], c["broken"]) == (1, 2) and c["net"]["value"] == pytest.approx(-0.25)
    # type 1: rows 0,1,4,8,9 -> fixed 0,1,8, broken 9; type 5: rows 2,3,5,6,10,11 -> broken 3,10; 11 stays wrong
    groups = result["by_group"]
    assert list(groups) == ["1", "5", "unknown"]
    assert (groups["1"]["n"], groups["1"]["fixed"], groups["1"]["broken"]) == (5, 3, 1)
    assert (groups["5"]["n"], groups["5"]["fixed"], groups["5"]["broken"]) == (6, 0, 2)
    assert groups["5"]["wrong_before"] == 1 and groups["5"]["net"]["value"] == pytest.approx(-2 / 6)
    assert groups["5"]["net"]["ci"][1] <= 0  # only breaks in this group: no replicate is positive
    assert groups["unknown"]["n"] == 1 and groups["unknown"]["fixed_rate"] is None  # nothing to fix there


def test_interval_is_seeded_and_excludes_zero_when_only_fixes():
    y_true = np.zeros(40, dtype=int)
    before = np.r_[np.ones(15, dtype=int), np.zeros(25, dtype=int)]
    after = np.zeros(40, dtype=int)
    first = fixed_broken(y_true, before, after, n_boot=300, seed=7)["overall"]
    again = fixed_broken(y_true, before, after, n_boot=300, seed=7)["overall"]
    assert first == again and first["net"]["value"] == pytest.approx(15 / 40)
    assert first["net"]["ci"][0] > 0.15 and first["net"]["ci"][1] < 0.6
    assert "ci" not in fixed_broken(y_true, before, after, n_boot=0)["overall"]["net"]


def test_markdown_lists_every_row():
    result = fixed_broken(Y_TRUE, BEFORE, AFTER, label_names=["a", "b", "c"], groups=SKIN, n_boot=50)
    text = fixed_broken_markdown(result, names=("baseline", "round 1"), group_name="skin type")
    assert "| all | 12 | 5 | 3 (0.600) | 7 | 3 (0.429) |" in text
    assert "| class b | 4 | 1 | 0 (0.000) | 3 | 0 (0.000) | +0.000 [+0.000, +0.000] |" in text
    assert "| skin type unknown | 1 | 0 | 0 (n/a) | 1 | 0 (0.000) |" in text


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(y_pred_after=[0, 1]), "y_pred has 2 entries but y_true has 12"),
        (dict(groups=[1, 2]), "groups has 2 entries but there are 12"),
        (dict(n_boot=-1), "n_boot must be >= 0"),
        (dict(label_names=["a", "b"]), "got 2 label_names for num_classes=3"),
    ],
)
def test_bad_input_names_what_is_wrong(kwargs, match):
    arguments = dict(y_pred_after=AFTER)
    arguments.update(kwargs)
    after = arguments.pop("y_pred_after")
    with pytest.raises(ValueError, match=match):
        fixed_broken(Y_TRUE, BEFORE, after, **arguments)
