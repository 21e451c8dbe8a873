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

import torch

from dermdiff.data.splits import parse_stratify_by, save_composition
from dermdiff.errors import ArgumentParser, run_script
from dermdiff.hardcase import HardCaseConfig, report_markdown, run_hardcase_loop
from dermdiff.hardcase.cli import (
    add_classifier_arguments,
    add_data_arguments,
    add_generator_arguments,
    classifier_settings,
    load_generator,
    load_splits,
    parse_json_flags,
)
from dermdiff.hardcase.synthesis import STRATEGIES, pipeline_registry


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    add_generator_arguments(parser)
    add_classifier_arguments(parser)
    loop = parser.add_argument_group("loop")
    loop.add_argument("--output_dir", default="hardcase-output", help="Ledger, synthetic images, models and reports.")
    loop.add_argument("--rounds", type=int, default=3, help="Maximum number of rounds.")
    loop.add_argument(
        "--round_patience",
        type=int,
        default=1,
        help="Rounds without a better validation balanced accuracy before stopping.",
    )
    loop.add_argument(
        "--margin", type=float, default=None, help="Also mine correct cases with p(true) - max p(other) < margin."
    )
    loop.add_argument(
        "--max_cases", type=int, default=None, help="At most this many hard cases per round (hardest first)."
    )
    loop.add_argument("--mining_classes", default=None, help="Comma-separated class names to mine (default: all).")
    loop.add_argument(
        "--allow_test_mining", action="store_true", help="Mine on the TEST split (leakage; every report warns)."
    )
    loop.add_argument("--strategies", default="map", help=f"Comma-separated generation strategies of {STRATEGIES}.")
    loop.add_argument("--per_case", type=int, default=4, help="Images per hard case and strategy.")
    loop.add_argument("--strength", type=float, default=0.6, help="SDEdit noise level in (0, 1].")
    loop.add_argument(
        "--adversarial_guidance_scale",
        type=float,
        default=0.05,
        help="RMS step of classifier guidance per guided step.",
    )
    loop.add_argument(
        "--adversarial_start", type=float, default=0.5, help="Fraction of the steps before classifier guidance starts."
    )
    loop.add_argument(
        "--max_shift", type=float, default=0.25, help="Map jitter: largest region shift, as a fraction of the side."
    )
    loop.add_argument(
        "--reference_filter", action="store_true", help="Drop images the real-data baseline does not recognise."
    )
    loop.add_argument(
        "--min_reference_probability",
        type=float,
        default=None,
        help="Recognised = p(label) >= this (default: top class).",
    )
    loop.add_argument(
        "--min_mse", type=float, default=None, help="Drop images closer than this pixel MSE to a training image."
    )
    loop.add_argument(
        "--min_feature_distance",
        type=float,
        default=None,
        help="Drop images closer than this to a training image in the baseline's penultimate features "
        "(an absolute distance: meaningful only for a trained baseline; check ledger nearest_feature_distance).",
    )
    loop.add_argument(
        "--fine_tune", action="store_true", help="Retrain by fine-tuning the current model instead of from scratch."
    )
    loop.add_argument("--seed", type=int, default=0, help="The one base seed of every round.")
    args = parser.parse_args(argv)
    parse_json_flags(parser, args)
    args.strategies = tuple(name.strip() for name in args.strategies.split(",") if name.strip())
    unknown = [name for name in args.strategies if name not in STRATEGIES]
    if unknown or not args.strategies:
        parser.error(f"--strategies must be a comma-separated subset of {STRATEGIES}, got {unknown or 'nothing'}")
    if args.rounds < 1 or args.per_case < 1:
        parser.error("--rounds and --per_case must be >= 1")
    return args


def main(args: argparse.Namespace) -> dict:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    pipe = load_generator(args.generator, args.scheduler)
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
    config = HardCaseConfig(
        rounds=args.rounds,
        patience=args.round_patience,
        margin=args.margin,
        max_cases=args.max_cases,
        mining_classes=mining_classes,
        mining_split="test" if args.allow_test_mining else "mining",
        allow_test_mining=args.allow_test_mining,
        strategies=args.strategies,
        per_case=args.per_case,
        strength=args.strength,
        adversarial_guidance_scale=args.adversarial_guidance_scale,
        adversarial_start=args.adversarial_start,
        max_shift=args.max_shift,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        generation_batch_size=args.generation_batch_size,
        reference_filter=args.reference_filter,
        min_reference_probability=args.min_reference_probability,
        min_mse=args.min_mse,
        min_feature_distance=args.min_feature_distance,
        fine_tune=args.fine_tune,
        seed=args.seed,
        n_boot=args.n_boot,
        classifier=classifier_settings(args, pipe.sample_size[0]),
    )
    result = run_hardcase_loop(splits, pipe, config, args.output_dir)
    print(report_markdown(result))
    return result


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main))
