"""Reading a published metadata CSV: its file, its required columns, its allowed values, its images.

Why one home: every source-specific loader (HAM10000, Fitzpatrick17k, DDI, SCIN, ISIC) reads a CSV whose
layout its authors fixed, and a user who renamed a column or has a value the source never uses should get the
same one-line answer from each: the file, the column, the line and the allowed values.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import pandas as pd

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def find_file(root: str, names: Sequence[str], what: str) -> str:
    """The first of `names` (paths relative to `root`) that exists; `FileNotFoundError` naming them all."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{what} folder {root!r} does not exist")
    for name in names:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no {what} metadata in {root!r}; expected one of {list(names)}")


def read_table(path: str, required: Iterable[str], what: str) -> pd.DataFrame:
    """A CSV as strings (empty cells stay ""), with every `required` column present.

    Raises:
        DataError (a `ValueError`): `"<path> lacks column(s) [...] of the <what> layout; it has [...]"`.
    """
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [str(name).strip() for name in table.columns]
    missing = [name for name in required if name not in table.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing} of the {what} layout; it has {list(table.columns)}")
    return table


def check_values(table: pd.DataFrame, column: str, allowed: Iterable[str], path: str) -> None:
    """Every cell of `column` (stripped) is one of `allowed`; else one line naming file, line, column, values."""
    allowed = list(allowed)
    accepted = set(allowed)
    for position, value in enumerate(table[column]):
        if str(value).strip() not in accepted:
            shown = [value for value in allowed if value != ""] + (["(empty)"] if "" in accepted else [])
            raise DataError(
                f"{path} line {position + 2}: column {column!r} has {value!r}; allowed values: {', '.join(shown)}"
            )


def index_images(root: str, folders: Sequence[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> dict[str, str]:
    """File stem -> path over the image files directly inside `root/<folder>` (one scan each, first wins)."""
    found: dict[str, str] = {}
    for folder in folders:
        directory = os.path.join(root, folder)
        if not os.path.isdir(directory):
            continue
        with os.scandir(directory) as entries:
            for entry in entries:
                stem, extension = os.path.splitext(entry.name)
                if extension.lower() in extensions and stem not in found:
                    found[stem] = entry.path
    return found


def locate(root: str, folders: Sequence[str], name: str) -> str:
    """`root/<folder>/<name>` for the first folder that has it; else the first folder's path (its read then
    fails naming that file and the metadata row)."""
    for folder in folders:
        candidate = os.path.join(root, folder, name)
        if os.path.isfile(candidate):
            return candidate
    return os.path.join(root, folders[0], name)


def cell(row: dict, column: str) -> str:
    """A row's cell as stripped text ("" when the column is absent)."""
    return str(row.get(column, "")).strip()
