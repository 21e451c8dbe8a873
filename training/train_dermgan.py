"""Train DermGAN (Ghorbani et al. 2020): semantic map -> skin image, pix2pix with resize+conv upsampling, ROI and
feature-matching losses. The command-line face of `dermdiff.loops.gan.train_gan` + `dermgan_task`.

    accelerate launch training/train_dermgan.py --phantom --phantom_num_images 2000 --resolution 32 \\
        --max_train_steps 5000 --output_dir outputs/dermgan-phantom-32

Ghorbani et al.'s (2020) ablation (Table 1), one run per switch:

    ... --no_resize_conv        # transposed convolutions (checkerboard mitigation off)
    ... --no_roi_loss           # no condition-specific (ROI) l1 loss
    ... --no_feature_matching   # no feature-matching loss

Loss weights (Ghorbani et al. 2020 grid-searched them without publishing values; defaults are pix2pix's and
pix2pixHD's): --lambda_gan 1, --lambda_l1 100, --lambda_roi 100, --lambda_fm 10.
Resume after a crash: add `--resume_from_checkpoint latest` to the same command.
"""

from __future__ import annotations

import argparse
import math
import sys

from accelerate.utils import set_seed

from dermdiff.data.transforms import model_transform
from dermdiff.errors import ArgumentParser, UsageError, run_script
from dermdiff.loops.diffusion import grid_skin_types, skin_type_column, validation_maps
from dermdiff.loops.gan import DermGANLossWeights
from dermdiff.loops.gan_cli import (
    add_data_arguments,
    add_training_arguments,
    check_common_args,
    fid_evaluation,
    load_rows,
    model_configs,
    push,
    run_training,
)
from dermdiff.loops.gan_tasks import dermgan_task, split_heldout, stack_examples
from dermdiff.models.dermgan import DermGANGenerator, PatchGANDiscriminator

PIX2PIX_WIDTHS = (64, 128, 256, 512, 512, 512, 512, 512)


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    add_training_arguments(parser)
    losses = parser.add_argument_group("DermGAN losses and ablations (Ghorbani et al. 2020)")
    losses.add_argument("--lambda_gan", type=float, default=1.0, help="Weight of the min-max GAN loss.")
    losses.add_argument("--lambda_l1", type=float, default=100.0, help="Weight of the whole-image l1 loss.")
    losses.add_argument("--lambda_roi", type=float, default=100.0, help="Weight of the ROI (condition) l1 loss.")
    losses.add_argument("--lambda_fm", type=float, default=10.0, help="Weight of the feature-matching loss.")
    losses.add_argument(
        "--no_resize_conv",
        action="store_true",
        help="Ablation: transposed convolutions instead of nearest resize + conv.",
    )
    losses.add_argument("--no_roi_loss", action="store_true", help="Ablation: drop the ROI l1 loss.")
    losses.add_argument("--no_feature_matching", action="store_true", help="Ablation: drop the feature-matching loss.")
    losses.add_argument(
        "--validation_skin_types",
        type=int,
        nargs="+",
        default=[1, 3, 6],
        help="Skin types of the validation grid's columns (rows are conditions).",
    )
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    for name in ("lambda_gan", "lambda_l1", "lambda_roi", "lambda_fm"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.resolution & (args.resolution - 1):
        parser.error(f"--resolution must be a power of two for the U-Net, got {args.resolution}")
    if any(skin_type not in range(1, 7) for skin_type in args.validation_skin_types):
        parser.error(f"--validation_skin_types takes Fitzpatrick types 1..6, got {args.validation_skin_types}")
    return args


def check_resolution(args) -> None:
    """--resolution against the PatchGAN of --model_config, before any data is loaded: too small a side
    would fail only at the first discriminator step, on a kernel larger than its input."""
    _, discriminator_config = model_configs(args)
    widths = discriminator_config.get("block_out_channels", (64, 128, 256, 512))
    minimum = PatchGANDiscriminator.min_sample_size(widths)
    if args.resolution < minimum:
        raise UsageError(
            f"--resolution {args.resolution} is too small for the PatchGAN discriminator (block_out_channels "
            f"{list(widths)}): it needs at least {minimum} px; raise --resolution or use fewer widths in --model_config"
        )


def loss_weights(args) -> DermGANLossWeights:
    return DermGANLossWeights(
        gan=args.lambda_gan,
        l1=args.lambda_l1,
        roi=0.0 if args.no_roi_loss else args.lambda_roi,
        feature_matching=0.0 if args.no_feature_matching else args.lambda_fm,
    )


def build_models(args, registry) -> tuple[DermGANGenerator, PatchGANDiscriminator]:
    """Generator and PatchGAN from --model_config; without one, pix2pix's widths for as many levels as fit."""
    generator_config, discriminator_config = model_configs(args)
    levels = min(len(PIX2PIX_WIDTHS), int(math.log2(args.resolution)))
    generator_config.setdefault("block_out_channels", PIX2PIX_WIDTHS[:levels])
    labels = {"conditions": list(registry.names), "registry_name": registry.registry_name}
    upsample = "transposed" if args.no_resize_conv else "resize_conv"
    generator = DermGANGenerator(
        **{**generator_config, **labels, "sample_size": args.resolution, "upsample": upsample}
    )
    discriminator = PatchGANDiscriminator(**{**discriminator_config, **labels})
    return generator, discriminator


def main(args: argparse.Namespace) -> int:
    check_resolution(args)
    rows = load_rows(args)
    dataset, registry, dataset_name = rows.train, rows.registry, rows.name
    train_rows, heldout_rows = split_heldout(dataset, args.heldout_fraction, args.seed)
    transform = model_transform(args.resolution, registry)
    examples = train_rows.with_transform(transform)
    monitor = None
    if heldout_rows is not None:
        heldout = heldout_rows.with_transform(transform)
        count = min(args.monitor_images, len(heldout), len(examples))
        monitor = (stack_examples(examples, range(count)), stack_examples(heldout, range(count)))
    set_seed(args.seed)  # the initial weights too, so the same seed repeats the run
    generator, discriminator = build_models(args, registry)
    weights = loss_weights(args)
    skin_types = grid_skin_types(args.validation_skin_types, skin_type_column(train_rows))
    maps = validation_maps(registry, args.resolution, skin_types)
    task = dermgan_task(generator, discriminator, weights, maps, len(skin_types), monitor, args.seed)
    settings = {f"lambda_{k}": v for k, v in vars(weights).items()} | {"upsample": generator.config.upsample}
    run = run_training(args, task, examples, settings, fid_evaluation(args, rows))
    push(
        args,
        run,
        "DermGANPipeline (pix2pix-based DermGAN, Ghorbani et al. 2020)",
        dataset_name,
        registry.names,
        settings,
        "from dermdiff import DermGANPipeline\n"
        f'pipe = DermGANPipeline.from_pretrained("{args.hub_model_id or args.output_dir}")\n'
        f'image = pipe(condition="{registry.names[0]}", skin_type=4).images[0]',
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main))
