"""Train Furger et al.'s unconditional DCGAN (2020, 3.2.1 and 4.1) with the multi-scale discriminator.

The command-line face of `dermdiff.loops.gan.train_gan` + `dcgan_task`. Furger et al. 2020 train one model per
image type (e.g. only melanomas); `--condition` keeps the rows of one condition.

    accelerate launch training/train_dcgan.py --phantom --resolution 32 --condition melanoma \\
        --max_train_steps 5000 --output_dir outputs/dcgan-melanoma-32

Paper settings (Tables 1 and 2) as presets: `--preset patches` (128 x 128, 4 deconvolutions, 1024 / 128
features), `--preset lesions` (256 x 256, 5, 512 / 64), `--preset hands` (640 x 480, 5, 512 / 32,
refining convolutions). Without a preset the generator's depth follows --resolution (8 x 8 dense map).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from accelerate.utils import set_seed

from dermdiff.data.transforms import model_transform
from dermdiff.errors import ArgumentParser, run_script
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
from dermdiff.loops.gan_tasks import dcgan_task, split_heldout, stack_examples
from dermdiff.models.dcgan import DCGAN_PRESETS, DCGANGenerator
from dermdiff.models.multiscale_discriminator import MultiScaleDiscriminator

# Table 2, discriminator "initial features" per preset
DISCRIMINATOR_FEATURES = {"hands": 32, "patches": 128, "lesions": 64}


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    add_training_arguments(parser)
    model = parser.add_argument_group("DCGAN (Furger et al. 2020)")
    model.add_argument(
        "--preset",
        default=None,
        choices=sorted(DCGAN_PRESETS),
        help="Paper resolution/feature settings (overrides --resolution).",
    )
    model.add_argument("--condition", default=None, help="Train on the images of this condition only.")
    model.add_argument(
        "--truncation",
        type=float,
        default=None,
        help="Truncation threshold for the validation samples (Furger et al. 2020 used 0.1 for hands).",
    )
    model.add_argument("--num_validation_images", type=int, default=16, help="Images in the validation grid.")
    args = parser.parse_args(argv)
    if args.preset:
        args.resolution = DCGAN_PRESETS[args.preset]["sample_size"][0]
    check_common_args(parser, args)
    if args.truncation is not None and args.truncation <= 0:
        parser.error(f"--truncation must be > 0, got {args.truncation}")
    if not args.preset and args.resolution % 16:
        parser.error(
            f"--resolution must be a multiple of 16 (>= 1 stride-2 stage after an 8 x 8 map), got {args.resolution}"
        )
    return args


def image_size(args):
    """(height, width) of a preset (hands are 480 x 640), else the square --resolution."""
    return tuple(DCGAN_PRESETS[args.preset]["sample_size"]) if args.preset else args.resolution


def build_models(args) -> tuple[DCGANGenerator, MultiScaleDiscriminator]:
    """Generator and discriminator: --preset, else sized from --resolution; --model_config entries win."""
    generator_config, discriminator_config = model_configs(args)
    if args.preset:
        preset = DCGAN_PRESETS[args.preset]
        base = {**preset, "sample_size": list(preset["sample_size"])}
        disc = {
            "sample_size": list(preset["sample_size"]),
            "num_layers": preset["num_upsamples"],
            "base_channels": DISCRIMINATOR_FEATURES[args.preset],
        }
    else:
        stages = int(math.log2(args.resolution // 8))  # an 8 x 8 dense map, as Table 1 for square images
        base = {"sample_size": args.resolution, "num_upsamples": stages, "base_channels": 64 * 2 ** (stages - 1)}
        disc = {"sample_size": args.resolution, "num_layers": stages, "base_channels": 32}  # convs = deconvs (3.2.3)
    generator = DCGANGenerator(**{**base, **generator_config})
    discriminator = MultiScaleDiscriminator(**{**disc, **discriminator_config})
    return generator, discriminator


def select_condition(dataset, registry, condition: str | None):
    """Rows of one condition (Furger et al. 2020 train one generator per image type)."""
    if condition is None:
        return dataset
    index = registry.index(condition)

    def is_condition(label) -> bool:
        return label == index

    return dataset.filter(is_condition, input_columns="label")


def main(args: argparse.Namespace) -> int:
    rows = load_rows(args)
    registry, dataset_name = rows.registry, rows.name
    dataset = select_condition(rows.train, registry, args.condition)
    if rows.heldout is not None:  # FID against held-out images of the same condition
        rows = dataclasses.replace(rows, heldout=select_condition(rows.heldout, registry, args.condition))
    if len(dataset) < 2:
        raise ValueError(f"only {len(dataset)} training images left (condition {args.condition!r})")
    train_rows, heldout_rows = split_heldout(dataset, args.heldout_fraction, args.seed)
    transform = model_transform(image_size(args), registry)
    examples = train_rows.with_transform(transform)
    monitor = None
    if heldout_rows is not None:
        heldout = heldout_rows.with_transform(transform)
        count = min(args.monitor_images, len(heldout), len(examples))
        keys = ("pixel_values",)
        monitor = (stack_examples(examples, range(count), keys), stack_examples(heldout, range(count), keys))
    set_seed(args.seed)  # the initial weights too, so the same seed repeats the run
    generator, discriminator = build_models(args)
    task = dcgan_task(generator, discriminator, args.num_validation_images, args.truncation, monitor, args.seed)
    settings = {"condition": args.condition or "all", "preset": args.preset or "none"}
    run = run_training(args, task, examples, settings, fid_evaluation(args, rows))
    push(
        args,
        run,
        "DCGANPipeline (unconditional DCGAN, Furger et al.)",
        dataset_name,
        [args.condition] if args.condition else registry.names,
        settings,
        "from dermdiff import DCGANPipeline\n"
        f'pipe = DCGANPipeline.from_pretrained("{args.hub_model_id or args.output_dir}")\n'
        "images = pipe(batch_size=4, truncation=0.5).images",
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main))
