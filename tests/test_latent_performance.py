"""benchmarks/latent_performance.py (each phase in-process at tiny sizes) and gpu_check.sh's CPU fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import latent_performance as perf  # noqa: E402  (a benchmark script, imported by path)


def test_every_phase_measures_at_tiny_sizes():
    args = perf.parse_args(["--quick"])
    assert (args.pixel_resolution, args.latent_resolution, args.device) == (16, 32, "cpu")
    pixel, latent = perf.sample(args, latent=False), perf.sample(args, latent=True)
    assert (pixel["side"], latent["side"]) == (16, 32)  # the latent pipeline decodes to the full image size
    assert pixel["images_per_s"] == pytest.approx(1 / pixel["cpu_s_per_image"])
    trained = perf.train(args, latent=True)
    assert trained["updates_timed"] == args.train_steps - 1 - args.warmup and trained["images_per_cpu_s"] > 0
    codec = perf.codec(args)
    assert codec["encode_images_per_cpu_s"] > 0 and codec["decode_images_per_cpu_s"] > 0


def test_report_names_the_clock_and_the_targets():
    result = {"settings": {"device": "cpu", "mixed_precision": "no", "sample_steps": 20, "sample_batch": 4,
                           "pixel_resolution": 32, "latent_resolution": 128, "batch_size": 16},
              "sample_cpu_s_per_image": {"pixel": 0.5, "latent": 0.6}, "sample_images_per_s": {"pixel": 2.0,
                                                                                             "latent": 1 / 0.6},
              "sample_ratio": 1.2, "sample_ratios": [1.2], "train_images_per_cpu_s": {"pixel": 10.0, "latent": 9.0},
              "train_ratio": 0.9, "train_ratios": [0.9], "encode_images_per_cpu_s": 5.0,
              "decode_images_per_cpu_s": 4.0, "peak_rss_mib": {"codec": 900.0}, "peak_gpu_mib": {"codec": 0.0}}
    text = "\n".join(perf.report_lines(result))
    assert "ratio latent / pixel 1.20 (target <= 1.5" in text and "ratio 0.90 (target >= 0.95" in text
    assert "CPU-s/image" in text and "OMP_NUM_THREADS=1" in text and "GPU memory" not in text
    result["settings"]["device"] = "cuda"
    text = "\n".join(perf.report_lines(result))
    assert "s (GPU wall)/image" in text and "peak GPU memory (MiB): codec 0" in text


def test_bad_flags_are_named(capsys):
    with pytest.raises(SystemExit):
        perf.parse_args(["--device", "tpu"])
    assert "--device must be cpu, cuda or auto, got 'tpu'" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_falls_back_to_a_labelled_cpu_mode(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OUT=str(tmp_path), PYTHON=sys.executable)
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "NO CUDA DEVICE: CPU fallback mode" in done.stdout and "NOT GPU numbers" in done.stdout
    result = json.loads((tmp_path / "gpu_check_cpu_fallback.json").read_text())
    assert result["settings"]["quick"] is True and result["sample_ratio"] > 0 and result["train_ratio"] > 0
    assert (tmp_path / "gpu_check_cpu_fallback.md").read_text().startswith("# Latent 32 px vs pixel 16 px on cpu")
