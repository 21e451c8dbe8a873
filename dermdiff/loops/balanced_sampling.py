"""Class-balanced sampling shared by the trainers (classifier, autoencoder).

Why a module of its own: the classifier balances so that rare conditions count in its decision; the
autoencoder balances so that rare conditions' colours count in its reconstruction (a vascular lesion's
saturated red is 1 % of HAM10000's pixels, and an L1 autoencoder trained on the natural mix paints it
brown). Both need the same weights and the same resumable draw.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def class_weights(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """Per-class weights n / (K n_k) (1 for every class when balanced; 0 for a class with no images)."""
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    return np.where(counts > 0, labels.size / (num_labels * np.maximum(counts, 1)), 0.0)


class EpochWeightedSampler(WeightedRandomSampler):
    """Class-balanced sampling whose draw for epoch e depends only on (seed, e), so resumes repeat it."""

    def __init__(self, weights, num_samples: int, seed: int):
        super().__init__(weights, num_samples, replacement=True, generator=torch.Generator().manual_seed(seed))
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)


def balanced_sampler(labels, seed: int, num_labels: int | None = None) -> EpochWeightedSampler:
    """A sampler that draws `len(labels)` indices per epoch, every class equally often in expectation.

    Args:
        labels: one integer class per training example, in dataset order.
        seed (`int`): the draw of epoch e is seeded by `seed + e`.
        num_labels (`int`, *optional*): classes in all (default `max(labels) + 1`).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or labels.size == 0 or labels.min() < 0:
        raise ValueError(f"balanced sampling needs one non-negative integer label per example, got shape "
                         f"{labels.shape}" + (f" and minimum {labels.min()}" if labels.size else ""))
    per_image = class_weights(labels, num_labels or int(labels.max()) + 1)[labels]
    return EpochWeightedSampler(torch.as_tensor(per_image, dtype=torch.double), labels.size, seed)
