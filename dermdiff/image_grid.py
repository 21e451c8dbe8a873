"""Pictures of many images: the one grid helper, on top of diffusers' `make_image_grid`.

diffusers' `make_image_grid(images, rows, cols)` needs exactly rows x cols images of one size. Our grids
have short rows (the last validation row, sweeps beside their maps), mix arrays with PIL images and
show small images and maps enlarged without smoothing, so `image_grid` pads and resizes and then hands
the full grid to diffusers. Call `make_image_grid` directly when the images already fill the grid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image


def rows_of(images: Sequence, cols: int) -> list[list]:
    """`images` cut into rows of `cols` (the last may be shorter)."""
    if cols < 1:
        raise ValueError(f"a grid needs at least one column, got cols={cols}")
    return [list(images[start : start + cols]) for start in range(0, len(images), cols)]


def image_grid(rows: Sequence[Sequence], cell: int | None = None, fill: str = "black") -> Image.Image:
    """Rows of images (PIL or (H, W[, 3]) arrays) as one RGB picture; short rows are padded with `fill`.

    Args:
        rows: one sequence of images per grid row.
        cell (`int`, *optional*): resize every image to `cell` x `cell` (nearest neighbour, so maps keep their
            codes and small samples stay sharp); without it every image must have the first one's size.
        fill (`str`, defaults to `"black"`): colour of the empty cells.
    """
    from diffusers.utils import make_image_grid

    rows = [list(row) for row in rows]
    if not any(rows):
        raise ValueError("no images to put in a grid")
    pictures = [[_as_rgb(image, cell) for image in row] for row in rows]
    size = next(picture for row in pictures for picture in row).size
    cols = max(len(row) for row in pictures)
    blank = Image.new("RGB", size, fill)
    flat = [picture for row in pictures for picture in row + [blank] * (cols - len(row))]
    return make_image_grid(flat, rows=len(pictures), cols=cols)


def _as_rgb(image, cell: int | None) -> Image.Image:
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    picture = picture.convert("RGB")
    return picture.resize((cell, cell), Image.NEAREST) if cell else picture
