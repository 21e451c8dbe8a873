"""What a user did wrong, said in one line: the error types every command and training script catches.

A user error (a bad flag, a missing or damaged file) ends a run with one line on stderr naming the
flag, file, row or field and what is allowed, and an exit status: 2 for usage (the command line is
wrong, or names something that is not there), 1 for data (a file exists but its content is unusable).
Everything else is a bug and keeps its traceback. `--debug` (or `DERMDIFF_DEBUG=1`) shows the
traceback of a user error too.

    from dermdiff.errors import DataError, UsageError
    raise UsageError(f"--resolution must be a power of two, got {resolution}")
    raise DataError(f"{path}: row 7 field 'boxes': {text!r} is not [x0, y0, x1, y1]")

Raise `DataError` / `UsageError` (both `ValueError`s, so library callers catching `ValueError` keep
working) and wrap third-party decode errors with the file name at the place that reads the file:
`read_json`, `read_csv_rows` and `dermdiff.data.files.read_image` do that once for everyone.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import sys
import zipfile

from PIL import Image, UnidentifiedImageError


class UsageError(ValueError):
    """The command line is wrong: a flag's value is out of range, flags conflict (exit status 2)."""

    exit_code = 2


class DataError(ValueError):
    """A file the run reads exists but its content is unusable; the message names file, row and field
    (exit status 1)."""

    exit_code = 1


# Decoders that raise without naming the file. Caught so that a path we forgot to wrap still ends in
# one line (exit 1), but every reader should wrap them with the file name (see `read_json`).
DECODE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    zipfile.BadZipFile,
    json.JSONDecodeError,
    UnicodeDecodeError,
    csv.Error,
)
# A path given on the command line that is not there (or is the wrong kind of thing): usage, status 2.
PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)
USER_ERRORS = (ValueError, PermissionError) + PATH_ERRORS + DECODE_ERRORS


def exit_code(error: BaseException) -> int:
    """2 for usage errors, 1 for data errors (the ones that name a file's content)."""
    if hasattr(error, "exit_code"):
        return int(error.exit_code)
    if isinstance(error, DECODE_ERRORS + (PermissionError,)):
        return 1
    return 2


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message is joined with '; ')."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = "; ".join(lines) or type(error).__name__
    if isinstance(error, DECODE_ERRORS) or not isinstance(error, (ValueError,) + PATH_ERRORS):
        text = f"{type(error).__name__}: {text}"  # a third-party message: its type tells what failed
    return text


def debug_requested(args=None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("DERMDIFF_DEBUG", "") not in ("", "0")


def report(error: BaseException, prog: str, debug: bool = False) -> int:
    """Prints a caught user error as one stderr line and returns its exit status; with `debug`, re-raises.

        try:
            ...
        except USER_ERRORS as error:
            return report(error, "dermdiff generate", debug_requested(args))
    """
    if debug or debug_requested():
        raise error
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
    return exit_code(error)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors and a `--debug` flag (show tracebacks) on every (sub)parser."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.add_help:  # SUPPRESS: a sub-command's parser must not reset a --debug given before it
            self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                              help="show the full traceback of an error")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def run_script(parse_args, main, argv: list[str] | None = None) -> int:
    """A training script's `if __name__ == "__main__":` body: parse, run, user errors as one line.

    `main` may return an exit status or anything else (a results dict counts as success).

        if __name__ == "__main__":
            sys.exit(run_script(parse_args, main))
    """
    args = parse_args(argv)
    prog = os.path.basename(inspect.getfile(main))
    try:
        result = main(args)
    except USER_ERRORS as error:
        return report(error, prog, debug_requested(args))
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def read_json(path: str, what: str = "JSON file"):
    """`json.load` of a file, its errors naming the file (`DataError`) instead of a bare line/column."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"{what} {path} is not valid JSON (line {error.lineno} column {error.colno}: {error.msg})") \
            from None
    except UnicodeDecodeError as error:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {error.start}: {error.reason})") from None


def json_object(path: str, what: str = "JSON file") -> dict:
    """`read_json` that also requires a JSON object at the top."""
    value = read_json(path, what)
    if not isinstance(value, dict):
        raise DataError(f"{what} {path} must hold a JSON object {{...}}, found {type(value).__name__}")
    return value


def read_csv_rows(path: str, what: str = "CSV file") -> list[dict]:
    """All rows of a CSV file with a header, as dicts; decode errors name the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            return list(reader)
    except UnicodeDecodeError as error:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {error.start}: {error.reason})") from None
    except csv.Error as error:
        raise DataError(f"{what} {path} line {reader.line_num}: {error}") from None
