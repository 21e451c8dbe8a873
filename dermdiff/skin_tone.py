"""Measure skin tone as the Individual Typology Angle (ITA) and map it to a Fitzpatrick type.

Dermatology datasets rarely carry a Fitzpatrick label, but the colour of the healthy skin around a
lesion does: the ITA is a colorimetric angle in CIELAB (D65) that grows with skin lightness,

    ITA = arctan((L* - 50) / b*) * 180 / pi            [degrees]

(Chardon, Cretois & Hourseau, Int. J. Cosmet. Sci. 13:191-208, 1991). We compute it as
`atan2(L* - 50, b*)`, which equals the formula for b* > 0 (all real skin) and stays finite at b* = 0
(+-90 degrees) instead of dividing by zero.

ITA bands (Del Bino et al., Br. J. Dermatol. 155:1, 2006; Del Bino & Bernerd, Br. J. Dermatol.
169 Suppl 3:33-40, 2013) and the Fitzpatrick type each band is read as (the one-band-per-type mapping
used by Kinyanjui et al., "Fairness of classifiers across skin tones in dermatology", MICCAI 2020,
and after them Groh et al., Fitzpatrick 17k, CVPR-W 2021):

| band         | ITA (degrees)      | Fitzpatrick type |
|--------------|--------------------|------------------|
| very light   | ITA > 55           | I                |
| light        | 41 < ITA <= 55     | II               |
| intermediate | 28 < ITA <= 41     | III              |
| tan          | 10 < ITA <= 28     | IV               |
| brown        | -30 < ITA <= 10    | V                |
| dark         | ITA <= -30         | VI               |

The mapping is an approximation: Fitzpatrick types describe sun reactivity, ITA only colour, so a
measured type is an estimate for auditing skin-tone balance, not a clinical label.

Example:
    >>> from PIL import Image
    >>> from dermdiff.skin_tone import image_ita, ita_to_skin_type
    >>> round(image_ita(Image.new("RGB", (8, 8), (224, 172, 140))), 1)  # add lesion_mask= to skip a lesion
    45.6
    >>> ita_to_skin_type(45.6), ita_to_skin_type(image_ita(Image.new("RGB", (8, 8), (141, 85, 54))))
    (2, 5)
"""

from __future__ import annotations

import numpy as np

# (band name, lower bound exclusive, upper bound inclusive, Fitzpatrick type); see the table above.
ITA_BANDS: tuple[tuple[str, float, float, int], ...] = (
    ("very light", 55.0, float("inf"), 1),
    ("light", 41.0, 55.0, 2),
    ("intermediate", 28.0, 41.0, 3),
    ("tan", 10.0, 28.0, 4),
    ("brown", -30.0, 10.0, 5),
    ("dark", float("-inf"), -30.0, 6),
)
_LOWER_BOUNDS = np.array([55.0, 41.0, 28.0, 10.0, -30.0])  # descending; type = 1 + #bounds >= ITA


def srgb_to_lab(image) -> np.ndarray:
    """CIELAB (D65) of an sRGB image: PIL image, uint8 array (0..255) or float array (0..1), (..., 3).

    Returns a float array of the same leading shape with L* in 0..100 and a*, b* roughly -128..127.
    """
    from skimage.color import rgb2lab

    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.shape[-1:] != (3,):
        raise ValueError(f"expected an RGB image with 3 channels last, got shape {array.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float64) / 255.0
    else:
        array = array.astype(np.float64)
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(
                f"float RGB values must lie in [0, 1], got [{array.min():.3g}, {array.max():.3g}]; "
                "pass uint8 for 0..255"
            )
    return rgb2lab(array)


def individual_typology_angle(lightness, b_star):
    """ITA in degrees from L* and b* (scalars or arrays), as `atan2(L* - 50, b*)`."""
    return np.degrees(np.arctan2(np.asarray(lightness, dtype=np.float64) - 50.0, np.asarray(b_star, dtype=np.float64)))


def lab_ita(lab) -> np.ndarray:
    """Per-pixel ITA of a CIELAB array (..., 3)."""
    lab = np.asarray(lab, dtype=np.float64)
    return individual_typology_angle(lab[..., 0], lab[..., 2])


def image_ita(image, skin_mask=None, lesion_mask=None) -> float:
    """Median ITA (degrees) of an sRGB image's skin pixels.

    The median, not the mean, so pores, hairs and a few lesion pixels missed by a mask barely move it.

    Args:
        image: PIL image or (H, W, 3) uint8 / float [0, 1] array.
        skin_mask (`(H, W)` bool array, *optional*): pixels that are skin; defaults to all.
        lesion_mask (`(H, W)` bool array, *optional*): lesion pixels, left out of the measurement.

    Raises `ValueError` if a mask does not match the image or leaves no pixel to measure.
    """
    ita = lab_ita(srgb_to_lab(image))
    keep = np.ones(ita.shape, dtype=bool)
    for name, mask, invert in (("skin_mask", skin_mask, False), ("lesion_mask", lesion_mask, True)):
        if mask is None:
            continue
        mask = np.asarray(mask.convert("L") if hasattr(mask, "convert") else mask).astype(bool)
        if mask.shape != ita.shape:
            raise ValueError(f"{name} has shape {mask.shape}, expected the image's (height, width) {ita.shape}")
        keep &= ~mask if invert else mask
    if not keep.any():
        raise ValueError("no skin pixel left to measure: the masks exclude the whole image")
    return float(np.median(ita[keep]))


def ita_category(ita: float) -> str:
    """The Chardon / Del Bino band name of an ITA ("very light" ... "dark")."""
    return ITA_BANDS[ita_to_skin_type(ita) - 1][0]


def ita_to_skin_type(ita):
    """Fitzpatrick type 1..6 of an ITA in degrees (scalar -> int, array -> int array); table in the module doc."""
    values = np.asarray(ita, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("ITA is NaN; measure it on a non-empty set of pixels")
    types = 1 + (values[..., None] <= _LOWER_BOUNDS).sum(axis=-1)
    return int(types) if types.ndim == 0 else types.astype(np.int64)


def skin_type_ita_range(skin_type) -> tuple[float, float]:
    """(lower exclusive, upper inclusive) ITA bounds of a Fitzpatrick type's band."""
    from .semantic_map import validate_skin_type

    _, low, high, _ = ITA_BANDS[validate_skin_type(skin_type) - 1]
    return low, high
