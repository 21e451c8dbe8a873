"""benchmarks/latent_vs_pixel.py --quick end to end: a tiny pixel and a tiny latent pipeline on the phantom."""

from __future__ import annotations

import json
import os
import re
import sys
from unittest import mock

import pytest
from PIL import Image
from test_pipeline_dermdiff import tiny_pipeline
from test_pipeline_latent import latent_pipeline

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import latent_vs_pixel as bench  # noqa: E402  (a benchmark script, imported by path)


def test_quick_table_grid_and_reuse(tmp_path):
    tiny_pipeline().save_pretrained(str(tmp_path / "pixel"))
    latent_pipeline().save_pretrained(str(tmp_path / "latent"))
    out = tmp_path / "run"
    argv = ["--quick", "--generator", f"pixel={tmp_path / 'pixel'}", "--generator", f"latent={tmp_path / 'latent'}",
            "--out", str(out), "--markdown", str(tmp_path / "table.md")]
    assert bench.main(argv) == 0
    summary = json.loads((out / "latent_vs_pixel.json").read_text())
    assert [g["name"] for g in summary["generators"]] == ["pixel", "latent"]
    reference = summary["reference_test_balanced_accuracy"]["value"]
    for g in summary["generators"]:
        assert g["n"] == 12 and g["side"] == 16 and 0 <= g["memorised"] <= g["n"]
        assert g["recognisability_ratio"] == pytest.approx(g["recognisability"]["value"] / reference)
        assert g["cas_ratio"] == pytest.approx(g["cas"]["value"] / reference)
        assert g["floor"]["kind"] == "train-vs-reference" and g["floor"]["sizes"][0] == 12
        assert g["fd_over_floor"] == pytest.approx(g["domain_fd"]["value"] / g["floor"]["value"])
        assert (out / "cas" / g["name"] / "config.json").is_file()
        assert 1 <= g["skin_tone"]["n"] <= 12 and 0 <= g["skin_tone"]["same_type"]["value"] <= 1
    # the two generators drew the same train-split maps: their sets have the same class labels, in order
    labels = [(out / "generated" / name / "metadata.csv").read_text().splitlines()[1:] for name in ("pixel", "latent")]
    assert [row.split(",")[2] for row in labels[0]] == [row.split(",")[2] for row in labels[1]]
    # one row per class, real | pixel | latent, 2 images each, every cell at least 128 px (nearest upscaling)
    with Image.open(summary["grid"]) as grid:
        assert grid.size == (2 * 3 * 128, 5 * 128)
    table = (tmp_path / "table.md").read_text()
    assert "| pixel | 16 | 12 |" in table and "| latent | 16 | 12 |" in table
    assert "skin type as the real image's" in table and " deg |" in table
    # the header says which guidance drew the sets (rows at different scales are otherwise indistinguishable)
    assert "steps, guidance each pipeline's default." in table
    assert bench.guidance_label(2.0) == "2" and bench.guidance_label(1.5) == "1.5"
    # a rerun with the same settings reuses the generated sets and classifiers instead of redoing them
    with mock.patch("dermdiff.metrics.generated.generate_evaluation_set", side_effect=AssertionError("resampled")), \
            mock.patch("dermdiff.loops.classifier.train_classifier", side_effect=AssertionError("retrained")):
        assert bench.main(argv) == 0


def test_skin_tone_agreement_compares_each_image_with_its_real_one():
    from argparse import Namespace

    from dermdiff.data.skin_types import surrounding_skin_ita
    from dermdiff.semantic_map import SemanticMap

    light, brown = (Image.new("RGB", (16, 16), colour) for colour in ((224, 172, 140), (141, 85, 54)))
    maps = [SemanticMap.from_annotations("nv", None, boxes=[[4, 4, 8, 8]], size=(16, 16), registry="ham10000")] * 4
    real = [surrounding_skin_ita(image) for image in (light, light, brown, brown)]
    args = Namespace(seed=0, n_boot=50)
    same = bench.skin_tone_agreement([light, light, brown, brown], maps, real, args)
    assert same["n"] == 4 and same["same_type"]["value"] == 1.0 and same["median_abs_ita_difference"] == 0.0
    swapped = bench.skin_tone_agreement([brown, brown, light, light], maps, real, args)
    assert swapped["same_type"]["value"] == 0.0 and swapped["median_abs_ita_difference"] > 30


def test_bad_generator_flags_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--out", str(tmp_path)])
    assert "give at least one --generator NAME=PIPELINE_DIR" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--generator takes NAME=PIPELINE_DIR, got 'nowhere'"):
        bench.parse_generators(["nowhere"])
    with pytest.raises(FileNotFoundError, match="--generator a: pipeline folder .*missing does not exist"):
        bench.parse_generators([f"a={tmp_path / 'missing'}"])


def test_autoencoder_ceiling_rows(tmp_path):
    latent_pipeline().vae.save_pretrained(str(tmp_path / "vae"))
    out = tmp_path / "run"
    argv = ["--quick", "--autoencoder", f"tiny={tmp_path / 'vae'}", "--out", str(out),
            "--markdown", str(tmp_path / "table.md")]
    assert bench.main(argv) == 0
    summary = json.loads((out / "latent_vs_pixel.json").read_text())
    assert summary["generators"] == [] and summary["grid"] is None
    (ceiling,) = summary["autoencoders"]
    reference = summary["reference_test_balanced_accuracy"]["value"]
    assert ceiling["n"] == 12 and ceiling["latent_channels"] == 4 and ceiling["test_psnr"] > 0
    assert ceiling["recognisability_ratio"] == pytest.approx(ceiling["recognisability"]["value"] / reference)
    # paired: rebuilt - real on the same test images
    assert ceiling["paired_difference"]["value"] == pytest.approx(ceiling["recognisability"]["value"] - reference)
    assert ceiling["fd_over_floor"] == pytest.approx(ceiling["domain_fd"]["value"] / ceiling["floor"]["value"])
    assert (out / "cas" / "autoencoder-tiny" / "config.json").is_file()
    # real | rebuilt, 2 test images per class, every cell at least 128 px
    with Image.open(summary["rebuilt_grid"]) as grid:
        assert grid.size == (2 * 2 * 128, 5 * 128)
    table = (tmp_path / "table.md").read_text()
    assert "| tiny | 4 |" in table and "rebuilt by each autoencoder" in table and "| real test images |" in table
    assert set(ceiling["real_recall"]) == set(ceiling["recall"])
    with pytest.raises(FileNotFoundError, match="--autoencoder b: autoencoder folder .*missing does not exist"):
        bench.parse_generators([f"b={tmp_path / 'missing'}"], "--autoencoder", "autoencoder")


@pytest.mark.parametrize("flags, message", [
    (["--autoencoder", "nowhere"], "--autoencoder takes NAME=AUTOENCODER_DIR, got 'nowhere'"),
    (["--autoencoder", "b=MISSING"], "--autoencoder b: autoencoder folder .*missing does not exist"),
    (["--generator", "a=MISSING"], "--generator a: pipeline folder .*missing does not exist"),
])
def test_bad_named_folders_are_one_line_usage_errors(tmp_path, capsys, flags, message):
    flags = [flag.replace("MISSING", str(tmp_path / "missing")) for flag in flags]
    assert bench.main(["--quick", "--out", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.search(f"error: {message}", err), err
