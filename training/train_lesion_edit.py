"""Train Furger et al.'s lesion add/remove generators (2020, 4.2 targeted and 4.3 untargeted CycleGAN).

The command-line face of `dermdiff.loops.gan.train_gan` + `edit_task`. Both directions train together:
`add_model` (healthy -> lesion) and `remove_model` (lesion -> healthy), each with a multi-scale
discriminator on real photos of its target domain.

- `--mode targeted`: the generators get the lesion mask as an extra channel; loss = GAN + lambda_REL *
  relevancy (MSE outside the mask), lambda_REL = 10. Healthy photos borrow masks from lesion photos.
- `--mode cycle`: no masks; loss = GAN + lambda_CYC * cycle consistency, lambda_CYC = 10.

The generators start as the identity (`zero_init_residual`, the model's default; `--model_config` with
`{"generator": {"zero_init_residual": false}}` restores PyTorch's init) and each discriminator judges
real and fake photos in one batch (`dermdiff.loops.gan.real_and_fake_logits`); without either, the
short phantom runs of benchmarks/gan_phantom.py moved away from the data.

The data needs healthy and lesion images (rows with an empty label are healthy skin):

    accelerate launch training/train_lesion_edit.py --phantom --phantom_healthy_fraction 0.5 \\
        --resolution 32 --mode targeted --max_train_steps 5000 --output_dir outputs/edit-targeted-32

Use the result with `LesionEditPipeline.from_pretrained(output_dir)(image=..., mask=..., direction="add")`.
"""

from __future__ import annotations

import argparse
import sys

from accelerate.utils import set_seed

from dermdiff.data.transforms import model_transform
from dermdiff.errors import ArgumentParser, run_script
from dermdiff.loops.gan import EDIT_MODES
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
from dermdiff.loops.gan_tasks import (
    EditPairs,
    domain_monitor,
    edit_batches,
    edit_task,
    lesion_and_healthy_indices,
    split_heldout,
)
from dermdiff.models.multiscale_discriminator import MultiScaleDiscriminator
from dermdiff.models.translation import TranslationGenerator


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    add_training_arguments(parser)
    edit = parser.add_argument_group("lesion editing (Furger et al. 2020)")
    edit.add_argument(
        "--mode",
        default="targeted",
        choices=EDIT_MODES,
        help="'targeted' (masks + relevancy loss) or 'cycle' (CycleGAN, no masks).",
    )
    edit.add_argument("--lambda_rel", type=float, default=10.0, help="Relevancy-loss weight lambda_REL (targeted).")
    edit.add_argument("--lambda_cyc", type=float, default=10.0, help="Cycle-loss weight lambda_CYC (cycle).")
    edit.add_argument(
        "--cycle_distance",
        default="mse",
        choices=["mse", "l1"],
        help="Cycle-consistency distance: 'mse' as Furger et al.'s (2020) eq. 3, 'l1' as the CycleGAN paper.",
    )
    edit.add_argument("--num_validation_images", type=int, default=4, help="Rows of the validation grid.")
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    if args.lambda_rel < 0 or args.lambda_cyc < 0:
        parser.error(f"--lambda_rel and --lambda_cyc must be >= 0, got {args.lambda_rel}, {args.lambda_cyc}")
    if args.resolution % 4:
        parser.error(f"--resolution must be a multiple of 4 (two stride-2 convolutions), got {args.resolution}")
    return args


def build_models(args):
    """Two translation generators and two multi-scale discriminators (4 convolutions, as Furger et al.'s edits)."""
    generator_config, discriminator_config = model_configs(args)
    mask_channels = 1 if args.mode == "targeted" else 0
    generator_config = {"block_out_channels": [32, 64, 128], **generator_config, "mask_channels": mask_channels}
    layers = 4
    while layers > 1 and args.resolution % 2 ** (layers + 1):
        layers -= 1  # small images: as many convolutions as the two scales allow
    discriminator_config = {
        "num_layers": layers,
        "base_channels": 32,
        **discriminator_config,
        "sample_size": args.resolution,
    }
    return (
        TranslationGenerator(**generator_config),
        TranslationGenerator(**generator_config),
        MultiScaleDiscriminator(**discriminator_config),
        MultiScaleDiscriminator(**discriminator_config),
    )


def main(args: argparse.Namespace) -> int:
    rows = load_rows(args)
    dataset, registry, dataset_name = rows.train, rows.registry, rows.name
    train_rows, heldout_rows = split_heldout(dataset, args.heldout_fraction, args.seed)
    transform = model_transform(args.resolution, registry)
    examples = train_rows.with_transform(transform)
    lesion, healthy = lesion_and_healthy_indices(train_rows)
    pairs = EditPairs(examples, healthy, lesion)
    monitor = None
    if heldout_rows is not None:
        heldout = heldout_rows.with_transform(transform)
        monitor = domain_monitor(examples, train_rows, heldout, heldout_rows, args.monitor_images)
    validation = edit_batches(examples, train_rows, args.num_validation_images) if args.num_validation_images else None
    set_seed(args.seed)  # the initial weights too, so the same seed repeats the run
    add_model, remove_model, lesion_disc, healthy_disc = build_models(args)
    task = edit_task(
        add_model,
        remove_model,
        lesion_disc,
        healthy_disc,
        args.mode,
        args.lambda_rel,
        args.lambda_cyc,
        args.cycle_distance,
        validation,
        monitor,
    )
    settings = {
        "mode": args.mode,
        "lambda_rel": args.lambda_rel,
        "lambda_cyc": args.lambda_cyc,
        "cycle_distance": args.cycle_distance,
    }
    run = run_training(args, task, pairs, settings, fid_evaluation(args, rows))
    mask_example = ", mask=lesion_mask" if args.mode == "targeted" else ""
    push(
        args,
        run,
        f"LesionEditPipeline ({args.mode} lesion add/remove, Furger et al.)",
        dataset_name,
        registry.names,
        settings,
        "from dermdiff import LesionEditPipeline\n"
        f'pipe = LesionEditPipeline.from_pretrained("{args.hub_model_id or args.output_dir}")\n'
        f'edited = pipe(image=photo{mask_example}, direction="add").images[0]',
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main))
