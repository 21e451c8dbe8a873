"""Command-line pieces the three GAN scripts share (`training/train_dermgan.py`, `train_dcgan.py`,
`train_lesion_edit.py`): the data and run flags, loading the data, the config, the Hub upload.

Each script adds only its own model and loss flags; everything else is defined here once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from ..config_args import add_config_arguments, argument_group, config_from_args
from ..errors import json_object
from ..hub_sync import add_hub_arguments, hub_repo_id, pushing_checkpoints
from .data_flags import TrainingRows, add_data_source_arguments, check_data_source_args, load_training_rows
from .fid_tracking import PipelineFID, add_fid_arguments, check_fid_args, fid_reference_rows
from .gan import GANTrainingConfig
from .run_config import OPTIMISATION, RUNS


def add_data_arguments(parser: argparse.ArgumentParser, default_resolution: int = 32) -> None:
    data = add_data_source_arguments(parser, default_resolution)
    data.add_argument(
        "--phantom_healthy_fraction",
        type=float,
        default=0.0,
        help="Share of phantom images showing healthy skin (lesion editing needs some).",
    )
    data.add_argument(
        "--heldout_fraction",
        type=float,
        default=0.1,
        help="Real images held out of training for the discriminator-overfitting monitor (0 = none).",
    )
    data.add_argument(
        "--monitor_images",
        type=int,
        default=64,
        help="Images per side (training / held out) the overfitting monitor scores.",
    )


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    train = argument_group(parser, OPTIMISATION)
    train.add_argument(
        "--model_config", default=None, help='JSON file: {"generator": {...}, "discriminator": {...}} hyperparameters.'
    )
    # every GANTrainingConfig field is a flag (generated: type, default and help come from the field)
    add_config_arguments(parser, GANTrainingConfig)
    runs = argument_group(parser, RUNS)
    add_fid_arguments(runs)
    add_hub_arguments(parser, RUNS)


def check_common_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-flag checks shared by the GAN scripts (argparse errors, exit 2)."""
    check_data_source_args(parser, args)
    if args.resolution < 8:
        parser.error(f"--resolution must be >= 8, got {args.resolution}")
    if not 0.0 <= args.heldout_fraction < 1.0:
        parser.error(f"--heldout_fraction must be in [0, 1), got {args.heldout_fraction}")
    if not 0.0 <= args.phantom_healthy_fraction < 1.0:
        parser.error(f"--phantom_healthy_fraction must be in [0, 1), got {args.phantom_healthy_fraction}")
    if args.phantom and args.phantom_num_images < 2:
        parser.error(f"--phantom_num_images must be >= 2, got {args.phantom_num_images}")
    if args.model_config and not os.path.isfile(args.model_config):
        parser.error(f"--model_config {args.model_config!r} does not exist")
    if hasattr(args, "compute_fid_every"):
        check_fid_args(parser, args)
    if hasattr(args, "output_dir"):  # the loop's own checks (batch size, steps, ...), before any data is loaded
        args.config = config_from_args(parser, GANTrainingConfig, args)


def load_train_images(args):
    """The training rows (dermdiff columns), their registry and a name for the model card (see `data_flags`)."""
    rows = load_training_rows(args, healthy_fraction=getattr(args, "phantom_healthy_fraction", 0.0))
    return rows.train, rows.registry, rows.name


def load_rows(args) -> TrainingRows:
    """The training rows, their registry and name, and in `heldout` the rows FID compares with (None unless
    --compute_fid_every; `fid_tracking.fid_reference_rows`)."""
    healthy = getattr(args, "phantom_healthy_fraction", 0.0)
    rows = load_training_rows(args, healthy_fraction=healthy)
    heldout = fid_reference_rows(args, rows.heldout, rows.name, healthy_fraction=healthy)
    return dataclasses.replace(rows, heldout=heldout)


def fid_evaluation(args, rows: TrainingRows) -> PipelineFID | None:
    """The FID hook of --compute_fid_every: the pipeline's images (maps of held-out rows, noise, or held-out
    photos with lesions added, as `dermdiff evaluate --pipeline` draws them) vs the held-out images."""
    if not args.compute_fid_every:
        return None
    return PipelineFID(rows.heldout, rows.registry, args.resolution, extractor=args.fid_extractor, seed=args.seed)


def model_configs(args) -> tuple[dict, dict]:
    """(generator, discriminator) hyperparameters from --model_config (empty dicts without one)."""
    if not args.model_config:
        return {}, {}
    config = json_object(args.model_config, "--model_config")
    unknown = set(config) - {"generator", "discriminator"}
    if unknown:
        raise ValueError(f"--model_config keys must be 'generator' and 'discriminator', got {sorted(unknown)}")
    return dict(config.get("generator", {})), dict(config.get("discriminator", {}))


def training_config(args, extra: dict | None = None) -> GANTrainingConfig:
    """The run's `GANTrainingConfig` (checked in `check_common_args`) with the tracker's extra settings."""
    return dataclasses.replace(args.config, extra_tracker_config={"resolution": args.resolution, **(extra or {})})


def run_training(args, task, dataset, extra: dict | None = None, evaluate: PipelineFID | None = None):
    """`train_gan` with the run's settings, pushing checkpoints in the background under --hub_strategy, and
    FID every --compute_fid_every updates (`evaluate`, see `fid_evaluation`), keeping the best (--save_best_fid)."""
    from .gan import train_gan

    with pushing_checkpoints(args) as on_checkpoint:
        run = train_gan(task, dataset, training_config(args, extra), on_checkpoint=on_checkpoint, evaluate=evaluate,
                        evaluate_every=args.compute_fid_every if evaluate else 0, save_best_fid=args.save_best_fid)
    return run


def push(args, run, model_type: str, dataset_name: str, conditions, hyperparameters: dict, usage: str) -> None:
    """Uploads `args.output_dir` with a model card when --push_to_hub was given."""
    if not args.push_to_hub or run.pipeline is None:
        return
    from ..hub import ModelCardInfo, push_to_hub

    info = ModelCardInfo(
        model_type=model_type,
        dataset=dataset_name,
        resolution=args.resolution,
        train_steps=run.global_step,
        conditions=list(conditions),
        hyperparameters={
            "train_batch_size": args.train_batch_size,
            "learning_rate": args.learning_rate,
            "gan_mode": args.gan_mode,
            **hyperparameters,
        },
        usage=usage,
    )
    repo_id = hub_repo_id(args)
    repo_id = push_to_hub(args.output_dir, repo_id, info, token=args.hub_token, private=args.hub_private_repo)
    print(f"pushed {args.output_dir} to https://huggingface.co/{repo_id}")
