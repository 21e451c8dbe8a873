"""The one grid helper: full grids equal diffusers' `make_image_grid`; short rows are padded; cells resized."""

import numpy as np
import pytest
from diffusers.utils import make_image_grid
from PIL import Image

from dermdiff.image_grid import image_grid, rows_of


def _tiles(count, size=4):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def test_full_grid_is_diffusers_grid_and_short_rows_are_padded():
    tiles = _tiles(6)
    assert np.array_equal(np.asarray(image_grid(rows_of(tiles, 3))), np.asarray(make_image_grid(tiles, 2, 3)))
    padded = np.asarray(image_grid(rows_of(tiles[:5], 3), fill="white"))
    assert padded.shape == (8, 12, 3) and (padded[4:, 8:] == 255).all()
    assert np.array_equal(padded[4:, :4], np.asarray(tiles[3]))


def test_cells_are_resized_without_smoothing_and_arrays_are_accepted():
    tiles = _tiles(2)
    grid = np.asarray(image_grid([[tiles[0]], [np.asarray(tiles[1])]], cell=8))
    assert grid.shape == (16, 8, 3)
    assert np.array_equal(grid[:8], np.asarray(tiles[0]).repeat(2, axis=0).repeat(2, axis=1))


def test_empty_grids_are_refused():
    with pytest.raises(ValueError, match="no images"):
        image_grid([[], []])
    with pytest.raises(ValueError, match="cols=0"):
        rows_of(_tiles(2), 0)
