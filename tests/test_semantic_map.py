"""SemanticMap: encode/decode round trips, PNG survival, variations stay valid, every bad input is named."""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dermdiff import ConditionRegistry, SemanticMap, get_registry
from dermdiff.semantic_map import (
    Region,
    check_value,
    dominant_condition_from_channels,
    lesion_mask_from_channels,
    skin_type_from_channels,
    skin_type_to_red,
)

HAM = get_registry("ham10000")


@st.composite
def separated_boxes(draw, size=48, max_boxes=3):
    """Boxes on a grid of cells, one per cell and never touching, so decoding recovers each one."""
    cell = size // 3
    cells = draw(st.lists(st.integers(0, 8), min_size=1, max_size=max_boxes, unique=True))
    boxes = []
    for index in cells:
        row, col = divmod(index, 3)
        x0 = col * cell + draw(st.integers(1, cell // 2 - 1))
        y0 = row * cell + draw(st.integers(1, cell // 2 - 1))
        x1 = draw(st.integers(x0 + 1, (col + 1) * cell - 1))
        y1 = draw(st.integers(y0 + 1, (row + 1) * cell - 1))
        boxes.append((x0, y0, x1, y1))
    return boxes


@settings(max_examples=60, deadline=None)
@given(
    boxes=separated_boxes(),
    condition=st.sampled_from(HAM.names),
    skin_type=st.one_of(st.none(), st.integers(1, 6)),
)
def test_encode_decode_round_trip_recovers_annotations(boxes, condition, skin_type):
    smap = SemanticMap.from_annotations(condition, skin_type=skin_type, boxes=boxes, size=48)
    decoded = SemanticMap.decode(smap.to_numpy(), registry="ham10000")
    assert decoded == smap
    assert decoded.skin_type == skin_type
    assert decoded.conditions == [condition]
    assert sorted(decoded.boxes) == sorted(boxes)


@settings(max_examples=25, deadline=None)
@given(codes=st.lists(st.integers(1, 7), min_size=1, max_size=3), skin_type=st.integers(1, 6))
def test_png_round_trip_and_nearest_resize_keep_codes(codes, skin_type):
    regions = []
    for index, code in enumerate(codes):
        mask = np.zeros((30, 40), dtype=bool)
        mask[2 + 9 * index : 8 + 9 * index, 3 + 10 * index : 12 + 10 * index] = True
        regions.append(Region(code, mask))
    smap = SemanticMap(skin_type, regions, (30, 40))
    buffer = io.BytesIO()
    smap.to_pil().save(buffer, format="PNG")
    reloaded = SemanticMap.decode(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert reloaded == smap
    # PIL's own nearest resize (what users do to a map file) must still decode to the same codes.
    resized = smap.to_pil().resize((80, 60), Image.NEAREST)
    decoded = SemanticMap.decode(resized)
    assert set(np.unique(decoded.label_map)) == set(np.unique(smap.label_map))
    assert decoded.skin_type == skin_type
    assert smap.resize((60, 80)) == decoded


def test_mask_annotation_and_mask_with_boxes():
    mask = np.zeros((32, 32), dtype=bool)
    mask[4:10, 4:12] = True
    mask[20:28, 18:30] = True
    whole = SemanticMap.from_annotations("bcc", 2, mask=mask)
    assert np.array_equal(whole.lesion_mask, mask)
    per_box = SemanticMap.from_annotations("bcc", 2, mask=mask, boxes=[(0, 0, 16, 16), (16, 16, 32, 32)])
    assert per_box.boxes == [(4, 4, 12, 10), (18, 20, 30, 28)]
    assert np.array_equal(per_box.lesion_mask, mask)


def test_healthy_map_has_only_a_skin_type():
    smap = SemanticMap.from_annotations(None, skin_type="IV", size=(16, 24))
    assert smap.regions == [] and smap.condition is None and smap.skin_type == 4
    rgb = smap.to_numpy()
    assert (rgb[..., 0] == skin_type_to_red(4)).all() and not rgb[..., 1:].any()


def test_channels_layout_and_null_map():
    smap = SemanticMap.from_annotations("vasc", skin_type=3, boxes=[(2, 2, 6, 6)], size=8)
    channels = smap.to_channels()
    assert channels.shape == (1 + 7, 8, 8)
    assert torch.allclose(channels[0], torch.full((8, 8), 0.5))
    assert channels[1 + HAM.index("vasc"), 2:6, 2:6].eq(1).all()
    assert channels[1:].sum() == 16
    batch = SemanticMap.stack_channels([smap, smap.with_skin_type(6)])
    assert batch.shape == (2, 8, 8, 8) and batch[1, 0].eq(1).all()
    null = SemanticMap.null_channels(8, "ham10000", batch_size=2)
    assert null.shape == batch.shape and not null.any()


def test_decode_accepts_torch_tensors_in_both_forms():
    smap = SemanticMap.from_annotations("df", skin_type=1, boxes=[(1, 1, 5, 5)], size=8)
    assert SemanticMap.decode(smap.to_tensor()) == smap
    assert SemanticMap.decode(smap.to_tensor().float() / 255) == smap


def test_random_variation_is_seeded_and_stays_valid():
    boxes = [(2, 2, 10, 10), (30, 30, 40, 44), (20, 2, 26, 8)]
    smap = SemanticMap.from_annotations("mel", skin_type=2, boxes=boxes, size=48)
    first = smap.random_variation(seed=7, scale_range=(0.5, 1.5), skin_types=[5, 6])
    assert first == smap.random_variation(seed=7, scale_range=(0.5, 1.5), skin_types=[5, 6])
    variants = [smap.random_variation(seed=seed, max_shift=0.5) for seed in range(30)]
    assert len({v.to_numpy().tobytes() for v in variants}) > 20
    for variant in variants:
        assert 1 <= len(variant.regions) <= 3
        assert SemanticMap.decode(variant.to_numpy()).lesion_mask.sum() == variant.lesion_mask.sum()
        for x0, y0, x1, y1 in variant.boxes:
            assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
    assert first.skin_type in (5, 6)


def test_sweeps_and_scale():
    smap = SemanticMap.from_annotations("nv", skin_type=3, boxes=[(12, 12, 20, 20)], size=32)
    assert [m.skin_type for m in smap.skin_type_sweep()] == [1, 2, 3, 4, 5, 6]
    areas = [m.lesion_mask.sum() for m in smap.size_sweep((0.5, 1.0, 2.0, 3.0))]
    assert areas == sorted(areas) and areas[1] == 64 and areas[2] == 256
    assert smap.scale(10).boxes == [(0, 0, 32, 32)]  # clipped to the image
    assert smap.translate([(12, -12)]).boxes == [(24, 0, 32, 8)]


def test_custom_registry_round_trip():
    registry = ConditionRegistry(["wart", "molluscum"], name="clinic")
    code = registry.register("impetigo")
    assert code == 3 and registry.register("Impetigo") == 3
    smap = SemanticMap.from_annotations("impetigo", 5, boxes=[(0, 0, 4, 4)], size=8, registry=registry)
    assert SemanticMap.decode(smap.to_pil(), registry=ConditionRegistry.from_dict(registry.to_dict())) == smap
    assert check_value(3) != 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(condition="lupus", boxes=[(0, 0, 4, 4)], size=8), "unknown condition 'lupus'.*allowed: 1=akiec"),
        (dict(condition=9, boxes=[(0, 0, 4, 4)], size=8), "allowed codes are 1..7"),
        (dict(condition="mel", skin_type=7, boxes=[(0, 0, 4, 4)], size=8), "skin type 7 .*allowed: 1..6"),
        (dict(condition="mel", skin_type="VII", boxes=[(0, 0, 4, 4)], size=8), "'VII'.*1..6 or I..VI"),
        (dict(condition="mel", boxes=[(4, 4, 12, 6)], size=8), r"box \(4, 4, 12, 6\) lies outside the 8x8 image"),
        (dict(condition="mel", boxes=[(5, 5, 5, 6)], size=8), "0 <= x0 < x1 <= 8"),
        (dict(condition="mel", mask=np.zeros((8, 8))), "mask is empty"),
        (dict(condition="mel"), "size is required"),
        (dict(condition="mel", size=8), "needs at least one box or a mask"),
        (dict(condition=None, boxes=[(0, 0, 2, 2)], size=8), "without a condition"),
    ],
)
def test_bad_annotations_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SemanticMap.from_annotations(**kwargs)


def test_decode_rejects_maps_that_decode_to_nothing():
    good = SemanticMap.from_annotations("mel", 2, boxes=[(1, 1, 4, 4)], size=8).to_numpy()
    bad_code = good.copy()
    bad_code[1:4, 1:4, 2] = 42
    with pytest.raises(ValueError, match=r"decodes to no condition.*allowed B codes are 1..7"):
        SemanticMap.decode(bad_code, source="map_0001.png")
    bad_green = good.copy()
    bad_green[1, 1, 1] = 3
    with pytest.raises(ValueError, match="decodes to no condition"):
        SemanticMap.decode(bad_green)
    stray_green = good.copy()
    stray_green[6, 6, 1] = 9
    with pytest.raises(ValueError, match="decode to no condition"):
        SemanticMap.decode(stray_green)
    bad_red = good.copy()
    bad_red[..., 0] = 100
    with pytest.raises(ValueError, match="R value 100 encodes no skin type.*allowed R values"):
        SemanticMap.decode(bad_red)
    mixed_red = good.copy()
    mixed_red[0, 0, 0] = 255
    with pytest.raises(ValueError, match="one skin-type value"):
        SemanticMap.decode(mixed_red)
    with pytest.raises(ValueError, match="must be RGB"):
        SemanticMap.decode(Image.new("L", (8, 8)))


@settings(max_examples=40, deadline=None)
@given(
    boxes=separated_boxes(),
    condition=st.sampled_from(HAM.names),
    skin_type=st.one_of(st.none(), st.integers(1, 6)),
    size=st.tuples(st.integers(5, 70), st.integers(5, 70)),
)
def test_channels_from_rgb_equals_decode_resize_to_channels(boxes, condition, skin_type, size):
    smap = SemanticMap.from_annotations(condition, skin_type, boxes=boxes, size=48)
    fast = SemanticMap.channels_from_rgb(smap.to_pil(), "ham10000", size=size)
    assert torch.equal(fast, SemanticMap.decode(smap.to_pil()).resize(size).to_channels())
    assert torch.equal(SemanticMap.channels_from_rgb(smap.to_numpy()), smap.to_channels())


def test_channels_from_rgb_rejects_what_decode_rejects():
    good = SemanticMap.from_annotations("mel", 2, boxes=[(1, 1, 4, 4)], size=8).to_numpy()
    for channel, where, value in ((2, (slice(1, 4), slice(1, 4)), 42), (1, (1, 1), 3), (1, (6, 6), 9), (0, ..., 100)):
        bad = good.copy()
        bad[where + (channel,) if where is not ... else (..., channel)] = value
        with pytest.raises(ValueError) as slow:
            SemanticMap.decode(bad, source="m.png")
        with pytest.raises(ValueError) as fast:
            SemanticMap.channels_from_rgb(bad, source="m.png")
        assert str(fast.value) == str(slow.value) and "m.png" in str(fast.value)


def test_channel_views_read_skin_type_lesion_and_dominant_condition():
    big = SemanticMap.from_annotations("mel", 5, boxes=[(0, 0, 6, 6)], size=8)
    two = SemanticMap.from_annotations("nv", 2, boxes=[(0, 0, 2, 2)], size=8)
    two = SemanticMap(2, two.regions + [Region(HAM.code("bcc"), big.regions[0].mask)], 8)
    healthy = SemanticMap.from_annotations(None, None, size=8)
    channels = SemanticMap.stack_channels([big, two, healthy])
    assert skin_type_from_channels(channels).tolist() == [5, 2, 0]
    assert skin_type_from_channels(SemanticMap.null_channels(8, batch_size=1)).tolist() == [0]
    mask = lesion_mask_from_channels(channels)
    assert mask.shape == (3, 1, 8, 8) and mask.dtype == torch.bool
    assert torch.equal(mask[:, 0], torch.from_numpy(np.stack([m.lesion_mask for m in (big, two, healthy)])))
    assert dominant_condition_from_channels(channels, healthy_label=7).tolist() == [HAM.code("mel") - 1,
                                                                                      HAM.code("bcc") - 1, 7]


def test_variation_errors_name_the_allowed_range():
    smap = SemanticMap.from_annotations("mel", 2, boxes=[(1, 1, 4, 4)], size=8)
    with pytest.raises(ValueError, match=r"allowed dx in \[-1, 4\]"):
        smap.translate([(6, 0)])
    with pytest.raises(ValueError, match="scale factor must be > 0"):
        smap.scale(0)
    with pytest.raises(ValueError, match="region index 3 out of range"):
        smap.subset([3])
    with pytest.raises(ValueError, match=r"map 1 has size \(16, 16\)"):
        SemanticMap.stack_channels([smap, smap.resize(16)])
