"""ITA measurement against the formula on flat colours, band edges, masks and bad input."""

import math

import numpy as np
import pytest
from PIL import Image
from skimage.color import lab2rgb, rgb2lab

from dermdiff.skin_tone import (
    ITA_BANDS,
    image_ita,
    individual_typology_angle,
    ita_category,
    ita_to_skin_type,
    lab_ita,
    skin_type_ita_range,
    srgb_to_lab,
)


def _flat(rgb, size=8):
    return Image.fromarray(np.full((size, size, 3), rgb, dtype=np.uint8))


def _rgb_of_lab(lab):
    return tuple(int(v) for v in np.round(lab2rgb(np.array([[lab]], dtype=np.float64))[0, 0] * 255))


def test_formula_values():
    assert individual_typology_angle(50 + 20, 20) == pytest.approx(45.0)
    assert individual_typology_angle(50, 17) == pytest.approx(0.0)
    assert individual_typology_angle(30, 20) == pytest.approx(-45.0)
    assert individual_typology_angle(80, 0) == pytest.approx(90.0)  # b* = 0 stays finite
    L, b = np.array([70.0, 40.0]), np.array([15.0, 12.0])
    expected = np.arctan((L - 50) / b) * 180 / math.pi
    np.testing.assert_allclose(individual_typology_angle(L, b), expected)


@pytest.mark.parametrize(
    "lab, skin_type",
    [((80, 7, 14), 1), ((69, 9, 17), 2), ((63, 11, 19), 3), ((57, 12, 20), 4), ((45, 12, 19), 5), ((30, 9, 13), 6)],
)
def test_flat_colour_matches_formula(lab, skin_type):
    rgb = _rgb_of_lab(lab)
    L, _, b = rgb2lab(np.array([[rgb]], dtype=np.float64) / 255.0)[0, 0]
    measured = image_ita(_flat(rgb))
    assert measured == pytest.approx(math.degrees(math.atan((L - 50) / b)), abs=1e-9)
    assert measured == pytest.approx(math.degrees(math.atan((lab[0] - 50) / lab[2])), abs=1.5)  # uint8 rounding
    assert ita_to_skin_type(measured) == skin_type


def test_inputs_agree_uint8_float_and_pil():
    rgb = np.array([[[200, 150, 120]]], dtype=np.uint8)
    a = srgb_to_lab(rgb)
    np.testing.assert_allclose(a, srgb_to_lab(rgb.astype(np.float64) / 255.0))
    np.testing.assert_allclose(a, srgb_to_lab(Image.fromarray(rgb)))
    assert lab_ita(a).shape == (1, 1)


def test_band_edges_and_arrays():
    cases = {90: 1, 55.01: 1, 55.0: 2, 41.01: 2, 41.0: 3, 28.0: 4, 10.01: 4, 10.0: 5, -29.99: 5, -30.0: 6, -80: 6}
    for ita, expected in cases.items():
        assert ita_to_skin_type(ita) == expected, ita
        assert isinstance(ita_to_skin_type(ita), int)
    np.testing.assert_array_equal(ita_to_skin_type(np.array(list(cases))), np.array(list(cases.values())))
    assert ita_category(60) == "very light" and ita_category(-45) == "dark"
    for name, low, high, skin_type in ITA_BANDS:
        assert skin_type_ita_range(skin_type) == (low, high)
        middle = 0.5 * (max(low, -90) + min(high, 90))
        assert ita_to_skin_type(middle) == skin_type and ita_category(middle) == name
    assert skin_type_ita_range("IV") == (10.0, 28.0)


def test_masks_select_the_skin():
    light, dark = _rgb_of_lab((80, 7, 14)), _rgb_of_lab((30, 9, 13))
    array = np.zeros((10, 10, 3), dtype=np.uint8)
    array[:, :7] = light
    array[:, 7:] = dark  # a "lesion" on the right
    lesion = np.zeros((10, 10), dtype=bool)
    lesion[:, 7:] = True
    assert ita_to_skin_type(image_ita(array)) == 1  # median: the majority colour
    assert image_ita(array, lesion_mask=lesion) == pytest.approx(image_ita(_flat(light)))
    assert image_ita(array, skin_mask=lesion) == pytest.approx(image_ita(_flat(dark)))
    assert image_ita(array, lesion_mask=Image.fromarray(lesion.astype(np.uint8) * 255)) == pytest.approx(
        image_ita(_flat(light))
    )


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        image_ita(np.zeros((4, 4, 3), np.uint8), lesion_mask=np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="no skin pixel"):
        image_ita(np.zeros((4, 4, 3), np.uint8), lesion_mask=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        srgb_to_lab(np.full((2, 2, 3), 2.0))
    with pytest.raises(ValueError, match="3 channels"):
        srgb_to_lab(np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        ita_to_skin_type(float("nan"))
    with pytest.raises(ValueError, match="1..6"):
        skin_type_ita_range(7)
