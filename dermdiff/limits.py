"""Size limits checked before anything is allocated, each with the environment variable that raises it.

A PNG header can claim 20000x20000 pixels in a few hundred bytes, and `--n 10**12` or `--size 200000`
is one typo away: without a bound the process tries to allocate it all and is killed (or takes the
machine down with it). Every limit here is generous for dermatology work and can be raised on purpose:

| limit                       | default            | environment variable            |
|-----------------------------|--------------------|---------------------------------|
| pixels of one image or map  | 8192 x 8192        | `DERMDIFF_MAX_IMAGE_PIXELS`     |
| phantom images in one call  | 1,000,000          | `DERMDIFF_MAX_PHANTOM_IMAGES`   |

Pillow's own decompression-bomb guard (`Image.MAX_IMAGE_PIXELS`, an error at twice its value) is
turned into the same one-line `ValueError` by `open_image`.
"""

from __future__ import annotations

import os
import warnings

from PIL import Image

from .errors import DataError, UsageError

MAX_IMAGE_PIXELS_ENV = "DERMDIFF_MAX_IMAGE_PIXELS"
MAX_PHANTOM_IMAGES_ENV = "DERMDIFF_MAX_PHANTOM_IMAGES"
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
DEFAULT_MAX_PHANTOM_IMAGES = 1_000_000


def _limit(env: str, default: int) -> int:
    text = os.environ.get(env, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{env}={text!r} must be a positive whole number")
    return value


def max_image_pixels() -> int:
    """The pixel limit of one image or map (`DERMDIFF_MAX_IMAGE_PIXELS`, default 8192 x 8192)."""
    return _limit(MAX_IMAGE_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS)


def check_image_size(width: int, height: int, what: str, error: type[ValueError] = DataError) -> None:
    """Refuses an image or map of `width` x `height` above the pixel limit, before it is decoded or made.

    Args:
        width (`int`), height (`int`): the claimed size.
        what (`str`): names the file or flag in the message, e.g. `"--size"` or `"metadata.csv line 3"`.
        error (`type`, defaults to `DataError`): `UsageError` when the size comes from a flag.
    """
    limit = max_image_pixels()
    if int(width) * int(height) > limit:
        raise error(
            f"{what}: {int(width)}x{int(height)} = {int(width) * int(height):,} pixels is over the limit of "
            f"{limit:,}; set {MAX_IMAGE_PIXELS_ENV} to raise it"
        )


def check_phantom_count(n: int) -> None:
    """Refuses more phantom images than `DERMDIFF_MAX_PHANTOM_IMAGES` (default 1,000,000) in one call."""
    limit = _limit(MAX_PHANTOM_IMAGES_ENV, DEFAULT_MAX_PHANTOM_IMAGES)
    if n > limit:
        raise UsageError(
            f"n = {n:,} phantom images is over the limit of {limit:,}; set {MAX_PHANTOM_IMAGES_ENV} to raise it"
        )


def open_image(path: str, what: str) -> Image.Image:
    """`Image.open` (lazy: only the header is read) with the pixel limit checked before any decoding.

    Pillow's decompression-bomb error becomes the same one-line `ValueError`; decoding the pixels
    (`.load()`, `.convert()`) is left to the caller, which also handles unreadable files.
    """
    limit = max_image_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit  # a limit raised on purpose raises Pillow's guard with it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the check below says it in one line
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as error:
            raise DataError(f"{what}: {error}; set {MAX_IMAGE_PIXELS_ENV} to raise dermdiff's limit") from None
    try:
        check_image_size(image.width, image.height, what)
    except ValueError as error:  # the file's header claims the size: a data error (exit status 1)
        image.close()
        raise DataError(str(error)) from None
    return image
