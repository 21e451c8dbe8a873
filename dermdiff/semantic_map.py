"""The DermGAN semantic map: skin type, condition and where it is, as one RGB picture.

Ghorbani et al. 2020 (DermGAN), section 2: "the semantic map is an RGB image. The R-channel encodes the skin color
and the condition is encoded in the G & B channels by a non-zero value corresponding to its ROI
bounding box(es)". This module is the one home of that encoding; every model, pipeline, script and
metric goes through `SemanticMap`.

Encoding (all values survive PNG and nearest-neighbour resizing exactly):

| channel | inside a lesion region               | outside               |
|---------|--------------------------------------|-----------------------|
| R       | skin type: I..VI -> 55, 95, ..., 255; unknown -> 0 (constant over the map)      ||
| G       | `check_value(code)`, a code-specific non-zero value | 0       |
| B       | the condition code (1..255) from a `ConditionRegistry` | 0    |

G repeats the code in another form, so a map whose G and B disagree (a JPEG-damaged or hand-drawn
one) is rejected instead of silently read as another condition; it also makes the regions visible.

Model channels (`to_channels`): one skin-type channel (type / 6, 0 when unknown) followed by one
one-hot channel per condition of the registry, so `1 + len(registry)` channels. The null map used for
classifier-free guidance is all zeros (`null_channels`). Code that reads a channel batch goes through
the views `skin_type_from_channels`, `conditions_present_from_channels`, `lesion_mask_from_channels` and
`dominant_condition_from_channels` (and builds one with `channels_from_labels`), so the layout is known here
only. Training, which needs channels
and no regions, turns an RGB map straight into channels with `SemanticMap.channels_from_rgb`.

Boxes are `(x0, y0, x1, y1)` in pixels, x0/y0 inclusive and x1/y1 exclusive (x = column).

Example:
    >>> smap = SemanticMap.from_annotations("mel", skin_type=5, boxes=[(8, 8, 24, 20)], size=32)
    >>> smap.conditions, smap.boxes
    (['mel'], [(8, 8, 24, 20)])
    >>> SemanticMap.decode(smap.to_pil(), registry="ham10000") == smap
    True
    >>> channels = smap.to_channels()  # torch.Size([8, 32, 32]) for the 7 HAM10000 classes
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from .conditions import DEFAULT_REGISTRY, ConditionRegistry, get_registry
from .limits import check_image_size

SKIN_TYPES = (1, 2, 3, 4, 5, 6)
SKIN_TYPE_NAMES = ("I", "II", "III", "IV", "V", "VI")
UNKNOWN_SKIN_TYPE = None
_R_UNKNOWN = 0


def skin_type_to_red(skin_type: int | None) -> int:
    """R value of a Fitzpatrick type (1..6 -> 55..255 in steps of 40; unknown -> 0)."""
    if skin_type is None:
        return _R_UNKNOWN
    return 15 + 40 * validate_skin_type(skin_type)


def red_to_skin_type(red: int) -> int | None:
    if red == _R_UNKNOWN:
        return None
    skin_type, remainder = divmod(int(red) - 15, 40)
    if remainder or skin_type not in SKIN_TYPES:
        allowed = [_R_UNKNOWN] + [skin_type_to_red(t) for t in SKIN_TYPES]
        raise ValueError(f"R value {red} encodes no skin type; allowed R values are {allowed} (unknown, I..VI)")
    return skin_type


def check_value(code: int) -> int:
    """The G value written beside condition `code` in B: non-zero and spread out for visibility."""
    return 56 + (code * 97) % 200


_G_OF_B = np.array([0] + [check_value(code) for code in range(1, 256)], dtype=np.uint8)  # G for each B code


def validate_skin_type(skin_type) -> int:
    """Accepts 1..6, a roman numeral I..VI, or a float like 3.0 (CSV columns); returns the int."""
    value = skin_type
    if isinstance(value, str):
        text = value.strip().upper()
        if text in SKIN_TYPE_NAMES:
            return SKIN_TYPE_NAMES.index(text) + 1
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"skin type {skin_type!r} is not a Fitzpatrick type; allowed: 1..6 or I..VI") from None
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"skin type {skin_type!r} is not a Fitzpatrick type; allowed: 1..6 or I..VI") from None
    if not math.isfinite(as_float) or as_float != int(as_float) or int(as_float) not in SKIN_TYPES:
        raise ValueError(f"skin type {skin_type!r} is outside the Fitzpatrick scale; allowed: 1..6 (I..VI)")
    return int(as_float)


def _as_size(size) -> tuple[int, int]:
    """(height, width) from an int or a pair."""
    if size is None:
        raise ValueError("size is required (an int or (height, width)) when no mask is given")
    if isinstance(size, (int, np.integer)):
        height = width = int(size)
    else:
        height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got (height={height}, width={width})")
    check_image_size(width, height, "semantic map size")
    return height, width


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass(eq=False)
class Region:
    """One lesion region: a condition code and where it is (a boolean mask; its box is derived)."""

    code: int
    mask: np.ndarray = field(repr=False)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return _box_of(self.mask)

    @property
    def area(self) -> int:
        return int(self.mask.sum())


class SemanticMap:
    """Skin type + lesion regions of one image, with the DermGAN RGB encoding and model channels.

    Build one with `from_annotations` (a condition, a skin type, boxes and/or a mask) or `decode` (an
    RGB map image). Maps are immutable in spirit: every variation returns a new map.

    Args:
        skin_type (`int`, *optional*): Fitzpatrick type 1..6; `None` when unknown.
        regions (`list[Region]`): lesion regions; later regions are painted over earlier ones.
        size (`int` or `(height, width)`): the image size.
        registry (`str` or `ConditionRegistry`, defaults to `"ham10000"`, `DEFAULT_REGISTRY`): the condition codes.
    """

    def __init__(self, skin_type, regions: Sequence[Region], size, registry=DEFAULT_REGISTRY):
        self.registry: ConditionRegistry = get_registry(registry)
        self.skin_type: int | None = None if skin_type is None else validate_skin_type(skin_type)
        self.size: tuple[int, int] = _as_size(size)
        self.regions: list[Region] = []
        for region in regions:
            self.registry.code(region.code)  # raises with the allowed codes
            mask = np.asarray(region.mask, dtype=bool)
            if mask.shape != self.size:
                raise ValueError(f"region mask has shape {mask.shape}, expected (height, width) = {self.size}")
            if not mask.any():
                raise ValueError(f"region of condition {self.registry.name(region.code)!r} has an empty mask")
            self.regions.append(Region(int(region.code), mask))

    # ------------------------------------------------------------------------------------------------------------
    # construction from annotations
    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_annotations(
        cls,
        condition: str | int | None = None,
        skin_type=None,
        boxes: Iterable[Sequence[int]] | None = None,
        mask=None,
        size=None,
        registry=DEFAULT_REGISTRY,
    ) -> "SemanticMap":
        """A map for one condition given by boxes and/or a binary mask.

        - boxes only: each box is painted as a filled rectangle (DermGAN's ROI boxes).
        - mask only: the mask's connected lesion is painted as drawn (its box is its bounding box).
        - both: each box is painted with the part of the mask inside it (one region per box).
        - neither (or `condition=None`): healthy skin, only the skin type is encoded.

        Raises `ValueError` for an unknown condition, a skin type outside I..VI, a box outside the
        image or an empty mask, naming the value and the allowed range.
        """
        registry = get_registry(registry)
        if mask is not None:
            mask = _to_bool_mask(mask)
            if size is not None and _as_size(size) != mask.shape:
                raise ValueError(f"mask has shape {mask.shape} but size is {_as_size(size)} (height, width)")
            size = mask.shape
            if not mask.any():
                raise ValueError("mask is empty (no lesion pixel); pass condition=None for healthy skin")
        height, width = _as_size(size)
        boxes = [] if boxes is None else [tuple(int(v) for v in box) for box in boxes]
        if condition is None:
            if boxes or mask is not None:
                raise ValueError("boxes or a mask were given without a condition; name the condition")
            return cls(skin_type, [], (height, width), registry)
        code = registry.code(condition)
        regions = []
        for box in boxes:
            box_mask = _box_mask(box, (height, width))
            if mask is not None:
                box_mask &= mask
                if not box_mask.any():
                    raise ValueError(f"box {box} contains no pixel of the mask")
            regions.append(Region(code, box_mask))
        if mask is not None and not boxes:
            regions.append(Region(code, mask))
        if not regions:
            raise ValueError(f"condition {condition!r} needs at least one box or a mask to say where it is")
        return cls(skin_type, regions, (height, width), registry)

    # ------------------------------------------------------------------------------------------------------------
    # RGB encoding and decoding
    # ------------------------------------------------------------------------------------------------------------
    @property
    def label_map(self) -> np.ndarray:
        """(H, W) uint8 array of condition codes, 0 outside every region."""
        labels = np.zeros(self.size, dtype=np.uint8)
        for region in self.regions:
            labels[region.mask] = region.code
        return labels

    def to_numpy(self) -> np.ndarray:
        """The RGB map as an (H, W, 3) uint8 array."""
        labels = self.label_map
        rgb = np.zeros(self.size + (3,), dtype=np.uint8)
        rgb[..., 0] = skin_type_to_red(self.skin_type)
        rgb[..., 1] = _G_OF_B[labels]
        rgb[..., 2] = labels
        return rgb

    def to_pil(self) -> Image.Image:
        return Image.fromarray(self.to_numpy(), mode="RGB")

    def to_tensor(self):
        """The RGB map as a (3, H, W) uint8 torch tensor."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.to_numpy().transpose(2, 0, 1)))

    @classmethod
    def decode(cls, image, registry=DEFAULT_REGISTRY, source: str | None = None) -> "SemanticMap":
        """Reads an RGB map (PIL image, (H, W, 3) array or (3, H, W) tensor) back into a `SemanticMap`.

        Each connected component (8-neighbourhood) of each condition becomes one region, so maps drawn
        from separate boxes decode to the same boxes. `source` (e.g. a file name) is named in errors.
        """
        from scipy import ndimage

        registry = get_registry(registry)
        skin_type, labels = _decode_codes(image, registry, source)
        regions = []
        for code in np.unique(labels[labels > 0]):
            components, count = ndimage.label(labels == code, structure=np.ones((3, 3), dtype=bool))
            for index in range(1, count + 1):
                regions.append(Region(int(code), components == index))
        return cls(skin_type, regions, labels.shape, registry)

    @staticmethod
    def channels_from_rgb(image, registry="ham10000", size=None, source: str | None = None, dtype=None):
        """`decode(image).resize(size).to_channels()` without building regions: the training fast path.

        Training needs only the channels, and `decode` labels connected components (one `Region` each),
        which is most of the cost of turning a row into a training example. The map is checked exactly as
        `decode` checks it, and the result is equal to the slow path's (tests/test_semantic_map.py).
        """
        registry = get_registry(registry)
        skin_type, labels = _decode_codes(image, registry, source)
        if size is not None and _as_size(size) != labels.shape:
            rows, cols = _nearest_indices(labels.shape, _as_size(size))
            labels = labels[rows][:, cols]
        return _channels(labels, skin_type, len(registry), dtype)

    @classmethod
    def from_pil(cls, image: Image.Image, registry=DEFAULT_REGISTRY) -> "SemanticMap":
        return cls.decode(image, registry)

    from_numpy = from_pil
    from_tensor = from_pil

    # ------------------------------------------------------------------------------------------------------------
    # annotations back out
    # ------------------------------------------------------------------------------------------------------------
    @property
    def conditions(self) -> list[str]:
        """Distinct condition names, in order of first appearance."""
        seen: list[str] = []
        for region in self.regions:
            name = self.registry.name(region.code)
            if name not in seen:
                seen.append(name)
        return seen

    @property
    def condition(self) -> str | None:
        """The condition of the largest region (the image-level label), or `None` for healthy skin."""
        if not self.regions:
            return None
        return self.registry.name(max(self.regions, key=lambda region: region.area).code)

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [region.box for region in self.regions]

    @property
    def lesion_mask(self) -> np.ndarray:
        """(H, W) bool: any lesion."""
        return self.label_map > 0

    def masks(self) -> dict[str, np.ndarray]:
        """One (H, W) bool mask per condition name."""
        labels = self.label_map
        return {self.registry.name(code): labels == code for code in sorted({r.code for r in self.regions})}

    def to_annotations(self) -> dict:
        """A JSON-friendly summary: skin type, registry and one entry per region."""
        return {
            "skin_type": self.skin_type,
            "size": list(self.size),
            "registry": self.registry.to_dict(),
            "regions": [
                {"condition": self.registry.name(r.code), "code": r.code, "box": list(r.box), "area": r.area}
                for r in self.regions
            ],
        }

    # ------------------------------------------------------------------------------------------------------------
    # model channels
    # ------------------------------------------------------------------------------------------------------------
    @staticmethod
    def num_channels(registry=DEFAULT_REGISTRY) -> int:
        """Channels of `to_channels` for a registry: one skin-type channel + one per condition."""
        return 1 + len(get_registry(registry))

    def to_channels(self, dtype=None, device=None):
        """(1 + K, H, W) float tensor: skin type / 6 (0 if unknown), then K one-hot condition masks."""
        return _channels(self.label_map, self.skin_type, len(self.registry), dtype).to(device=device)

    @staticmethod
    def stack_channels(maps: Sequence["SemanticMap"], dtype=None, device=None):
        """(B, 1 + K, H, W) channels of several maps of one size and registry."""
        import torch

        if not maps:
            raise ValueError("no semantic maps to stack")
        first = maps[0]
        for index, smap in enumerate(maps):
            if smap.size != first.size or smap.registry != first.registry:
                raise ValueError(
                    f"map {index} has size {smap.size} / registry {smap.registry.registry_name!r}; "
                    f"expected {first.size} / {first.registry.registry_name!r} like map 0"
                )
        return torch.stack([smap.to_channels(dtype=dtype) for smap in maps]).to(device=device)

    @staticmethod
    def null_channels(size, registry=DEFAULT_REGISTRY, batch_size: int | None = None, dtype=None, device=None):
        """The classifier-free-guidance null map: all zeros, shaped like `to_channels` (optionally batched)."""
        import torch

        height, width = _as_size(size)
        shape = (SemanticMap.num_channels(registry), height, width)
        if batch_size is not None:
            shape = (batch_size,) + shape
        return torch.zeros(shape, dtype=dtype or torch.float32, device=device)

    # ------------------------------------------------------------------------------------------------------------
    # geometry and the DermGAN variations (every method returns a new map)
    # ------------------------------------------------------------------------------------------------------------
    def _replace(self, skin_type=..., regions=None, size=None) -> "SemanticMap":
        return SemanticMap(
            self.skin_type if skin_type is ... else skin_type,
            self.regions if regions is None else regions,
            self.size if size is None else size,
            self.registry,
        )

    def resize(self, size) -> "SemanticMap":
        """Nearest-neighbour resize (codes never blend); regions that vanish are dropped."""
        height, width = _as_size(size)
        rows, cols = _nearest_indices(self.size, (height, width))
        regions = [Region(r.code, r.mask[rows][:, cols]) for r in self.regions]
        return self._replace(regions=[r for r in regions if r.mask.any()], size=(height, width))

    def crop(self, box: Sequence[int]) -> "SemanticMap":
        """The part of the map inside `box` (x0, y0, x1, y1); regions outside it are dropped."""
        x0, y0, x1, y1 = _validate_box(box, self.size)
        regions = [Region(r.code, r.mask[y0:y1, x0:x1]) for r in self.regions]
        return self._replace(regions=[r for r in regions if r.mask.any()], size=(y1 - y0, x1 - x0))

    def with_skin_type(self, skin_type) -> "SemanticMap":
        """The same regions on another skin type (DermGAN figure 5)."""
        return self._replace(skin_type=skin_type)

    def to_box_map(self) -> "SemanticMap":
        """Every region replaced by its filled bounding box (DermGAN's box-only format), codes kept."""
        return self._replace(regions=[Region(r.code, _box_mask(r.box, self.size)) for r in self.regions])

    def with_condition(self, condition) -> "SemanticMap":
        """Every region relabelled to one condition."""
        code = self.registry.code(condition)
        return self._replace(regions=[Region(code, r.mask) for r in self.regions])

    def translate(self, offsets: Sequence[tuple[int, int]]) -> "SemanticMap":
        """Moves region i by offsets[i] = (dx, dy) pixels; a region may not leave the image."""
        if len(offsets) != len(self.regions):
            raise ValueError(f"got {len(offsets)} offsets for {len(self.regions)} regions")
        moved = []
        for region, (dx, dy) in zip(self.regions, offsets):
            x0, y0, x1, y1 = region.box
            if not (-x0 <= dx <= self.size[1] - x1 and -y0 <= dy <= self.size[0] - y1):
                raise ValueError(
                    f"offset (dx={dx}, dy={dy}) moves box {region.box} outside the {self.size[1]}x{self.size[0]} "
                    f"image; allowed dx in [{-x0}, {self.size[1] - x1}], dy in [{-y0}, {self.size[0] - y1}]"
                )
            moved.append(Region(region.code, np.roll(region.mask, (int(dy), int(dx)), axis=(0, 1))))
        return self._replace(regions=moved)

    def scale(self, factor: float, index: int | None = None) -> "SemanticMap":
        """Scales region `index` (all if None) about its box centre by `factor` (DermGAN figure 6).

        The scaled region is clipped to the image; it keeps at least one pixel.
        """
        if not factor > 0:
            raise ValueError(f"scale factor must be > 0, got {factor}")
        if index is not None and not 0 <= index < len(self.regions):
            raise ValueError(f"region index {index} out of range; the map has {len(self.regions)} regions")
        scaled = []
        for i, region in enumerate(self.regions):
            scaled.append(region if index is not None and i != index else _scale_region(region, factor, self.size))
        return self._replace(regions=scaled)

    def subset(self, indices: Iterable[int]) -> "SemanticMap":
        """Keeps the regions at `indices`."""
        indices = list(indices)
        for index in indices:
            if not 0 <= index < len(self.regions):
                raise ValueError(f"region index {index} out of range; the map has {len(self.regions)} regions")
        return self._replace(regions=[self.regions[i] for i in indices])

    def random_variation(
        self,
        seed: int | np.random.Generator | None = None,
        max_shift: float = 0.25,
        keep_subset: bool = True,
        scale_range: tuple[float, float] | None = None,
        skin_types: Sequence[int] | None = None,
    ) -> "SemanticMap":
        """A new map as DermGAN samples one from a validation map (Ghorbani et al. 2020, section 3).

        1. keep a random non-empty subset of the regions (if there is more than one and `keep_subset`);
        2. optionally scale each kept region by a factor drawn from `scale_range`;
        3. translate each region by a random offset of up to `max_shift` of the image size, staying inside;
        4. optionally swap the skin type for one drawn from `skin_types`.

        Args:
            seed: an int or a `numpy.random.Generator`; the same seed gives the same map.
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        varied = self
        if keep_subset and len(varied.regions) > 1:
            count = int(rng.integers(1, len(varied.regions) + 1))
            varied = varied.subset(sorted(rng.choice(len(varied.regions), size=count, replace=False).tolist()))
        if scale_range is not None:
            low, high = scale_range
            for index in range(len(varied.regions)):
                varied = varied.scale(float(rng.uniform(low, high)), index=index)
        offsets = []
        for region in varied.regions:
            x0, y0, x1, y1 = region.box
            reach_x, reach_y = int(max_shift * self.size[1]), int(max_shift * self.size[0])
            dx = int(rng.integers(max(-x0, -reach_x), min(self.size[1] - x1, reach_x) + 1))
            dy = int(rng.integers(max(-y0, -reach_y), min(self.size[0] - y1, reach_y) + 1))
            offsets.append((dx, dy))
        varied = varied.translate(offsets)
        if skin_types:
            varied = varied.with_skin_type(int(rng.choice(list(skin_types))))
        return varied

    def skin_type_sweep(self) -> list["SemanticMap"]:
        """The same map on each of the six skin types (DermGAN figure 5)."""
        return [self.with_skin_type(skin_type) for skin_type in SKIN_TYPES]

    def size_sweep(self, factors: Sequence[float] = (0.5, 0.75, 1.0, 1.5, 2.0)) -> list["SemanticMap"]:
        """The same map with growing regions (DermGAN figure 6)."""
        return [self.scale(factor) for factor in factors]

    # ------------------------------------------------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        if not isinstance(other, SemanticMap):
            return NotImplemented
        return (
            self.size == other.size
            and self.skin_type == other.skin_type
            and self.registry == other.registry
            and np.array_equal(self.label_map, other.label_map)
        )

    __hash__ = None

    def __repr__(self) -> str:
        skin = "unknown" if self.skin_type is None else SKIN_TYPE_NAMES[self.skin_type - 1]
        parts = ", ".join(f"{self.registry.name(r.code)}@{r.box}" for r in self.regions) or "healthy"
        return f"SemanticMap(skin_type={skin}, size={self.size}, {parts})"


# ----------------------------------------------------------------------------------------------------------------
# views of a (B, 1 + K, H, W) channel batch and their inverse: the one place outside `to_channels` that knows the
# channel layout
# ----------------------------------------------------------------------------------------------------------------
def skin_type_from_channels(channels):
    """(B,) long Fitzpatrick types 1..6 of a channel batch; 0 for unknown skin and for the null map.

    Channel 0 holds skin_type / 6 everywhere; its mean is used so a resized or blurred map still reads.
    """
    return (channels[:, 0].float().mean(dim=(1, 2)) * len(SKIN_TYPES)).round().long()


def conditions_present_from_channels(channels):
    """(B, K) float: 1 where condition k covers at least one pixel of the map, else 0."""
    return channels[:, 1:].float().amax(dim=(2, 3))


def lesion_mask_from_channels(channels):
    """(B, 1, H, W) bool: where any condition channel is set (the lesions' boxes or masks)."""
    return channels[:, 1:].sum(dim=1, keepdim=True) > 0


def dominant_condition_from_channels(channels, healthy_label: int, background_votes: bool = False):
    """(B,) long: the condition index (0..K-1) covering most pixels, `healthy_label` where no condition is set.

    The image-level label of a map, computed on channels so that maps and channel tensors share one rule
    (ties go to the lower index). With `background_votes` the uncovered pixels vote too, as one more class
    that loses ties: `healthy_label` unless the leading condition covers at least as much as the background
    (1e-6 of slack for float rounding). That is the majority vote that turns a block of pixels into one
    latent cell (`dermdiff.latent_maps`).
    """
    import torch

    if background_votes:
        areas = channels[:, 1:].float().mean(dim=(2, 3))
        set_here = areas.amax(dim=1) >= (1.0 - areas.sum(dim=1)) - 1e-6
    else:
        areas = channels[:, 1:].sum(dim=(2, 3))
        set_here = areas.amax(dim=1) > 0
    labels = areas.argmax(dim=1)
    return torch.where(set_here, labels, torch.full_like(labels, healthy_label))


def channels_from_labels(skin_type, condition, like):
    """(B, 1 + K, H, W) channels laid out like `like` from per-pixel labels: the inverse of the views above.

    Args:
        skin_type (`torch.LongTensor` of shape `(B, H, W)`): Fitzpatrick type 1..6 per pixel, 0 for unknown.
        condition (`torch.LongTensor` of shape `(B, H, W)`): condition index 0..K-1 per pixel, -1 for none.
        like (`torch.Tensor`): a channel batch of the same registry; gives K and the dtype.
    """
    import torch
    import torch.nn.functional as F

    skin = (skin_type.float() / len(SKIN_TYPES))[:, None]
    one_hot = F.one_hot(condition + 1, num_classes=like.shape[1])[..., 1:].permute(0, 3, 1, 2)
    return torch.cat([skin, one_hot.float()], dim=1).to(like.dtype)


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _decode_codes(image, registry: ConditionRegistry, source: str | None) -> tuple[int | None, np.ndarray]:
    """(skin type, (H, W) uint8 condition codes) of an RGB map, checked; errors name `source`."""
    where = f" in {source}" if source else ""
    rgb = _to_rgb_array(image)
    red = rgb[..., 0]
    if (red != red.flat[0]).any():
        reds = np.unique(red)
        raise ValueError(f"R channel{where} must be one skin-type value over the whole map, found {reds[:8].tolist()}")
    try:
        skin_type = red_to_skin_type(int(red.flat[0]))
    except ValueError as error:
        raise ValueError(f"{error}{where}") from None
    green, blue = rgb[..., 1], rgb[..., 2]
    bad = green != _G_OF_B[blue]  # G must repeat B's code (0 where B is 0)
    if bad.any():  # only a damaged map pays for finding the value to name
        at_zero = bad & (blue == 0)
        if at_zero.any():
            values = np.unique(green[at_zero])
            raise ValueError(f"G values {values[:8].tolist()}{where} sit where B is 0 and decode to no condition")
    wrong = set(np.unique(blue[bad]).tolist()) if bad.any() else set()
    if blue.max() > len(registry):
        wrong |= {code for code in np.unique(blue).tolist() if code > len(registry)}
    if wrong:
        code = min(wrong)
        found = np.unique(green[blue == code])[:4].tolist()
        raise ValueError(
            f"(G, B) = ({found}, {code}){where} decodes to no condition of registry "
            f"{registry.registry_name!r}; allowed B codes are 1..{len(registry)} with G = check_value(B)"
        )
    return skin_type, np.ascontiguousarray(blue)


def _nearest_indices(source: tuple[int, int], target: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a nearest-neighbour resize from `source` to `target` (height, width)."""
    rows = (np.arange(target[0]) * source[0] / target[0]).astype(int)
    cols = (np.arange(target[1]) * source[1] / target[1]).astype(int)
    return rows, cols


def _channels(labels: np.ndarray, skin_type: int | None, num_conditions: int, dtype=None):
    """(1 + K, H, W) float tensor from an (H, W) code array: skin type / 6, then one-hot conditions."""
    import torch

    channels = np.empty((1 + num_conditions,) + labels.shape, dtype=np.float32)
    channels[0] = 0.0 if skin_type is None else skin_type / 6.0
    np.equal(labels[None], np.arange(1, num_conditions + 1, dtype=labels.dtype)[:, None, None], out=channels[1:],
             casting="unsafe")
    return torch.from_numpy(channels).to(dtype=dtype or torch.float32)


def _validate_box(box: Sequence[int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    if len(box) != 4:
        raise ValueError(f"a box is (x0, y0, x1, y1), got {tuple(box)}")
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = size
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(
            f"box {(x0, y0, x1, y1)} lies outside the {width}x{height} image or is empty; allowed: "
            f"0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} (x1, y1 exclusive)"
        )
    return x0, y0, x1, y1


def _box_mask(box: Sequence[int], size: tuple[int, int]) -> np.ndarray:
    x0, y0, x1, y1 = _validate_box(box, size)
    mask = np.zeros(size, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _scale_region(region: Region, factor: float, size: tuple[int, int]) -> Region:
    x0, y0, x1, y1 = region.box
    crop = region.mask[y0:y1, x0:x1]
    new_h, new_w = max(1, round(crop.shape[0] * factor)), max(1, round(crop.shape[1] * factor))
    rows = (np.arange(new_h) * crop.shape[0] / new_h).astype(int)
    cols = (np.arange(new_w) * crop.shape[1] / new_w).astype(int)
    scaled = crop[rows][:, cols]
    centre_y, centre_x = (y0 + y1) / 2, (x0 + x1) / 2
    top, left = int(round(centre_y - new_h / 2)), int(round(centre_x - new_w / 2))
    mask = np.zeros(size, dtype=bool)
    # paste with clipping to the image
    src_top, src_left = max(0, -top), max(0, -left)
    dst_top, dst_left = max(0, top), max(0, left)
    h = min(new_h - src_top, size[0] - dst_top)
    w = min(new_w - src_left, size[1] - dst_left)
    if h > 0 and w > 0:
        mask[dst_top : dst_top + h, dst_left : dst_left + w] = scaled[src_top : src_top + h, src_left : src_left + w]
    if not mask.any():  # shrunk to nothing or pushed out: keep the centre pixel
        mask[min(size[0] - 1, int(centre_y)), min(size[1] - 1, int(centre_x))] = True
    return Region(region.code, mask)


def _to_bool_mask(mask) -> np.ndarray:
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    elif hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"a mask is a 2-D (height, width) array, got shape {mask.shape}")
    return mask > (127 if mask.dtype == np.uint8 and mask.max() > 1 else 0.5)


def _to_rgb_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"a semantic map image must be RGB, got mode {image.mode!r}")
        return np.asarray(image)
    if hasattr(image, "detach"):
        tensor = image.detach().cpu()
        if tensor.ndim == 3 and tensor.shape[0] == 3:
            tensor = tensor.permute(1, 2, 0)
        array = tensor.numpy()
    else:
        array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"a semantic map is (H, W, 3) or (3, H, W), got shape {array.shape}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max() <= 1.0:
            array = np.rint(array * 255)
        if array.min() < 0 or array.max() > 255 or np.any(array != np.rint(array)):
            raise ValueError("a semantic map holds whole values 0..255 (or floats k/255 in [0, 1])")
        array = array.astype(np.uint8)
    return array
