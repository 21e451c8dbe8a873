"""Write generated images with their provenance as a dermdiff image folder (the hard-case loop's synthetic data).

Each image (a `dermdiff.hardcase.synthesis.SyntheticImage`) is written with its semantic map, and its
provenance (source case, strategy, seed, target class) travels in `metadata.csv`, so
`load_dataset_dir` reads the folder back as training data and the ledger can trace every file.
"""

from __future__ import annotations

from ..conditions import get_registry
from .folder_writer import image_stem, write_image_folder

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

    def entries():
        for n, item in enumerate(images):
            stem = image_stem(n, len(images))
            item.image_id, item.file_name = f"{prefix}-{stem}", f"images/{stem}.png"
            files = {item.file_name: item.image, f"maps/{stem}.png": item.semantic_map.to_pil()}
            yield files, {"file_name": item.file_name, "label": item.label_name,
                          "skin_type": item.semantic_map.skin_type, "map_file": f"maps/{stem}.png",
                          "image_id": item.image_id, "source_id": item.source_id, "strategy": item.strategy,
                          "seed": item.seed, "target": item.target}

    info = {"generator": "dermdiff.synthesis", "registry": registry.to_dict(), "synthetic": True}
    return write_image_folder(folder, entries(), METADATA_COLUMNS, info)
