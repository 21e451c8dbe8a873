"""`dermdiff evaluate --pipeline DIR` for every pipeline kind dermdiff saves (DermGAN, DCGAN, lesion edit).

DermDiffPipeline's route is covered in test_metrics_eval; here the GAN kinds, through the command line as a
user runs them, with the offline random-weight extractor.
"""

from __future__ import annotations

import json

import pytest
import torch

from dermdiff import (
    DCGANGenerator,
    DCGANPipeline,
    DermGANGenerator,
    DermGANPipeline,
    LesionEditPipeline,
    TranslationGenerator,
)
from dermdiff.cli import main
from dermdiff.conditions import get_registry
from dermdiff.data.phantom import write_phantom
from dermdiff.metrics.generated import read_generated_set

SIZE = 16


def tiny(kind: str):
    torch.manual_seed(0)
    if kind == "dermgan":
        generator = DermGANGenerator(sample_size=SIZE, block_out_channels=(8, 16, 32), **get_registry("phantom").model_kwargs())
        return DermGANPipeline(dermgan=generator)
    if kind == "dcgan":
        return DCGANPipeline(dcgan=DCGANGenerator(sample_size=SIZE, num_upsamples=2, base_channels=16,
                                                  dense_channels=8))
    editor = TranslationGenerator(mask_channels=int(kind == "targeted"), block_out_channels=(4, 8, 16),
                                  num_residual_blocks=2)
    return LesionEditPipeline(add_model=editor)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return write_phantom(str(tmp_path_factory.mktemp("real")), n=24, size=SIZE, seed=0, healthy_fraction=0.5)


@pytest.mark.parametrize("kind", ["dermgan", "dcgan", "targeted", "cycle"])
def test_cli_evaluate_pipeline_of_every_kind(kind, real, tmp_path, capsys):
    tiny(kind).save_pretrained(str(tmp_path / "pipe"))
    out = tmp_path / "eval"
    size = [] if kind in ("dermgan", "dcgan") else ["--resolution", str(SIZE)]  # an editor works at any size
    status = main(["evaluate", "--pipeline", str(tmp_path / "pipe"), "--data", real, "--out", str(out), *size,
                   "--num-images", "8", "--batch-size", "4", "--extractor", "torchvision:resnet18:random",
                   "--extractor-resolution", "32", "--trials", "3", "--no-cache", "--quiet", "--num-inference-steps",
                   "2"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "FID" in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distribution"]["num_generated"] == 8
    written = read_generated_set(str(out / "generated"))
    images, maps = written.samples()
    assert len(images) == 8 and images[0].size == (SIZE, SIZE)
    if kind == "dcgan":  # unconditional: nothing was asked for
        assert all(smap.condition is None and smap.skin_type is None for smap in maps)
    if kind == "targeted":  # a lesion of a real row's mask added to a real photo of known skin type
        assert all(smap.condition is not None and smap.skin_type is not None for smap in maps)
    if kind == "dermgan":
        assert [sweep["values"] for sweep in written.sweeps("skin_type")] == [[1, 2, 3, 4, 5, 6]]
    assert (out / "report.html").is_file()


def test_cli_evaluate_lesion_edit_without_resolution_names_the_flag(real, tmp_path, capsys):
    tiny("targeted").save_pretrained(str(tmp_path / "pipe"))
    status = main(["evaluate", "--pipeline", str(tmp_path / "pipe"), "--data", real, "--out", str(tmp_path / "o"),
                   "--extractor", "torchvision:resnet18:random", "--no-cache", "--quiet"])
    err = capsys.readouterr().err
    assert status != 0 and "LesionEditPipeline has no fixed sample_size" in err and "--resolution" in err
    assert "Traceback" not in err
