"""The data layer: every layout loads into the same schema, bad rows are named, splits keep lesions
together, crops keep the lesion and the map aligned, skin patches respect the lesion fraction."""

import itertools
import json
import os
import warnings
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from dermdiff import SemanticMap, get_registry
from dermdiff.data import (
    detect_layout,
    example_to_tensors,
    load_any,
    load_dataset_dir,
    load_dermamnist,
    load_ham10000,
    load_pad_ufes20,
    make_splits,
    model_transform,
    registry_of,
    roi_crop,
    roi_crop_box,
    roi_crop_dataset,
    skin_patch_boxes,
    skin_patch_dataset,
    skin_patches,
)
from dermdiff.data.preprocess import roi_groups

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
SHARED = os.environ.get("DERMDIFF_TEST_DATA", SHARED if os.path.isdir(SHARED) else "/work/shared/data")
HAM = get_registry("ham10000")


# ----------------------------------------------------------------------------------------------------------------
# tiny layouts written with PIL
# ----------------------------------------------------------------------------------------------------------------
def _picture(seed, height=24, width=32):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _mask(height=24, width=32, box=(6, 4, 20, 14)):
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[box[1] : box[3], box[0] : box[2]] = 255
    return mask


def write_folder(root, rows, info=None):
    """rows: dicts of metadata columns; `file_name` images and `mask_file` masks are drawn here."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    for index, row in enumerate(rows):
        if row.get("file_name", "").startswith("images/") and not row.get("no_image"):
            _picture(index).save(os.path.join(root, row["file_name"]))
        if row.get("mask_file") and not row.get("no_mask"):
            Image.fromarray(_mask()).save(os.path.join(root, row["mask_file"]))
    columns = [c for c in ("file_name", "label", "skin_type", "boxes", "mask_file", "lesion_id", "split") if any(c in r for r in rows)]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join(json.dumps(str(row.get(c, ""))) if c == "boxes" else str(row.get(c, "")) for c in columns))
    with open(os.path.join(root, "metadata.csv"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    if info is not None:
        with open(os.path.join(root, "dataset_info.json"), "w") as handle:
            json.dump(info, handle)
    return str(root)


def good_rows():
    return [
        {"file_name": "images/a.png", "label": "mel", "skin_type": "3", "mask_file": "masks/a.png", "lesion_id": "L1"},
        {"file_name": "images/b.png", "label": "nv", "skin_type": "", "boxes": "[[2, 2, 10, 12]]", "lesion_id": "L1"},
        {"file_name": "images/c.png", "label": "nv", "skin_type": "VI", "lesion_id": "L2"},
    ]


def write_ham(root, masks="npz", n=12, part_folders=False):
    os.makedirs(root, exist_ok=True)
    ids = [f"ISIC_{i:07d}" for i in range(n)]
    dx = [HAM.names[i % 7] for i in range(n)]
    for index, image_id in enumerate(ids):
        folder = os.path.join(root, f"HAM10000_images_part_{1 + index % 2}" if part_folders else "images")
        os.makedirs(folder, exist_ok=True)
        _picture(index).save(os.path.join(folder, f"{image_id}.jpg"), quality=95)
    lines = ["lesion_id,image_id,dx,dx_type,bbox_x0,bbox_y0,bbox_x1,bbox_y1"]
    lines += [f"HAM_{i // 2:07d},{ids[i]},{dx[i]},histo,6,4,20,14" for i in range(n)]
    with open(os.path.join(root, "HAM10000_metadata.csv" if part_folders else "metadata.csv"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    if masks == "npz":
        np.savez_compressed(os.path.join(root, "masks.npz"), image_ids=np.array(ids), masks=np.stack([_mask() // 255] * n))
    elif masks == "isic":  # published at 2x the image resolution, as ISIC masks beside downscaled images
        folder = os.path.join(root, "HAM10000_segmentations_lesion_tschandl")
        os.makedirs(folder)
        for image_id in ids[:-1]:  # the last image has no mask: falls back to its box
            big = _mask(48, 64, (12, 8, 40, 28))
            Image.fromarray(big).save(os.path.join(folder, f"{image_id}_segmentation.png"))
    return str(root), ids


def write_pad(root, n=8):
    os.makedirs(os.path.join(root, "images"))
    lines = ["patient_id,lesion_id,fitspatrick,diagnostic,label,img_id,file"]
    for i in range(n):
        name = f"PAT_{i // 2}_{i % 3}_{i}"
        _picture(i, 30, 30).save(os.path.join(root, "images", f"{name}.webp"), lossless=True)
        fitz = "" if i % 4 == 0 else f"{1 + i % 6}.0"
        lines.append(f"PAT_{i // 2},{i % 3},{fitz},{['ACK', 'BCC', 'MEL', 'NEV'][i % 4]},{i % 4},{name}.png,images/{name}.webp")
    with open(os.path.join(root, "metadata.csv"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return str(root)


def write_dermamnist(path, n=10):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", n), ("val", n // 2)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 7).astype(np.uint8)[:, None]
    np.savez_compressed(path, **arrays)
    return str(path), arrays


def _decoded(row, registry):
    return SemanticMap.decode(row["semantic_map"], registry)


# ----------------------------------------------------------------------------------------------------------------
# image folder + metadata.csv
# ----------------------------------------------------------------------------------------------------------------
def test_folder_schema_and_fallbacks(tmp_path):
    dataset = load_dataset_dir(write_folder(tmp_path / "set", good_rows()))
    registry = registry_of(dataset)
    assert registry.names == ["mel", "nv"]  # sorted label names
    assert dataset.features["label"].names == ["mel", "nv"]
    assert dataset["label"] == [0, 1, 1] and dataset["label_name"] == ["mel", "nv", "nv"]
    assert dataset["skin_type"] == [3, None, 6]
    assert dataset["lesion_id"] == ["L1", "L1", "L2"] and "patient_id" not in dataset.column_names
    masked, boxed, whole = dataset[0], dataset[1], dataset[2]
    assert masked["image"].mode == "RGB" and masked["image"].size == (32, 24)
    # mask -> the map is the mask; box -> the box; nothing -> the whole image
    assert np.array_equal(_decoded(masked, registry).lesion_mask, np.asarray(masked["mask"]) > 0)
    assert masked["boxes"] == [[6, 4, 20, 14]]
    assert boxed["mask"] is None and _decoded(boxed, registry).boxes == [(2, 2, 10, 12)]
    assert whole["boxes"] == [[0, 0, 32, 24]] and _decoded(whole, registry).lesion_mask.all()
    assert _decoded(masked, registry).skin_type == 3 and _decoded(boxed, registry).skin_type is None


def test_folder_registry_sources_and_persistence(tmp_path):
    info = {"registry": {"name": "mine", "conditions": ["nv", "mel", "bcc"]}}
    root = write_folder(tmp_path / "set", good_rows(), info=info)
    dataset = load_dataset_dir(root)
    assert registry_of(dataset).names == ["nv", "mel", "bcc"] and dataset["label"] == [1, 0, 0]
    assert registry_of(load_dataset_dir(root, registry="ham10000")).names == HAM.names  # the argument wins
    # the registry survives map / select / train_test_split / save_to_disk
    touched = dataset.map(lambda row: row).select([0, 2])
    assert registry_of(touched).names == ["nv", "mel", "bcc"]
    assert registry_of(dataset.train_test_split(test_size=1, seed=0)).names == ["nv", "mel", "bcc"]
    dataset.save_to_disk(str(tmp_path / "saved"))
    assert registry_of(datasets.load_from_disk(str(tmp_path / "saved"))).names == ["nv", "mel", "bcc"]
    no_masks = load_dataset_dir(root, with_masks=False, size=(12, 16))
    assert no_masks["mask"] == [None] * 3 and no_masks[0]["image"].size == (16, 12)
    assert no_masks[0]["boxes"] == [[0, 0, 16, 12]]


def test_empty_label_is_healthy_skin(tmp_path):
    rows = [{"file_name": "images/a.png", "label": "", "skin_type": "2"}, {"file_name": "images/b.png", "label": "nv"}]
    dataset = load_dataset_dir(write_folder(tmp_path / "set", rows))
    assert dataset["label"] == [-1, 0] and dataset[0]["label_name"] is None and dataset[0]["boxes"] == []
    healthy = _decoded(dataset[0], registry_of(dataset))
    assert healthy.regions == [] and healthy.skin_type == 2


def test_map_file_wins_and_must_agree_with_the_label(tmp_path):
    rows = [{"file_name": "images/a.png", "label": "mel", "skin_type": ""}]
    root = write_folder(tmp_path / "set", rows)
    smap = SemanticMap.from_annotations("mel", 5, boxes=[(1, 1, 5, 5), (20, 10, 30, 20)], size=(24, 32))
    os.makedirs(os.path.join(root, "maps"))
    smap.to_pil().save(os.path.join(root, "maps", "a.png"))
    table = open(os.path.join(root, "metadata.csv")).read().splitlines()
    with open(os.path.join(root, "metadata.csv"), "w") as handle:
        handle.write(f"{table[0]},map_file\n{table[1]},maps/a.png\n")
    row = load_dataset_dir(root, registry="ham10000")[0]
    assert row["skin_type"] == 5 and row["boxes"] == [[1, 1, 5, 5], [20, 10, 30, 20]]
    assert _decoded(row, HAM) == smap
    with open(os.path.join(root, "metadata.csv"), "w") as handle:
        handle.write(f"{table[0]},map_file\n{table[1].replace('mel', '')},maps/a.png\n")
    with pytest.raises(ValueError, match=r"line 2 .*label '' contradicts the semantic map .*regions of \['mel'\]"):
        load_dataset_dir(root, registry="ham10000")


# ----------------------------------------------------------------------------------------------------------------
# bad input: one clear error naming the file, the row and the allowed values; or skip_bad
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, expected",
    [
        ({"no_image": True}, r"line 2 \(file_name='images/a.png'\).*does not exist"),
        ({"corrupt": True}, r"line 2 .*cannot read image"),
        ({"label": "wart"}, r"line 2 .*unknown condition 'wart'.*allowed: 1=akiec"),
        ({"skin_type": "7"}, r"line 2 .*skin type '7'.*allowed: 1..6"),
        ({"boxes": "[[0, 0, 99, 5]]"}, r"line 2 .*box \(0, 0, 99, 5\) lies outside.*allowed"),
        ({"boxes": "not json"}, r"line 2 .*boxes 'not json' is not JSON"),
        ({"mask_file": "masks/missing.png", "no_mask": True}, r"line 2 .*mask file .*missing.png.* does not exist"),
    ],
)
def test_bad_rows_are_named(tmp_path, change, expected):
    rows = good_rows()
    rows[0] = {**rows[0], **{k: v for k, v in change.items() if k != "corrupt"}}
    root = write_folder(tmp_path / "set", rows)
    if change.get("corrupt"):
        with open(os.path.join(root, "images", "a.png"), "r+b") as handle:
            handle.truncate(60)
    with pytest.raises(ValueError, match=expected):
        load_dataset_dir(root, registry="ham10000")


def test_skip_bad_warns_with_count_and_rows(tmp_path):
    rows = good_rows() + [
        {"file_name": "images/d.png", "label": "wart"},
        {"file_name": "images/e.png", "label": "nv", "skin_type": "0"},
        {"file_name": "images/missing.png", "label": "nv", "no_image": True},
    ]
    root = write_folder(tmp_path / "set", rows)
    with pytest.warns(UserWarning, match=r"skipped 3 of 6 rows") as caught:
        dataset = load_dataset_dir(root, registry="ham10000", skip_bad=True)
    message = str(caught[0].message)
    assert "line 5" in message and "line 6" in message and "line 7" in message and "missing.png" in message
    assert len(dataset) == 3
    with pytest.raises(ValueError, match="no usable rows"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_dataset_dir(write_folder(tmp_path / "bad", rows[3:]), registry="ham10000", skip_bad=True)


def test_missing_metadata_and_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        load_dataset_dir(str(tmp_path))
    (tmp_path / "metadata.csv").write_text("name,label\na.png,nv\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['file_name'\]"):
        load_dataset_dir(str(tmp_path))
    with pytest.raises(ValueError, match="limit must be a positive"):
        load_dataset_dir(write_folder(tmp_path / "set", good_rows()), limit=0)


# ----------------------------------------------------------------------------------------------------------------
# HAM10000, DermaMNIST, PAD-UFES-20 and load_any
# ----------------------------------------------------------------------------------------------------------------
def test_ham10000_with_masks_npz(tmp_path):
    root, ids = write_ham(tmp_path / "ham", masks="npz")
    dataset = load_ham10000(root)
    assert registry_of(dataset).names == HAM.names and dataset["image_id"] == ids
    assert dataset["label_name"][:7] == HAM.names and dataset["label"][:7] == list(range(7))
    assert dataset["skin_type"] == [None] * len(ids) and dataset["lesion_id"][:3] == ["HAM_0000000"] * 2 + ["HAM_0000001"]
    row = dataset[3]
    assert row["boxes"] == [[6, 4, 20, 14]]
    assert np.array_equal(_decoded(row, HAM).lesion_mask, np.asarray(row["mask"]) > 0)
    assert load_ham10000(root, masks=False)[0]["mask"] is None
    assert len(load_ham10000(root, limit=5)) == 5


def test_ham10000_with_isic_mask_folder_and_part_folders(tmp_path):
    root, ids = write_ham(tmp_path / "ham", masks="isic", part_folders=True)
    dataset = load_ham10000(root)
    assert len(dataset) == len(ids)
    reduced = np.asarray(dataset[0]["mask"]) > 0  # 64x48 mask reduced by majority to the 32x24 image
    assert reduced.shape == (24, 32) and np.array_equal(reduced, _mask() > 0)
    last = dataset[-1]  # no mask file: the map falls back to the metadata box
    assert last["mask"] is None and _decoded(last, HAM).boxes == [(6, 4, 20, 14)]
    assert detect_layout(root) == ("ham10000", root)


def test_dermamnist_npz(tmp_path):
    path, arrays = write_dermamnist(tmp_path / "dermamnist.npz")
    train = load_dermamnist(path)
    assert len(train) == 10 and train["label"] == arrays["train_labels"][:, 0].tolist()
    assert np.array_equal(np.asarray(train[4]["image"]), arrays["train_images"][4])
    assert train[0]["boxes"] == [[0, 0, 28, 28]] and train[0]["skin_type"] is None
    both = load_dermamnist(path, split="all", limit=3)
    assert both["split"] == ["train"] * 3 + ["val"] * 3 and both["image_id"][3] == "val_00000"
    with pytest.raises(ValueError, match=r"split 'test' is not in .*available: \['train', 'val', 'all'\]"):
        load_dermamnist(path, split="test")
    assert detect_layout(str(tmp_path)) == ("dermamnist", path)


def test_pad_ufes20(tmp_path):
    root = write_pad(tmp_path / "pad")
    dataset = load_pad_ufes20(root)
    assert registry_of(dataset).registry_name == "pad_ufes20"
    assert dataset["skin_type"] == [None, 2, 3, 4, None, 6, 1, 2]
    assert dataset["patient_id"][:3] == ["PAT_0", "PAT_0", "PAT_1"] and dataset["lesion_id"][1] == "PAT_0/1"
    assert dataset["label_name"][:4] == ["ACK", "BCC", "MEL", "NEV"] and dataset[0]["boxes"] == [[0, 0, 30, 30]]


def test_load_any_recognises_every_layout(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "folder", good_rows())
    ham, _ = write_ham(tmp_path / "ham10000")
    pad = write_pad(tmp_path / "pad_ufes20")
    npz, _ = write_dermamnist(tmp_path / "dm.npz")
    assert [registry_of(load_any(p, limit=2)).registry_name for p in (folder, ham, pad, npz)] == [
        "folder", "ham10000", "pad_ufes20", "ham10000"
    ]
    assert len(load_any("ham10000", data_root=str(tmp_path), limit=2)) == 2
    monkeypatch.setenv("DERMDIFF_DATA", str(tmp_path))
    assert registry_of(load_any("pad_ufes20")).registry_name == "pad_ufes20"
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="cannot tell the layout"):
        load_any(str(tmp_path / "other"))
    with pytest.raises(FileNotFoundError, match="neither an existing path nor a known name"):
        load_any("no_such_set")


# ----------------------------------------------------------------------------------------------------------------
# the real sets in shared/data (skipped where absent; a few rows only)
# ----------------------------------------------------------------------------------------------------------------
def _shared(name):
    path = os.path.join(SHARED, name)
    if not os.path.isdir(path):
        pytest.skip(f"{path} not present")
    return path


def test_real_ham10000_loads():
    dataset = load_any(_shared("ham10000"), limit=20)
    row = dataset[0]
    assert row["image"].size == (200, 150) and row["mask"].size == (200, 150)
    smap = _decoded(row, HAM)
    assert np.array_equal(smap.lesion_mask, np.asarray(row["mask"]) > 0) and smap.condition == row["label_name"]
    x0, y0, x1, y1 = row["boxes"][0]  # the published box is the mask's box
    assert smap.boxes == [(x0, y0, x1, y1)]


def test_real_dermamnist_loads():
    path = _shared("dermamnist")
    dataset = load_any(path, split="val", limit=50)
    assert len(dataset) == 50 and dataset[0]["image"].size == (28, 28) and set(dataset["label"]) <= set(range(7))


def test_real_pad_ufes20_loads():
    dataset = load_any(_shared("pad_ufes20"), limit=40)
    assert dataset[0]["image"].size == (300, 300) and None in dataset["skin_type"]
    assert {t for t in dataset["skin_type"] if t is not None} <= set(range(1, 7))


# ----------------------------------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------------------------------
def _grouped_dataset(n_groups=(30, 12, 3, 1), per_group=(1, 3)):
    """Labels with many, few and single groups; groups of 1..3 images."""
    rng = np.random.default_rng(5)
    labels, lesions = [], []
    for label, count in enumerate(n_groups):
        for group in range(count):
            size = int(rng.integers(per_group[0], per_group[1] + 1))
            labels += [label] * size
            lesions += [f"L{label}_{group}"] * size
    features = datasets.Features({"label": datasets.ClassLabel(names=["a", "b", "c", "d"]), "lesion_id": datasets.Value("string")})
    return datasets.Dataset.from_dict({"label": labels, "lesion_id": lesions}, features=features)


def test_splits_are_grouped_stratified_and_deterministic():
    dataset = _grouped_dataset()
    parts = make_splits(dataset, seed=3)
    assert list(parts) == ["train", "validation", "mining", "test"]
    assert sum(len(part) for part in parts.values()) == len(dataset)
    groups = {name: set(part["lesion_id"]) for name, part in parts.items()}
    assert all(not (groups[a] & groups[b]) for a, b in itertools.combinations(groups, 2))
    again = make_splits(dataset, seed=3)
    assert all(parts[name]["lesion_id"] == again[name]["lesion_id"] for name in parts)
    assert make_splits(dataset, seed=4)["test"]["lesion_id"] != parts["test"]["lesion_id"]
    # stratified: the common class is spread close to the fractions; rare classes land in train first
    common = Counter(label for part in parts.values() for label in part["label"])[0]
    for name, fraction in (("train", 0.6), ("validation", 0.1), ("mining", 0.15), ("test", 0.15)):
        assert abs(parts[name]["label"].count(0) - fraction * common) <= 3
    assert 3 in parts["train"]["label"] and 2 in parts["train"]["label"]


def test_splits_options():
    dataset = _grouped_dataset()
    two = make_splits(dataset, fractions={"train": 0.8, "test": 0.2})
    assert list(two) == ["train", "test"]
    with pytest.raises(ValueError, match="must sum to 1"):
        make_splits(dataset, fractions={"train": 0.8, "test": 0.1})
    with pytest.raises(ValueError, match="group_by='patient_id' is not a column"):
        make_splits(dataset, group_by="patient_id")
    given = dataset.add_column("split", ["train" if i % 3 else "test" for i in range(len(dataset))])
    with pytest.warns(UserWarning, match="groups in several splits"):
        parts = make_splits(given)
    assert list(parts) == ["test", "train"] and len(parts["test"]) == (len(dataset) + 2) // 3


def test_real_ham10000_splits_keep_lesions_apart():
    dataset = load_ham10000(_shared("ham10000"), masks=False, limit=600)
    parts = make_splits(dataset, seed=0)
    lesions = {name: set(part["lesion_id"]) for name, part in parts.items()}
    assert all(not (lesions[a] & lesions[b]) for a, b in itertools.combinations(lesions, 2))
    assert sum(len(p) for p in parts.values()) == 600


# ----------------------------------------------------------------------------------------------------------------
# DermGAN ROI crop and Furger skin patches
# ----------------------------------------------------------------------------------------------------------------
def _scene(size=(60, 80)):
    """An image with two adjacent lesions and a distant third, its map and its mask."""
    height, width = size
    mask = np.zeros(size, dtype=bool)
    for x0, y0, x1, y1 in ((5, 5, 15, 15), (17, 6, 25, 14), (60, 40, 72, 52)):
        mask[y0:y1, x0:x1] = True
    image = np.random.default_rng(1).integers(0, 100, (height, width, 3), dtype=np.uint8)
    image[mask] = 250  # the lesion is visible in the pixels
    smap = SemanticMap.from_annotations("mel", 4, boxes=[(5, 5, 15, 15), (17, 6, 25, 14), (60, 40, 72, 52)], size=size)
    return Image.fromarray(image), smap, mask


def test_roi_groups_join_adjacent_boxes():
    groups = roi_groups([(5, 5, 15, 15), (17, 6, 25, 14), (60, 40, 72, 52)], distance=3)
    assert sorted(map(sorted, groups)) == [[0, 1], [2]]


@pytest.mark.parametrize("seed", range(6))
def test_roi_crop_keeps_a_lesion_group_and_the_map_aligned(seed):
    image, smap, mask = _scene()
    crop = roi_crop(image, smap, mask, seed=seed, merge_distance=0.05)
    x0, y0, x1, y1 = crop.box
    assert x1 - x0 == y1 - y0 <= 60
    inside = [(bx0 >= x0 and by0 >= y0 and bx1 <= x1 and by1 <= y1) for bx0, by0, bx1, by1 in smap.boxes]
    assert inside[:2] == [True, True] or inside[2]  # a whole group is inside the window
    assert np.array_equal(crop.semantic_map.lesion_mask, crop.mask)
    assert np.array_equal(np.asarray(crop.image)[..., 0] == 250, crop.mask)  # pixels, mask and map agree
    assert crop.semantic_map.skin_type == 4
    same = roi_crop(image, smap, mask, seed=seed, merge_distance=0.05)
    assert same.box == crop.box
    resized = roi_crop(image, smap, mask, seed=seed, output_size=16)
    assert resized.image.size == (16, 16) and resized.semantic_map.size == (16, 16) and resized.mask.shape == (16, 16)


def test_roi_crop_box_validation_and_healthy():
    x0, y0, x1, y1 = roi_crop_box([], (20, 30), seed=0)  # healthy skin: a square of the shorter side
    assert (x1 - x0, y0, y1) == (20, 0, 20) and 0 <= x0 <= 10
    with pytest.raises(ValueError, match="context must satisfy"):
        roi_crop_box([(0, 0, 4, 4)], (20, 20), context=(0.5, 1.0))


def test_skin_patches_respect_lesion_fraction_and_skin():
    _, _, mask = _scene()
    found = skin_patch_boxes(mask, patch_size=16, lesion_fraction=(0.1, 0.8), stride=4)
    assert found
    for (x0, y0, x1, y1), fraction in found:
        assert mask[y0:y1, x0:x1].mean() == pytest.approx(fraction) and 0.1 <= fraction <= 0.8
    healthy = skin_patch_boxes(mask, patch_size=16, lesion_fraction=(0.0, 0.0), stride=4)
    assert healthy and all(not mask[y0:y1, x0:x1].any() for (x0, y0, x1, y1), _ in healthy)
    skin = np.ones_like(mask)
    skin[:, 40:] = False  # background on the right: no patch may touch it
    on_skin = skin_patch_boxes(mask, patch_size=16, lesion_fraction=(0.0, 1.0), skin_mask=skin, stride=4)
    assert on_skin and all(x1 <= 40 for (_, _, x1, _), _ in on_skin)
    drawn = skin_patch_boxes(mask, 16, (0.1, 0.8), stride=4, max_patches=3, seed=7)
    assert len(drawn) == 3 and drawn == skin_patch_boxes(mask, 16, (0.1, 0.8), stride=4, max_patches=3, seed=7)
    assert skin_patch_boxes(mask, patch_size=100) == []
    with pytest.raises(ValueError, match="lesion_fraction must satisfy"):
        skin_patch_boxes(mask, 16, (0.9, 0.1))


def test_skin_patches_cut_image_map_and_mask_together():
    image, smap, mask = _scene()
    for crop in skin_patches(image, smap, mask, patch_size=16, stride=4, max_patches=4, seed=0):
        assert crop.image.size == (16, 16)
        assert np.array_equal(crop.semantic_map.lesion_mask, crop.mask)
        assert 0.1 <= crop.mask.mean() <= 0.8


def test_crop_and_patch_datasets(tmp_path):
    root, _ = write_ham(tmp_path / "ham", n=4)
    dataset = load_ham10000(root)
    crops = roi_crop_dataset(dataset, output_size=16, crops_per_image=2, seed=0)
    assert len(crops) == 8 and crops[0]["image"].size == (16, 16) and registry_of(crops).names == HAM.names
    assert crops["crop_box"] == roi_crop_dataset(dataset, output_size=16, crops_per_image=2, seed=0)["crop_box"]
    for row in crops:
        assert np.array_equal(_decoded(row, HAM).lesion_mask, np.asarray(row["mask"]) > 0)
    patches = skin_patch_dataset(dataset, patch_size=12, lesion_fraction=(0.2, 0.7), max_patches=3, stride=2, seed=0)
    assert len(patches) == 12 and all(0.2 <= f <= 0.7 + 1e-6 for f in patches["lesion_fraction"])
    assert patches[0]["image"].size == (12, 12) and patches[0]["image_id"].endswith("_patch0")


# ----------------------------------------------------------------------------------------------------------------
# model tensors
# ----------------------------------------------------------------------------------------------------------------
def test_model_tensors(tmp_path):
    dataset = load_dataset_dir(write_folder(tmp_path / "set", good_rows()), registry="ham10000")
    tensors = example_to_tensors(dataset[0], 16, "ham10000")
    assert tensors["pixel_values"].shape == (3, 16, 16) and tensors["semantic_map"].shape == (8, 16, 16)
    assert tensors["pixel_values"].min() >= -1 and tensors["pixel_values"].max() <= 1
    assert tensors["semantic_map"][0].unique().tolist() == [0.5]  # skin type 3 / 6
    assert set(tensors["semantic_map"][1:].unique().tolist()) == {0.0, 1.0} and tensors["label"] == 4
    batch = dataset.with_transform(model_transform((12, 20), registry_of(dataset), random_flip=True, seed=0))[:3]
    assert batch["pixel_values"].shape == (3, 3, 12, 20) and batch["semantic_map"].shape == (3, 8, 12, 20)
    flipped = example_to_tensors(dataset[0], 16, "ham10000", flip=True)
    assert torch.equal(flipped["semantic_map"], tensors["semantic_map"].flip(-1))


def test_resize_policy_stretches_the_whole_picture_and_keeps_edge_lesions():
    """One policy for every model: non-square rows are stretched (bicubic pixels, nearest map), never cropped."""
    smap = SemanticMap.from_annotations("mel", 4, boxes=[(32, 4, 40, 12)], size=(16, 40))  # lesion at the right edge
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 40, 3), dtype=np.uint8))
    tensors = example_to_tensors({"image": image, "semantic_map": smap.to_pil(), "label": 4}, 8, "ham10000")
    assert tensors["semantic_map"][1:].sum() > 0  # a centre crop would have cut this lesion off
    assert torch.equal(tensors["semantic_map"], smap.resize(8).to_channels())
    stretched = np.asarray(image.resize((8, 8), Image.BICUBIC), dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    assert torch.allclose(tensors["pixel_values"], torch.from_numpy(stretched))
    with pytest.raises(ValueError, match=r"semantic map size \(16, 40\) differs from the image's \(16, 39\)"):
        example_to_tensors({"image": image.crop((0, 0, 39, 16)), "semantic_map": smap.to_pil(), "label": 4}, 8, "ham10000")
    with pytest.raises(ValueError, match="resolution must be an int or"):
        model_transform((8,), "ham10000")


def test_phantom_folder_loads(tmp_path):
    phantom = pytest.importorskip("dermdiff.data.phantom")
    root = phantom.write_phantom(str(tmp_path / "phantom"), n=6, size=24, seed=0)
    dataset = load_any(root)
    assert registry_of(dataset).registry_name == "phantom" and len(dataset) == 6
    for row in dataset:
        assert np.array_equal(_decoded(row, registry_of(dataset)).lesion_mask, np.asarray(row["mask"]) > 0)


def test_save_image_folder_round_trips_a_split(tmp_path):
    """A benchmark's training split, written for a training script, reads back unchanged."""
    from dermdiff.data import phantom_dataset, save_image_folder

    split = make_splits(phantom_dataset(n=40, size=24, seed=1), seed=0)["train"]
    folder = save_image_folder(split, str(tmp_path / "train"))
    back = load_dataset_dir(folder)
    assert registry_of(back).to_dict() == registry_of(split).to_dict()
    assert back["image_id"] == split["image_id"] and back["label_name"] == split["label_name"]
    assert back["skin_type"] == split["skin_type"] and back["boxes"] == split["boxes"]
    for original, copy in zip(split, back):
        assert np.array_equal(np.asarray(original["image"]), np.asarray(copy["image"]))
        assert np.array_equal(np.asarray(original["semantic_map"]), np.asarray(copy["semantic_map"]))
    with pytest.raises(ValueError, match="empty"):
        save_image_folder(split.select([]), str(tmp_path / "empty"))
