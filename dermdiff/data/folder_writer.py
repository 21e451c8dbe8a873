"""The one writer of the image-folder layout that `load_dataset_dir` (and so `load_any`) reads.

Every tool that writes images for dermdiff to read back writes through here: `save_image_folder` (a
split handed to a training script), `write_synthetic` (the hard-case loop's images), `write_generated_set`
(what the evaluation reads), `write_phantom`, and `dermdiff generate` (through `AppendingImageFolder`,
which adds one image at a time). So the format has one set of rules:

- files: PNG, written to a temporary name and renamed into place, so a reader never sees half a file;
- names: `image_stem(index, count)`: the index zero-padded to at least 5 digits, more when `count`
  needs them, so names sort in index order (a folder whose count can still grow reserves 6 digits);
- `metadata.csv`: UTF-8, `\n` line ends, a header; `None` is an empty cell (0 stays "0"), lists and
  dicts are JSON (`boxes` as `[[x0, y0, x1, y1], ...]`), everything else `str(value)`;
- `dataset_info.json`: UTF-8 JSON with 2-space indent and a final newline; it holds the registry, so
  the maps decode with the right condition codes.

Example:
    >>> entries = [({"images/00000.png": image, "maps/00000.png": smap.to_pil()},
    ...             {"file_name": "images/00000.png", "label": "mel", "map_file": "maps/00000.png"})]
    >>> write_image_folder("out", entries, ("file_name", "label", "map_file"), {"registry": registry.to_dict()})
    >>> load_dataset_dir("out")
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Iterable, Sequence

from .folder import INFO_FILE, METADATA_FILE

TEMP_MARK = ".tmp-"
MIN_DIGITS = 5
GROWING_COUNT = 1_000_000  # the count an appending folder reserves names for (6 digits)


def image_stem(index: int, count: int | None = None) -> str:
    """`index` zero-padded to max(5, digits of `count - 1`); without `count`, room for `GROWING_COUNT`."""
    count = GROWING_COUNT if count is None else count
    return f"{index:0{max(MIN_DIGITS, len(str(max(count, 1) - 1)))}d}"


def metadata_cell(value) -> str:
    """One `metadata.csv` cell: `None` -> "", lists / tuples / dicts -> JSON, anything else -> `str`."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def csv_line(values: Iterable) -> bytes:
    """One UTF-8 CSV line ending in `\n` (quoting as the csv module does)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([metadata_cell(value) for value in values])
    return buffer.getvalue().encode("utf-8")


def write_atomic(path: str, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, flushed to disk, then renames it into place."""
    temporary = f"{path}{TEMP_MARK}{os.getpid()}"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_files(root: str, files: dict) -> None:
    """Saves each PIL image of `files` (relative path -> image) as PNG, each under a temporary name first."""
    for relative, image in files.items():
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}{TEMP_MARK}{os.getpid()}"
        image.save(temporary, format="PNG")
        os.replace(temporary, path)


def info_bytes(info: dict) -> bytes:
    return (json.dumps(info, indent=2) + "\n").encode("utf-8")


def write_image_folder(folder: str, entries: Iterable[tuple[dict, dict]], columns: Sequence[str], info: dict) -> str:
    """Writes an image folder: the files of each entry, `metadata.csv` (one row per entry) and `dataset_info.json`.

    Args:
        folder (`str`): created if needed; files with the same names are replaced.
        entries: `(files, row)` pairs: `files` maps relative paths to PIL images, `row` maps columns to values
            (missing columns are empty). Entries may come from a generator: each is written as it comes.
        columns (`Sequence[str]`): the `metadata.csv` columns, `file_name` first.
        info (`dict`): `dataset_info.json` (with `"registry"`, so the folder loads with its conditions).

    Returns:
        `folder`.
    """
    if not columns or columns[0] != "file_name":
        raise ValueError(f"columns must start with 'file_name', got {list(columns)}")
    os.makedirs(folder, exist_ok=True)
    lines = [csv_line(columns)]
    for files, row in entries:
        write_files(folder, files)
        lines.append(csv_line(row.get(column) for column in columns))
    write_atomic(os.path.join(folder, METADATA_FILE), b"".join(lines))
    write_atomic(os.path.join(folder, INFO_FILE), info_bytes(info))
    return folder
