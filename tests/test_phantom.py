"""The procedural phantom: determinism, ground truth, ITA per skin type, balance controls, files, CLI, errors."""

import csv
import filecmp
import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2lab

from dermdiff.cli import main
from dermdiff.data.phantom import (
    PHANTOM_CONDITIONS,
    exact_counts,
    generate_phantom_sample,
    phantom_dataset,
    phantom_grid,
    plan_phantom,
    rare_class_weights,
    write_phantom,
)
from dermdiff.semantic_map import SemanticMap
from dermdiff.skin_tone import image_ita, ita_to_skin_type


def _bytes(image):
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _bbox(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)


# ------------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_bytes_different_seed_differs():
    first = generate_phantom_sample("melanoma", 4, size=48, seed=3, index=5)
    again = generate_phantom_sample("melanoma", 4, size=48, seed=3, index=5)
    assert _bytes(first.image) == _bytes(again.image)
    assert np.array_equal(first.mask, again.mask)
    assert _bytes(first.image) != _bytes(generate_phantom_sample("melanoma", 4, size=48, seed=4, index=5).image)
    assert _bytes(first.image) != _bytes(generate_phantom_sample("melanoma", 4, size=48, seed=3, index=6).image)


def test_written_folders_are_byte_identical(tmp_path):
    kwargs = dict(n=12, size=24, healthy_fraction=0.25, images_per_lesion=2)
    a, b, c = (str(tmp_path / name) for name in "abc")
    write_phantom(a, seed=7, **kwargs)
    write_phantom(b, seed=7, **kwargs)
    write_phantom(c, seed=8, **kwargs)
    compare = filecmp.dircmp(a, b)
    assert not compare.diff_files and not compare.left_only and not compare.right_only
    for sub in ("images", "masks", "maps", "healthy/images"):
        names = sorted(os.listdir(os.path.join(a, sub)))
        assert names
        _, mismatch, errors = filecmp.cmpfiles(os.path.join(a, sub), os.path.join(b, sub), names, shallow=False)
        assert not mismatch and not errors
    assert not filecmp.cmp(os.path.join(a, "metadata.csv"), os.path.join(c, "metadata.csv"), shallow=False)


# ----------------------------------------------------------------------------------------------- ground truth
@pytest.mark.parametrize("condition", PHANTOM_CONDITIONS)
@pytest.mark.parametrize("skin_type", [1, 4, 6])
def test_mask_is_exactly_the_drawn_lesion(condition, skin_type):
    sample = generate_phantom_sample(condition, skin_type, size=64, seed=11, index=2)
    healthy = generate_phantom_sample(None, skin_type, size=64, seed=11, index=2)
    lesion, skin = np.asarray(sample.image).astype(int), np.asarray(healthy.image).astype(int)
    mask = sample.mask
    assert mask.dtype == bool and mask.any() and (~mask).any()
    # Outside the mask nothing changed; inside, the lesion repainted the skin.
    assert np.array_equal(lesion[~mask], skin[~mask])
    assert np.abs(lesion[mask] - skin[mask]).sum(axis=-1).mean() > 12
    # Lesion pixels lie far from the skin colour, further than skin texture strays (CIELAB delta E).
    lab = rgb2lab(lesion / 255.0)
    skin_mean = lab[~mask].mean(axis=0)
    inside = np.linalg.norm(lab[mask] - skin_mean, axis=-1).mean()
    outside = np.linalg.norm(lab[~mask] - skin_mean, axis=-1).mean()
    assert inside > 2 * outside + 5, (inside, outside)
    # One 8-connected region, its box, and the semantic map that encodes it.
    assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1
    assert sample.box == _bbox(mask)
    assert sample.boxes == [list(sample.box)]
    decoded = SemanticMap.decode(Image.open(_png(sample.semantic_map.to_pil())), registry="phantom")
    assert decoded.condition == condition and decoded.skin_type == skin_type
    assert np.array_equal(decoded.lesion_mask, mask)
    assert decoded.boxes == [sample.box]
    assert sample.condition == condition and sample.skin_type == skin_type


def _png(image):
    import io

    return io.BytesIO(_bytes(image))


