"""Write generated images with their provenance as a dermdiff image folder (the hard-case loop's synthetic data).

Each image (a `dermdiff.hardcase.synthesis.SyntheticImage`) is written with its semantic map, and its
provenance (source case, strategy, seed, target class) travels in `metadata.csv`, so
`load_dataset_dir` reads the folder back as training data and the ledger can trace every file.
"""

from __future__ import annotations

import csv
import json
import os

from ..conditions import get_registry

METADATA_COLUMNS = (
    "file_name",
    "label",
    "skin_type",
    "map_file",
    "image_id",
    "source_id",
    "strategy",
    "seed",
    "target",
)


def write_synthetic(images: list, folder: str, registry, prefix: str = "syn") -> str:
    """Writes images, maps and `metadata.csv` (+ `dataset_info.json`) as a dermdiff image folder.

    `dermdiff.data.load_dataset_dir(folder)` reads it back; provenance columns (`source_id`, `strategy`,
    `seed`, `target`) travel in the CSV. Sets each image's `image_id` (`<prefix>-<n>`) and `file_name`.
    """
    registry = get_registry(registry)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    os.makedirs(os.path.join(folder, "maps"), exist_ok=True)
    rows = []
    for n, item in enumerate(images):
        stem = f"{n:05d}.png"
        item.image_id = f"{prefix}-{n:05d}"
        item.file_name = f"images/{stem}"
        item.image.save(os.path.join(folder, "images", stem), format="PNG")
        item.semantic_map.to_pil().save(os.path.join(folder, "maps", stem), format="PNG")
        rows.append(
            {
                "file_name": item.file_name,
                "label": item.label_name,
                "skin_type": "" if item.semantic_map.skin_type is None else item.semantic_map.skin_type,
                "map_file": f"maps/{stem}",
                "image_id": item.image_id,
                "source_id": item.source_id,
                "strategy": item.strategy,
                "seed": item.seed,
                "target": "" if item.target is None else item.target,
            }
        )
    with open(os.path.join(folder, "metadata.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=METADATA_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(folder, "dataset_info.json"), "w", encoding="utf-8") as handle:
        json.dump(
            {"generator": "dermdiff.synthesis", "registry": registry.to_dict(), "synthetic": True}, handle, indent=2
        )
    return folder
