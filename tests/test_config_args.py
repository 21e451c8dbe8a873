"""Flags generated from config dataclasses (`dermdiff.config_args`): types, defaults, groups, errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Sequence

import pytest

from dermdiff.config_args import add_config_arguments, argument_group, config_from_args, parsed_config, with_default
from dermdiff.errors import ArgumentParser, UsageError


def parse_pair(text: str) -> tuple[str, ...]:
    parts = tuple(part for part in text.split(",") if part)
    if not parts or any(part not in ("mask", "box") for part in parts):
        raise ValueError(f"takes mask, box or mask,box; got {text!r}")
    return parts


@dataclass
class Toy:
    steps: int = field(default=3, metadata={"help": "Steps."})
    scale: float | None = field(default=None, metadata={"help": "Scale (default: the model's).", "group": "sampling"})
    ema: bool = field(default=True, metadata={"help": "EMA."})
    flip: bool = field(default=False, metadata={"help": "Flip."})
    types: Sequence[int] = field(default=(1, 3), metadata={"help": "Types."})
    shapes: tuple = field(default=("mask",), metadata={"help": "Shapes.", "parse": parse_pair})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "Mode."})
    grid_steps: int = field(default=5, metadata={"help": "Grid steps.", "flag": "ddim_steps"})
    hidden: float = field(default=0.5, metadata={"help": "Library only.", "cli": False})
    extra: dict = field(default_factory=dict, metadata={"help": "Not a flag."})

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


@dataclass
class SmallToy(Toy):
    steps: int = with_default(Toy, "steps", 1)


def parser_for(config_cls=Toy, **kwargs):
    parser = ArgumentParser(prog="toy")
    add_config_arguments(parser, config_cls, **kwargs)
    return parser


def test_defaults_come_from_the_fields():
    parser = parser_for()
    config = config_from_args(parser, Toy, parser.parse_args([]))
    assert dataclasses.asdict(config) == dataclasses.asdict(Toy())
    assert config_from_args(parser_for(SmallToy), SmallToy, parser_for(SmallToy).parse_args([])).steps == 1


def test_each_type_reads_its_flag():
    parser = parser_for()
    args = parser.parse_args(["--steps", "7", "--scale", "2.5", "--no-ema", "--flip", "--types", "2", "6",
                              "--shapes", "mask,box", "--mode", "b", "--ddim_steps", "9"])
    config = config_from_args(parser, Toy, args)
    assert (config.steps, config.scale, config.ema, config.flip) == (7, 2.5, False, True)
    assert (list(config.types), config.shapes, config.mode, config.grid_steps) == ([2, 6], ("mask", "box"), "b", 9)
    assert args.ddim_steps == 9 and not hasattr(args, "grid_steps")
    assert not hasattr(args, "hidden") and not hasattr(args, "extra")


def test_groups_dashes_and_shown_defaults():
    parser = parser_for(dashes=True)
    assert argument_group(parser, "sampling") is argument_group(parser, "sampling")
    text = parser.format_help()
    assert "--grid-steps" not in text and "--ddim-steps" in text and "--no-ema" in text
    assert "Steps. (default: 3)" in text and "Shapes. (default: mask)" in text
    titles = {group.title: [action.dest for action in group._group_actions] for group in parser._action_groups}
    assert titles["sampling"] == ["scale"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], r"--steps must be >= 1, got 0"),
        (["--shapes", "disc"], r"argument --shapes: takes mask, box or mask,box; got 'disc'"),
        (["--mode", "c"], r"argument --mode: invalid choice: 'c'"),
        (["--steps", "x"], r"argument --steps: invalid int value: 'x'"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(argv, message, capsys):
    parser = parser_for()
    with pytest.raises(SystemExit) as stop:
        config_from_args(parser, Toy, parser.parse_args(argv))
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2
    assert __import__("re").search(message, lines[-1]), lines


def test_parsed_config_raises_a_usage_error_naming_the_renamed_dashed_flag():
    """`parsed_config` is `config_from_args` for a `dermdiff` command: the error is raised, not exited."""

    @dataclass
    class Renamed(Toy):
        steps: int = with_default(Toy, "steps", 4, flag="num_steps")

    parser = parser_for(Renamed, dashes=True)
    assert "--num-steps NUM_STEPS" in parser.format_help() and "Steps. (default: 4)" in parser.format_help()
    assert parsed_config(Renamed, parser.parse_args([]), dashes=True).steps == 4
    with pytest.raises(UsageError, match=r"^--num-steps must be >= 1, got 0$"):
        parsed_config(Renamed, parser.parse_args(["--num-steps", "0"]), dashes=True)


def test_a_face_default_is_the_flag_default_and_shown_in_the_help():
    parser = parser_for(defaults={"steps": 9, "mode": "b"})
    config = config_from_args(parser, Toy, parser.parse_args([]))
    assert (config.steps, config.mode) == (9, "b") and "Steps. (default: 9)" in parser.format_help()
    with pytest.raises(TypeError, match=r"defaults for \['stpes'\]: not flags of Toy"):
        parser_for(defaults={"stpes": 9})


def test_a_face_default_replaces_what_the_help_says_of_none():
    """A help that explains its None default ("(default: the model's)") shows a face's value instead, once."""
    plain, face = parser_for(only=("scale",)).format_help(), parser_for(only=("scale",), defaults={"scale": 2.0})
    assert "Scale (default: the model's)." in " ".join(plain.split())
    assert "Scale. (default: 2.0)" in " ".join(face.format_help().split()) and "model's" not in face.format_help()


def test_a_field_without_help_is_refused():
    @dataclass
    class NoHelp:
        steps: int = 1

    with pytest.raises(TypeError, match="NoHelp.steps has no metadata help"):
        parser_for(NoHelp)


@pytest.mark.parametrize("script", ["train_diffusion", "train_autoencoder"])
def test_trainer_flags_default_to_their_config_fields(script):
    """The scripts declare no setting of their config again: every field's flag defaults to the field."""
    from bad_input_cases import load_script

    module = load_script(script)
    args = module.parse_args(["--phantom"])
    for config_field in dataclasses.fields(args.config):
        if config_field.metadata.get("cli", True) and config_field.name != "extra_tracker_config":
            default = config_field.default
            assert getattr(args.config, config_field.name) == (tuple(default) if isinstance(default, tuple)
                                                               else default), config_field.name
