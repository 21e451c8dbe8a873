"""Write a dermdiff dataset back out as an image folder that `load_dataset_dir` and the training scripts read.

Why: a benchmark's generator must be trained on exactly the benchmark's training split (never on the
images it is evaluated on), and the training scripts take `--train_data_dir`. Saving the split's images,
semantic maps and metadata — with the condition registry — makes that hand-over lossless: the maps carry
masks and skin types as they were, so nothing is re-derived on the way back in.
"""

from __future__ import annotations

import csv
import json
import os


def save_image_folder(dataset, folder: str) -> str:
    """Writes `images/`, `maps/`, `metadata.csv` and `dataset_info.json` (the registry); returns `folder`.

    Args:
        dataset (`datasets.Dataset`): dermdiff columns (`image`, `semantic_map`, `label_name`, `skin_type`,
            `boxes`, `image_id`; `lesion_id` / `patient_id` are kept when present).
        folder (`str`): created if needed; existing files with the same names are overwritten.
    """
    from .info import registry_of

    if len(dataset) == 0:
        raise ValueError(f"refusing to write an empty dataset to {folder}")
    for sub in ("images", "maps"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    groups = [name for name in ("lesion_id", "patient_id") if name in dataset.column_names]
    rows = []
    for row in dataset:
        stem = f"{row['image_id']}.png"
        row["image"].save(os.path.join(folder, "images", stem))
        row["semantic_map"].save(os.path.join(folder, "maps", stem))
        rows.append(
            {
                "file_name": f"images/{stem}",
                "label": row["label_name"],
                "skin_type": row["skin_type"] or "",
                "boxes": json.dumps(row["boxes"]),
                "map_file": f"maps/{stem}",
                "image_id": row["image_id"],
                **{name: row[name] or "" for name in groups},
            }
        )
    with open(os.path.join(folder, "metadata.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(folder, "dataset_info.json"), "w") as handle:
        json.dump({"registry": registry_of(dataset).to_dict()}, handle)
    return folder
