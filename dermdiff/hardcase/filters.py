"""Filters for the hard-case loop's synthetic images: keep what a real-data classifier recognises, drop near-copies.

`filter_by_reference` drops images a reference classifier trained on real data does not recognise as their
label; `filter_by_distance` drops images too close to a training image. Both return `(kept, dropped)` and
record what they measured in each image's `extra`, so the ledger shows why an image was dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.transforms import pixel_values
from .synthesis import SyntheticImage


def _as_batch(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """(N, 3, size, size) float tensor in [-1, 1], resized as training data are (`data.transforms.pixel_values`)."""
    return torch.stack([pixel_values(image, size) for image in images])


@torch.no_grad()
def filter_by_reference(
    images: list[SyntheticImage], reference, min_probability: float | None = None, batch_size: int = 64
) -> tuple[list[SyntheticImage], list[SyntheticImage]]:
    """Keeps images a reference classifier (trained on real data) recognises as their label.

    Recognised = the reference's top class is the label, or, with `min_probability`, p(label) reaches it.
    Returns `(kept, dropped)`; each image's `extra["reference_probability"]` records p(label).
    """
    if not images:
        return [], []
    reference.eval()
    size = reference.config.image_size
    device = next(reference.parameters()).device
    kept, dropped = [], []
    for start in range(0, len(images), batch_size):
        part = images[start : start + batch_size]
        probabilities = reference.predict_proba(_as_batch([item.image for item in part], size).to(device)).cpu()
        for item, row in zip(part, probabilities):
            p = float(row[item.label])
            item.extra["reference_probability"] = p
            ok = p >= min_probability if min_probability is not None else int(row.argmax()) == item.label
            (kept if ok else dropped).append(item)
    return kept, dropped


def filter_by_distance(
    images: list[SyntheticImage],
    training_images: Sequence[Image.Image],
    min_mse: float | None = None,
    min_feature_distance: float | None = None,
    feature_model=None,
    size: int = 32,
) -> tuple[list[SyntheticImage], list[SyntheticImage]]:
    """Drops images closer than `min_mse` (pixels in [0, 1] at `size`) or `min_feature_distance` (Euclidean,
    `feature_model.features`) to their nearest training image: near-copies add no new information.

    Returns `(kept, dropped)`; `extra["nearest_mse"]` / `extra["nearest_feature_distance"]` record the distances.
    """
    from ..metrics.memorisation import pairwise_feature_distance, pairwise_mse

    if not images:
        return [], []
    if min_mse is None and min_feature_distance is None:
        return list(images), []
    if min_feature_distance is not None and feature_model is None:
        raise ValueError("min_feature_distance needs feature_model (e.g. the reference SkinClassifier)")
    if len(training_images) == 0:
        raise ValueError("filter_by_distance needs at least one training image to measure distances to")
    generated = _as_batch([item.image for item in images], size)
    training = _as_batch(list(training_images), size)
    near = np.zeros(len(images), dtype=bool)
    if min_mse is not None:

        def to_uint8(batch):
            return ((batch + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

        nearest = pairwise_mse(to_uint8(generated), to_uint8(training)).min(dim=1).values.numpy()
        for item, value in zip(images, nearest):
            item.extra["nearest_mse"] = float(value)
        near |= nearest < min_mse
    if min_feature_distance is not None:
        was_training = feature_model.training
        feature_model.eval()  # running batch-norm statistics, no dropout: else a copy's features depend on its batch
        with torch.no_grad():
            device = next(feature_model.parameters()).device
            resolution = feature_model.config.image_size

            def embed(batch):
                batch = F.interpolate(batch, size=(resolution, resolution), mode="bilinear", align_corners=False)
                return torch.cat(
                    [feature_model.features(batch[i : i + 128].to(device)).cpu() for i in range(0, len(batch), 128)]
                )

            nearest = (
                pairwise_feature_distance(embed(generated).numpy(), embed(training).numpy()).min(dim=1).values.numpy()
            )
        feature_model.train(was_training)
        for item, value in zip(images, nearest):
            item.extra["nearest_feature_distance"] = float(value)
        near |= nearest < min_feature_distance
    kept = [item for item, bad in zip(images, near) if not bad]
    dropped = [item for item, bad in zip(images, near) if bad]
    return kept, dropped
