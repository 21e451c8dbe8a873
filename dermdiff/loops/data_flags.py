"""The data-source flags every training script shares (diffusion and the three GANs), defined once."""

from __future__ import annotations

import argparse


def add_data_source_arguments(parser: argparse.ArgumentParser, default_resolution: int = 32):
    """Adds `--train_data_dir | --dataset_name | --phantom` and their options; returns the group for extras."""
    data = parser.add_argument_group("data (exactly one source)")
    data.add_argument("--train_data_dir", default=None, help="Image folder with metadata.csv (dermdiff layout).")
    data.add_argument(
        "--dataset_name", default=None, help="Hub dataset with dermdiff columns (image, label, semantic_map)."
    )
    data.add_argument("--dataset_config_name", default=None, help="Config name of --dataset_name.")
    data.add_argument("--cache_dir", default=None, help="Where Hub datasets are cached.")
    data.add_argument("--phantom", action="store_true", help="Train on the built-in procedural phantom.")
    data.add_argument("--phantom_num_images", type=int, default=2000, help="Phantom images to generate.")
    data.add_argument("--phantom_seed", type=int, default=0, help="Seed of the phantom images.")
    data.add_argument(
        "--resolution", type=int, default=default_resolution, help="Image side in pixels (images are resized)."
    )
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="Data loading worker processes.")
    return data
