"""A procedural dermatology phantom: skin of every Fitzpatrick type with lesions and exact ground truth.

Real datasets lack what tests and controlled experiments need: for every image its exact lesion
mask, box, condition, skin type and semantic map, in any number, size and class / skin-type balance.
The phantom draws them from a seed, so the same seed gives byte-identical PNGs on every run.

How an image is drawn (all colour work in CIELAB, converted to sRGB at the end):

1. Skin: a base colour whose ITA lies inside the Chardon / Del Bino band of the requested type
   (`dermdiff.skin_tone`: I > 55 deg ... VI <= -30 deg), mottled with smooth noise, skin furrows,
   pores and a few hairs, under a mild lighting gradient.
2. Lesion (one of the five classes of the built-in "phantom" registry), painted inside its mask:

   | class          | shape and border                      | colour and texture                       |
   |----------------|---------------------------------------|------------------------------------------|
   | nevus          | round / oval, smooth soft border      | even brown, slightly darker centre       |
   | melanoma       | large, asymmetric, irregular border   | blotches of dark brown, black, light     |
   |                | that is sharp in places, blurred else | brown, blue-grey or red                  |
   | psoriasis      | large oval plaque, sharp border       | pink-red (violaceous on dark skin) with  |
   |                |                                       | white-silver scale flakes                |
   | dermatofibroma | small, round                          | firm brown core with a paler halo        |
   | vascular       | lobulated cluster of round lobes      | red to purple with darker lacunae        |

   Lesion colours are set relative to the skin, as in real skin: nevi and melanomas are darker on
   darker skin, psoriasis turns from pink to violaceous, the dermatofibroma halo is hypopigmented.
3. Ground truth: the mask is exactly the set of pixels the lesion changed (one 8-connected
   component); the box is the mask's bounding box; the semantic map comes from
   `SemanticMap.from_annotations(condition, skin_type, mask=mask, registry="phantom")`.

Random streams are separate, so a healthy image (``condition=None``) drawn with the same seed and
index is pixel-for-pixel the lesion image outside the mask -- a ready pair for lesion-transfer demos.
Several images can show the same lesion (``lesion_index``, ``images_per_lesion``): same lesion and
skin colour, new position, rotation, lighting and skin texture, so grouped splits can be tested.

Example:
    >>> from dermdiff.data.phantom import generate_phantom_sample, phantom_dataset, write_phantom
    >>> sample = generate_phantom_sample("melanoma", skin_type=5, size=64, seed=0)
    >>> sample.image.size, sample.box, sample.semantic_map.condition
    ((64, 64), (19, 39, 39, 64), 'melanoma')
    >>> write_phantom("outputs/phantom", n=2000, size=64, seed=0)  # images/, masks/, maps/, metadata.csv
    >>> dataset = phantom_dataset(n=200, size=32, seed=0)  # a datasets.Dataset in memory
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from ..conditions import get_registry
from ..limits import check_phantom_count
from ..semantic_map import SKIN_TYPES, SemanticMap, validate_skin_type
from .folder_writer import image_stem, write_image_folder

REGISTRY_NAME = "phantom"
MIN_SIZE, MAX_SIZE = 16, 256
PHANTOM_CONDITIONS: tuple[str, ...] = tuple(get_registry(REGISTRY_NAME).names)

# Independent random streams of one image: (seed, index or lesion_index, stream).
_SKIN_COLOUR, _SKIN_TEXTURE, _LESION, _VIEW, _LESION_TEXTURE, _PLAN = range(6)

# Fitzpatrick type -> (ITA centre, ITA half-range, b* centre, a* centre). The base colour's ITA is
# drawn inside centre +- half-range, at least 3 degrees inside the type's band (see dermdiff.skin_tone);
# L* follows from ITA and b*: L* = 50 + b* tan(ITA).
_SKIN_LAB = {
    1: (62.0, 3.5, 14.0, 7.0),
    2: (48.0, 3.5, 17.0, 9.0),
    3: (34.5, 3.5, 19.0, 11.0),
    4: (19.0, 4.5, 20.0, 12.0),
    5: (-14.0, 9.0, 19.0, 12.0),
    6: (-57.0, 8.0, 13.0, 9.0),
}
# Hair colour (L*, a*, b*): fair hair on type I, brown on II, black otherwise.
_HAIR_LAB = {1: (52.0, 6.0, 20.0), 2: (32.0, 5.0, 12.0)}
_DARK_HAIR_LAB = (16.0, 2.0, 3.0)


@dataclass
class PhantomSample:
    """One phantom image and its ground truth.

    Attributes:
        image (`PIL.Image.Image`): the RGB picture.
        mask (`np.ndarray`): (H, W) bool, exactly the pixels the lesion changed; all False when healthy.
        condition (`str` or `None`): the phantom registry's class name; `None` for healthy skin.
        skin_type (`int`): Fitzpatrick type 1..6.
        box (`tuple` or `None`): (x0, y0, x1, y1) bounding box of the mask, x1/y1 exclusive.
        semantic_map (`SemanticMap`): the DermGAN map of the above (registry "phantom").
        index (`int`), lesion_index (`int`): which image / which lesion of the seed this is.
    """

    image: Image.Image
    mask: np.ndarray
    condition: str | None
    skin_type: int
    box: tuple[int, int, int, int] | None
    semantic_map: SemanticMap
    index: int = 0
    lesion_index: int = 0

    @property
    def boxes(self) -> list[list[int]]:
        return [] if self.box is None else [list(self.box)]

    def mask_image(self) -> Image.Image:
        """The mask as a binary "L" PNG-ready image (lesion = 255)."""
        return Image.fromarray(self.mask.astype(np.uint8) * 255, mode="L")


# ----------------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------------
def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"phantom size must be an int number of pixels in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"phantom size {size} is outside the supported range {MIN_SIZE}..{MAX_SIZE} pixels")
    return int(size)


def _check_seed(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative int, got {value!r}")
    return int(value)


def _check_condition(condition) -> str | None:
    if condition is None:
        return None
    registry = get_registry(REGISTRY_NAME)
    return registry.name(registry.code(condition))


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(list(keys))


# ----------------------------------------------------------------------------------------------------------------
# noise and geometry helpers
# ----------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y of pixel centres, (size, size) float32 each."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(coords, coords)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-variance smooth noise with about `cells` features across the image."""
    cells = max(2, int(cells))
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC))
    return (field - field.mean()) / (field.std() + 1e-6)


