"""Find the images of a study: one folder of real images, one of synthetic ones.

A folder follows the dataset convention of the project (Hugging Face `imagefolder`): when it has a
`metadata.csv`, its rows (`file_name`, `label`) name the images and their condition, so helper files
such as the phantom's `maps/` are never shown; without one, every image file under the folder is used
and the condition is unknown (`None`).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from ..errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SOURCES = ("real", "synthetic")


@dataclass(frozen=True)
class StudyImage:
    """One image on disk: where it is, where it came from and what it shows (if known)."""

    path: str
    source: str
    condition: str | None


def _from_metadata(folder: str, source: str) -> list[StudyImage]:
    metadata = os.path.join(folder, "metadata.csv")
    images = []
    try:
        with open(metadata, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "file_name" not in reader.fieldnames:
                raise DataError(f"{metadata} needs a 'file_name' column, found {reader.fieldnames}")
            rows = list(reader)
    except UnicodeDecodeError as error:
        raise DataError(f"{metadata} is not UTF-8 text (byte {error.start}: {error.reason})") from None
    except csv.Error as error:
        raise DataError(f"{metadata} line {reader.line_num}: {error}") from None
    for row in rows:
        name = (row.get("file_name") or "").strip()
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        path = os.path.normpath(os.path.join(folder, name))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{metadata} lists {name}, which does not exist")
        label = (row.get("label") or "").strip() or None
        images.append(StudyImage(os.path.abspath(path), source, label))
    return images


def _from_files(folder: str, source: str) -> list[StudyImage]:
    images = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(StudyImage(os.path.abspath(os.path.join(root, name)), source, None))
    return images


def scan_folder(folder: str, source: str) -> list[StudyImage]:
    """List the images of one folder, labelled from its `metadata.csv` when there is one.

    Args:
        folder (`str`): an image folder.
        source (`str`): `"real"` or `"synthetic"`.

    Example:
        >>> scan_folder("outputs/samples", "synthetic")[:1]  # doctest: +SKIP
        [StudyImage(path='/abs/outputs/samples/0000.png', source='synthetic', condition='mel')]
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{source} image folder {folder} does not exist")
    if os.path.isfile(os.path.join(folder, "metadata.csv")):
        images = _from_metadata(folder, source)
    else:
        images = _from_files(folder, source)
    if not images:
        raise ValueError(f"{source} image folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return images
