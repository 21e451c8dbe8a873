"""The `dermdiff` command line: one sub-command per job, each in `dermdiff/commands/<name>.py`.

A command module defines `NAME`, `HELP` (one line), `EXAMPLES` (shown under `--help`),
`configure(parser)` (adds its arguments) and `run(args) -> int`. A user error (`dermdiff.errors`) ends
the command with one clear line on stderr and exit status 2 (usage) or 1 (data); `--debug` shows the
traceback instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import USER_ERRORS, ArgumentParser, debug_requested, report

# The order here is the order of `dermdiff --help`.
COMMAND_MODULES = (
    "dermdiff.commands.phantom",
    "dermdiff.commands.maps",
    "dermdiff.commands.generate",
    "dermdiff.commands.study",
    "dermdiff.commands.evaluate",
    "dermdiff.commands.classify",
    "dermdiff.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="dermdiff",
        description="Controllable dermatology image generation: semantic maps, diffusion and GANs, evaluation.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"dermdiff {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.HELP,
            epilog="examples:\n" + module.EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        sub.set_defaults(_run=module.run, _parser=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the sub-command's parser, so the line names the command and its --help
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as error:
        return report(error, f"dermdiff {args.command}", debug_requested(args))


if __name__ == "__main__":
    sys.exit(main())