def _polar_shape(size, centre, radius, aspect, angle, harmonics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A star-shaped outline r(phi) = radius (1 + sum a_k cos(k phi + p_k)) on a rotated ellipse.

    Returns rho (distance / r(phi); < 1 inside), the border radius r(phi) in pixels and phi.
    """
    xs, ys = _pixel_grid(size)
    dx, dy = xs - centre[0], ys - centre[1]
    cos, sin = math.cos(angle), math.sin(angle)
    u = dx * cos + dy * sin
    v = (dy * cos - dx * sin) / aspect
    phi = np.arctan2(v, u)
    outline = np.ones_like(phi)
    for k, amplitude, phase in harmonics:
        outline += amplitude * np.cos(k * phi + phase)
    border = radius * outline
    return np.hypot(u, v) / border, border, phi


def _inner_alpha(rho, border, edge_px, floor=0.35) -> np.ndarray:
    """Opacity that ramps from `floor` at the border to 1 at `edge_px` pixels inside; 0 outside."""
    alpha = np.clip(floor + (1.0 - rho) * border / np.maximum(edge_px, 1e-3), 0.0, 1.0)
    return np.where(rho < 1.0, alpha, 0.0).astype(np.float32)


def _place(rng, size, extent) -> tuple[float, float]:
    """A lesion centre that keeps most of a lesion of radius `extent` inside the image."""
    margin = min(0.8 * extent, size / 2 - 1.0)
    return tuple(float(rng.uniform(margin, size - margin)) for _ in range(2))


def _lab_field(size, lab) -> np.ndarray:
    return np.broadcast_to(np.asarray(lab, dtype=np.float32), (size, size, 3)).copy()


# ----------------------------------------------------------------------------------------------------------------
# skin
# ----------------------------------------------------------------------------------------------------------------
def skin_base_lab(skin_type, rng: np.random.Generator | None = None) -> np.ndarray:
    """A base skin colour (L*, a*, b*) of a Fitzpatrick type; the centre of its range when `rng` is None."""
    ita_centre, ita_range, b_centre, a_centre = _SKIN_LAB[validate_skin_type(skin_type)]
    ita, b_star, a_star = ita_centre, b_centre, a_centre
    if rng is not None:
        ita += rng.uniform(-ita_range, ita_range)
        b_star *= rng.uniform(0.88, 1.12)
        a_star += rng.uniform(-1.5, 1.5)
    return np.array([50.0 + b_star * math.tan(math.radians(ita)), a_star, b_star], dtype=np.float32)


def _skin(rng, size, base) -> np.ndarray:
    """(H, W, 3) Lab skin: base colour, mottling, furrows, fine grain and pores (no hair, no light)."""
    lab = _lab_field(size, base)
    lab[..., 0] += 1.0 * _smooth_noise(rng, size, 4) + 0.7 * _smooth_noise(rng, size, max(4, size // 5))
    lab[..., 0] += 0.45 * rng.standard_normal((size, size)).astype(np.float32)
    lab[..., 1] += 1.0 * _smooth_noise(rng, size, 3)
    lab[..., 2] += 0.6 * _smooth_noise(rng, size, 3)
    # Pores: sparse dark pits, blurred to about a pixel at 64 px.
    from scipy.ndimage import gaussian_filter

    pores = np.zeros((size, size), dtype=np.float32)
    count = rng.poisson(0.008 * size * size)
    rows, cols = rng.integers(0, size, count), rng.integers(0, size, count)
    np.add.at(pores, (rows, cols), rng.uniform(4.0, 9.0, count).astype(np.float32) * base[0] / 60.0)
    lab[..., 0] -= gaussian_filter(pores, sigma=0.45 * size / 64)
    return lab


def _hair_alpha(rng, size) -> np.ndarray:
    """(H, W) opacity of 0-2 thin curved hairs (quadratic Bezier curves splatted bilinearly)."""
    from scipy.ndimage import gaussian_filter

    field = np.zeros((size + 1, size + 1), dtype=np.float32)
    for _ in range(int(rng.choice([0, 0, 0, 1, 1, 2]))):
        start, end = rng.uniform(-0.1, 1.1, 2) * size, rng.uniform(-0.1, 1.1, 2) * size
        bend = (start + end) / 2 + rng.normal(0.0, 0.2 * size, 2)
        t = np.linspace(0.0, 1.0, 4 * size, dtype=np.float32)[:, None]
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end - 0.5
        points = points[((points >= 0) & (points < size - 1)).all(axis=1)]
        base = np.floor(points).astype(int)
        frac = (points - base).astype(np.float32)
        # Ink per sample (4 samples per pixel of length); a hair is about 0.5 px wide at 64 px, so it
        # fades at smaller sizes instead of becoming a thick stroke.
        weight = rng.uniform(0.25, 0.45) * min(1.0, size / 64)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            w = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            np.add.at(field, (base[:, 1] + dy, base[:, 0] + dx), weight * w)
    field = gaussian_filter(field[:size, :size], sigma=0.3 * size / 64)
    return np.clip(field, 0.0, 0.75)


def _lighting(rng, size) -> np.ndarray:
    """(H, W) multiplicative light on L*: a gentle gradient (about +-4 %) in a random direction."""
    xs, ys = _pixel_grid(size)
    direction = rng.uniform(0, 2 * math.pi)
    slope = rng.uniform(0.0, 0.08)
    return 1.0 + slope * ((xs / size - 0.5) * math.cos(direction) + (ys / size - 0.5) * math.sin(direction))


# ----------------------------------------------------------------------------------------------------------------
# lesions: each painter returns (alpha (H, W), colour (H, W, 3) Lab)
# ----------------------------------------------------------------------------------------------------------------
def _harmonics(rng, orders, low, high, cap) -> list[tuple[int, float, float]]:
    amplitudes = rng.uniform(low, high, len(orders))
    if amplitudes.sum() > cap:
        amplitudes *= cap / amplitudes.sum()
    return [(k, float(a), float(rng.uniform(0, 2 * math.pi))) for k, a in zip(orders, amplitudes)]


def _irregular_outline(rng) -> list[tuple[int, float, float]]:
    """Melanoma outline: low orders dominate (asymmetry, lobes), high orders add notches."""
    orders = np.arange(2, 9)
    amplitudes = rng.uniform(0.5, 1.0, len(orders)) / orders**0.8
    amplitudes *= rng.uniform(0.3, 0.45) / amplitudes.sum()
    return [(int(k), float(a), float(rng.uniform(0, 2 * math.pi))) for k, a in zip(orders, amplitudes)]


def _nevus(spec, view, size, skin_lab, skin_type, tex):
    radius = max(spec["radius"] * size * view["scale"], 1.3)
    centre = _place(view["rng"], size, radius * 1.1)
    rho, border, _ = _polar_shape(size, centre, radius, spec["aspect"], view["angle"], spec["harmonics"])
    L0, a0, b0 = skin_lab
    colour = _lab_field(size, (0.60 * L0 + spec["dL"], a0 + spec["da"], b0 + spec["db"] - 0.6 * (skin_type - 1)))
    colour[..., 0] += 0.8 * _smooth_noise(tex, size, 3) - 2.5 * np.clip(1 - rho, 0, 1)
    return _inner_alpha(rho, border, 0.03 * size, floor=0.45), colour


def _melanoma(spec, view, size, skin_lab, skin_type, tex):
    radius = max(spec["radius"] * size * view["scale"], 2.0)
    centre = _place(view["rng"], size, radius * 1.15)
    rho, border, phi = _polar_shape(size, centre, radius, spec["aspect"], view["angle"], spec["harmonics"])
    # Border sharpness varies around the lesion: abrupt in places, smudged in others.
    edge = size * (0.006 + 0.03 * (0.5 + 0.5 * np.cos(spec["edge_k"] * phi + spec["edge_phase"])))
    L0, a0, b0 = skin_lab
    palette = {
        "dark_brown": (0.42 * L0 + 3, a0 + 5, b0 + 4),
        "black": (10 + 0.12 * L0, 2.0, 2.0),
        "light_brown": (0.68 * L0, a0 + 4, b0 + 9),
        "blue_grey": (0.50 * L0 + 10, -1.0, -7.0),
        "red": (0.60 * L0 + 6, 27.0 - (skin_type - 1), 12.0),
    }
    tones = spec["tones"]
    xs, ys = _pixel_grid(size)
    logits = []
    for i, _ in enumerate(tones):
        field = _smooth_noise(tex, size, 4)
        if i == 0:  # asymmetry: the first tone dominates one side
            direction = spec["asymmetry"] + view["angle"]
            along = (xs - centre[0]) * math.cos(direction) + (ys - centre[1]) * math.sin(direction)
            field = field + 1.5 * along / radius
        logits.append(field / 0.35)
    weights = np.exp(np.stack(logits) - np.max(logits, axis=0))
    weights /= weights.sum(axis=0)
    colour = np.einsum("kyx,kc->yxc", weights, np.array([palette[t] for t in tones], dtype=np.float32))
    colour[..., 0] += 1.2 * tex.standard_normal((size, size)).astype(np.float32)
    return _inner_alpha(rho, border, edge, floor=0.4), colour.astype(np.float32)


def _psoriasis(spec, view, size, skin_lab, skin_type, tex):
    radius = max(spec["radius"] * size * view["scale"], 2.0)
    centre = _place(view["rng"], size, radius * 1.1)
    rho, border, _ = _polar_shape(size, centre, radius, spec["aspect"], view["angle"], spec["harmonics"])
    L0, a0, b0 = skin_lab
    # Erythema: pink-red on light skin, darker and violaceous on dark skin.
    plaque = (0.86 * L0 + 2, a0 + spec["da"] - 2.0 * (skin_type - 1), b0 * (1.0 - 0.06 * skin_type))
    colour = _lab_field(size, plaque)
    colour[..., 1] += 1.5 * _smooth_noise(tex, size, 4)
    # Silvery scale: fine flakes, denser in patches; whitish on light skin, ashy grey on dark skin.
    flakes = _smooth_noise(tex, size, max(5, size // 2)) + 0.8 * _smooth_noise(tex, size, 4)
    threshold = np.quantile(flakes[rho < 1], 1.0 - spec["scale_cover"]) if (rho < 1).any() else np.inf
    scale_alpha = np.clip((flakes - threshold) * 2.0, 0.0, 0.75)[..., None]
    scale = np.array([max(L0 + 12, 74 - 2.0 * skin_type), 1.5, 5.0], dtype=np.float32)
    colour = colour * (1 - scale_alpha) + scale * scale_alpha
    return _inner_alpha(rho, border, 0.008 * size, floor=0.6), colour.astype(np.float32)


def _dermatofibroma(spec, view, size, skin_lab, skin_type, tex):
    core = max(spec["radius"] * size * view["scale"], 1.3)
    halo = core * spec["halo"]
    centre = _place(view["rng"], size, halo)
    rho, border, _ = _polar_shape(size, centre, halo, spec["aspect"], view["angle"], spec["harmonics"])
    L0, a0, b0 = skin_lab
    halo_lab = (L0 + max(6.0, 0.2 * (95 - L0)), 0.8 * a0 + 1.5, 0.65 * b0)
    core_lab = np.array((0.55 * L0 + 4, a0 + 6, b0 + 7), dtype=np.float32)
    colour = _lab_field(size, halo_lab)
    core_rho = rho * spec["halo"]  # distance in units of the core radius
    core_alpha = np.clip(0.6 + (1 - core_rho) * core / max(0.015 * size, 0.5), 0.0, 1.0)[..., None]
    colour = colour * (1 - core_alpha) + core_lab * core_alpha
    colour[..., 0] += 0.6 * _smooth_noise(tex, size, 4)
    return _inner_alpha(rho, border, 0.02 * size, floor=0.5), colour.astype(np.float32)


def _vascular(spec, view, size, skin_lab, skin_type, tex):
    scale = size * view["scale"]
    lobes = [(dx * scale, dy * scale, max(r * scale, 1.3)) for dx, dy, r in spec["lobes"]]
    extent = max(math.hypot(dx, dy) + r for dx, dy, r in lobes)
    cx, cy = _place(view["rng"], size, extent)
    cos, sin = math.cos(view["angle"]), math.sin(view["angle"])
    xs, ys = _pixel_grid(size)
    rho = np.full((size, size), np.inf, dtype=np.float32)
    border = np.ones((size, size), dtype=np.float32)
    for dx, dy, r in lobes:
        lobe_rho = np.hypot(xs - (cx + dx * cos - dy * sin), ys - (cy + dx * sin + dy * cos)) / r
        closer = lobe_rho < rho
        rho = np.where(closer, lobe_rho, rho)
        border = np.where(closer, r, border)
    L0 = skin_lab[0]
    red = np.array((0.55 * L0 + 12, 40 - 2.0 * (skin_type - 1), 22.0), dtype=np.float32)
    purple = np.array((0.45 * L0 + 10, 30 - 1.0 * (skin_type - 1), -6.0), dtype=np.float32)
    hue = min(1.0, spec["purple"] + 0.05 * (skin_type - 1))
    colour = _lab_field(size, red * (1 - hue) + purple * hue)
    lacunae = np.clip(_smooth_noise(tex, size, max(4, size // 8)) - 0.3, 0, None)
    colour[..., 0] -= 5.0 * lacunae
    colour[..., 1] += 3.0 * lacunae
    return _inner_alpha(rho, border, 0.012 * size, floor=0.5), colour


_PAINTERS = {
    "nevus": _nevus,
    "melanoma": _melanoma,
    "psoriasis": _psoriasis,
    "dermatofibroma": _dermatofibroma,
    "vascular": _vascular,
}


def _lesion_spec(rng, condition: str) -> dict:
    """The lesion's identity (shape and colour offsets), shared by every image of the same lesion."""
    if condition == "nevus":
        return dict(radius=rng.uniform(0.10, 0.17), aspect=rng.uniform(0.8, 1.0),
                    harmonics=_harmonics(rng, (2, 3), 0.0, 0.05, 0.08),
                    dL=rng.uniform(-3, 3), da=rng.uniform(3, 7), db=rng.uniform(4, 9))
    if condition == "melanoma":
        extra = list(rng.choice(["light_brown", "blue_grey", "red"], size=int(rng.integers(1, 3)), replace=False))
        tones = ["dark_brown", "black"] + extra
        order = rng.permutation(len(tones))
        return dict(radius=rng.uniform(0.18, 0.28), aspect=rng.uniform(0.65, 0.95),
                    harmonics=_irregular_outline(rng),
                    edge_k=int(rng.integers(1, 4)), edge_phase=rng.uniform(0, 2 * math.pi),
                    tones=[tones[i] for i in order], asymmetry=rng.uniform(0, 2 * math.pi))
    if condition == "psoriasis":
        return dict(radius=rng.uniform(0.20, 0.32), aspect=rng.uniform(0.55, 0.9),
                    harmonics=_harmonics(rng, (2, 3, 4, 5), 0.03, 0.10, 0.3),
                    da=rng.uniform(17, 24), scale_cover=rng.uniform(0.25, 0.45))
    if condition == "dermatofibroma":
        return dict(radius=rng.uniform(0.045, 0.07), halo=rng.uniform(1.8, 2.3), aspect=rng.uniform(0.85, 1.0),
                    harmonics=_harmonics(rng, (2, 3), 0.0, 0.03, 0.05))
    # vascular: 2-5 overlapping round lobes around the first one
    lobes = [(0.0, 0.0, rng.uniform(0.07, 0.10))]
    for _ in range(int(rng.integers(1, 5))):
        r = rng.uniform(0.05, 0.09)
        angle = rng.uniform(0, 2 * math.pi)
        distance = rng.uniform(0.5, 0.95) * lobes[0][2]
        lobes.append((distance * math.cos(angle), distance * math.sin(angle), r))
    return dict(lobes=lobes, purple=rng.uniform(0.0, 0.8))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import label

    labels, count = label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


def _lab_to_image(lab: np.ndarray) -> Image.Image:
    from skimage.color import lab2rgb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few out-of-gamut pixels are clipped, as intended
        rgb = lab2rgb(lab.astype(np.float64))
    return Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), mode="RGB")