def test_healthy_sample_has_no_lesion():
    sample = generate_phantom_sample(None, "V", size=32, seed=0, index=0)
    assert sample.condition is None and sample.box is None and sample.boxes == [] and not sample.mask.any()
    assert sample.semantic_map.regions == [] and sample.semantic_map.skin_type == 5


@pytest.mark.parametrize("size", [16, 33, 256])
def test_every_class_at_extreme_sizes(size):
    for condition in PHANTOM_CONDITIONS:
        sample = generate_phantom_sample(condition, 3, size=size, seed=1, index=9)
        assert sample.image.size == (size, size) and sample.image.mode == "RGB"
        assert sample.mask.shape == (size, size) and sample.mask.any()


def test_lesion_classes_differ_in_size_and_colour():
    """Class identity shows in measurable features, so a small classifier can learn it."""
    stats = {}
    for condition in PHANTOM_CONDITIONS:
        areas, chroma = [], []
        for index in range(12):
            sample = generate_phantom_sample(condition, 2, size=64, seed=5, index=index)
            lab = rgb2lab(np.asarray(sample.image) / 255.0)
            areas.append(sample.mask.mean())
            chroma.append(lab[sample.mask][:, 1].mean())  # a*: redness
        stats[condition] = (np.median(areas), np.median(chroma))
    assert stats["dermatofibroma"][0] < stats["nevus"][0] < stats["melanoma"][0]
    assert stats["nevus"][0] < stats["psoriasis"][0]
    assert min(stats["vascular"][1], stats["psoriasis"][1]) > max(stats["nevus"][1], stats["dermatofibroma"][1]) + 5


def test_same_lesion_seen_again():
    first = generate_phantom_sample("psoriasis", 2, size=48, seed=2, index=10, lesion_index=10)
    second = generate_phantom_sample("psoriasis", 2, size=48, seed=2, index=11, lesion_index=10)
    other = generate_phantom_sample("psoriasis", 2, size=48, seed=2, index=11)
    assert not np.array_equal(first.mask, second.mask)  # new view
    assert abs(int(first.mask.sum()) - int(second.mask.sum())) < 0.35 * first.mask.sum()  # same lesion, +-10 % scale
    assert _bytes(second.image) != _bytes(other.image)


# --------------------------------------------------------------------------------------------- skin tone (ITA)
def test_skin_ita_falls_in_the_band_of_each_type_and_is_monotone():
    medians = []
    for skin_type in range(1, 7):
        itas = []
        for index, condition in enumerate(PHANTOM_CONDITIONS * 2):
            sample = generate_phantom_sample(condition, skin_type, size=64, seed=21, index=index)
            itas.append(image_ita(sample.image, lesion_mask=sample.mask))
        assert all(ita_to_skin_type(ita) == skin_type for ita in itas), (skin_type, itas)
        medians.append(np.median(itas))
    assert all(a > b for a, b in zip(medians, medians[1:])), medians


# ---------------------------------------------------------------------------------------------- balance controls
def test_exact_counts():
    assert exact_counts(10, np.array([0.5, 0.25, 0.25])).tolist() == [5, 3, 2]  # tie: first class first
    assert exact_counts(7, np.full(3, 1 / 3)).tolist() == [3, 2, 2]
    assert exact_counts(100, np.array([0.05, 0.05, 0.9])).tolist() == [5, 5, 90]


def test_rare_classes_and_skin_types_and_healthy():
    weights = rare_class_weights(["melanoma", "VASCULAR"], 0.05)
    assert weights["melanoma"] == weights["vascular"] == 0.05 and weights["nevus"] == pytest.approx(0.3)
    types_5_6 = {5: 1, "VI": 1}
    records = plan_phantom(400, seed=1, class_weights=weights, skin_type_weights=types_5_6, healthy_fraction=0.25)
    lesions = [r for r in records if r.condition is not None]
    assert len(records) == 400 and len(lesions) == 300
    counts = {name: sum(r.condition == name for r in lesions) for name in PHANTOM_CONDITIONS}
    assert counts == {"nevus": 90, "melanoma": 15, "psoriasis": 90, "dermatofibroma": 90, "vascular": 15}
    types = [r.skin_type for r in records]
    assert set(types) == {5, 6} and types.count(5) == types.count(6) == 200
    assert [r.index for r in records] == list(range(400))
    assert plan_phantom(400, seed=1, class_weights=weights) != plan_phantom(400, seed=2, class_weights=weights)
    by_weights = plan_phantom(50, class_weights=[1, 0, 0, 0, 1], skin_type_weights=[0, 0, 1, 0, 0, 0])
    assert {r.condition for r in by_weights} == {"nevus", "vascular"} and {r.skin_type for r in by_weights} == {3}


