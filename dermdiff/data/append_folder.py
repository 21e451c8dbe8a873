"""An image folder written one image at a time by one or many processes, loadable and resumable at any moment.

`dermdiff generate` on many processes writes each image once and may be killed at any time (issue 12 item 7,
issue 15 item 3). The folder stays in the image-folder layout (`dermdiff.data.load_dataset_dir`) the whole way,
written with the rules of `folder_writer` (file names, cells, line ends, atomic files):

- every file (image, map, mask) is written to a temporary name in its folder and renamed into place, so a
  reader never sees half a PNG;
- a row is appended to `metadata.csv` only after its files are in place, under an exclusive `flock` (so rows
  of two processes never interleave), in one `write` of a whole line, then flushed and fsync'ed;
- on (re)opening, the main process cuts a trailing partial line (a kill inside the append) and every process
  reads which rows are finished (row present and its image file present), so a resumed run redoes nothing;
- `finish` rewrites `metadata.csv` sorted by file name (atomically) and removes stray temporary files.

`dataset_info.json` holds the registry (for the loader) and the generation settings; a folder holding
another run's settings is refused with the settings that differ, so two runs never mix in one folder.

Example:
    >>> folder = AppendingImageFolder("gen", COLUMNS, is_main=True)
    >>> folder.prepare({"registry": registry.to_dict(), "generation": settings}, compare=("seed", "steps"))
    >>> done = folder.finished()
    >>> folder.add({"images/000000.png": image, "maps/000000.png": map_image}, row)
    >>> folder.finish()
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os

from .folder import INFO_FILE, METADATA_FILE
from .folder_writer import TEMP_MARK, csv_line, info_bytes, write_atomic, write_files


class AppendingImageFolder:
    """Appends images and metadata rows to an image folder, safely across processes and kills.

    Args:
        root (`str`): the folder.
        columns (`Sequence[str]`): `metadata.csv` columns (must start with `file_name`).
        is_main (`bool`): whether this process prepares and finishes the folder (one process does).
    """

    def __init__(self, root: str, columns, is_main: bool = True):
        if not columns or columns[0] != "file_name":
            raise ValueError(f"columns must start with 'file_name', got {list(columns)}")
        self.root, self.columns, self.is_main = root, list(columns), is_main
        self.metadata = os.path.join(root, METADATA_FILE)
        self.info_path = os.path.join(root, INFO_FILE)

    # ------------------------------------------------------------------------------------------------------------
    def check_settings(self, info: dict, compare) -> bool:
        """`True` if the folder holds a run already (same settings); `ValueError` naming what differs."""
        if not os.path.isfile(self.info_path):
            if os.path.isfile(self.metadata):
                raise ValueError(f"{self.root} holds a {METADATA_FILE} but no {INFO_FILE}: not a dermdiff generate "
                                 "folder; choose a new output folder")
            return False
        try:
            with open(self.info_path, encoding="utf-8") as handle:
                stored = json.load(handle)
        except (OSError, ValueError) as error:
            raise ValueError(f"{self.info_path} cannot be read ({error}); choose a new output folder") from None
        before, now = stored.get("generation", {}), info.get("generation", {})
        differ = [f"{key}: {before.get(key)!r} -> {now.get(key)!r}" for key in compare if before.get(key) != now.get(key)]
        if differ or stored.get("registry") != info.get("registry"):
            differ += ["registry"] if stored.get("registry") != info.get("registry") else []
            raise ValueError(f"{self.root} holds images generated with other settings ({'; '.join(differ)}); "
                             "resume with the same flags or choose a new output folder")
        return True

    def prepare(self, info: dict, compare=(), subfolders=("images",)) -> None:
        """Checks the settings (every process); the main process creates the folders, header and info file."""
        self.check_settings(info, compare)
        if not self.is_main:
            return
        for name in subfolders:
            os.makedirs(os.path.join(self.root, name), exist_ok=True)
        write_atomic(self.info_path, info_bytes(info))
        if not os.path.isfile(self.metadata):
            write_atomic(self.metadata, csv_line(self.columns))
        else:
            self._cut_partial_line()

    def _cut_partial_line(self) -> None:
        with open(self.metadata, "r+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    # ------------------------------------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """The rows written so far (a shared lock keeps a concurrent append out of the read)."""
        with open(self.metadata, encoding="utf-8", newline="") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            text = handle.read()
        complete = text[: text.rfind("\n") + 1]
        return list(csv.DictReader(io.StringIO(complete)))

    def finished(self) -> set[str]:
        """`file_name`s whose row is written and whose image file exists."""
        return {row["file_name"] for row in self.rows() if os.path.isfile(os.path.join(self.root, row["file_name"]))}

    def add(self, files: dict, row: dict) -> None:
        """Writes `files` (relative path -> PIL image) atomically, then appends `row` (flush + fsync)."""
        write_files(self.root, files)
        line = csv_line(row.get(column) for column in self.columns)
        with open(self.metadata, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self) -> int:
        """Main process, after every process is done: sorted, de-duplicated `metadata.csv`; temp files removed."""
        if not self.is_main:
            return 0
        rows = {row["file_name"]: row for row in self.rows()}
        body = b"".join(csv_line(rows[name].get(c) for c in self.columns) for name in sorted(rows))
        write_atomic(self.metadata, csv_line(self.columns) + body)
        for folder, _, names in os.walk(self.root):
            for name in names:
                if TEMP_MARK in name:
                    os.remove(os.path.join(folder, name))
        return len(rows)

