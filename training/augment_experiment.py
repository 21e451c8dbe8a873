"""Ghorbani et al.'s (2020) augmentation experiment: a baseline on real data vs. the same on real + synthetic images.

The command-line face of `dermdiff.hardcase.augmentation.run_augmentation_experiment`. On the imbalanced phantom:

    accelerate launch --config_file accelerate_config.yaml training/augment_experiment.py \\
        --phantom --phantom_num_images 1000 --phantom_size 32 --phantom_rare melanoma,vascular \\
        --generator outputs/dermdiff-phantom-32 --num_images 200 \\
        --backbone resnet18 --num_epochs 15 --output_dir outputs/augment-phantom --seed 0

`--classes` picks the classes to augment (default: those with fewer than half the mean training count,
at least the rarest). Maps are sampled from the validation split and varied as DermGAN does
(`--max_shift`, `--skin_types`). Both classifiers are evaluated on the test split with bootstrap CIs and
compared pairwise (McNemar + paired bootstrap): `report.md`, `report.json` in `--output_dir`.
"""

from __future__ import annotations

import argparse
import sys

import torch

from dermdiff.errors import ArgumentParser, run_script
from dermdiff.hardcase.augmentation import AugmentationConfig, run_augmentation_experiment
from dermdiff.hardcase.cli import (
    add_classifier_arguments,
    add_data_arguments,
    add_generator_arguments,
    classifier_settings,
    load_generator,
    load_splits,
    parse_json_flags,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    add_generator_arguments(parser)
    add_classifier_arguments(parser)
    experiment = parser.add_argument_group("experiment")
    experiment.add_argument("--output_dir", default="augment-output", help="Models, synthetic images and the report.")
    experiment.add_argument(
        "--classes", default=None, help="Comma-separated class names to augment (default: the rare ones)."
    )
    experiment.add_argument("--num_images", type=int, default=100, help="Synthetic images per augmented class.")
    experiment.add_argument(
        "--max_shift", type=float, default=0.25, help="Map jitter: largest region shift (fraction of the side)."
    )
    experiment.add_argument(
        "--skin_types", default=None, help="Comma-separated skin types to swap maps to (default: keep)."
    )
    experiment.add_argument("--seed", type=int, default=0, help="Base seed of maps, images and both classifiers.")
    args = parser.parse_args(argv)
    parse_json_flags(parser, args)
    if args.num_images < 1:
        parser.error("--num_images must be >= 1")
    args.classes = [name.strip() for name in args.classes.split(",")] if args.classes else None
    args.skin_types = [int(value) for value in args.skin_types.split(",")] if args.skin_types else None
    return args


def main(args: argparse.Namespace) -> dict:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    pipe = load_generator(args.generator, args.scheduler)
    splits = load_splits(args)
    config = AugmentationConfig(
        classes=args.classes,
        num_images=args.num_images,
        max_shift=args.max_shift,
        skin_types=args.skin_types,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        generation_batch_size=args.generation_batch_size,
        seed=args.seed,
        n_boot=args.n_boot,
        classifier=classifier_settings(args, pipe.sample_size[0]),
    )
    result = run_augmentation_experiment(splits, pipe, config, args.output_dir)
    with open(result["paths"]["markdown"]) as handle:
        print(handle.read())
    return result


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main))
