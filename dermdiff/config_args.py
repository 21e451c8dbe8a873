"""Command-line flags generated from config dataclasses, so that each setting is declared once: as a field.

A config field carries its help (and, where the type is not enough, how argparse reads it) in its metadata;
the flag, its type, default, choices and help are generated from the field, and the dataclass's
`__post_init__` is the one place that validates it, for library callers and the command line alike:

    @dataclass
    class RunConfig:
        learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
        map_shapes: tuple = field(default=("mask",), metadata={"help": "...", "parse": parse_map_shapes})

    parser = ArgumentParser()
    add_config_arguments(parser, RunConfig)             # --learning_rate, --map_shapes, in their groups
    args = parser.parse_args()
    config = config_from_args(parser, RunConfig, args)   # __post_init__'s ValueError -> one line naming the flag

How a field becomes a flag (`--<name>`, or `--<name-with-dashes>` with `dashes=True`):

| field                                | flag                                                                   |
|--------------------------------------|------------------------------------------------------------------------|
| `int`, `float`, `str`, `X | None`    | `type=X`, the field's default                                          |
| `bool` defaulting to False / True    | `store_true` / `--name` and `--no-name` (`BooleanOptionalAction`)      |
| `bool`, metadata `negative_flag`     | only `--<negative_flag>`, `store_false` (e.g. `--no_augment`)           |
| `tuple[X, ...]`, `Sequence[X]`       | `nargs="+"` of X, unless metadata `parse` reads one string (a comma list)|
| `Literal[...]`                       | `choices`                                                               |
| `dict`                               | no flag (filled in by the face, e.g. `extra_tracker_config`)            |

Metadata keys besides `help`: `group` (the argparse group's title), `flag` (the flag's name, and its
`args` attribute, when it is not the field's), `negative_flag` (a True-by-default bool set off by this flag
only), `aliases`, `choices`, `parse` (a str -> value function; its `ValueError` becomes a usage error naming
the flag), `metavar`, `cli=False` (a library-only setting).
The help shows the default, so neither the help text nor a docstring repeats it.

Why not transformers' `HfArgumentParser`: it adds a dashed twin of every flag, reads booleans as
`--flag [true|false]` with a `--no_flag` twin, puts a whole dataclass into one group, has no comma lists
and is itself an `ArgumentParser` subclass, which would replace dermdiff's one-line-error parser
(`dermdiff.errors.ArgumentParser`).
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import re
import types
import typing

from .errors import UsageError

HELP_KEYS = ("group", "flag", "negative_flag", "aliases", "choices", "parse", "metavar", "cli")


def argument_group(parser: argparse.ArgumentParser, title: str):
    """The parser's argument group called `title`, created if it does not exist yet."""
    for group in parser._action_groups:  # argparse keeps no public index of its groups
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def flag_dest(field: dataclasses.Field) -> str:
    """Where argparse stores a field's flag: the flag's own name (metadata `flag`), else the field's."""
    return field.metadata.get("flag", field.name)


def flag_name(field: dataclasses.Field, dashes: bool = False) -> str:
    """`--name` of a config field (metadata `negative_flag`, then `flag` win; `dashes` writes `--name-with-dashes`)."""
    name = field.metadata.get("negative_flag", field.metadata.get("flag", field.name))
    return "--" + (name.replace("_", "-") if dashes else name)


def cli_fields(config_cls, exclude=(), only=None) -> list[dataclasses.Field]:
    """The fields of `config_cls` that are command-line flags (less `exclude`; only those in `only`, if given)."""
    hints = typing.get_type_hints(config_cls)
    return [
        field
        for field in dataclasses.fields(config_cls)
        if field.name not in exclude and (only is None or field.name in only) and field.metadata.get("cli", True)
        and _base(hints[field.name]) is not dict
    ]


def field_default(field: dataclasses.Field):
    """The field's default (calling its factory); `dataclasses.MISSING` when the field is required."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def with_default(config_cls, name: str, default, **metadata):
    """Field `name` of `config_cls` with another default, for a subclass whose default differs; the help stays
    declared once (`train_batch_size: int = with_default(TrainingRunConfig, "train_batch_size", 8)`).
    `metadata` replaces keys of the field's metadata, e.g. `flag="batch_size"` for a face that names it so."""
    (base,) = [field for field in dataclasses.fields(config_cls) if field.name == name]
    return dataclasses.field(default=default, metadata={**base.metadata, **metadata})


def with_flag(config_cls, name: str, flag: str):
    """Field `name` of `config_cls` under another flag name (default and help unchanged), for a face that keeps its
    own older name: `batch_size: int = with_flag(ClassifierTrainingConfig, "batch_size", "batch_size")`."""
    (base,) = [field for field in dataclasses.fields(config_cls) if field.name == name]
    return with_default(config_cls, name, field_default(base), flag=flag)


def with_help(config_cls, name: str, default, help: str):
    """Field `name` of `config_cls` with another default and a more specific help (its group stays)."""
    (base,) = [field for field in dataclasses.fields(config_cls) if field.name == name]
    return dataclasses.field(default=default, metadata={**base.metadata, "help": help})


