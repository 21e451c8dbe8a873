"""The real-vs-real floor: its numbers on known distributions, and `dermdiff evaluate` always showing it."""

import json

import numpy as np
import pandas as pd
import pytest

from dermdiff.metrics.fid import fast_fid
from dermdiff.metrics.floor import evaluation_floors, floor_text, real_floor


def _gaussian(n, shift=0.0, seed=0, dim=4):
    return np.random.default_rng(seed).normal(shift, 1.0, (n, dim))


def test_split_half_floor_is_near_zero_for_one_distribution_and_sized_like_the_generated_set():
    features = _gaussian(2000)
    half = real_floor(features, trials=5, seed=1)
    assert real_floor(features, size=5000, trials=5, seed=1) == half  # at most half
    assert half["kind"] == "split-half" and half["sizes"] == [1000, 1000] and half["trials"] == 5
    # the true distance is 0; the estimator's upward bias is about dim * (1/1000 + 1/1000) = 0.008
    assert 0 < half["value"] < 0.03 and half["ci95"] == pytest.approx(1.96 * half["std"])
    assert half["value"] < fast_fid(_gaussian(1000, seed=2), _gaussian(1000, shift=1.0, seed=3)) / 50  # true FD 4
    small = real_floor(features, size=40, trials=5, seed=1)
    assert small["sizes"] == [40, 1960] and small["value"] > 3 * half["value"]  # fewer images, higher floor
    assert real_floor(features, size=40, trials=5, seed=1) == small  # seeded
    assert real_floor(features, size=40, trials=1)["ci95"] is None


def test_train_vs_reference_floor_draws_generated_size_from_the_training_features():
    reference, train = _gaussian(300, seed=0), _gaussian(500, seed=1)
    floor = real_floor(reference, size=100, other=train, trials=3)
    assert floor["kind"] == "train-vs-reference" and floor["sizes"] == [100, 300] and floor["trials"] == 3
    whole = real_floor(reference, other=train, trials=3)  # all training images: one draw, no interval
    assert whole["sizes"] == [500, 300] and whole["trials"] == 1 and whole["ci95"] is None
    assert whole["value"] == pytest.approx(fast_fid(train, reference))
    shifted = real_floor(reference, size=100, other=_gaussian(500, shift=0.5, seed=1), trials=3)
    assert shifted["value"] == pytest.approx(floor["value"] + 4 * 0.25, abs=0.15)  # |mu shift|^2 = 1
    assert "train-vs-reference, 100 vs 300 real images" in floor_text(floor)


def test_evaluation_floors_add_the_generated_size_only_when_it_is_smaller():
    features = _gaussian(400)
    small = evaluation_floors(features, generated_size=50, trials=4)
    assert small["sizes"] == [200, 200] and small["at_generated_size"]["sizes"] == [50, 350]
    assert small["at_generated_size"]["value"] > small["value"]
    assert evaluation_floors(features, generated_size=300, trials=4)["at_generated_size"] is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(reference=np.zeros((3, 2)), size=2), "needs >= 4 reference images, got 3"),
        (dict(reference=np.zeros((10, 2)), size=1), "first sample of >= 2 images, got size=1"),
        (dict(reference=np.zeros((10, 2)), size=4, trials=0), "trials >= 1, got 0"),
        (dict(reference=np.zeros((10, 2)), size=4, other=np.zeros((5, 3))), r"other features must be \(M >= 2, 2\)"),
        (dict(reference=np.zeros(10), size=4), r"must be \(N, D\)"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        real_floor(**kwargs)


def test_evaluate_command_takes_a_real_folder_and_prints_the_floor(tmp_path, capsys):
    from dermdiff.cli import main
    from dermdiff.data.phantom import write_phantom

    real = write_phantom(str(tmp_path / "real"), n=40, size=16, seed=0)
    other = tmp_path / "other"  # real data in the image-folder layout (no map_file column): read by load_any
    write_phantom(str(other), n=12, size=16, seed=5)
    table = pd.read_csv(other / "metadata.csv")
    table.drop(columns=["map_file"]).to_csv(other / "metadata.csv", index=False)
    out = tmp_path / "eval"
    code = main(["evaluate", "--generated", str(other), "--data", real, "--out", str(out), "--extractor",
                 "torchvision:resnet18:random", "--extractor-resolution", "32", "--trials", "3", "--no-cache",
                 "--generated-limit", "10", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    floor = metrics["distribution"]["floor"]
    assert metrics["distribution"]["num_generated"] == 10 and metrics["settings"]["samples"] == 10
    assert floor["kind"] == "split-half" and floor["sizes"] == [20, 20] and floor["trials"] == 3
    matched = floor["at_generated_size"]
    assert matched["sizes"] == [10, 30] and floor["value"] > 0 and floor["seconds"] >= 0
    assert f"real-vs-real floor  {floor['value']:.3f} ± {floor['ci95']:.3f} (split-half, 20 vs 20 real images)" in printed
    assert f"at samples' size  {matched['value']:.3f} ± {matched['ci95']:.3f} (split-half, 10 vs 30" in printed
    html = (out / "report.html").read_text()
    assert "real-vs-real floor" in html and "(split-half, 20 vs 20 real images)" in html
    assert "(split-half, 10 vs 30 real images)" in html


def test_evaluate_uses_the_training_split_when_the_reference_is_another_split(tmp_path):
    from test_metrics_eval import TinyFeatures

    from dermdiff.data.phantom import write_phantom
    from dermdiff.metrics.evaluation import evaluate

    real = write_phantom(str(tmp_path / "real"), n=36, size=16, seed=0)
    table = pd.read_csv(f"{real}/metadata.csv")
    table["split"] = ["train", "train", "validation"] * 12
    table.to_csv(f"{real}/metadata.csv", index=False)
    generated = write_phantom(str(tmp_path / "gen"), n=8, size=16, seed=3)  # a phantom folder: images + maps
    metrics = evaluate(data=real, out=str(tmp_path / "out"), generated=generated, extractor=TinyFeatures(16),
                       reference_split="validation", cache_dir=None, trials=4, min_group_size=2, verbose=False)
    floor = metrics["distribution"]["floor"]
    assert floor["kind"] == "train-vs-reference" and floor["sizes"] == [24, 12] and floor["trials"] == 1
    assert floor["at_generated_size"]["sizes"] == [8, 12] and floor["at_generated_size"]["trials"] == 4
    assert metrics["distribution"]["num_reference"] == 12


@pytest.mark.parametrize("limit, match", [("1", r"--generated-limit\) must be >= 2 rows, got 1"),
                                          ("5", r"--generated-limit\) reads part of real data; .* is a generated set")])
def test_generated_limit_is_checked(tmp_path, capsys, limit, match):
    import re

    from dermdiff.cli import main
    from dermdiff.data.phantom import write_phantom

    phantom = write_phantom(str(tmp_path / "phantom"), n=6, size=16, seed=0)  # a generated-set layout
    code = main(["evaluate", "--generated", phantom, "--data", phantom, "--out", str(tmp_path / "eval"),
                 "--extractor", "torchvision:resnet18:random", "--generated-limit", limit, "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and re.search(match, error) and "Traceback" not in error
