"""Fill the skin types a dataset does not record from the images themselves (ITA of the skin around the lesion).

HAM10000, the ISIC archives and DermaMNIST record no Fitzpatrick type, so every semantic map built from them says
"unknown" in its R channel. A generator trained on such maps has no handle on the colour of the skin: it draws
every lesion on one average background (measured on HAM10000: `benchmarks/results/latent_vs_pixel_ham10000.md`),
and nobody can ask it for a darker or lighter skin. The colour of the healthy skin around the lesion is in the
image, though: its Individual Typology Angle (`dermdiff.skin_tone`) read as a Fitzpatrick type is the estimate
Kinyanjui et al. (MICCAI 2020) used to audit ISIC by skin tone. `estimate_skin_types` writes that estimate into
`skin_type` and into the map's R channel wherever the type is unknown, and says where each type came from in the
column `skin_type_source` ("recorded", "ita", or `None` where too little skin was visible to measure).

It is an estimate of colour under a dermatoscope's light, not a clinical label (the module doc of
`dermdiff.skin_tone` says why); use it to condition and audit generators, not to report patients' types.

Example:
    >>> rows = load_any("/data/ham10000", size=128)
    >>> rows = estimate_skin_types(rows)
    >>> rows[0]["skin_type"], rows[0]["skin_type_source"]
    (2, 'ita')
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Dermatoscopes leave a black ring or black corners around the field of view; its pixels would read as the darkest
# skin (L* near 0 -> ITA near -90 degrees, type VI). Real skin, even the darkest, has L* above about 25.
VIGNETTE_MAX_LIGHTNESS = 15.0
# Fewer skin pixels than this share of the image (a lesion filling the frame): the type stays unknown.
MIN_SKIN_FRACTION = 0.05
# ITA is measured on a copy at most this many pixels wide and high: a median over ~16k pixels is as stable as one
# over a 600 x 450 photo, at a fraction of the colour conversion's cost.
MEASURE_SIDE = 128

SOURCE_COLUMN = "skin_type_source"


def surrounding_skin_ita(image, lesion_mask: np.ndarray | None = None) -> float | None:
    """Median ITA (degrees) of the image's skin outside `lesion_mask` and the vignette (`None`: too little skin).

    Args:
        image: PIL image or (H, W, 3) uint8 array.
        lesion_mask (`(H, W)` bool array, *optional*): lesion pixels, left out of the measurement.
    """
    from ..skin_tone import image_ita, srgb_to_lab

    image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    image = image.convert("RGB")
    skin = np.ones((image.height, image.width), dtype=bool)
    if lesion_mask is not None:
        lesion_mask = np.asarray(lesion_mask, dtype=bool)
        if lesion_mask.shape != skin.shape:
            raise ValueError(f"lesion mask has shape {lesion_mask.shape}, the image (height, width) {skin.shape}")
        skin = ~lesion_mask
    scale = MEASURE_SIDE / max(image.width, image.height)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.BILINEAR)
        skin = np.asarray(Image.fromarray(skin).resize(size, Image.NEAREST))
    skin = skin & (srgb_to_lab(image)[..., 0] > VIGNETTE_MAX_LIGHTNESS)
    if skin.mean() < MIN_SKIN_FRACTION:
        return None
    return image_ita(image, skin_mask=skin)


def estimated_skin_type(image, lesion_mask: np.ndarray | None = None) -> int | None:
    """Fitzpatrick type 1..6 read from `surrounding_skin_ita` (`None`: too little skin to measure)."""
    from ..skin_tone import ita_to_skin_type

    ita = surrounding_skin_ita(image, lesion_mask)
    return None if ita is None else ita_to_skin_type(ita)


def estimate_skin_types(dataset, num_proc: int | None = None):
    """The dataset with every unknown `skin_type` (and its map's R channel) estimated from the image's ITA.

    Recorded types are kept as they are. Adds the string column `skin_type_source`: "recorded", "ita", or `None`
    where the type is still unknown (less than `MIN_SKIN_FRACTION` of the image was skin to measure).

    Args:
        dataset (`datasets.Dataset`): dermdiff columns (`image`, `semantic_map`, `skin_type`), any loader's.
        num_proc (`int`, *optional*): processes for `datasets.Dataset.map`.
    """
    import datasets

    from ..semantic_map import SemanticMap
    from .info import registry_of

    missing = [name for name in ("image", "semantic_map", "skin_type") if name not in dataset.column_names]
    if missing:
        raise ValueError(f"estimate_skin_types needs the columns image, semantic_map and skin_type; missing {missing}")
    registry = registry_of(dataset)

    def fill(row):
        if row["skin_type"] is not None:
            return {**row, SOURCE_COLUMN: "recorded"}
        smap = SemanticMap.decode(row["semantic_map"], registry)
        skin_type = estimated_skin_type(row["image"], smap.lesion_mask)
        if skin_type is None:
            return {**row, SOURCE_COLUMN: None}
        return {**row, "skin_type": skin_type, "semantic_map": smap.with_skin_type(skin_type).to_pil(),
                SOURCE_COLUMN: "ita"}

    if SOURCE_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(SOURCE_COLUMN)
    features = datasets.Features({**dataset.features, SOURCE_COLUMN: datasets.Value("string")})
    return dataset.map(fill, features=features, num_proc=num_proc, desc="skin types from ITA")


def skin_type_counts(dataset) -> dict:
    """{skin type or None: rows} of a dataset, types in order (for reports)."""
    values, counts = np.unique([-1 if t is None else t for t in dataset["skin_type"]], return_counts=True)
    return {(None if value == -1 else int(value)): int(count) for value, count in zip(values, counts)}
