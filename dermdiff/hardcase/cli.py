"""Command-line plumbing shared by `training/adversarial_loop.py` and `training/augment_experiment.py`.

Both scripts take the same data flags (`--data_dir` or `--phantom`), the same generator flag
(`--generator PIPELINE_DIR`) and the same classifier flags; they are defined once here.
"""

from __future__ import annotations

import argparse

from ..classifier_flags import add_backbone_arguments, check_backbone_arguments
from ..config_args import add_config_arguments, argument_group, cli_fields, config_from_args, flag_dest
from ..loops.classifier_config import ClassifierTrainingConfig
from ..loops.data_flags import (
    add_estimate_skin_type_argument,
    add_loader_kwargs_argument,
    add_phantom_arguments,
    add_split_seed_argument,
    add_stratify_argument,
    parse_json_object,
)
from ..pipelines.generation_settings import GROUP as GENERATOR_GROUP
from ..pipelines.generation_settings import GenerationSettings

SPLIT_NAMES = ("train", "validation", "mining", "test")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """`--data_dir` or the imbalanced phantom, and how they are split; the flags the training scripts share too come
    from their one home, `dermdiff.loops.data_flags`."""
    data = parser.add_argument_group("data (one of --data_dir / --phantom)")
    data.add_argument(
        "--data_dir", default=None, help="Any layout dermdiff.data.load_any reads (folder, HAM10000, .npz)."
    )
    add_loader_kwargs_argument(data, "--data_dir")
    add_estimate_skin_type_argument(data)  # for a generator trained with the same flag: the mined maps carry the type
    # 1000 phantom images (not the generators' 2000): the hard-case loop trains a classifier per round on them,
    # and the documented commands and measured results use this default
    add_phantom_arguments(data, num_images=1000)
    add_imbalanced_phantom_arguments(data)
    data.add_argument(
        "--split_fractions",
        default=None,
        help="JSON split -> fraction (train/validation/mining/test); default 0.6/0.1/0.15/0.15. "
        "Replaces a split column.",
    )
    add_split_seed_argument(data)
    add_stratify_argument(data)


def add_imbalanced_phantom_arguments(group) -> None:
    """`--phantom_size`, `--phantom_rare`, `--phantom_rare_fraction`: the phantom the hard-case scripts and
    `benchmarks/hardcase_phantom.py` draw, with rare classes to find (`dermdiff.data.phantom.rare_class_weights`)."""
    group.add_argument("--phantom_size", type=int, default=32, help="Phantom image side in pixels.")
    group.add_argument(
        "--phantom_rare",
        default="melanoma,vascular",
        help="Comma-separated phantom classes made rare ('' for balanced).",
    )
    group.add_argument("--phantom_rare_fraction", type=float, default=0.05, help="Share of each rare class.")


CLASSIFIER_GROUP = "classifier (dermdiff.loops.classifier)"
# the ClassifierTrainingConfig fields the hard-case scripts take as flags (the backbone's come from classifier_flags)
CLASSIFIER_FLAGS = ("resolution", "num_epochs", "batch_size", "learning_rate", "balance", "patience", "min_epochs")


def add_classifier_arguments(parser: argparse.ArgumentParser) -> None:
    group = argument_group(parser, CLASSIFIER_GROUP)
    add_backbone_arguments(group)
    add_config_arguments(parser, ClassifierTrainingConfig, group=CLASSIFIER_GROUP, only=CLASSIFIER_FLAGS)
    group.add_argument(
        "--num_threads", type=int, default=None, help="torch intra-op threads (1 is fastest on a shared CPU)."
    )


def add_generator_arguments(parser: argparse.ArgumentParser, exclude=()) -> None:
    """`--generator PIPELINE_DIR` and one flag per `GenerationSettings` field (less `exclude`)."""
    group = argument_group(parser, GENERATOR_GROUP)
    group.add_argument("--generator", required=True, help="A saved DermDiffPipeline or DermGANPipeline folder.")
    add_config_arguments(parser, GenerationSettings, exclude=exclude)


def generation_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> GenerationSettings:
    """The `GenerationSettings` of the generator flags, validated once (a bad value names its flag, exit 2)."""
    return config_from_args(parser, GenerationSettings, args)