# ----------------------------------------------------------------------------------------------------------------
# public: one sample
# ----------------------------------------------------------------------------------------------------------------
def generate_phantom_sample(
    condition: str | int | None,
    skin_type: int | str,
    size: int = 64,
    seed: int = 0,
    index: int = 0,
    lesion_index: int | None = None,
) -> PhantomSample:
    """Draws one phantom image with its mask, box and semantic map.

    Args:
        condition (`str`, `int` or `None`): a "phantom" registry class (name or code 1..5); `None`
            draws healthy skin (no lesion).
        skin_type (`int` or `str`): Fitzpatrick type 1..6 (or "I".."VI").
        size (`int`, defaults to 64): image side in pixels, 16..256.
        seed (`int`, defaults to 0) and index (`int`, defaults to 0): which image; the same pair always
            gives the same pixels.
        lesion_index (`int`, *optional*, defaults to `index`): which lesion; images sharing it show the
            same lesion (shape, colours) on the same person's skin colour, seen anew.

    Raises `ValueError` for an unknown condition, a skin type outside 1..6, a size outside 16..256
    or a negative seed / index.

    Example:
        >>> healthy = generate_phantom_sample(None, 3, seed=1, index=7)
        >>> lesion = generate_phantom_sample("vascular", 3, seed=1, index=7)
        >>> (np.asarray(healthy.image)[~lesion.mask] == np.asarray(lesion.image)[~lesion.mask]).all()
        True
    """
    condition = _check_condition(condition)
    skin_type = validate_skin_type(skin_type)
    size = _check_size(size)
    seed = _check_seed(seed, "seed")
    index = _check_seed(index, "index")
    lesion_index = index if lesion_index is None else _check_seed(lesion_index, "lesion_index")

    # 1. skin (colour per lesion / person, texture per image)
    skin_lab = skin_base_lab(skin_type, _rng(seed, lesion_index, _SKIN_COLOUR))
    texture = _rng(seed, index, _SKIN_TEXTURE)
    lab = _skin(texture, size, skin_lab)
    hair = _hair_alpha(texture, size)
    light = _lighting(texture, size)

    # 2. lesion (identity per lesion, placement per image)
    mask = np.zeros((size, size), dtype=bool)
    if condition is not None:
        view_rng = _rng(seed, index, _VIEW)
        view = dict(rng=view_rng, angle=view_rng.uniform(0, 2 * math.pi), scale=view_rng.uniform(0.9, 1.1))
        spec = _lesion_spec(_rng(seed, lesion_index, _LESION, PHANTOM_CONDITIONS.index(condition)), condition)
        alpha, colour = _PAINTERS[condition](
            spec, view, size, skin_lab, skin_type, _rng(seed, index, _LESION_TEXTURE)
        )
        mask = _largest_component(alpha > 0)
        alpha = np.where(mask, alpha, 0.0)[..., None]
        lab = lab * (1 - alpha) + colour * alpha

    # 3. hair over everything, then light
    hair_lab = np.array(_HAIR_LAB.get(skin_type, _DARK_HAIR_LAB), dtype=np.float32)
    lab = lab * (1 - hair[..., None]) + hair_lab * hair[..., None]
    lab[..., 0] *= light
    image = _lab_to_image(lab)

    box = None
    if condition is not None:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        smap = SemanticMap.from_annotations(condition, skin_type, mask=mask, registry=REGISTRY_NAME)
    else:
        smap = SemanticMap.from_annotations(None, skin_type, size=size, registry=REGISTRY_NAME)
    return PhantomSample(image, mask, condition, skin_type, box, smap, index=index, lesion_index=lesion_index)


