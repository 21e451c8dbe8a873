"""Hard-case mining for the adversarial loop (Silva & Georgieva 2024): find what the classifier gets wrong.

The loop (training/adversarial_loop.py) evaluates the current classifier on a *mining split* — never on
the final test split unless the user insists — and hands the cases returned here to the generator.
A ledger (JSON lines) records every round so a result can be traced back to the cases that caused it.

Example:
    >>> cases = mine_hard_cases(ids=["a", "b", "c"], labels=[0, 1, 1],
    ...                         probabilities=[[0.9, 0.1], [0.8, 0.2], [0.45, 0.55]], margin=0.2)
    >>> [(c.sample_id, c.reason) for c in cases]
    [('b', 'misclassified'), ('c', 'low_margin')]
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

TEST_SPLIT_NAMES = ("test",)
LEAKAGE_WARNING = (
    "LEAKAGE WARNING: hard cases were mined on the test split (--allow_test_mining); the test metrics "
    "below are optimistically biased and must not be reported as held-out performance."
)


@dataclass(frozen=True)
class HardCase:
    """One mined case: its id and position in the mining split, its true and predicted class."""

    sample_id: str
    index: int
    label: int
    predicted: int
    true_probability: float
    margin: float  # p(true) - max p(other); negative when misclassified
    reason: str  # "misclassified" or "low_margin"
    runner_up: int = -1  # the most probable class other than the true one (-1: unknown)

    @property
    def confusion_target(self) -> int:
        """The class the classifier confuses this case with: its prediction, or the runner-up when correct."""
        return self.predicted if self.predicted != self.label else self.runner_up

    def to_dict(self) -> dict:
        return asdict(self)


def check_mining_split(split_name: str, allow_test_mining: bool = False) -> str | None:
    """Refuses to mine on the test split unless explicitly allowed; returns the warning to carry then."""
    if split_name.lower() in TEST_SPLIT_NAMES:
        if not allow_test_mining:
            raise ValueError(
                f"refusing to mine hard cases on the {split_name!r} split: it is the final evaluation split. "
                "Mine on the 'mining' split, or pass --allow_test_mining to accept leakage (every report "
                "will then carry a warning)."
            )
        warnings.warn(LEAKAGE_WARNING, stacklevel=2)
        return LEAKAGE_WARNING
    return None


def mine_hard_cases(
    ids: Sequence,
    labels: Sequence[int],
    probabilities,
    margin: float | None = None,
    max_cases: int | None = None,
    classes: Sequence[int] | None = None,
) -> list[HardCase]:
    """Misclassified cases, and (with `margin`) correct ones whose p(true) - max p(other) < margin.

    Args:
        ids: one id per case (kept as strings in the ledger).
        labels: true class indices.
        probabilities: (N, K) class probabilities (or logits' softmax).
        margin (`float`, *optional*): also mine correct cases closer than this to the decision boundary.
        max_cases (`int`, *optional*): keep the hardest (smallest margin) cases first.
        classes (*optional*): only mine cases whose true class is in this list.

    Returns the cases sorted hardest first.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probabilities.ndim != 2 or len(probabilities) != len(labels) or len(ids) != len(labels):
        raise ValueError(
            f"need N ids, N labels and (N, K) probabilities; got {len(ids)} ids, {len(labels)} labels and "
            f"probabilities of shape {probabilities.shape}"
        )
    if margin is not None and not 0 <= margin <= 1:
        raise ValueError(f"margin must be in [0, 1], got {margin}")
    num_classes = probabilities.shape[1]
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got range {labels.min()}..{labels.max()}")
    rows = np.arange(len(labels))
    true_probability = probabilities[rows, labels]
    others = probabilities.copy()
    others[rows, labels] = -np.inf
    margins = true_probability - others.max(axis=1) if num_classes > 1 else np.ones(len(labels))
    predicted = probabilities.argmax(axis=1)
    runner_up = others.argmax(axis=1) if num_classes > 1 else np.full(len(labels), -1)
    misclassified = predicted != labels
    selected = misclassified | (margins < margin if margin is not None else False)
    if classes is not None:
        selected &= np.isin(labels, np.asarray(list(classes)))
    order = [i for i in np.argsort(margins, kind="stable") if selected[i]]
    if max_cases is not None:
        order = order[:max_cases]
    return [
        HardCase(
            sample_id=str(ids[i]),
            index=int(i),
            label=int(labels[i]),
            predicted=int(predicted[i]),
            true_probability=float(true_probability[i]),
            margin=float(margins[i]),
            reason="misclassified" if misclassified[i] else "low_margin",
            runner_up=int(runner_up[i]),
        )
        for i in order
    ]


class Ledger:
    """Append-only JSON-lines record of the loop: one line per event, flushed and fsynced as written.

    A crash loses at most the line being written; `read()` skips a torn last line.
    """

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True, default=_to_jsonable)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        records = []
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # torn final line from an interrupted write
        return records


def _to_jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"cannot write {type(value).__name__} to the ledger")
