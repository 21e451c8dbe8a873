"""Write a dermdiff dataset back out as an image folder that `load_dataset_dir` and the training scripts read.

Why: a benchmark's generator must be trained on exactly the benchmark's training split (never on the
images it is evaluated on), and the training scripts take `--train_data_dir`. Saving the split's images,
semantic maps and metadata — with the condition registry — makes that hand-over lossless: the maps carry
masks and skin types as they were, so nothing is re-derived on the way back in.
"""

from __future__ import annotations

from .folder_writer import write_image_folder


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
    groups = [name for name in ("lesion_id", "patient_id") if name in dataset.column_names]
    columns = ["file_name", "label", "skin_type", "boxes", "map_file", "image_id", *groups]

    def entries():
        for row in dataset:
            stem = f"{row['image_id']}.png"  # the id names the file, so the hand-over keeps every id
            files = {f"images/{stem}": row["image"], f"maps/{stem}": row["semantic_map"]}
            yield files, {"file_name": f"images/{stem}", "label": row["label_name"], "map_file": f"maps/{stem}",
                          **{name: row[name] for name in ("skin_type", "boxes", "image_id", *groups)}}

    return write_image_folder(folder, entries(), columns, {"registry": registry_of(dataset).to_dict()})
