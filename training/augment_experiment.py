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
from dataclasses import replace

import torch

from dermdiff.config_args import add_config_arguments, argument_group, config_from_args
from dermdiff.errors import ArgumentParser, run_script
from dermdiff.hardcase.augmentation import EXPERIMENT, AugmentationConfig, run_augmentation_experiment
from dermdiff.hardcase.cli import (
    add_classifier_arguments,
    add_data_arguments,
    add_generator_arguments,
    classifier_settings,
    generation_settings,
    load_generator,
    load_splits,
    parse_json_flags,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    add_generator_arguments(parser, exclude=("strength", "adversarial_guidance_scale", "adversarial_start"))
    add_classifier_arguments(parser)
    experiment = argument_group(parser, EXPERIMENT)
    experiment.add_argument("--output_dir", default="augment-output", help="Models, synthetic images and the report.")
    # every other AugmentationConfig field is a flag (generated: type, default and help come from the field)
    add_config_arguments(parser, AugmentationConfig)
    args = parser.parse_args(argv)
    parse_json_flags(parser, args)
    args.config = config_from_args(parser, AugmentationConfig, args, generation=generation_settings(parser, args))
    return args


def main(args: argparse.Namespace) -> dict:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    pipe = load_generator(args.generator, args.config.generation)
    splits = load_splits(args)
    config = replace(args.config, classifier=classifier_settings(args, pipe.sample_size[0]))
    result = run_augmentation_experiment(splits, pipe, config, args.output_dir)
    with open(result["paths"]["markdown"]) as handle:
        print(handle.read())
    return result


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main))
