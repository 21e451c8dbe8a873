"""Did the generator copy its training data? Nearest training images under MSE, SSIM and a feature space.

Furger et al. 2020 (figure 7) show each generated sample beside its nearest training sample and notes
that SSIM finds more similar neighbours than MSE. For every generated image we find:

- the nearest training image by mean squared error (all pairs at once, a chunked matrix product in torch);
- the nearest by feature distance (any `features.py` extractor, optional);
- the most similar by SSIM (skimage), computed only on the `k` nearest candidates of the two searches above,
  since SSIM over all pairs is quadratic in slow per-pair calls.

A pair is flagged when its SSIM reaches `ssim_threshold`; the share of flagged samples is the headline. The
threshold can be calibrated on held-out real images (`calibrate_ssim_threshold`): a real photo the model
never saw is only so close to the training set, so a sample closer than most of them is suspicious.

Example:
    >>> result = nearest_neighbours(generated_images, training_images, k=5, ssim_threshold=0.9)
    >>> result["share_flagged"], result["pairs"][0]["ssim"]
    >>> plot_nearest_pairs(result, generated_images, training_images, "nn_pairs.png")
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image


def _stack(images: Sequence, size: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 tensor of images resized to `size` (bicubic)."""
    arrays = []
    for image in images:
        pil = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(pil))
    return torch.from_numpy(np.stack(arrays))


