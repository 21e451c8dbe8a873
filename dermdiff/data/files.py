"""Reading image and mask files with errors that say which file and which metadata row went wrong.

Every loader funnels its pixels through here, so a truncated JPEG, a missing file or a mask of the
wrong size produces the same kind of message whichever layout it came from.
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..limits import open_image

# What PIL raises for a file that is not a readable image: not an image, truncated, or a header that
# claims more pixels than `Image.MAX_IMAGE_PIXELS` allows (DecompressionBombError is no OSError).
IMAGE_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError)


def _check_file(path: str, where: str, what: str) -> None:
    if os.path.isdir(path):
        raise ValueError(f"{where}: {what} {path!r} is a folder, not an image file")
    if not os.path.isfile(path):
        raise ValueError(f"{where}: {what} {path!r} does not exist")


def read_image(path: str, where: str, what: str = "image file") -> Image.Image:
    """Opens and fully decodes an image (so a truncated file fails here, not mid-training).

    Args:
        path (`str`): the image file.
        where (`str`): the metadata row or the flag the file came from, named in errors.
        what (`str`, defaults to `"image file"`): what the file is, named in errors.

    Raises:
        ValueError: the file is missing (a plain `ValueError`, a usage error) or cannot be decoded
            (`dermdiff.errors.DataError`).
    """
    _check_file(path, where, what)
    try:
        with open_image(path, f"{where}: {what} {path!r}") as image:
            image.load()
    except IMAGE_DECODE_ERRORS as error:
        raise DataError(f"{where}: cannot read {what} {path!r} ({error})") from None
    return image


def read_table(path: str, **kwargs):
    """`pandas.read_csv` whose decode and parse errors name the file (`DataError`), not a byte offset alone.

    Keywords go to `read_csv` (loaders pass `dtype=str, keep_default_na=False`).
    """
    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8 CSV") \
            from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path} is not a readable CSV table ({str(error).strip().splitlines()[0]})") from None


@contextlib.contextmanager
def open_npz(path: str):
    """`np.load` of an `.npz` archive (never unpickling) whose damage names the file (`DataError`)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"{path} is not a readable .npz archive ({error}); is it truncated?") from None
    with archive:
        yield NpzArrays(archive, path)


class NpzArrays:
    """An open `.npz` whose arrays raise `DataError` naming the file when a member is damaged."""

    def __init__(self, archive, path: str):
        self.archive, self.path, self.files = archive, path, archive.files

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self.archive[key]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as error:
            raise DataError(f"{self.path}: cannot read array {key!r} ({error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of any PIL image; transparency is dropped (composited on nothing, as datasets does)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def read_mask(path: str, where: str) -> np.ndarray:
    """A binary lesion mask file (lesion = non-zero, e.g. 255) as an (H, W) bool array."""
    _check_file(path, where, "mask file")
    try:
        with open_image(path, f"{where}: mask {path!r}") as image:
            array = np.asarray(image.convert("L"))
    except IMAGE_DECODE_ERRORS as error:
        raise DataError(f"{where}: cannot read mask {path!r} ({error})") from None
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
