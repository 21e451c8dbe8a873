"""Train the autoencoder (a diffusers `AutoencoderKL`) of latent DermDiff with accelerate.

The command-line face of `dermdiff.loops.autoencoder.train_autoencoder` (L1 + KL, an optional patch
discriminator after a warm-up; see that module for the losses). The saved folder is an `AutoencoderKL`
whose config holds the measured latent `scaling_factor`; give it to `train_diffusion.py --vae`.

At 128 px on one CPU core, training on 64 px crops (about 1.5 s per update of 8 crops):

    OMP_NUM_THREADS=1 accelerate launch --config_file accelerate_config.yaml training/train_autoencoder.py \\
        --train_data_dir outputs/ham10000-train --resolution 128 --crop_size 64 --train_batch_size 8 \\
        --learning_rate 2e-4 --max_train_steps 3000 --checkpointing_steps 250 --validation_steps 250 \\
        --output_dir outputs/ae-ham10000-128

Fine-tune a pretrained one (any diffusers AutoencoderKL folder or Hub id), add a discriminator from update
2000, keep an EMA:

    accelerate launch training/train_autoencoder.py --pretrained_vae stabilityai/sd-vae-ft-mse \\
        --train_data_dir my_data --discriminator_start 2000 --use_ema --output_dir out

Resume after a crash or a kill: add `--resume_from_checkpoint latest` to the same command.
"""

from __future__ import annotations

import argparse
import os
import sys

from accelerate.utils import set_seed

from dermdiff.config_args import add_config_arguments, argument_group, config_from_args
from dermdiff.errors import ArgumentParser, json_object, run_script
from dermdiff.hub import ModelCardInfo, push_to_hub
from dermdiff.hub_sync import add_hub_arguments, hub_repo_id, pushing_checkpoints
from dermdiff.loops.autoencoder import (
    AutoencoderTrainingConfig,
    default_autoencoder_config,
    load_vae,
    train_autoencoder,
)
from dermdiff.loops.data_flags import add_data_source_arguments
from dermdiff.loops.diffusion import DiffusionExamples
from dermdiff.loops.gan_cli import load_train_images
from dermdiff.loops.run_config import RUNS


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_data_source_arguments(parser, default_resolution=128)
    parser.set_defaults(phantom_healthy_fraction=0.0)

    model = argument_group(parser, "model and losses")
    model.add_argument("--model_config", default=None,
                       help="JSON file of AutoencoderKL hyperparameters (default: f=4, 4 latent channels, 2.6 M).")
    model.add_argument("--pretrained_vae", default=None,
                       help="Start from this AutoencoderKL (a folder, a pipeline folder with vae/, or a Hub id).")
    model.add_argument("--latent_channels", type=int, default=4, help="Latent channels of a new model.")
    # every AutoencoderTrainingConfig field is a flag (generated: type, default and help come from the field)
    add_config_arguments(parser, AutoencoderTrainingConfig)

    add_hub_arguments(parser, RUNS)
    args = parser.parse_args(argv)

    if sum([bool(args.train_data_dir), bool(args.dataset_name), args.phantom]) != 1:
        parser.error("give exactly one of --train_data_dir, --dataset_name, --phantom")
    if args.resolution < 8:
        parser.error(f"--resolution must be >= 8, got {args.resolution}")
    if args.crop_size is not None and not 8 <= args.crop_size <= args.resolution:
        parser.error(f"--crop_size must be between 8 and --resolution ({args.resolution}), got {args.crop_size}")
    if args.model_config and args.pretrained_vae:
        parser.error("give --model_config (a new model) or --pretrained_vae (fine-tune one), not both")
    if args.model_config and not os.path.isfile(args.model_config):
        parser.error(f"--model_config {args.model_config!r} does not exist")
    if args.train_decoder_only and args.per_channel_latents:
        parser.error("--train_decoder_only keeps the encoder's latents and their normalisation: drop "
                     "--per_channel_latents (or fine-tune the whole autoencoder)")
    if args.train_decoder_only and not args.pretrained_vae:
        parser.error("--train_decoder_only fine-tunes the decoder of a trained autoencoder: give --pretrained_vae")
    if args.latent_channels < 1:
        parser.error(f"--latent_channels must be >= 1, got {args.latent_channels}")
    args.config = config_from_args(parser, AutoencoderTrainingConfig, args, extra_tracker_config={
        "resolution": args.resolution, "pretrained_vae": args.pretrained_vae or ""})
    return args


def build_model(args):
    """A pretrained AutoencoderKL, or a new one from defaults updated by --model_config."""
    from diffusers import AutoencoderKL

    if args.pretrained_vae:
        return load_vae(args.pretrained_vae, cache_dir=args.cache_dir, token=args.hub_token)
    config = default_autoencoder_config(args.resolution, args.latent_channels)
    if args.model_config:
        config.update(json_object(args.model_config, "--model_config"))
    try:
        return AutoencoderKL(**config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--model_config {args.model_config}: not a valid AutoencoderKL config ({error})") from None


def push(args, run, registry, dataset_label: str) -> str:
    """Uploads the output folder (model + generated card) to the Hub; the token goes nowhere else."""
    repo_id = hub_repo_id(args)
    info = ModelCardInfo(
        model_type="AutoencoderKL (latent DermDiff autoencoder)",
        dataset=dataset_label,
        resolution=args.resolution,
        train_steps=run.global_step,
        conditions=list(registry.names),
        metrics={"validation_psnr_db": run.validation_psnr} if run.validation_psnr is not None else {},
        hyperparameters={"train_batch_size": args.train_batch_size, "learning_rate": args.learning_rate,
                         "kl_weight": args.kl_weight, "crop_size": args.crop_size,
                         "discriminator_start": args.discriminator_start, "use_ema": args.use_ema},
        usage=("from diffusers import AutoencoderKL\n"
               f'vae = AutoencoderKL.from_pretrained("{repo_id}")\n'
               "latents = vae.encode(images).latent_dist.sample() * vae.config.scaling_factor"),
    )
    repo_id = push_to_hub(args.output_dir, repo_id, info, token=args.hub_token, private=args.hub_private_repo)
    print(f"pushed {args.output_dir} to https://huggingface.co/{repo_id}")
    return repo_id


def main(args: argparse.Namespace) -> int:
    dataset, registry, dataset_label = load_train_images(args)
    set_seed(args.seed)  # the initial weights too
    vae = build_model(args)
    labels = dataset["label"] if args.config.balance_classes else None
    examples = dataset.with_transform(DiffusionExamples(registry, args.resolution))
    with pushing_checkpoints(args) as on_checkpoint:
        run = train_autoencoder(vae, examples, args.config, registry, on_checkpoint=on_checkpoint, labels=labels)
    if args.push_to_hub and run.vae is not None:
        push(args, run, registry, dataset_label)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main))
