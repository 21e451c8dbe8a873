"""Inputs that used to give a wrong result with exit code 0, and sizes that used to be allocated blindly.

Each case is refused with one message naming the row, flag or file and what is allowed (issue 15: the
silent wrong results, and item 4: sizes bounded before allocating, with the variable that raises them).
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from test_data import good_rows, write_dermamnist, write_folder
from test_pipeline_dermdiff import tiny_pipeline

from dermdiff import limits
from dermdiff.cli import main
from dermdiff.data import load_dataset_dir, load_dermamnist
from dermdiff.semantic_map import SemanticMap


def cli_error(argv, capsys, status: int = 2) -> str:
    """Runs `dermdiff argv`, expects a refusal with `status` (2 usage, 1 data), returns its one stderr line."""
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ----------------------------------------------------------------------------------------------------------------
# silent wrong results
# ----------------------------------------------------------------------------------------------------------------
def test_a_label_naming_another_condition_than_its_map_is_refused(tmp_path):
    root = write_folder(tmp_path / "set", [{"file_name": "images/a.png", "label": "nv", "skin_type": ""}])
    os.makedirs(os.path.join(root, "maps"))
    SemanticMap.from_annotations("mel", 5, boxes=[(1, 1, 5, 5)], size=(24, 32)).to_pil().save(f"{root}/maps/a.png")
    table = open(os.path.join(root, "metadata.csv")).read().splitlines()
    with open(os.path.join(root, "metadata.csv"), "w") as handle:
        handle.write(f"{table[0]},map_file\n{table[1]},maps/a.png\n")
    with pytest.raises(ValueError, match=r"line 2 .*label 'nv' contradicts the semantic map .*regions of \['mel'\]"):
        load_dataset_dir(root, registry="ham10000")


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -1.0])
def test_guidance_scale_must_be_finite(scale):
    with pytest.raises(ValueError, match=r"guidance_scale must be a finite number >= 0.*got"):
        tiny_pipeline()(condition="nevus", guidance_scale=scale, num_inference_steps=1)


@pytest.mark.parametrize("limit", [0, -2, 1.5, True])
def test_data_limit_zero_is_refused_not_read_as_all(tmp_path, limit):
    from dermdiff.metrics.evaluation import evaluate

    with pytest.raises(ValueError, match=r"data_limit \(--data-limit\) must be a whole number of rows >= 1"):
        evaluate(data=str(tmp_path), generated=str(tmp_path), out=str(tmp_path / "e"), data_limit=limit)


def test_maps_vary_refuses_a_negative_count(tmp_path, capsys):
    path = tmp_path / "map.png"
    SemanticMap.from_annotations("mel", 3, boxes=[(2, 2, 10, 10)], size=16).to_pil().save(path)
    line = cli_error(["maps", "vary", str(path), "--count", "-3", "--out", str(tmp_path / "v")], capsys)
    assert "--count must be >= 1" in line and "-3" in line
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("boxes", ["[[true, 0, 4, 4]]", "[[0, 0, false, 4]]", "[true, 0, 4, 4]", "[[0, 0, NaN, 4]]",
                                   "[[0, 0, Infinity, 4]]", "[[0, 0, 4, -Infinity]]"])  # fmt: skip
def test_a_boolean_or_non_finite_number_in_a_box_is_refused(tmp_path, boxes):
    rows = good_rows()
    rows[1] = {**rows[1], "boxes": boxes}
    with pytest.raises(ValueError, match=r"line 3 .*boxes .* whole numbers \(no true/false, NaN or Infinity\)"):
        load_dataset_dir(write_folder(tmp_path / "set", rows), registry="ham10000")


@pytest.mark.parametrize("bad", [2.7, -1.0, 7.0, float("nan")])
def test_a_dermamnist_label_that_is_not_a_class_index_is_refused(tmp_path, bad):
    path, arrays = write_dermamnist(tmp_path / "d.npz")
    labels = arrays["train_labels"].astype(np.float64)
    labels[3, 0] = bad
    np.savez_compressed(path, **{**arrays, "train_labels": labels})
    with pytest.raises(ValueError, match=r"train_labels\[3\].*allowed integers 0..6"):
        load_dermamnist(path, split="train")
    with pytest.warns(UserWarning, match="skipped 1 of 10 rows"):
        kept = load_dermamnist(path, split="train", skip_bad=True)
    assert len(kept) == 9 and "train_00003" not in kept["image_id"]
    labels[3, 0] = 2.0  # a whole-number float is still class 2
    np.savez_compressed(path, **{**arrays, "train_labels": labels})
    assert load_dermamnist(path, split="train")[3]["label"] == 2


def test_the_same_file_twice_is_refused_even_with_two_labels(tmp_path):
    rows = good_rows() + [{"file_name": "images/c.png", "label": "mel", "skin_type": "2", "lesion_id": "L3"}]
    root = write_folder(tmp_path / "set", rows)
    with pytest.raises(ValueError, match=r"line 5 .*image_id 'images/c' appears again \(first at metadata.csv line 4"):
        load_dataset_dir(root, registry="ham10000")
    with pytest.warns(UserWarning, match="skipped 1 of 4 rows"):
        assert len(load_dataset_dir(root, registry="ham10000", skip_bad=True)) == 3


# ----------------------------------------------------------------------------------------------------------------
# sizes bounded before allocating
# ----------------------------------------------------------------------------------------------------------------
def png_claiming(path, width: int, height: int) -> None:
    """A tiny PNG whose header claims `width` x `height` pixels (the data is one short, valid row)."""
    Image.new("RGB", (2, 2)).save(path)
    data = bytearray(open(path, "rb").read())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF)
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("width, height", [(20000, 20000), (9000, 9000)])  # over Pillow's bomb limit / over ours
def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(tmp_path, width, height):
    root = write_folder(tmp_path / "set", good_rows())
    png_claiming(os.path.join(root, "images", "b.png"), width, height)
    with pytest.raises(ValueError, match=r"line 3 .*images/b.png.*pixels.*DERMDIFF_MAX_IMAGE_PIXELS"):
        load_dataset_dir(root, registry="ham10000")


def test_maps_inspect_refuses_a_huge_map_in_one_line(tmp_path, capsys):
    png_claiming(tmp_path / "big.png", 20000, 20000)
    line = cli_error(["maps", "inspect", str(tmp_path / "big.png")], capsys, status=1)
    assert "big.png" in line and "DERMDIFF_MAX_IMAGE_PIXELS" in line


def test_the_pixel_limit_is_raised_and_lowered_by_its_variable(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "set", good_rows())
    monkeypatch.setenv(limits.MAX_IMAGE_PIXELS_ENV, str(32 * 24 - 1))
    with pytest.raises(ValueError, match=r"line 2 .*32x24 = 768 pixels is over the limit of 767; set DERMDIFF_MAX"):
        load_dataset_dir(root, registry="ham10000")
    monkeypatch.setenv(limits.MAX_IMAGE_PIXELS_ENV, str(32 * 24))
    assert len(load_dataset_dir(root, registry="ham10000")) == 3
    monkeypatch.setenv(limits.MAX_IMAGE_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="DERMDIFF_MAX_IMAGE_PIXELS='lots' must be a positive whole number"):
        limits.max_image_pixels()


def test_maps_draw_refuses_a_huge_size_before_allocating(tmp_path, capsys):
    out = tmp_path / "m.png"
    line = cli_error(["maps", "draw", "--condition", "mel", "--box", "1,1,4,4", "--size", "200000", "--out", str(out)],
                     capsys)  # fmt: skip
    assert line.endswith("--size: 200000x200000 = 40,000,000,000 pixels is over the limit of 67,108,864; "
                         "set DERMDIFF_MAX_IMAGE_PIXELS to raise it")  # fmt: skip
    assert "--size must be positive" in cli_error(["maps", "draw", "--size", "0", "-5", "--out", str(out)], capsys)
    assert not out.exists()


def test_phantom_refuses_a_huge_n_before_planning(tmp_path, capsys, monkeypatch):
    line = cli_error(["phantom", "--out", str(tmp_path / "p"), "--n", str(10**12)], capsys)
    assert "n = 1,000,000,000,000 phantom images is over the limit of 1,000,000" in line
    assert "DERMDIFF_MAX_PHANTOM_IMAGES" in line and not (tmp_path / "p").exists()
    monkeypatch.setenv(limits.MAX_PHANTOM_IMAGES_ENV, "3")
    assert "over the limit of 3" in cli_error(["phantom", "--out", str(tmp_path / "p"), "--n", "4", "--quiet"], capsys)
    assert main(["phantom", "--out", str(tmp_path / "p"), "--n", "3", "--size", "16", "--quiet"]) == 0