def add_config_arguments(
    parser: argparse.ArgumentParser,
    config_cls,
    exclude=(),
    group: str = "options",
    only=None,
    dashes: bool = False,
    defaults: dict | None = None,
) -> None:
    """Adds one flag per field of `config_cls` (see the module docstring) to `parser`.

    Args:
        parser (`argparse.ArgumentParser`): flags go into the group named by each field's metadata `group`
            (else `group`), created or reused by title, so a face can add its own flags to the same groups.
        config_cls (`type`): a dataclass whose fields carry `metadata={"help": ...}`.
        exclude (`Iterable[str]`): fields left out (set by the face, or declared by shared flags).
        only (`Iterable[str]`, *optional*): only these fields (a face that takes a few settings of a config).
        group (`str`, defaults to `"options"`): the title for fields without a `group`.
        dashes (`bool`, defaults to False): `--num-inference-steps` instead of `--num_inference_steps`.
        defaults (`dict`, *optional*): field name -> this face's default (a benchmark that runs other settings
            than the library's); the help shows it. Say beside it why it differs.
    """
    hints = typing.get_type_hints(config_cls)
    fields = cli_fields(config_cls, exclude, only)
    unknown = set(defaults or {}) - {field.name for field in fields}
    if unknown:
        raise TypeError(f"defaults for {sorted(unknown)}: not flags of {config_cls.__name__}")
    for field in fields:
        if "help" not in field.metadata:
            raise TypeError(f"{config_cls.__name__}.{field.name} has no metadata help")
        default = (defaults or {}).get(field.name, field_default(field))
        kwargs = _argparse_kwargs(field, hints[field.name], default)
        target = argument_group(parser, field.metadata.get("group", group))
        target.add_argument(flag_name(field, dashes), *field.metadata.get("aliases", ()), dest=flag_dest(field),
                            **kwargs)


def config_from_args(parser: argparse.ArgumentParser, config_cls, args: argparse.Namespace, dashes: bool = False,
                     **values):
    """`config_cls` from the parsed flags (plus `values`); its validation error becomes a usage error that
    names the flag (`parser.error`, exit status 2)."""
    try:
        return parsed_config(config_cls, args, dashes, **values)
    except UsageError as error:
        parser.error(str(error))


def parsed_config(config_cls, args: argparse.Namespace, dashes: bool = False, **values):
    """`config_cls` from the parsed flags (plus `values`), for a `dermdiff` command's `run(args)`: its validation
    error becomes a `dermdiff.errors.UsageError` naming the flag, which the command line reports (exit status 2)."""
    fields = cli_fields(config_cls)
    settings = {field.name: getattr(args, flag_dest(field)) for field in fields if hasattr(args, flag_dest(field))}
    settings.update(values)
    try:
        return config_cls(**settings)
    except ValueError as error:
        raise UsageError(name_flags(str(error), fields, dashes)) from None


def name_flags(message: str, fields, dashes: bool = False) -> str:
    """A validation message in field names, written with the flags instead (`lr must ...` -> `--lr must ...`)."""
    for field in fields:
        message = re.sub(rf"(?<![-\w]){re.escape(field.name)}(?!\w)", flag_name(field, dashes), message)
    return message


def _argparse_kwargs(field: dataclasses.Field, hint, default) -> dict:
    meta = field.metadata
    kwargs = {"help": meta["help"].replace("%", "%%")}
    if default is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = default
    base, args = _base(hint), _args(hint)
    if base is bool and "negative_flag" in meta:
        kwargs["action"] = "store_false"
        return kwargs
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if default is True else "store_true"
        return kwargs  # BooleanOptionalAction shows its default itself
    if "parse" in meta:
        kwargs["type"] = _flag_parser(meta["parse"])
    elif base is typing.Literal:
        kwargs["choices"], kwargs["type"] = args, type(args[0])
    elif base in (tuple, list, collections.abc.Sequence):
        kwargs["nargs"], kwargs["type"] = "+", args[0] if args else str
    else:
        kwargs["type"] = base
    for key in ("choices", "metavar"):
        if key in meta:
            kwargs[key] = tuple(meta[key]) if key == "choices" else meta[key]
    if default not in (None, dataclasses.MISSING):
        shown = ",".join(map(str, default)) if "parse" in meta and isinstance(default, tuple) else (
            " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default)
        # a help that says what its None default means ("(default: the pipeline's saved one)") gives way to the
        # value this face sets
        kwargs["help"] = re.sub(r"\s*\(default: [^()]*\)", "", kwargs["help"])
        kwargs["help"] += f" (default: {shown})".replace("%", "%%")
    return kwargs


def _flag_parser(parse):
    """argparse `type=` for a metadata `parse` function: its ValueError becomes argparse's error naming the flag."""

    def parse_flag(text: str):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse_flag.__name__ = getattr(parse, "__name__", "value")
    return parse_flag


def _strip_optional(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _base(hint):
    hint = _strip_optional(hint)
    return typing.get_origin(hint) or hint


def _args(hint):
    args = typing.get_args(_strip_optional(hint))
    return tuple(arg for arg in args if arg is not Ellipsis)