def parse_json_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Decodes the JSON flags in place, checks the data source (one of --data_dir / --phantom), the backbone and the
    classifier flags (validated by `ClassifierTrainingConfig`, a bad value naming its flag)."""
    for name in ("loader_kwargs", "split_fractions"):
        parse_json_object(parser, args, name)
    if (args.data_dir is None) == (not args.phantom):
        parser.error("give exactly one of --data_dir and --phantom")
    check_backbone_arguments(parser, args)
    config_from_args(parser, ClassifierTrainingConfig, argparse.Namespace(), **classifier_settings(args))


def classifier_settings(args: argparse.Namespace, resolution: int | None = None) -> dict:
    """`ClassifierTrainingConfig` fields from the classifier flags; `resolution` (the generator's) where
    --resolution is not given. One checkpoint is kept per round's classifier."""
    fields = cli_fields(ClassifierTrainingConfig, only=CLASSIFIER_FLAGS)
    return {  # in this order in the ledger
        "backbone": args.backbone,
        "backbone_config": args.backbone_config,
        "pretrained": args.pretrained,
        **{field.name: getattr(args, flag_dest(field)) for field in fields},
        "resolution": args.resolution or resolution,
        "patience": args.patience or None,  # as ClassifierTrainingConfig reads 0
        "checkpoints_total_limit": 1,
    }


GENERATOR_KINDS = ("DermDiffPipeline", "DermGANPipeline")  # the pipelines that draw an image from a map


def load_generator(path: str, settings: GenerationSettings | None = None, scheduler: str | None = None):
    """The hard-case generator (`GENERATOR_KINDS`) from a folder or Hub id, its denoising bar silenced, with the
    scheduler of `settings` (or the one named by `scheduler`) swapped in (`dermdiff.pipelines.scheduler_names`)."""
    from ..pipelines.loading import load_pipeline

    if scheduler is None:
        scheduler = GenerationSettings.from_value(settings).scheduler
    return load_pipeline(path, kinds=GENERATOR_KINDS, scheduler=scheduler, progress_bar=False)


def load_splits(args: argparse.Namespace):
    """`DatasetDict` with train / validation / mining / test from the data flags.

    An existing split column (e.g. DermaMNIST's train/val) is used unless `--split_fractions` is given;
    `val` is renamed `validation`, and a missing mining (or test) split is carved out of train, whole
    groups at a time (`make_splits` on the train part).
    """
    import datasets

    from ..data import load_any, make_splits, phantom_dataset
    from ..data.phantom import rare_class_weights
    from ..data.splits import parse_stratify_by

    if args.phantom:
        rare = [name for name in args.phantom_rare.split(",") if name]
        weights = rare_class_weights(rare, args.phantom_rare_fraction) if rare else None
        dataset = phantom_dataset(
            n=args.phantom_num_images, size=args.phantom_size, seed=args.phantom_seed, class_weights=weights
        )
    else:
        dataset = load_any(args.data_dir, **(args.loader_kwargs or {}))
        if getattr(args, "estimate_skin_type", False):
            from ..data.skin_types import estimate_skin_types

            dataset = estimate_skin_types(dataset)
    use_column = args.split_fractions is None
    stratify_by = parse_stratify_by(getattr(args, "stratify_by", ""))
    parts = dict(
        make_splits(
            dataset, args.split_fractions, args.split_seed, use_split_column=use_column, stratify_by=stratify_by
        )
    )
    if "val" in parts and "validation" not in parts:
        parts["validation"] = parts.pop("val")
    missing = [name for name in ("mining", "test") if name not in parts]
    if missing:
        share = {"mining": 0.15, "test": 0.15}
        fractions = {"train": 1.0 - sum(share[name] for name in missing), **{name: share[name] for name in missing}}
        parts.update(
            make_splits(parts["train"], fractions, args.split_seed, use_split_column=False, stratify_by=stratify_by)
        )
    unknown = [name for name in parts if name not in SPLIT_NAMES]
    if unknown:
        raise ValueError(f"unexpected split names {unknown}; expected {SPLIT_NAMES}")
    return datasets.DatasetDict({name: parts[name] for name in SPLIT_NAMES})
