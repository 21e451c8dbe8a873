"""Every `dermdiff` sub-command: `--help` shows examples; bad input exits non-zero with one clear stderr line."""

import importlib
import subprocess
import sys

import pytest

from dermdiff.cli import COMMAND_MODULES, main

COMMANDS = [importlib.import_module(name).NAME for name in COMMAND_MODULES]


def bad_inputs(tmp_path) -> dict:
    """One realistic mistake per command, and a word the error line must contain."""
    return {
        "phantom": (["phantom", "--out", str(tmp_path / "p"), "--n", "10", "--size", "8"], "size"),
        "maps": (["maps", "inspect", str(tmp_path / "missing.png")], "missing.png"),
        "generate": (["generate", "--pipeline", str(tmp_path / "no-model"), "--out", str(tmp_path / "g")], "no-model"),
        "study": (["study", "serve", "--real", str(tmp_path), "--synthetic", str(tmp_path), "--db",
                   str(tmp_path / "s.db"), "--port", "70000"], "--port"),
        "evaluate": (["evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "e"), "--pipeline", "x",
                      "--trials", "1"], "--trials"),
        "demo": (["demo", "--out", str(tmp_path / "d"), "--resume", "--overwrite"], "--resume"),
        "classify": (["classify", "--classifier", str(tmp_path / "no-clf"), "--data", "phantom", "--out",
                      str(tmp_path / "c")], "no-clf"),
    }


def test_every_command_has_a_bad_input_case(tmp_path):
    assert sorted(bad_inputs(tmp_path)) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"dermdiff {command}" in out
    examples = out.split("examples:", 1)[1]
    assert f"dermdiff {command} " in examples  # at least one runnable example line


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_is_one_clear_line(command, tmp_path, capsys):
    argv, word = bad_inputs(tmp_path)[command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert line.startswith(f"dermdiff {command}") and "error:" in line and word in line
    assert not (tmp_path / "d").exists()  # the demo refused before creating anything


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_flag_is_one_line(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--no-such-flag"])
    assert exit_info.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"dermdiff {command}") and "--help" in line


def test_real_entry_point_prints_one_line(tmp_path):
    """The installed console script path: a fresh interpreter, stderr exactly one line, exit status 2."""
    result = subprocess.run(
        [sys.executable, "-m", "dermdiff.cli", "demo", "--out", str(tmp_path), "--resume", "--overwrite"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert _one_line(result.stderr).startswith("dermdiff demo: error:")


def test_evaluate_sampling_flags_are_generation_settings(tmp_path, capsys):
    """`dermdiff evaluate`'s --num-inference-steps / --batch-size are `GenerationSettings` fields (defaults 50 / 8),
    validated there: a bad value is one line naming the flag, exit 2."""
    from dermdiff.cli import build_parser
    from dermdiff.commands.evaluate import EvaluationSampling
    from dermdiff.config_args import parsed_config
    from dermdiff.pipelines.generation_settings import GenerationSettings

    argv = ["evaluate", "--pipeline", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "e")]
    sampling = parsed_config(EvaluationSampling, build_parser().parse_args(argv), dashes=True)
    assert isinstance(sampling, GenerationSettings)
    assert (sampling.num_inference_steps, sampling.batch_size) == (50, 8)
    for flag in ("--batch-size", "--num-inference-steps"):
        assert main([*argv, flag, "0"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == f"dermdiff evaluate: error: {flag} must be >= 1, got 0", err


def test_generate_sampling_flags_are_generation_settings(tmp_path, capsys):
    """`dermdiff generate`'s --steps / --guidance-scale / --strength / --batch-size / --scheduler are
    `GenerationSettings` fields under the command's names, validated there (one line naming the flag, exit 2)."""
    from dermdiff.cli import build_parser
    from dermdiff.commands.generate import GenerateSampling
    from dermdiff.config_args import parsed_config

    argv = ["generate", "--pipeline", str(tmp_path), "--out", str(tmp_path / "g")]
    sampling = parsed_config(GenerateSampling, build_parser().parse_args(argv), dashes=True)
    assert (sampling.num_inference_steps, sampling.guidance_scale, sampling.strength, sampling.batch_size,
            sampling.scheduler) == (50, None, None, 16, None)
    args = build_parser().parse_args(argv + ["--steps", "7", "--scheduler", "DPM", "--batch-size", "3"])
    assert (args.steps, args.scheduler, parsed_config(GenerateSampling, args, dashes=True).num_inference_steps) == (
        7, "dpm", 7)
    for flag, value, message in (("--steps", "0", "--steps must be >= 1, got 0"),
                                 ("--guidance-scale", "inf", "--guidance-scale must be a finite number or None")):
        assert main([*argv, flag, value]) == 2
        assert f"dermdiff generate: error: {message}" in capsys.readouterr().err
