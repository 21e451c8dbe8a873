"""The benchmarks' flags are generated from the config dataclasses: the benchmark's own defaults are what --help
shows and what runs, and a bad value is one line naming the flag (validated by the dataclass)."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load_benchmark(name: str):
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)  # as when run as a script: box_maps_phantom imports diffusion_quality_phantom
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses defined in the script look their module up
    spec.loader.exec_module(module)
    return module


def test_hardcase_real_runs_and_shows_its_own_defaults(capsys):
    bench = load_benchmark("hardcase_real")
    args = bench.parse_args([])
    assert (args.config.rounds, args.config.strategies, args.config.per_case, args.config.max_cases) == (
        1, ("map", "sdedit"), 2, 300)
    assert (args.config.generation.num_inference_steps, args.config.generation.scheduler) == (25, "ddim")
    assert args.config.classifier == args.classifier
    # every classifier trains all its epochs (patience 0 = never stop early; a seed control stopped early twice)
    assert (args.classifier["batch_size"], args.classifier["patience"], args.classifier["resolution"]) == (64, 0, 28)
    assert bench.ClassifierTrainingConfig(**args.classifier).patience is None and args.classifier["min_epochs"] == 0
    with pytest.raises(SystemExit):
        bench.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--batch_size BATCH_SIZE Training batch size per process. (default: 64)" in shown
    assert "--num_inference_steps NUM_INFERENCE_STEPS Denoising steps (diffusion only). (default: 25)" in shown
    assert "--patience PATIENCE" in shown and "(default: 0)" in shown
    assert bench.parse_args(["--num_epochs", "3"]).classifier["num_epochs"] == 3
    with pytest.raises(SystemExit):
        bench.parse_args(["--num_epochs", "3", "--min_epochs", "5"])  # a bad value still names its flag
    err = capsys.readouterr().err
    assert "--min_epochs must be between 0 and --num_epochs (3), got 5" in err and "Traceback" not in err



def test_hardcase_real_loop_seed_leaves_the_splits_alone():
    """A generator trained on --export_train's split must stay valid when the loop runs with another seed."""
    bench = load_benchmark("hardcase_real")
    assert (bench.parse_args([]).split_seed, bench.parse_args([]).seed) == (0, 0)
    args = bench.parse_args(["--seed", "1"])
    assert (args.split_seed, args.config.seed, args.classifier["seed"]) == (0, 1, 1)
    assert bench.parse_args(["--seed", "1", "--split_seed", "2"]).split_seed == 2

LATENT_VS_PIXEL = ["--out", "run", "--generator", "a=DIR", "--data", "DATA"]


def test_latent_vs_pixel_runs_its_own_defaults():
    args = load_benchmark("latent_vs_pixel").parse_args(LATENT_VS_PIXEL)
    assert (args.num_inference_steps, args.scheduler, args.guidance_scale, args.batch_size) == (20, "dpm", None, 16)
    assert (args.classifier_resolution, args.classifier_batch_size, args.num_epochs) == (64, 32, 10)
    assert (args.split_seed, args.stratify_by, args.phantom_num_images, args.phantom_seed) == (0, "", 600, 0)


def test_classifier_dermamnist_runs_its_own_defaults():
    config = load_benchmark("classifier_dermamnist").parse_args([]).config
    assert (config.num_epochs, config.batch_size, config.resolution, config.patience, config.balance) == (
        3, 128, 28, None, None)


def test_phantom_quality_benchmarks_run_their_own_defaults():
    box = load_benchmark("box_maps_phantom").parse_args([])
    assert (box.max_train_steps, box.train_batch_size, box.learning_rate, box.seed) == (600, 16, 1e-3, 0)
    assert (box.generation.num_inference_steps, box.generation.guidance_scale) == (25, 2.0)
    assert (box.generation.scheduler, box.generation.batch_size) == ("dpm", 25)
    quality = load_benchmark("diffusion_quality_phantom").parse_args([])
    assert (quality.max_train_steps, quality.train_batch_size, quality.learning_rate) == (2000, 32, 1e-3)
    assert (quality.generation.num_inference_steps, quality.generation.guidance_scale) == (50, 2.0)
    assert (quality.generation.scheduler, quality.generation.batch_size) == ("ddim", 50)


@pytest.mark.parametrize("name, argv, named", [
    ("hardcase_real", ["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    ("hardcase_real", ["--num_epochs", "0"], "--num_epochs must be >= 1, got 0"),
    ("hardcase_real", ["--per_case", "0"], "--per_case must be >= 1, got 0"),
    ("hardcase_real", ["--strength", "2"], "--strength must be in"),
    ("hardcase_real", ["--scheduler", "nope"], "argument --scheduler: takes one of"),
    ("latent_vs_pixel", LATENT_VS_PIXEL + ["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    ("latent_vs_pixel", LATENT_VS_PIXEL + ["--classifier_batch_size", "0"], "--classifier_batch_size must be >= 1"),
    ("latent_vs_pixel", LATENT_VS_PIXEL + ["--classifier_resolution", "4"], "--classifier_resolution must be >= 8"),
    ("latent_vs_pixel", LATENT_VS_PIXEL + ["--num_inference_steps", "0"], "--num_inference_steps must be >= 1"),
    ("latent_vs_pixel", LATENT_VS_PIXEL + ["--phantom_seed", "x"], "argument --phantom_seed: invalid int value"),
    ("hardcase_real", ["--split_seed", "x"], "argument --split_seed: invalid int value: 'x'"),
    ("skin_type_control_real", ["--out", "o"], "give at least one --generator NAME=PIPELINE_DIR"),
    ("skin_type_control_real", ["--out", "o", "--generator", "nowhere"], "--generator takes NAME=PIPELINE_DIR, got"),
    ("skin_type_control_real", ["--out", "o", "--generator", "a=/no/such/dir"], "pipeline folder /no/such/dir does"),
    ("skin_type_control_real", ["--out", "o", "--generator", "a=.", "--maps_per_class", "0"],
     "--maps_per_class must be >= 1, got 0"),
    ("box_maps_phantom", ["--train_batch_size", "0"], "--train_batch_size must be >= 1, got 0"),
    ("box_maps_phantom", ["--max_train_steps", "0"], "--max_train_steps must be >= 1 or None, got 0"),
    ("box_maps_phantom", ["--num_inference_steps", "0"], "--num_inference_steps must be >= 1, got 0"),
    ("box_maps_phantom", ["--guidance_scale", "nan"], "--guidance_scale must be a finite number"),
    ("diffusion_quality_phantom", ["--learning_rate", "0"], "--learning_rate must be > 0, got 0"),
    ("diffusion_quality_phantom", ["--scheduler", "nope"], "argument --scheduler: takes one of"),
    ("diffusion_quality_phantom", ["--num_inference_steps", "0"], "--num_inference_steps must be >= 1, got 0"),
    ("classifier_dermamnist", ["--epochs", "0"], "--epochs must be >= 1, got 0"),
    ("classifier_dermamnist", ["--learning_rate", "0"], "--learning_rate must be > 0"),
])
def test_bad_value_names_its_flag(name, argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark(name).parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and named in err and "Traceback" not in err
