"""The hard-case loop (Silva & Georgieva 2024): train, mine what the classifier gets wrong, generate more, retrain.

The command-line face of `dermdiff.hardcase.run_hardcase_loop`. On the imbalanced phantom with a
diffusion model trained by `training/train_diffusion.py`:

    accelerate launch --config_file accelerate_config.yaml training/adversarial_loop.py \\
        --phantom --phantom_num_images 1000 --phantom_size 32 --phantom_rare melanoma,vascular \\
        --generator outputs/dermdiff-phantom-32 --strategies map,sdedit,adversarial \\
        --rounds 3 --margin 0.2 --per_case 4 --strength 0.6 --adversarial_guidance_scale 0.05 \\
        --backbone resnet18 --num_epochs 15 --balance none --output_dir outputs/hardcase-phantom --seed 0

Your own data (any layout `dermdiff.data.load_any` reads) with a DermGAN generator (map strategy only):

    accelerate launch training/adversarial_loop.py --data_dir my_data --loader_kwargs '{"size": 64}' \\
        --generator outputs/dermgan-64 --strategies map --output_dir outputs/hardcase-mine

Hard cases are mined on the `mining` split. `--allow_test_mining` mines on the test split instead, and
every report then carries a leakage warning. Outputs in `--output_dir`: `ledger.jsonl` (one line per
round), `synthetic/round_k/` (images + metadata.csv with provenance), `classifiers/round_k/`,
`report.md`, `report.json`, `metrics_per_round.png`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch

from dermdiff.config_args import add_config_arguments, argument_group, config_from_args
from dermdiff.data.splits import parse_stratify_by, save_composition
from dermdiff.errors import ArgumentParser, run_script
from dermdiff.hardcase import HardCaseConfig, report_markdown, run_hardcase_loop
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
from dermdiff.hardcase.loop import LOOP
from dermdiff.hardcase.synthesis import pipeline_registry


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    add_generator_arguments(parser)
    add_classifier_arguments(parser)
    loop = argument_group(parser, LOOP)
    loop.add_argument("--output_dir", default="hardcase-output", help="Ledger, synthetic images, models and reports.")
    loop.add_argument("--mining_classes", default=None, help="Comma-separated class names to mine (default: all).")
    # every other HardCaseConfig field is a flag (generated: type, default and help come from the field)
    add_config_arguments(parser, HardCaseConfig)
    args = parser.parse_args(argv)
    parse_json_flags(parser, args)
    args.config = config_from_args(
        parser, HardCaseConfig, args, generation=generation_settings(parser, args),
        mining_split="test" if args.allow_test_mining else "mining",
    )
    return args


def main(args: argparse.Namespace) -> dict:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    pipe = load_generator(args.generator, args.config.generation)
    splits = load_splits(args)
    print(save_composition(splits, args.output_dir, parse_stratify_by(args.stratify_by)))
    mining_classes = None
    if args.mining_classes:
        names = list(pipeline_registry(pipe).names)
        wanted = [name.strip() for name in args.mining_classes.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in names]
        if unknown:
            raise ValueError(f"--mining_classes {unknown} are not conditions of the generator: {names}")
        mining_classes = [names.index(name) for name in wanted]
    config = replace(args.config, mining_classes=mining_classes,
                     classifier=classifier_settings(args, pipe.sample_size[0]))
    result = run_hardcase_loop(splits, pipe, config, args.output_dir)
    print(report_markdown(result))
    return result


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main))