def pairwise_mse(generated: torch.Tensor, training: torch.Tensor, chunk_bytes: int = 1 << 28) -> torch.Tensor:
    """(G, T) mean squared errors between flattened uint8 images, as |g|^2 + |t|^2 - 2 g.t in chunks.

    float32 products (training images converted a chunk of about `chunk_bytes` at a time): the cancellation
    error is ~1e-8 in MSE on [0, 1] pixels, far below any distance that matters for ranking neighbours.
    """
    g = generated.reshape(len(generated), -1).float() / 255.0
    dim = g.shape[1]
    chunk = max(1, chunk_bytes // (4 * dim))
    g_norm = (g * g).sum(1, keepdim=True)
    out = torch.empty(len(generated), len(training), dtype=torch.float32)
    for start in range(0, len(training), chunk):
        t = training[start:start + chunk].reshape(-1, dim).float() / 255.0
        out[:, start:start + chunk] = (g_norm + (t * t).sum(1)[None] - 2.0 * g @ t.T).clamp_min(0) / dim
    return out


def pairwise_feature_distance(generated: np.ndarray, training: np.ndarray) -> torch.Tensor:
    """(G, T) Euclidean distances between feature vectors."""
    return torch.cdist(torch.as_tensor(generated, dtype=torch.float64), torch.as_tensor(training, dtype=torch.float64))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    win = min(7, min(a.shape[:2]) // 2 * 2 - 1)  # odd window no larger than the image
    return float(structural_similarity(a, b, channel_axis=2, data_range=255, win_size=max(3, win)))


def _features(images: Sequence, extractor, batch_size: int, device) -> np.ndarray:
    from .sources import ExtractOptions, ImageListSource

    options = ExtractOptions(extractor, None, batch_size, 0, device, False)
    return ImageListSource(images).features(options).features


def nearest_neighbours(
    generated: Sequence,
    training: Sequence,
    k: int = 5,
    extractor=None,
    size: int = 64,
    ssim_threshold: float = 0.9,
    batch_size: int = 64,
    device: str = "cpu",
    verbose: bool = True,
    generated_features: np.ndarray | None = None,
    training_features: np.ndarray | None = None,
) -> dict:
    """For each generated image, its nearest training images under MSE, features and SSIM.

    Args:
        generated, training: images (PIL or uint8 arrays).
        k (`int`, defaults to 5): candidates per search passed on to SSIM.
        extractor (`nn.Module`, *optional*): feature extractor for the feature-space search.
        size (`int`, defaults to 64): side all images are resized to for comparison.
        ssim_threshold (`float`, defaults to 0.9): a pair with SSIM >= this is flagged as a possible copy.
        generated_features, training_features (`np.ndarray`, *optional*): precomputed features (e.g. cached
            reference features) used instead of running `extractor`.

    Returns:
        `dict`: `pairs` (one per generated image: `mse` / `feature` / `ssim` nearest as
        `{"train_index", "value"}`, `flagged`), `share_flagged`, `num_flagged`, `ssim_threshold`,
        `median_nearest_ssim`, `median_nearest_mse`, `settings`.
    """
    from tqdm.auto import tqdm

    if len(generated) == 0 or len(training) == 0:
        raise ValueError(f"need generated and training images, got {len(generated)} and {len(training)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, len(training))
    gen, train = _stack(generated, size), _stack(training, size)
    mse = pairwise_mse(gen, train)
    mse_values, mse_index = mse.topk(k, dim=1, largest=False)
    feature_index = feature_values = None
    if extractor is not None or (generated_features is not None and training_features is not None):
        if generated_features is None:
            generated_features = _features(generated, extractor, batch_size, device)
        if training_features is None:
            training_features = _features(training, extractor, batch_size, device)
        if len(generated_features) != len(generated) or len(training_features) != len(training):
            raise ValueError("precomputed features need one row per image")
        distances = pairwise_feature_distance(generated_features, training_features)
        feature_values, feature_index = distances.topk(k, dim=1, largest=False)
    gen_np, train_np, pairs = gen.numpy(), train.numpy(), []
    for i in tqdm(range(len(gen)), desc="nearest neighbours (SSIM)", disable=not verbose):
        candidates = set(mse_index[i].tolist())
        if feature_index is not None:
            candidates |= set(feature_index[i].tolist())
        scored = sorted(((_ssim(gen_np[i], train_np[j]), j) for j in candidates), reverse=True)
        best_ssim, best_j = scored[0]
        pair = {
            "index": i,
            "mse": {"train_index": int(mse_index[i, 0]), "value": float(mse_values[i, 0])},
            "ssim": {"train_index": int(best_j), "value": float(best_ssim)},
            "flagged": bool(best_ssim >= ssim_threshold),
        }
        if feature_index is not None:
            pair["feature"] = {"train_index": int(feature_index[i, 0]), "value": float(feature_values[i, 0])}
        pairs.append(pair)
    flagged = sum(p["flagged"] for p in pairs)
    return {
        "pairs": pairs,
        "num_flagged": int(flagged),
        "share_flagged": flagged / len(pairs),
        "ssim_threshold": float(ssim_threshold),
        "median_nearest_ssim": float(np.median([p["ssim"]["value"] for p in pairs])),
        "median_nearest_mse": float(np.median([p["mse"]["value"] for p in pairs])),
        "settings": {"k": k, "size": size, "num_training": len(training),
                     "extractor": _describe(extractor) if extractor is not None else None},
    }


def _describe(extractor) -> dict:
    from .features import describe_extractor

    return describe_extractor(extractor)


def calibrate_ssim_threshold(heldout: Sequence, training: Sequence, quantile: float = 0.99, k: int = 5,
                             size: int = 64) -> float:
    """The `quantile` of held-out real images' nearest-training SSIM: closer than that is suspicious."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    result = nearest_neighbours(heldout, training, k=k, size=size, ssim_threshold=1.1, verbose=False)
    return float(np.quantile([p["ssim"]["value"] for p in result["pairs"]], quantile))


def plot_nearest_pairs(result: dict, generated: Sequence, training: Sequence, path: str | None = None,
                       top: int = 8, cell: int = 96) -> Image.Image:
    """A picture of the `top` closest pairs by SSIM: generated | nearest by SSIM | by MSE | by features.

    Each cell is captioned with its distance; the SSIM caption of a flagged pair is red. The captioned cells
    are laid out by the one grid helper (`dermdiff.image_grid`, on diffusers' `make_image_grid`). Returns the
    PIL image (and saves it as PNG when `path` is given).
    """
    from PIL import ImageDraw

    from ..image_grid import image_grid

    pairs = sorted(result["pairs"], key=lambda p: -p["ssim"]["value"])[:top]
    columns = [("generated", None), ("SSIM", "ssim"), ("MSE", "mse")]
    if pairs and "feature" in pairs[0]:
        columns.append(("feature", "feature"))
    caption, gap = 14, 4

    def tile(image, text: str, colour) -> Image.Image:
        """One captioned cell with its gap to the next cell: the caption above the image, white around."""
        cell_image = Image.new("RGB", (cell + gap, cell + caption + gap), "white")
        pil = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        cell_image.paste(pil.resize((cell, cell), Image.NEAREST), (0, caption))
        ImageDraw.Draw(cell_image).text((2, 1), text, fill=colour)
        return cell_image

    rows = []
    for pair in pairs:
        row = []
        for title, key in columns:
            image = generated[pair["index"]] if key is None else training[pair[key]["train_index"]]
            text = f"gen #{pair['index']}" if key is None else f"{title} {pair[key]['value']:.3f}"
            colour = (200, 0, 0) if key == "ssim" and pair["flagged"] else (0, 0, 0)
            row.append(tile(image, text, colour))
        rows.append(row)
    if not rows:  # no pairs: one empty row, so the picture still shows the columns' width
        rows = [[Image.new("RGB", (cell + gap, cell + caption + gap), "white")] * len(columns)]
    canvas = image_grid(rows, fill="white")
    if path:
        canvas.save(path)
    return canvas