# ----------------------------------------------------------------------------------------------------------------
# public: planning a dataset (exact class / skin-type counts)
# ----------------------------------------------------------------------------------------------------------------
def _normalised_weights(weights, keys: Sequence, what: str, parse) -> np.ndarray:
    """Weights over `keys` from None (uniform), a sequence aligned with `keys` or a mapping (missing -> 0)."""
    if weights is None:
        return np.full(len(keys), 1.0 / len(keys))
    if isinstance(weights, Mapping):
        values = np.zeros(len(keys))
        for key, weight in weights.items():
            values[keys.index(parse(key))] = float(weight)
    else:
        values = np.asarray([float(w) for w in weights])
        if len(values) != len(keys):
            raise ValueError(f"{what} needs {len(keys)} weights (one per {list(keys)}), got {len(values)}")
    if not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"{what} must be finite, non-negative and not all zero, got {values.tolist()}")
    return values / values.sum()


def exact_counts(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to `total` in proportion to `weights` (largest remainder method)."""
    ideal = np.asarray(weights, dtype=np.float64) * total
    counts = np.floor(ideal).astype(int)
    order = np.argsort(-(ideal - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def rare_class_weights(rare: Sequence[str], fraction: float = 0.05) -> dict[str, float]:
    """Class weights with each class in `rare` at `fraction` and the others sharing the rest equally.

    Example:
        >>> rare_class_weights(["melanoma", "vascular"], 0.05)
        {'nevus': 0.3, 'melanoma': 0.05, 'psoriasis': 0.3, 'dermatofibroma': 0.3, 'vascular': 0.05}
    """
    rare = {_check_condition(name) for name in rare}
    common = [name for name in PHANTOM_CONDITIONS if name not in rare]
    if not 0.0 < fraction * len(rare) <= 1.0 or (common and fraction * len(rare) >= 1.0):
        raise ValueError(
            f"rare fraction {fraction} x {len(rare)} rare classes must lie in (0, 1) and leave room for the others"
        )
    rest = (1.0 - fraction * len(rare)) / len(common) if common else 0.0
    return {name: round(fraction if name in rare else rest, 12) for name in PHANTOM_CONDITIONS}


@dataclass(frozen=True)
class PhantomRecord:
    """What one image of a planned dataset shows (drawn by `generate_phantom_sample`)."""

    index: int
    lesion_index: int
    condition: str | None
    skin_type: int


def plan_phantom(
    n: int,
    seed: int = 0,
    class_weights=None,
    skin_type_weights=None,
    healthy_fraction: float = 0.0,
    images_per_lesion: int = 1,
) -> list[PhantomRecord]:
    """Which condition and skin type each of `n` images gets, with exact counts.

    Counts follow the weights exactly (largest remainder): `round(n * healthy_fraction)` healthy
    images; the lesions share the rest in proportion to `class_weights`; lesions and healthy images
    share skin types in proportion to `skin_type_weights`. Each lesion is shown in `images_per_lesion`
    consecutive images (the last lesion may have fewer). Order is shuffled with `seed`.

    Args:
        class_weights: `None` (balanced), 5 weights in registry order, or `{name: weight}` (missing
            classes get 0); see `rare_class_weights`.
        skin_type_weights: `None` (balanced), 6 weights for types I..VI, or `{type: weight}`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (number of images) must be an int >= 1, got {n!r}")
    check_phantom_count(int(n))
    seed = _check_seed(seed, "seed")
    if not 0.0 <= float(healthy_fraction) <= 1.0:
        raise ValueError(f"healthy_fraction must lie in [0, 1], got {healthy_fraction}")
    if isinstance(images_per_lesion, bool) or not isinstance(images_per_lesion, (int, np.integer)):
        raise ValueError(f"images_per_lesion must be an int >= 1, got {images_per_lesion!r}")
    if images_per_lesion < 1:
        raise ValueError(f"images_per_lesion must be an int >= 1, got {images_per_lesion!r}")
    class_p = _normalised_weights(class_weights, list(PHANTOM_CONDITIONS), "class_weights", _check_condition)
    type_p = _normalised_weights(skin_type_weights, list(SKIN_TYPES), "skin_type_weights", validate_skin_type)

    rng = _rng(seed, 0, _PLAN)
    n_healthy = round(n * float(healthy_fraction))
    group_sizes = [images_per_lesion] * ((n - n_healthy) // images_per_lesion)
    if (n - n_healthy) % images_per_lesion:
        group_sizes.append((n - n_healthy) % images_per_lesion)
    conditions = np.repeat(np.arange(len(PHANTOM_CONDITIONS)), exact_counts(len(group_sizes), class_p))
    units = [(PHANTOM_CONDITIONS[c], size) for c, size in zip(rng.permutation(conditions), group_sizes)]
    units += [(None, 1)] * n_healthy
    skin_types = np.repeat(np.array(SKIN_TYPES), exact_counts(len(units), type_p))
    skin_types = rng.permutation(skin_types)
    records, index = [], 0
    for unit in rng.permutation(len(units)):
        condition, count = units[unit]
        first = index  # the lesion's index: its images share shape, colours and skin colour
        for _ in range(count):
            records.append(PhantomRecord(index, first, condition, int(skin_types[unit])))
            index += 1
    return records


# ----------------------------------------------------------------------------------------------------------------
# public: datasets on disk and in memory
# ----------------------------------------------------------------------------------------------------------------
METADATA_COLUMNS = ("file_name", "label", "skin_type", "boxes", "mask_file", "map_file", "lesion_id", "patient_id")
HEALTHY_DIR = "healthy"
_OWNED = ("images", "masks", "maps", HEALTHY_DIR, "metadata.csv", "dataset_info.json")


def draw_record(record: PhantomRecord, size: int, seed: int) -> PhantomSample:
    """The image a planned record stands for (what `write_phantom` and `phantom_dataset` store)."""
    return generate_phantom_sample(record.condition, record.skin_type, size, seed, record.index, record.lesion_index)


def _ids(record: PhantomRecord) -> dict[str, str | None]:
    # One lesion per (phantom) patient: the lesion's images share the patient's skin colour.
    return {
        "lesion_id": None if record.condition is None else f"L{record.lesion_index:05d}",
        "patient_id": f"P{record.lesion_index:05d}",
    }


def _counts(records: Sequence[PhantomRecord]) -> dict:
    lesions = [r for r in records if r.condition is not None]
    return {
        "images": len(lesions),
        "healthy": len(records) - len(lesions),
        "lesions": len({r.lesion_index for r in lesions}),
        "conditions": {name: sum(r.condition == name for r in lesions) for name in PHANTOM_CONDITIONS},
        "skin_types": {str(t): sum(r.skin_type == t for r in lesions) for t in SKIN_TYPES},
        "healthy_skin_types": {
            str(t): sum(r.skin_type == t for r in records if r.condition is None) for t in SKIN_TYPES
        },
    }


def write_phantom(
    out_dir: str,
    n: int = 2000,
    size: int = 64,
    seed: int = 0,
    class_weights=None,
    skin_type_weights=None,
    healthy_fraction: float = 0.0,
    images_per_lesion: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> str:
    """Writes a phantom dataset as an image folder that `dermdiff.data.load_dataset_dir` reads.

    Layout (file names are the image index, zero-padded)::

        out_dir/
          images/00000.png  masks/00000.png (lesion = 255)  maps/00000.png (semantic map)
          metadata.csv       file_name,label,skin_type,boxes,mask_file,map_file,lesion_id,patient_id
          dataset_info.json  registry, seed, size, weights and the exact counts
          healthy/           only with healthy_fraction > 0: images/, maps/, dataset_info.json and a
                             metadata.csv whose label is empty (healthy skin; label -1 once loaded);
                             kept apart so the main folder is a labelled dataset for classifiers

    Args:
        out_dir (`str`): the folder to create.
        n (`int`, defaults to 2000): number of images, healthy ones included.
        size (`int`, defaults to 64): image side, 16..256 px.
        seed (`int`, defaults to 0): the same seed writes byte-identical files.
        class_weights, skin_type_weights, healthy_fraction, images_per_lesion: see `plan_phantom`.
        overwrite (`bool`, defaults to `False`): replace an earlier phantom in `out_dir` (only the
            paths listed above are removed) instead of raising `FileExistsError`.
        progress (`bool`, defaults to `False`): show a tqdm progress bar.

    Returns:
        `out_dir`.
    """
    from tqdm.auto import tqdm

    size = _check_size(size)
    records = plan_phantom(n, seed, class_weights, skin_type_weights, healthy_fraction, images_per_lesion)
    existing = [name for name in _OWNED if os.path.exists(os.path.join(out_dir, name))]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {existing}; pass overwrite=True (--overwrite) to replace them")
    for name in existing:
        target = os.path.join(out_dir, name)
        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)

    info = {
        "generator": "dermdiff.data.phantom",
        "registry": get_registry(REGISTRY_NAME).to_dict(),
        "seed": seed,
        "size": size,
        "n": n,
        "class_weights": _normalised_weights(class_weights, list(PHANTOM_CONDITIONS), "class_weights",
                                             _check_condition).round(6).tolist(),
        "skin_type_weights": _normalised_weights(skin_type_weights, list(SKIN_TYPES), "skin_type_weights",
                                                 validate_skin_type).round(6).tolist(),
        "healthy_fraction": float(healthy_fraction),
        "images_per_lesion": int(images_per_lesion),
        "counts": _counts(records),
    }
    bar = tqdm(total=len(records), desc="phantom", unit="img", disable=not progress)

    def entries(healthy: bool):
        for record in records:
            if (record.condition is None) != healthy:
                continue
            sample = draw_record(record, size, seed)
            stem = f"{image_stem(record.index, n)}.png"
            files = {f"images/{stem}": sample.image, f"maps/{stem}": sample.semantic_map.to_pil()}
            if not healthy:
                files[f"masks/{stem}"] = sample.mask_image()
            row = {"file_name": f"images/{stem}", "label": "" if healthy else record.condition,
                   "skin_type": record.skin_type, "boxes": sample.boxes,
                   "mask_file": "" if healthy else f"masks/{stem}", "map_file": f"maps/{stem}", **_ids(record)}
            bar.update()
            yield files, row

    write_image_folder(out_dir, entries(False), METADATA_COLUMNS, info)
    if any(record.condition is None for record in records):
        # the healthy folder gets the same info, so `load_dataset_dir(out_dir/healthy)` finds the registry
        write_image_folder(os.path.join(out_dir, HEALTHY_DIR), entries(True), METADATA_COLUMNS, info)
    bar.close()
    return out_dir


def phantom_dataset(
    n: int = 2000,
    size: int = 64,
    seed: int = 0,
    class_weights=None,
    skin_type_weights=None,
    healthy_fraction: float = 0.0,
    images_per_lesion: int = 1,
):
    """A phantom built straight into a `datasets.Dataset`, without files.

    Same images as `write_phantom` with the same arguments, in the schema of every dermdiff loader
    (`dermdiff.data.records`): `image`, `label` (ClassLabel over the phantom registry), `label_name`,
    `skin_type`, `boxes`, `mask`, `semantic_map`, `image_id`, `lesion_id`, `patient_id`; the registry is
    stored for `dermdiff.data.registry_of`. Healthy images (only with `healthy_fraction > 0`) have
    `label == -1`, `label_name`, `mask` and `lesion_id` `None` and no boxes.

    Example:
        >>> dataset = phantom_dataset(n=100, size=32, seed=0, class_weights={"nevus": 9, "melanoma": 1})
        >>> dataset.features["label"].names
        ['nevus', 'melanoma', 'psoriasis', 'dermatofibroma', 'vascular']
    """
    import datasets

    from .files import png_bytes
    from .info import dataset_info
    from .records import dataset_features

    size = _check_size(size)
    records = plan_phantom(n, seed, class_weights, skin_type_weights, healthy_fraction, images_per_lesion)
    registry = get_registry(REGISTRY_NAME)
    names = ("image", "label", "label_name", "skin_type", "boxes", "mask", "semantic_map", "image_id",
             "lesion_id", "patient_id")
    columns: dict[str, list] = {name: [] for name in names}
    for record in records:
        sample = draw_record(record, size, seed)
        healthy = record.condition is None
        columns["image"].append({"path": None, "bytes": png_bytes(sample.image)})
        columns["label"].append(-1 if healthy else registry.index(record.condition))
        columns["label_name"].append(record.condition)
        columns["skin_type"].append(record.skin_type)
        columns["boxes"].append(sample.boxes)
        columns["mask"].append(None if healthy else {"path": None, "bytes": png_bytes(sample.mask_image())})
        columns["semantic_map"].append({"path": None, "bytes": png_bytes(sample.semantic_map.to_pil())})
        columns["image_id"].append(f"{record.index:05d}")
        for key, value in _ids(record).items():
            columns[key].append(value)
    features = dataset_features(registry, ("lesion_id", "patient_id"))
    source = f"phantom(n={n}, size={size}, seed={seed})"
    info = dataset_info(registry, "phantom", source, features)
    return datasets.Dataset.from_dict(columns, features=features, info=info)


def phantom_grid(
    size: int = 64, seed: int = 0, skin_types: Sequence[int] = SKIN_TYPES, conditions=None, maps: bool = True
):
    """A picture of phantom images (and their semantic maps) across skin types and conditions.

    One column per skin type; per condition one row of images followed, with `maps`, by a row of
    their semantic maps. `conditions` defaults to every phantom class plus healthy skin (`None`).
    """
    from diffusers.utils import make_image_grid

    size = _check_size(size)
    skin_types = [validate_skin_type(t) for t in skin_types]
    conditions = list(PHANTOM_CONDITIONS) + [None] if conditions is None else [_check_condition(c) for c in conditions]
    if not skin_types or not conditions:
        raise ValueError("phantom_grid needs at least one skin type and one condition")
    pictures = []
    for row, condition in enumerate(conditions):
        samples = [generate_phantom_sample(condition, t, size, seed, index=row * len(skin_types) + col)
                   for col, t in enumerate(skin_types)]
        pictures += [sample.image for sample in samples]
        if maps:
            pictures += [sample.semantic_map.to_pil() for sample in samples]
    rows = len(conditions) * (2 if maps else 1)
    return make_image_grid(pictures, rows=rows, cols=len(skin_types))
