"""Reading image and mask files with errors that say which file and which metadata row went wrong.

Every loader funnels its pixels through here, so a truncated JPEG, a missing file or a mask of the
wrong size produces the same kind of message whichever layout it came from.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..limits import open_image


def read_image(path: str, where: str) -> Image.Image:
    """Opens and fully decodes an image (so a truncated file fails here, not mid-training).

    Args:
        path (`str`): the image file.
        where (`str`): the metadata row the file came from, named in errors.

    Raises:
        ValueError: the file is missing or cannot be decoded.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{where}: image file {path!r} does not exist")
    try:
        with open_image(path, f"{where}: image {path!r}") as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{where}: cannot read image {path!r} ({error})") from None
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of any PIL image; transparency is dropped (composited on nothing, as datasets does)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def read_mask(path: str, where: str) -> np.ndarray:
    """A binary lesion mask file (lesion = non-zero, e.g. 255) as an (H, W) bool array."""
    if not os.path.isfile(path):
        raise ValueError(f"{where}: mask file {path!r} does not exist")
    try:
        with open_image(path, f"{where}: mask {path!r}") as image:
            array = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{where}: cannot read mask {path!r} ({error})") from None
    return array > 127 if array.max() > 1 else array > 0


def fit_mask(mask: np.ndarray, size: tuple[int, int], where: str) -> np.ndarray:
    """Brings a mask to the image's (height, width).

    ISIC 2018 task 1 masks are often published at a higher resolution than the copy of the image at
    hand (HAM10000 600x450 masks beside 200x150 images). A mask with the same aspect ratio is
    reduced by area averaging and thresholded at one half: a majority vote of the source pixels.
    """
    mask = np.asarray(mask).astype(bool)
    if mask.shape == tuple(size):
        return mask
    height, width = size
    if abs(mask.shape[0] * width - mask.shape[1] * height) > max(mask.shape):
        raise ValueError(
            f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height} "
            "(width x height); a mask must match the image or have its aspect ratio"
        )
    scaled = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.BOX)
    return np.asarray(scaled) >= 128


def png_bytes(image: Image.Image) -> bytes:
    """Lossless PNG bytes; semantic-map codes and mask values must survive exactly."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (height, width), sampled exactly as `SemanticMap.resize`
    samples its regions, so a resized mask and a resized map stay pixel-for-pixel aligned."""
    from ..semantic_map import Region, SemanticMap

    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        return np.zeros(tuple(size), dtype=bool)
    return SemanticMap(None, [Region(1, mask)], mask.shape, registry=["lesion"]).resize(size).lesion_mask


def mask_image(mask: np.ndarray) -> Image.Image:
    """A bool mask as the "L" image stored in datasets (lesion = 255)."""
    return Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, mode="L")
