"""Datasets for dermdiff: one loader per layout, the seeds' crops, splits, model tensors and the phantom.

Every loader returns a `datasets.Dataset` with the same columns (`image`, `label`, `label_name`,
`skin_type`, `boxes`, `mask`, `semantic_map`, `image_id`, and `lesion_id` / `patient_id` / `split`
when the source has them; see `dermdiff.data.records`), and stores its condition registry in
`dataset.info.description` (see `dermdiff.data.info`); `registry_of(dataset)` gives it back.

| task                                 | function                                                    |
|--------------------------------------|-------------------------------------------------------------|
| image folder + `metadata.csv`        | `load_dataset_dir(path)`                                    |
| HAM10000 / ISIC 2018                 | `load_ham10000(root)`                                       |
| DermaMNIST `.npz`                    | `load_dermamnist(npz_path, split="train")`                  |
| PAD-UFES-20                          | `load_pad_ufes20(root)`                                     |
| Fitzpatrick17k, DDI, SCIN            | `load_fitzpatrick17k(root)`, `load_ddi(root)`, `load_scin(root)` |
| ISIC 2019 / 2020 challenge sets      | `load_isic2019(root)`, `load_isic2020(root)`                |
| any of them, layout recognised       | `load_any(path_or_name)`                                    |
| train/validation/mining/test         | `make_splits(dataset)`, `split_composition(parts)`          |
| DermGAN ROI-centred crop             | `roi_crop(...)`, `roi_crop_dataset(dataset)`                |
| Furger skin patches                  | `skin_patches(...)`, `skin_patch_dataset(dataset)`          |
| model tensors                        | `example_to_tensors(row, res, registry)`, `model_transform` |
| a split back to an image folder     | `save_image_folder(dataset, folder)`                        |
| the procedural phantom               | `write_phantom`, `phantom_dataset`, `generate_phantom_sample` |

Names are imported on first use, so `import dermdiff.data` stays light.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "load_dataset_dir": ".folder",
    "load_ham10000": ".ham10000",
    "load_dermamnist": ".dermamnist",
    "load_pad_ufes20": ".pad_ufes20",
    "load_fitzpatrick17k": ".fitzpatrick17k",
    "load_ddi": ".ddi",
    "load_scin": ".scin",
    "load_isic2019": ".isic",
    "load_isic2020": ".isic",
    "load_any": ".dispatch",
    "detect_layout": ".dispatch",
    "registry_of": ".info",
    "Record": ".records",
    "build_dataset": ".records",
    "dataset_features": ".records",
    "make_splits": ".splits",
    "split_composition": ".splits",
    "composition_markdown": ".splits",
    "save_composition": ".splits",
    "Crop": ".preprocess",
    "roi_crop": ".preprocess",
    "roi_crop_box": ".preprocess",
    "roi_crop_dataset": ".preprocess",
    "skin_patches": ".preprocess",
    "skin_patch_boxes": ".preprocess",
    "skin_patch_dataset": ".preprocess",
    "example_to_tensors": ".transforms",
    "model_transform": ".transforms",
    "save_image_folder": ".export",
    "write_phantom": ".phantom",
    "phantom_dataset": ".phantom",
    "generate_phantom_sample": ".phantom",
    "estimate_skin_types": ".skin_types",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
