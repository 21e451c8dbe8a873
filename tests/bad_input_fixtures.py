"""Small damaged files for the bad-input corpus (`tests/test_bad_inputs.py`, `benchmarks/bad_input_outcomes.py`).

`build_workspace(root)` writes, once, every good and broken thing the corpus cases point at: images
that are truncated, not images, or claim 20000 x 20000 pixels; a tiny saved DermDiffPipeline and eight
ways of damaging it; a tiny phantom image folder and copies with one bad metadata cell each; DermaMNIST
`.npz` files that are truncated or hold floats. Everything is tiny (16 px) so building takes seconds.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import zlib
from types import SimpleNamespace

import numpy as np
from PIL import Image

SIZE = 16


def write_png(path: str, array: np.ndarray) -> str:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def truncated_copy(source: str, target: str, keep: float = 0.5) -> str:
    """The first `keep` share of a file's bytes: a download cut short."""
    with open(source, "rb") as handle:
        data = handle.read()
    with open(target, "wb") as handle:
        handle.write(data[: max(1, int(len(data) * keep))])
    return target


def write_text(path: str, text: str | bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(text.encode() if isinstance(text, str) else text)
    return path


def bomb_png(path: str, width: int = 20000, height: int = 20000) -> str:
    """A PNG whose header claims `width` x `height` pixels (beyond PIL's decompression-bomb limit)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return write_text(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def tiny_pipeline_folder(path: str) -> str:
    """A saved 16 px DermDiffPipeline (8/16-wide UNet, 100-step DDPM) on the phantom registry."""
    import torch
    from diffusers import DDPMScheduler

    from dermdiff import DermDiffPipeline, SemanticUNet2DModel
    from dermdiff.conditions import get_registry

    torch.manual_seed(0)
    unet = SemanticUNet2DModel(
        sample_size=SIZE, block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=4,
        **get_registry("phantom").model_kwargs(),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    DermDiffPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(path)
    return path


def damaged_pipelines(good: str, root: str) -> dict[str, str]:
    """Eight damaged copies of a saved pipeline folder, by what is wrong with them."""
    from safetensors.torch import load_file, save_file

    out = {}

    def copy(name: str) -> str:
        target = os.path.join(root, f"pipe-{name}")
        shutil.copytree(good, target)
        out[name] = target
        return target

    weights = os.path.join("unet", "diffusion_pytorch_model.safetensors")
    os.remove(os.path.join(copy("no-weights"), weights))
    folder = copy("truncated-weights")
    truncated_copy(os.path.join(good, weights), os.path.join(folder, weights), keep=0.6)
    folder = copy("garbage-weights")
    write_text(os.path.join(folder, weights), b"\xff" * 64)
    write_text(os.path.join(copy("bad-index"), "model_index.json"), '{"_class_name": "DermDiffPipeline", ')
    write_text(os.path.join(copy("index-list"), "model_index.json"), "[1, 2]")
    os.remove(os.path.join(copy("no-unet-config"), "unet", "config.json"))
    shutil.rmtree(os.path.join(copy("no-scheduler"), "scheduler"))
    folder = copy("missing-tensor")
    tensors = load_file(os.path.join(good, weights))
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, os.path.join(folder, weights))
    write_text(os.path.join(copy("bad-unet-config"), "unet", "config.json"), "{not json")
    return out


def tiny_phantom(path: str, n: int = 6, healthy_fraction: float = 0.0) -> str:
    from dermdiff.data.phantom import write_phantom

    write_phantom(path, n=n, size=SIZE, seed=0, healthy_fraction=healthy_fraction)
    return path


def edited_copy(source: str, target: str, field: str, value: str, row: int = 0) -> str:
    """A copy of an image folder with one metadata.csv cell replaced (row 0 = the first data row)."""
    shutil.copytree(source, target)
    path = os.path.join(target, "metadata.csv")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = list(rows[0])
    if field not in columns:
        columns.append(field)
    rows[row][field] = value
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return target


def dermamnist_npz(path: str, images=None, labels=None) -> str:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 28, 28, 3), dtype=np.uint8) if images is None else images
    labels = np.array([[0], [1], [2], [3]]) if labels is None else labels
    np.savez(path, train_images=images, train_labels=labels)
    return path


def build_workspace(root: str) -> SimpleNamespace:
    """Every file the corpus needs, under `root`; returns their paths as attributes."""
    from dermdiff import SemanticMap

    os.makedirs(root, exist_ok=True)
    w = SimpleNamespace(root=root)
    rng = np.random.default_rng(0)
    w.image = write_png(os.path.join(root, "image.png"), rng.integers(0, 256, (SIZE, SIZE, 3)))
    spot = np.zeros((SIZE, SIZE), dtype=np.uint8)
    spot[4:10, 5:12] = 255
    w.mask = write_png(os.path.join(root, "mask.png"), spot)
    w.map = os.path.join(root, "map.png")
    SemanticMap.from_annotations("melanoma", 4, boxes=[(3, 4, 11, 12)], size=SIZE, registry="phantom").to_pil().save(
        w.map)
    w.truncated = truncated_copy(w.image, os.path.join(root, "truncated.png"))
    w.not_image = write_text(os.path.join(root, "not-image.png"), "this is text, not a PNG\n")
    w.empty = write_text(os.path.join(root, "empty.png"), b"")
    w.bomb = bomb_png(os.path.join(root, "bomb.png"))
    w.directory = os.path.join(root, "a-folder")
    os.makedirs(w.directory)
    w.missing = os.path.join(root, "missing.png")
    w.bad_json = write_text(os.path.join(root, "bad.json"), '{"generator": {')
    w.list_json = write_text(os.path.join(root, "list.json"), "[1, 2, 3]")
    w.latin1 = write_text(os.path.join(root, "latin1.json"), b'{"name": "caf\xe9"}')

    w.pipe = tiny_pipeline_folder(os.path.join(root, "pipe"))
    w.pipes = SimpleNamespace(**{k.replace("-", "_"): v for k, v in damaged_pipelines(w.pipe, root).items()})
    w.empty_dir = os.path.join(root, "empty-dir")
    os.makedirs(w.empty_dir)

    w.phantom = tiny_phantom(os.path.join(root, "phantom"))
    w.phantom_healthy = tiny_phantom(os.path.join(root, "phantom-healthy"), n=8, healthy_fraction=0.5)
    with open(os.path.join(w.phantom, "metadata.csv"), newline="", encoding="utf-8") as handle:
        first = next(csv.DictReader(handle))
    w.first_image = os.path.join(w.phantom, first["file_name"])
    folders = {
        "boxes_infinity": ("boxes", "[[0, 0, Infinity, 8]]"),
        "boxes_nan": ("boxes", "[[0, 0, NaN, 8]]"),
        "boxes_text": ("boxes", "[[0, 0, 8"),
        "boxes_outside": ("boxes", "[[0, 0, 99, 8]]"),
        "boxes_huge": ("boxes", "[[0, 0, 1e400, 8]]"),
        "skin_type_7": ("skin_type", "7"),
        "skin_type_word": ("skin_type", "dark"),
        "label_unknown": ("label", "eczema"),
        "image_missing": ("file_name", "images/nowhere.png"),
        "map_missing": ("map_file", "maps/nowhere.png"),
    }
    w.folders = SimpleNamespace()
    for name, (field, value) in folders.items():
        setattr(w.folders, name, edited_copy(w.phantom, os.path.join(root, f"data-{name}"), field, value))
    w.folders.image_truncated = shutil.copytree(w.phantom, os.path.join(root, "data-image_truncated"))
    truncated_copy(w.first_image, os.path.join(w.folders.image_truncated, first["file_name"]))
    w.folders.image_text = shutil.copytree(w.phantom, os.path.join(root, "data-image_text"))
    write_text(os.path.join(w.folders.image_text, first["file_name"]), "not an image")
    w.folders.map_truncated = shutil.copytree(w.phantom, os.path.join(root, "data-map_truncated"))
    truncated_copy(os.path.join(w.phantom, first["map_file"]), os.path.join(w.folders.map_truncated,
                                                                           first["map_file"]))
    w.folders.csv_latin1 = shutil.copytree(w.phantom, os.path.join(root, "data-csv_latin1"))
    with open(os.path.join(w.folders.csv_latin1, "metadata.csv"), "ab") as handle:
        handle.write(b"images/x.png,caf\xe9,,,,\n")
    w.folders.csv_no_file_name = shutil.copytree(w.phantom, os.path.join(root, "data-csv_no_file_name"))
    write_text(os.path.join(w.folders.csv_no_file_name, "metadata.csv"), "name,label\na.png,melanoma\n")
    w.folders.info_bad = shutil.copytree(w.phantom, os.path.join(root, "data-info_bad"))
    write_text(os.path.join(w.folders.info_bad, "dataset_info.json"), "{broken")

    w.npz = dermamnist_npz(os.path.join(root, "dermamnist.npz"))
    w.npz_truncated = truncated_copy(w.npz, os.path.join(root, "dermamnist_truncated.npz"))
    w.npz_float = dermamnist_npz(os.path.join(root, "dermamnist_float.npz"),
                                 images=np.random.default_rng(0).random((4, 28, 28, 3)))
    w.npz_text = write_text(os.path.join(root, "dermamnist_text.npz"), "not a zip")
    w.npz_dir = os.path.join(root, "npz-dir")
    os.makedirs(w.npz_dir)
    truncated_copy(w.npz, os.path.join(w.npz_dir, "dermamnist.npz"))
    w.generated = os.path.join(root, "generated")  # a `dermdiff generate` folder, damaged below by cases
    return w


def write_json(path: str, value) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle)
    return path
