"""benchmarks/skin_type_control_real.py end to end on a small phantom with a tiny latent pipeline."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image
from test_pipeline_latent import latent_pipeline

import dermdiff.data
from dermdiff.data import phantom_dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import skin_type_control_real as bench  # noqa: E402  (a benchmark script, imported by path)


def test_sweeps_every_map_over_six_types_and_measures_them(tmp_path, monkeypatch):
    latent_pipeline().save_pretrained(str(tmp_path / "latent"))
    monkeypatch.setattr(dermdiff.data, "load_any", lambda path, size: phantom_dataset(n=60, size=size, seed=0))
    argv = ["--data", "phantom", "--image_size", "16", "--generator", f"tiny={tmp_path / 'latent'}",
            "--out", str(tmp_path / "run"), "--maps_per_class", "1", "--num_inference_steps", "2",
            "--markdown", str(tmp_path / "table.md")]
    assert bench.main(argv) == 0
    summary = json.loads((tmp_path / "run" / "skin_type_control.json").read_text())
    classes = len({m["label"] for m in summary["maps"]})
    (tiny,) = summary["generators"]
    assert len(summary["maps"]) == classes >= 5 and np.array(tiny["itas"]).shape == (classes, 6)
    assert sorted(tiny["per_type"]) == [str(t) for t in range(1, 7)] and 0 <= tiny["same_type"] <= 1
    with Image.open(tiny["grid"]) as grid:  # the real image, then its six types, 128 px cells
        assert grid.size == (7 * 128, classes * 128)
    assert "| tiny |" in (tmp_path / "table.md").read_text()


def test_sweep_scores_read_a_perfect_and_a_deaf_generator():
    perfect = np.array([[60.0, 45, 35, 20, 0, -40]] * 3)  # each step inside the next type's band
    scores = bench.sweep_scores(perfect)
    assert scores["same_type"] == 1.0 and scores["median_rho"] == pytest.approx(-1.0) and scores["falling"] == 3
    deaf = np.full((3, 6), 60.0)
    deaf[:, 1] = 61.0
    scores = bench.sweep_scores(deaf)
    assert scores["same_type"] == pytest.approx(1 / 6) and scores["falling"] == 0 and scores["median_rho"] > -0.5
    holes = perfect.copy()
    holes[0, 2] = np.nan  # too little skin in one image: left out of its type, its map not counted as falling
    scores = bench.sweep_scores(holes)
    assert scores["per_type"][3]["n"] == 2 and scores["falling"] == 2