def test_images_per_lesion_groups():
    records = plan_phantom(31, seed=0, images_per_lesion=3)
    groups = {}
    for record in records:
        groups.setdefault(record.lesion_index, []).append(record)
    assert sorted(len(g) for g in groups.values()) == [1] + [3] * 10
    for lesion_index, group in groups.items():
        assert group[0].index == lesion_index
        assert len({(r.condition, r.skin_type) for r in group}) == 1


# ------------------------------------------------------------------------------------------------ files and memory
def test_write_phantom_layout(tmp_path):
    out = write_phantom(str(tmp_path / "p"), n=20, size=32, seed=0, healthy_fraction=0.1, images_per_lesion=2)
    with open(os.path.join(out, "metadata.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "file_name", "label", "skin_type", "boxes", "mask_file", "map_file", "lesion_id", "patient_id"
    ]
    assert len(rows) == 18
    for row in rows:
        mask = np.asarray(Image.open(os.path.join(out, row["mask_file"]))) == 255
        smap = SemanticMap.decode(Image.open(os.path.join(out, row["map_file"])), registry="phantom")
        assert Image.open(os.path.join(out, row["file_name"])).size == (32, 32)
        assert smap.condition == row["label"] and smap.skin_type == int(row["skin_type"])
        assert np.array_equal(smap.lesion_mask, mask)
        assert json.loads(row["boxes"]) == [list(_bbox(mask))]
    assert len({row["lesion_id"] for row in rows}) == 9
    with open(os.path.join(out, "healthy", "metadata.csv"), newline="") as handle:
        healthy = list(csv.DictReader(handle))
    assert len(healthy) == 2 and all(row["label"] == "" and row["mask_file"] == "" for row in healthy)
    info = _json(os.path.join(out, "dataset_info.json"))
    assert info["registry"]["conditions"] == list(PHANTOM_CONDITIONS)
    assert info["counts"]["images"] == 18 and info["counts"]["healthy"] == 2 and info["seed"] == 0
    assert sum(info["counts"]["conditions"].values()) == 18
    with pytest.raises(FileExistsError, match="already holds .*pass overwrite=True"):
        write_phantom(out, n=4, size=32)
    write_phantom(out, n=4, size=32, overwrite=True)
    assert len(os.listdir(os.path.join(out, "images"))) == 4 and not os.path.exists(os.path.join(out, "healthy"))


def test_written_folder_loads_with_the_data_layer(tmp_path):
    from dermdiff.data.folder import load_dataset_dir
    from dermdiff.data.info import registry_of

    out = write_phantom(str(tmp_path / "p"), n=10, size=16, seed=3, healthy_fraction=0.3)
    dataset = load_dataset_dir(out)
    assert len(dataset) == 7 and registry_of(dataset).names == list(PHANTOM_CONDITIONS)
    assert dataset[0]["label_name"] in PHANTOM_CONDITIONS and dataset[0]["lesion_id"].startswith("L")
    healthy = load_dataset_dir(os.path.join(out, "healthy"))
    assert len(healthy) == 3 and set(healthy["label"]) == {-1}
    assert registry_of(healthy).names == list(PHANTOM_CONDITIONS)
    assert all(SemanticMap.decode(row["semantic_map"], "phantom").regions == [] for row in healthy)


def test_phantom_dataset_in_memory_matches_files(tmp_path):
    dataset = phantom_dataset(n=10, size=16, seed=3, healthy_fraction=0.2)
    assert len(dataset) == 10
    assert set(dataset.column_names) >= {"image", "label", "label_name", "skin_type", "boxes", "mask", "semantic_map",
                                         "lesion_id", "patient_id"}
    assert dataset.features["label"].names == list(PHANTOM_CONDITIONS)
    healthy = [row for row in dataset if row["label"] == -1]
    assert len(healthy) == 2 and all(row["mask"] is None and row["boxes"] == [] for row in healthy)
    out = write_phantom(str(tmp_path / "p"), n=10, size=16, seed=3, healthy_fraction=0.2)
    for row in dataset:
        root = out if row["label"] >= 0 else os.path.join(out, "healthy")
        on_disk = np.asarray(Image.open(os.path.join(root, "images", row["image_id"] + ".png")))
        assert np.array_equal(np.asarray(row["image"]), on_disk)
        smap = SemanticMap.decode(row["semantic_map"], registry="phantom")
        assert smap.skin_type == row["skin_type"] and smap.condition == row["label_name"]
        if row["label"] >= 0:
            assert np.array_equal(np.asarray(row["mask"]) > 0, smap.lesion_mask)


# --------------------------------------------------------------------------------------------------------- CLI
def test_cli_writes_folder_and_grid(tmp_path, capsys):
    out, grid = str(tmp_path / "ph"), str(tmp_path / "figs" / "grid.png")
    argv = ["phantom", "--out", out, "--n", "12", "--size", "16", "--seed", "2", "--rare", "melanoma",
            "--rare-fraction", "0.1", "--skin-types", "1,6", "--healthy-fraction", "0.25", "--grid", grid, "--quiet"]
    assert main(argv) == 0
    info = _json(os.path.join(out, "dataset_info.json"))
    assert info["counts"]["images"] == 9 and info["counts"]["healthy"] == 3
    assert set(info["counts"]["skin_types"]) == {"1", "2", "3", "4", "5", "6"}
    assert info["counts"]["skin_types"]["3"] == 0 and info["skin_type_weights"][0] == 0.5
    # 6 conditions (5 + healthy) x (image row + map row), 2 skin-type columns
    assert Image.open(grid).size == (2 * 16, 12 * 16)
    assert main(argv) == 2  # exists, no --overwrite
    assert "overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rare", "eczema"], "eczema"),
        (["--size", "8"], "16..256"),
        (["--n", "0"], ">= 1"),
        (["--skin-types", "1,7"], "1..6"),
        (["--healthy-fraction", "1.5"], "--healthy-fraction"),
    ],
)
def test_cli_bad_input_is_one_clear_line(tmp_path, capsys, extra, message):
    assert main(["phantom", "--out", str(tmp_path / "x"), "--n", "4", "--size", "16", "--quiet"] + extra) == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(condition="eczema"), "eczema"),
        (dict(condition=9), "1..5"),
        (dict(skin_type=0), "1..6"),
        (dict(size=15), "16..256"),
        (dict(size=257), "16..256"),
        (dict(size=32.0), "int"),
        (dict(seed=-1), "seed"),
    ],
)
def test_sample_bad_input(kwargs, message):
    arguments = dict(condition="nevus", skin_type=2, size=32, seed=0)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate_phantom_sample(**arguments)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0), ">= 1"),
        (dict(n=2.5), ">= 1"),
        (dict(class_weights={"eczema": 1}), "eczema"),
        (dict(class_weights=[1, 2]), "5 weights"),
        (dict(class_weights=[0, 0, 0, 0, 0]), "not all zero"),
        (dict(class_weights={"nevus": -1, "melanoma": 2}), "non-negative"),
        (dict(skin_type_weights={7: 1}), "1..6"),
        (dict(healthy_fraction=-0.1), "healthy_fraction"),
        (dict(images_per_lesion=0), "images_per_lesion"),
    ],
)
def test_plan_bad_input(kwargs, message):
    arguments = dict(n=10)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        plan_phantom(**arguments)


def test_write_bad_size_fails_before_writing(tmp_path):
    with pytest.raises(ValueError, match="16..256"):
        write_phantom(str(tmp_path / "never"), n=4, size=300)
    with pytest.raises(ValueError, match=">= 1"):
        phantom_dataset(n=0)
    assert not os.path.exists(tmp_path / "never")


def test_rare_fraction_bad_input():
    with pytest.raises(ValueError, match="unknown condition"):
        rare_class_weights(["eczema"])
    with pytest.raises(ValueError, match="rare fraction"):
        rare_class_weights(["melanoma", "vascular"], 0.5)
    with pytest.raises(ValueError, match="skin type"):
        phantom_grid(size=16, skin_types=[7])
