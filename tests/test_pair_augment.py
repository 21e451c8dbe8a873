"""Dihedral augmentation of image + map together, and box/mask map mixing (dermdiff.loops.pair_augment)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dermdiff.data import phantom_dataset, registry_of
from dermdiff.loops.diffusion import DiffusionExamples, DiffusionTrainingConfig
from dermdiff.loops.pair_augment import (
    BOX_MAP_KEY,
    apply_dihedral,
    augment_pairs,
    dihedral,
    dihedral_indices,
    mix_map_shapes,
    parse_map_shapes,
    select_variants,
)
from dermdiff.semantic_map import SemanticMap


@pytest.fixture(scope="module")
def examples():
    rows = phantom_dataset(n=12, size=16, seed=3)
    return rows.with_transform(DiffusionExamples(registry_of(rows), 16, map_shapes="mask,box"))


def batch_of(examples, count=12) -> dict:
    items = [examples[i] for i in range(count)]
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}


def test_the_eight_symmetries_are_distinct_and_each_has_an_inverse():
    square = torch.arange(16.0).reshape(1, 4, 4)
    images = [dihedral(square, index) for index in range(8)]
    assert torch.equal(images[0], square)
    assert len({tuple(image.flatten().tolist()) for image in images}) == 8
    for index in range(8):  # some symmetry undoes each one: it is a group action on the square
        assert any(torch.equal(dihedral(images[index], other), square) for other in range(8))
    with pytest.raises(ValueError, match="dihedral index must be in 0..7, got 8"):
        dihedral(square, 8)


def test_image_map_and_box_map_stay_aligned_under_every_symmetry(examples):
    """Per example the lesion pixels of the image (where it differs from its skin) keep their map channel."""
    batch = batch_of(examples)
    lesion = batch["semantic_map"][:, 1:].sum(1, keepdim=True)  # (B, 1, H, W) 1 on the lesion
    batch["pixel_values"] = batch["pixel_values"] + 10.0 * lesion  # mark the lesion in the image itself
    out = augment_pairs(batch, "dihedral", torch.Generator().manual_seed(0))
    marked = out["pixel_values"][:, :1] > 5.0
    assert torch.equal(marked, out["semantic_map"][:, 1:].sum(1, keepdim=True) > 0)
    box = out[BOX_MAP_KEY][:, 1:].sum(1, keepdim=True) > 0
    assert bool((box | ~marked).all())  # the turned lesion stays inside its turned box
    assert not torch.equal(out["pixel_values"], batch["pixel_values"])
    for b in range(len(marked)):  # each example moved as a whole by one symmetry
        moved = [k for k in range(8) if torch.equal(dihedral(batch["semantic_map"][b], k), out["semantic_map"][b])]
        assert any(torch.equal(dihedral(batch["pixel_values"][b], k), out["pixel_values"][b]) for k in moved)


def test_indices_are_seeded_and_cover_the_group():
    a = dihedral_indices(400, torch.Generator().manual_seed(1))
    b = dihedral_indices(400, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and set(a.tolist()) == set(range(8))
    flips = dihedral_indices(400, torch.Generator().manual_seed(1), "flip")
    assert set(flips.tolist()) == {0, 4}
    assert not dihedral_indices(5, torch.Generator(), "none").any()
    with pytest.raises(ValueError, match="augment must be one of"):
        dihedral_indices(5, torch.Generator(), "rotate")


def test_select_variants_picks_the_cached_latent_of_each_symmetry():
    images = torch.randn(3, 2, 4, 4)
    variants = torch.stack([torch.stack([dihedral(image, k) for k in range(8)]) for image in images])
    indices = torch.tensor([5, 0, 3])
    expected = apply_dihedral({"x": images}, indices)["x"]
    assert torch.equal(select_variants(variants, indices), expected)
    with pytest.raises(ValueError, match="expected 8 cached variants"):
        select_variants(variants[:, :4], indices)
    # a flip cache holds orientations (0, 4) at positions 0 and 1; a quarter turn it never cached is refused
    flips = variants[:, [0, 4]]
    assert torch.equal(select_variants(flips, torch.tensor([4, 0, 4]), (0, 4)), variants[[0, 1, 2], [4, 0, 4]])
    with pytest.raises(ValueError, match=r"symmetries \[3, 5\] were not cached \(the cache holds \[0, 4\]\)"):
        select_variants(flips, indices, (0, 4))


def test_quarter_turns_refuse_non_square_images():
    batch = {"pixel_values": torch.zeros(2, 3, 4, 6)}
    with pytest.raises(ValueError, match="quarter turns need square images"):
        apply_dihedral(batch, torch.tensor([1, 0]))
    assert apply_dihedral(batch, torch.tensor([4, 0]))["pixel_values"].shape == (2, 3, 4, 6)


def test_box_map_is_the_filled_bounding_box_of_each_region():
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:9, 5:12] = True
    mask[4, 5] = mask[8, 11] = False  # not a rectangle
    smap = SemanticMap.from_annotations("melanoma", 3, mask=mask)
    boxed = smap.to_box_map()
    assert boxed.boxes == smap.boxes == [(5, 4, 12, 9)]
    assert boxed.lesion_mask.sum() == 35 and smap.lesion_mask.sum() == 33
    assert boxed.skin_type == 3 and boxed.condition == smap.condition == "mel"


def test_map_shapes_decide_what_the_examples_carry():
    rows = phantom_dataset(n=4, size=16, seed=0)
    registry = registry_of(rows)
    row = rows[0]
    smap = SemanticMap.decode(row["semantic_map"], registry)
    mask_only = DiffusionExamples(registry, 16, "mask").example(row["image"], row["semantic_map"], row["label"])
    box_only = DiffusionExamples(registry, 16, "box").example(row["image"], row["semantic_map"], row["label"])
    both = DiffusionExamples(registry, 16, "mask,box").example(row["image"], row["semantic_map"], row["label"])
    assert BOX_MAP_KEY not in mask_only and BOX_MAP_KEY not in box_only
    assert torch.equal(mask_only["semantic_map"], smap.to_channels())
    assert torch.equal(box_only["semantic_map"], smap.to_box_map().to_channels())
    assert torch.equal(both["semantic_map"], mask_only["semantic_map"])
    assert torch.equal(both[BOX_MAP_KEY], box_only["semantic_map"])
    with pytest.raises(ValueError, match=r"map shapes must be a non-empty comma list of \['mask', 'box'\]"):
        DiffusionExamples(registry, 16, "mask,circle")
    assert parse_map_shapes(" box , mask,box") == ("box", "mask")


def test_mix_map_shapes_takes_the_box_map_for_about_half(examples):
    batch = batch_of(examples)
    big = {key: value.repeat(20, *[1] * (value.dim() - 1)) for key, value in batch.items()}
    out = mix_map_shapes(big, torch.Generator().manual_seed(0))
    assert BOX_MAP_KEY not in out
    is_box = [torch.equal(out["semantic_map"][i], big[BOX_MAP_KEY][i]) for i in range(len(out["semantic_map"]))]
    is_mask = [torch.equal(out["semantic_map"][i], big["semantic_map"][i]) for i in range(len(out["semantic_map"]))]
    assert all(a or b for a, b in zip(is_box, is_mask))
    differs = [b and not m for b, m in zip(is_box, is_mask)]
    assert 0.3 < np.mean(differs) / np.mean([not torch.equal(a, b) for a, b in zip(big[BOX_MAP_KEY], big["semantic_map"])]) < 0.7
    without = {key: value for key, value in batch.items() if key != BOX_MAP_KEY}
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(mix_map_shapes(without, generator)["semantic_map"], batch["semantic_map"])
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())  # no draw


def test_config_rejects_two_flips_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="random_flip and augment='dihedral' both flip"):
        DiffusionTrainingConfig(output_dir=str(tmp_path), random_flip=True, augment="dihedral")
    with pytest.raises(ValueError, match="augment must be one of"):
        DiffusionTrainingConfig(output_dir=str(tmp_path), augment="spin")
    with pytest.raises(ValueError, match=r"box_map_probability must be in \[0, 1\], got 1.5"):
        DiffusionTrainingConfig(output_dir=str(tmp_path), box_map_probability=1.5)


def test_a_dihedral_box_mixing_run_resumes_exactly(tmp_path):
    """The symmetries and shape choices come from the checkpointed generator, so a resume draws the same ones."""
    import json
    import shutil

    from test_train_diffusion import TINY_MODEL, assert_same_weights, run

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_MODEL))
    full, resumed, plain = tmp_path / "full", tmp_path / "resumed", tmp_path / "plain"
    steps = ("--max_train_steps", "4", "--checkpointing_steps", "3", "--augment", "dihedral")
    assert run(str(config), full, *steps) == 0
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    assert run(str(config), resumed, *steps, "--resume_from_checkpoint", "latest") == 0
    assert_same_weights(full / "unet", resumed / "unet")
    assert run(str(config), plain, "--max_train_steps", "4", "--checkpointing_steps", "0", "--map_shapes", "mask") == 0
    with pytest.raises(AssertionError):  # the augmentation really changed what was trained on
        assert_same_weights(full / "unet", plain / "unet")


def test_gan_trainers_take_the_same_augmentation(tmp_path):
    from test_train_gans import run, weights

    for name, extra in (("plain", ()), ("turned", ("--augment", "dihedral"))):
        assert run(tmp_path, "train_dermgan", tmp_path / name, "--max_train_steps", "1", *extra) == 0
    a, b = weights(tmp_path / "plain" / "dermgan"), weights(tmp_path / "turned" / "dermgan")
    assert any(not torch.equal(a[key], b[key]) for key in a)
    from dermdiff.loops.gan import GANTrainingConfig

    with pytest.raises(ValueError, match="augment must be one of"):
        GANTrainingConfig(output_dir=str(tmp_path), augment="spin")
