"""Hard-case mining returns exactly the misclassified ids; the test split is refused; the ledger survives."""

import json

import numpy as np
import pytest

from dermdiff.hardcase.mining import LEAKAGE_WARNING, Ledger, check_mining_split, mine_hard_cases


def test_mining_returns_exactly_the_misclassified_ids():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 4))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, size=200)
    ids = [f"img_{i:03d}" for i in range(200)]
    cases = mine_hard_cases(ids, labels, probabilities)
    expected = {ids[i] for i in np.flatnonzero(probabilities.argmax(axis=1) != labels)}
    assert {case.sample_id for case in cases} == expected
    assert all(case.reason == "misclassified" and case.margin < 0 for case in cases)
    margins = [case.margin for case in cases]
    assert margins == sorted(margins)  # hardest first


def test_margin_adds_close_correct_cases_and_class_filter():
    probabilities = [[0.9, 0.1], [0.8, 0.2], [0.45, 0.55], [0.3, 0.7]]
    labels = [0, 1, 1, 1]
    cases = mine_hard_cases(["a", "b", "c", "d"], labels, probabilities, margin=0.2)
    assert [(c.sample_id, c.reason) for c in cases] == [("b", "misclassified"), ("c", "low_margin")]
    assert cases[1].margin == pytest.approx(0.1)
    assert mine_hard_cases(["a", "b", "c", "d"], labels, probabilities, margin=0.2, classes=[0]) == []
    assert len(mine_hard_cases(["a", "b", "c", "d"], labels, probabilities, margin=0.2, max_cases=1)) == 1


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="need N ids"):
        mine_hard_cases(["a"], [0, 1], [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="margin must be in"):
        mine_hard_cases(["a"], [0], [[1.0, 0.0]], margin=2)
    with pytest.raises(ValueError, match=r"labels must be in 0..1"):
        mine_hard_cases(["a"], [3], [[1.0, 0.0]])


def test_test_split_mining_is_refused_unless_allowed():
    assert check_mining_split("mining") is None
    with pytest.raises(ValueError, match="refusing to mine hard cases on the 'test' split"):
        check_mining_split("test")
    with pytest.warns(UserWarning, match="LEAKAGE WARNING"):
        assert check_mining_split("test", allow_test_mining=True) == LEAKAGE_WARNING


def test_ledger_appends_and_skips_a_torn_line(tmp_path):
    ledger = Ledger(str(tmp_path / "run" / "ledger.jsonl"))
    ledger.append({"round": 0, "cases": mine_hard_cases(["x"], [1], [[0.7, 0.3]]), "n": np.int64(3)})
    ledger.append({"round": 1, "metric": np.float32(0.5)})
    with open(ledger.path, "a") as handle:
        handle.write('{"round": 2, "trunc')
    records = ledger.read()
    assert [r["round"] for r in records] == [0, 1]
    assert records[0]["cases"][0]["sample_id"] == "x" and records[0]["n"] == 3
    assert json.loads(open(ledger.path).readline())["round"] == 0
