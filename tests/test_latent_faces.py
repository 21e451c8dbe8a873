"""Latent pipelines through every face that takes a pipeline, without new flags (issue 12 item 4).

`dermdiff generate` is covered in test_pipeline_latent; here `dermdiff evaluate`, the hard-case loop's
script and the demo's steps after training, each given a saved tiny latent `DermDiffPipeline` (a tiny
`AutoencoderKL`, f = 2, and a tiny UNet on 8 x 8 latents: 16 px images) where a pixel one usually goes.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from test_hardcase import TINY_FLAGS, load_script
from test_pipeline_latent import SIZE, latent_pipeline

from dermdiff.cli import main
from dermdiff.data.phantom import write_phantom
from dermdiff.metrics.generated import read_generated_set


@pytest.fixture(scope="module")
def latent_folder(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("latent") / "pipe")
    latent_pipeline().save_pretrained(folder)
    return folder


def assert_images_at_full_size(paths) -> None:
    """Decoded images (SIZE px, not the 8 x 8 latent grid) that are not flat."""
    assert paths
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (SIZE, SIZE), path
            assert np.asarray(image).std() > 1.0, path


def test_evaluate_samples_a_latent_pipeline_at_its_image_size(latent_folder, tmp_path, capsys):
    real = write_phantom(str(tmp_path / "real"), n=24, size=SIZE, seed=0, healthy_fraction=0.5)
    out = tmp_path / "eval"
    status = main(["evaluate", "--pipeline", latent_folder, "--data", real, "--out", str(out), "--num-images", "8",
                   "--batch-size", "4", "--extractor", "torchvision:resnet18:random", "--extractor-resolution", "32",
                   "--trials", "3", "--no-cache", "--quiet", "--num-inference-steps", "2"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["resolution"] == SIZE and metrics["distribution"]["num_generated"] == 8
    samples = read_generated_set(str(out / "generated")).samples()[0]
    assert len(samples) == 8
    assert_images_at_full_size(sorted(str(p) for p in (out / "generated").rglob("*.png"))[:8])
    assert (out / "report.html").is_file()


def test_hard_case_loop_runs_every_strategy_with_a_latent_generator(latent_folder, tmp_path):
    script = load_script("adversarial_loop")
    args = script.parse_args(TINY_FLAGS + [
        "--generator", latent_folder, "--rounds", "1", "--strategies", "map,sdedit,adversarial", "--per_case", "1",
        "--max_cases", "2", "--margin", "0.5", "--num_inference_steps", "2", "--output_dir", str(tmp_path / "out")])
    result = script.main(args)
    folder = tmp_path / "out" / "synthetic" / "round_1"
    rows = (folder / "metadata.csv").read_text().splitlines()[1:]
    assert rows and result["rounds"][-1]["pool"]["synthetic"] == len(rows)
    assert_images_at_full_size(sorted(str(p) for p in folder.rglob("*.png")))
    strategies = {item["strategy"] for case in result["rounds"][-1]["hard_cases"] for item in case["generated"]}
    assert strategies == {"map", "sdedit", "adversarial"}


def test_demo_steps_after_training_take_a_latent_pipeline(latent_folder, tmp_path):
    """The demo trains a pixel model; a latent pipeline in its place runs pictures, hard cases, evaluation, report."""
    import shutil

    from dermdiff.demo import paths, read_marker, write_marker

    out = str(tmp_path / "demo")
    assert main(["demo", "--quick", "--out", out, "--stop-after", "data"]) == 0
    shutil.copytree(latent_folder, paths(out)["diffusion"])
    write_marker(out, "diffusion", 0.0, {"folder": paths(out)["diffusion"], "steps": 0, "last_loss": None,
                                         "training_images": 0, "resumed_from_step": None, "validation_grids": []})
    assert main(["demo", "--quick", "--out", out, "--resume"]) == 0
    pictures = read_marker(out, "pictures")["outputs"]
    with Image.open(pictures["lesion_transfer"]) as grid:
        assert grid.size[1] == 2 * SIZE  # two healthy photos, one row each, at the image size
    assert read_marker(out, "classifiers")["outputs"]["synthetic"] > 0
    metrics = json.loads(open(read_marker(out, "evaluation")["outputs"]["metrics"]).read())
    assert metrics["settings"]["resolution"] == SIZE
    assert os.path.isfile(os.path.join(out, "report.html"))
