"""The benchmarks' flags are generated from the config dataclasses: the benchmark's own defaults are what --help
shows and what runs, and a bad value is one line naming the flag (validated by the dataclass)."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load_benchmark(name: str):
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
    assert (args.classifier["batch_size"], args.classifier["patience"], args.classifier["resolution"]) == (64, 3, 28)
    with pytest.raises(SystemExit):
        bench.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--batch_size BATCH_SIZE Training batch size per process. (default: 64)" in shown
    assert "--num_inference_steps NUM_INFERENCE_STEPS Denoising steps (diffusion only). (default: 25)" in shown


@pytest.mark.parametrize("argv, named", [
    (["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    (["--num_epochs", "0"], "--num_epochs must be >= 1, got 0"),
    (["--strength", "2"], "--strength must be in"),
    (["--scheduler", "nope"], "argument --scheduler: takes one of"),
])
def test_hardcase_real_bad_value_names_its_flag(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark("hardcase_real").parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and named in err and "Traceback" not in err
