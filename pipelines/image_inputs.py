"""Photos given to a pipeline (`image=`) -> the (B, 3, H, W) tensor in [-1, 1] the models take.

`DermDiffPipeline` (SDEdit variations, lesion transfer) and `LesionEditPipeline` accept what diffusers'
image pipelines accept: PIL images, numpy arrays, torch tensors in [0, 1], or lists of them. diffusers'
`VaeImageProcessor` reads numpy arrays as floats in [0, 1] whatever their dtype, so a uint8 array (what
`np.asarray(photo)` gives) is scaled to [0, 1] first; PIL images are converted to RGB.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def prepare_image(image_processor, image) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] from PIL, numpy (uint8, or float in [0, 1]) or torch in [0, 1], or lists of them."""
    items = image if isinstance(image, list) else None
    if items and isinstance(items[0], np.ndarray):
        image = [_unit_float(item) for item in items]
    elif items and isinstance(items[0], Image.Image):
        image = [item.convert("RGB") for item in items]
    elif isinstance(image, np.ndarray):
        image = _unit_float(image)
    elif isinstance(image, Image.Image):
        image = image.convert("RGB")
    image = image_processor.preprocess(image)
    if image.shape[1] != 3:
        raise ValueError(f"image must have 3 channels, got {image.shape[1]} (shape {tuple(image.shape)})")
    return image


def _unit_float(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array
