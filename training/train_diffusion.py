"""Train the semantic-map-conditioned diffusion model (`DermDiffPipeline`) with accelerate.

The command-line face of `dermdiff.loops.diffusion.train_diffusion`; flags follow diffusers'
`examples/unconditional_image_generation/train_unconditional.py`.

One CPU process (the shipped config), the default model on the built-in phantom at 32 px (about 20 minutes
on a CPU core: ~0.5-0.7 s per update of 16 images):

    OMP_NUM_THREADS=1 accelerate launch --config_file accelerate_config.yaml training/train_diffusion.py \\
        --phantom --phantom_num_images 2000 --resolution 32 --train_batch_size 16 \\
        --max_train_steps 2000 --learning_rate 1e-3 --lr_warmup_steps 200 \\
        --checkpointing_steps 500 --checkpoints_total_limit 2 --validation_steps 500 \\
        --output_dir outputs/dermdiff-phantom-32

On a CPU shared with other jobs keep OMP_NUM_THREADS=1: two contended intra-op threads measured 4-8x slower
than one (benchmarks/train_throughput.py).

Two CPU processes (gloo). `accelerate launch --cpu --num_processes 2` starts only ONE process; this starts two:

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        training/train_diffusion.py --phantom --resolution 32 --output_dir outputs/dermdiff-2proc

Your own data in any layout dermdiff reads (an image folder with metadata.csv, HAM10000/ISIC with masks,
PAD-UFES-20, a DermaMNIST .npz), optionally only the training part of `dermdiff.data.make_splits`, or a Hub
dataset in dermdiff's columns:

    accelerate launch training/train_diffusion.py --train_data_dir my_data --resolution 64 --output_dir out
    accelerate launch training/train_diffusion.py --train_data_dir /data/ham10000 --train_split train \
        --split_seed 0 --resolution 64 --augment dihedral --output_dir out
    accelerate launch training/train_diffusion.py --dataset_name user/derm-maps --output_dir out

A latent model at 128 px (LDM): first train an autoencoder (training/train_autoencoder.py) or take any
diffusers AutoencoderKL, then add `--vae`; the UNet then denoises (latent_channels, 128 / f, 128 / f) latents
encoded once and cached, and the saved pipeline holds the VAE:

    accelerate launch training/train_diffusion.py --train_data_dir my_data --resolution 128 \\
        --vae outputs/ae-128 --output_dir outputs/dermdiff-latent-128

Fine-tune a trained pipeline (a folder or a Hub id) on your data: `--pretrained_model_name_or_path` starts from its
UNet, noise schedule and, for a latent model, its VAE, with a fresh optimiser and learning-rate schedule; the data must
use the model's conditions and the model's image side:

    accelerate launch training/train_diffusion.py --pretrained_model_name_or_path outputs/dermdiff-latent-128 \\
        --train_data_dir my_clinic --resolution 128 --learning_rate 1e-4 --output_dir outputs/dermdiff-my-clinic

Resume after a crash or a kill: add `--resume_from_checkpoint latest` to the same command. To train a finished run
longer, resume it with a larger `--max_train_steps`: the learning-rate schedule is stretched to the new length, so a
cosine schedule that had decayed to 0 restarts part-way up (a warm restart) and decays again.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from accelerate.utils import set_seed

from dermdiff.config_args import add_config_arguments, argument_group, config_from_args
from dermdiff.errors import ArgumentParser, json_object, run_script
from dermdiff.hub import ModelCardInfo, push_to_hub
from dermdiff.hub_sync import add_hub_arguments, hub_repo_id, pushing_checkpoints
from dermdiff.latent_maps import check_unet_matches_vae, vae_factor
from dermdiff.loops.autoencoder import load_vae
from dermdiff.loops.data_flags import add_data_source_arguments, check_data_source_args, load_training_rows
from dermdiff.loops.diffusion import (
    DEFAULT_BETA_SCHEDULE,
    DEFAULT_PREDICTION_TYPE,
    DiffusionExamples,
    DiffusionTrainingConfig,
    FIDEvaluation,
    default_noise_scheduler,
    grid_skin_types,
    skin_type_column,
    train_diffusion,
)
from dermdiff.loops.fid_tracking import add_fid_arguments, check_fid_args, fid_reference_rows
from dermdiff.loops.pair_augment import parse_map_shapes
from dermdiff.loops.run_config import RUNS
from dermdiff.models.semantic_unet import SemanticUNet2DModel
from dermdiff.pipelines.generation_settings import GenerationSettings
from dermdiff.semantic_map import SemanticMap


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    data = add_data_source_arguments(parser)
    data.add_argument("--map_shapes", default="mask,box",
                      help="How lesions are drawn in training maps: 'mask', 'box' or 'mask,box' (default: both, "
                           "half each, so a box-only map yields a natural lesion inside the box).")

    model = argument_group(parser, "model and noise")
    model.add_argument("--pretrained_model_name_or_path", default=None,
                       help="Fine-tune a trained DermDiffPipeline (folder or Hub id) instead of a new UNet: its UNet, "
                            "noise schedule and VAE (if any) are the start; optimiser and lr schedule start afresh.")
    model.add_argument("--model_config", default=None, help="JSON file of SemanticUNet2DModel hyperparameters.")
    model.add_argument("--use_class_embedding", action="store_true", help="Also embed the image-level condition.")
    model.add_argument("--vae", "--pretrained_vae", dest="vae", default=None,
                       help="Train a latent model: an AutoencoderKL folder (train_autoencoder.py output), a pipeline "
                            "folder with vae/, or a Hub id. Latents are encoded once and cached.")
    model.add_argument("--latent_cache_dir", default=None,
                       help="Where encoded latents are cached (default: $DERMDIFF_CACHE or ~/.cache/dermdiff, "
                            "subfolder latents); keyed by data and VAE, reused across runs.")
    model.add_argument("--prediction_type", default=None, choices=["epsilon", "v_prediction"],
                       help=f"What the model predicts (default: {DEFAULT_PREDICTION_TYPE}, or the pretrained model's; "
                            "see dermdiff.loops.diffusion.default_noise_scheduler).")
    model.add_argument("--ddpm_num_steps", type=int, default=None,
                       help="Diffusion steps T of the noise schedule (default: 1000, or the pretrained model's).")
    model.add_argument("--ddpm_beta_schedule", default=None,
                       choices=["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"],
                       help=f"Beta schedule (default: {DEFAULT_BETA_SCHEDULE}, or the pretrained model's).")
    # every DiffusionTrainingConfig field is a flag (generated: type, default and help come from the field)
    add_config_arguments(parser, DiffusionTrainingConfig)

    runs = argument_group(parser, RUNS)
    add_fid_arguments(runs)  # --compute_fid_every (EMA samples), --fid_num_images, --fid_extractor, --save_best_fid
    add_hub_arguments(parser, RUNS)
    args = parser.parse_args(argv)

    check_data_source_args(parser, args)
    if args.resolution < 8:
        parser.error(f"--resolution must be >= 8, got {args.resolution}")
    if args.phantom and args.phantom_num_images < 1:
        parser.error(f"--phantom_num_images must be >= 1, got {args.phantom_num_images}")
    check_fid_args(parser, args)
    if args.model_config and not os.path.isfile(args.model_config):
        parser.error(f"--model_config {args.model_config!r} does not exist")
    if args.pretrained_model_name_or_path and (args.model_config or args.use_class_embedding):
        parser.error("--pretrained_model_name_or_path fixes the UNet's architecture; drop --model_config and "
                     "--use_class_embedding")
    try:
        args.map_shapes = parse_map_shapes(args.map_shapes)
    except ValueError as error:
        parser.error(f"--map_shapes: {error}")
    if args.vae and args.random_flip:
        parser.error("--random_flip would flip cached latents, which is not exact; use --augment flip with --vae")
    if not args.pretrained_model_name_or_path:  # with one, main() takes them from the model's noise schedule
        args.prediction_type = args.prediction_type or DEFAULT_PREDICTION_TYPE
        args.ddpm_num_steps = args.ddpm_num_steps or 1000
        args.ddpm_beta_schedule = args.ddpm_beta_schedule or DEFAULT_BETA_SCHEDULE
    args.config = config_from_args(parser, DiffusionTrainingConfig, args, extra_tracker_config={
        "resolution": args.resolution,
        "prediction_type": args.prediction_type,
        "ddpm_beta_schedule": args.ddpm_beta_schedule,
        "ddpm_num_steps": args.ddpm_num_steps,
        "map_shapes": ",".join(args.map_shapes),
        "pretrained_model_name_or_path": args.pretrained_model_name_or_path,
        "estimate_skin_type": args.estimate_skin_type,
    })
    return args


def load_datasets(args):
    """Training rows, held-out rows (None unless FID is computed), the registry and a name for the card."""
    rows = load_training_rows(args)
    return rows.train, fid_reference_rows(args, rows.heldout, rows.name), rows.registry, rows.name


def fid_evaluation(args, heldout, registry) -> FIDEvaluation:
    """Samples the held-out images' own maps and compares the samples with those images."""
    maps = [SemanticMap.decode(image, registry).resize(args.resolution) for image in heldout["semantic_map"]]
    settings = replace(GenerationSettings.for_evaluation(), num_inference_steps=args.ddpm_num_inference_steps)
    return FIDEvaluation(heldout, maps, args.resolution, extractor=args.fid_extractor, settings=settings,
                         seed=args.seed, registry=registry)


def build_model(args, registry, vae=None) -> SemanticUNet2DModel:
    """The UNet from --model_config (if any), sized and labelled for this data (and for the VAE's latents)."""
    config = {}
    if args.model_config:
        config = json_object(args.model_config, "--model_config")
    if vae is not None:
        config.setdefault("in_channels", vae.config.latent_channels)
        config.setdefault("out_channels", vae.config.latent_channels)
    config.update(
        sample_size=args.resolution // vae_factor(vae),
        conditions=list(registry.names),
        registry_name=registry.registry_name,
        use_class_embedding=args.use_class_embedding or config.get("use_class_embedding", False),
    )
    unet = SemanticUNet2DModel(**config)
    if vae is not None:
        check_unet_matches_vae(unet.config, vae, args.resolution)
    return unet


NOISE_FLAGS = {"prediction_type": "prediction_type", "ddpm_num_steps": "num_train_timesteps",
               "ddpm_beta_schedule": "beta_schedule"}  # flag -> the noise scheduler's config key


def pretrained_components(args, registry):
    """A trained DermDiffPipeline's UNet, training noise scheduler and VAE (or --vae's), checked against the data.

    The noise schedule is the model's (a DDPM scheduler from its scheduler's config, whatever sampler it was saved
    with): a noise flag given on the command line must agree with it, since a fine-tune under another schedule or
    target would unlearn what the model knows rather than adapt it.
    """
    from diffusers import DDPMScheduler

    from dermdiff.pipelines.loading import load_pipeline

    name = args.pretrained_model_name_or_path
    pipe = load_pipeline(name, kinds=("DermDiffPipeline",), progress_bar=False)
    unet = pipe.unet
    if list(unet.config.conditions) != list(registry.names):
        raise ValueError(f"--pretrained_model_name_or_path {name}: the model's conditions {list(unet.config.conditions)} "
                         f"are not the data's {list(registry.names)}; fine-tune on data with the model's conditions")
    noise_config = pipe.scheduler.config
    for flag, key in NOISE_FLAGS.items():
        given = getattr(args, flag)
        if given is not None and given != noise_config[key]:
            raise ValueError(f"--{flag} {given} differs from the pretrained model's {key} {noise_config[key]!r}; "
                             "a fine-tune keeps the model's noise schedule: drop the flag")
        setattr(args, flag, noise_config[key])
        args.config.extra_tracker_config[flag] = noise_config[key]
    vae = load_vae(args.vae, cache_dir=args.cache_dir, token=args.hub_token).eval() if args.vae else pipe.vae
    check_unet_matches_vae(unet.config, vae)
    side = unet.config.sample_size * vae_factor(vae)
    if side != args.resolution:
        raise ValueError(f"--resolution {args.resolution}: the pretrained model {name} makes {side} px images; "
                         f"pass --resolution {side}")
    return unet, DDPMScheduler.from_config(noise_config), vae


def latent_examples(args, dataset, registry, vae):
    """The training rows encoded once by the VAE (cached; see dermdiff.latent_cache)."""
    from dermdiff.latent_cache import cached_latents, hold_in_memory

    cache_dir = args.latent_cache_dir or os.path.join(
        os.environ.get("DERMDIFF_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "dermdiff")), "latents"
    )
    examples = DiffusionExamples(registry, args.resolution, args.map_shapes)
    cache = cached_latents(dataset, vae, examples, cache_dir, augment=args.augment)  # every orientation it draws
    return hold_in_memory(cache)


def push(args, run, registry, dataset_label: str) -> str:
    """Uploads the output folder (pipeline + generated model card) to the Hub; the token goes nowhere else."""
    repo_id = hub_repo_id(args)
    info = ModelCardInfo(
        model_type="DermDiffPipeline (semantic-map-conditioned diffusion)",
        dataset=dataset_label,
        resolution=args.resolution,
        train_steps=run.global_step,
        conditions=list(registry.names),
        metrics=run.metrics,
        hyperparameters={
            "train_batch_size": args.train_batch_size,
            "learning_rate": args.learning_rate,
            "prediction_type": args.prediction_type,
            "condition_dropout": args.condition_dropout,
            "use_ema": args.use_ema,
            **({"fine-tuned from": args.pretrained_model_name_or_path} if args.pretrained_model_name_or_path else {}),
            # the maps' skin types were read from the images (ITA), not recorded: a user should know what "type" means
            **({"skin types": "unknown ones estimated from the images' ITA (dermdiff.data.skin_types)"}
               if args.estimate_skin_type else {}),
        },
        usage=(
            "from dermdiff import DermDiffPipeline\n"
            f'pipe = DermDiffPipeline.from_pretrained("{repo_id}")\n'
            f'image = pipe(condition="{registry.names[0]}", skin_type=4).images[0]'
        ),
    )
    repo_id = push_to_hub(args.output_dir, repo_id, info, token=args.hub_token, private=args.hub_private_repo)
    print(f"pushed {args.output_dir} to https://huggingface.co/{repo_id}")
    return repo_id


def main(args: argparse.Namespace) -> int:
    dataset, heldout, registry, dataset_label = load_datasets(args)
    args.config.validation_skin_types = grid_skin_types(args.config.validation_skin_types, skin_type_column(dataset))
    set_seed(args.seed)  # the initial weights too
    if args.pretrained_model_name_or_path:
        unet, noise_scheduler, vae = pretrained_components(args, registry)
    else:
        vae = load_vae(args.vae, cache_dir=args.cache_dir, token=args.hub_token).eval() if args.vae else None
        unet = build_model(args, registry, vae)
        noise_scheduler = default_noise_scheduler(args.ddpm_num_steps, args.ddpm_beta_schedule, args.prediction_type)
    if vae is None:
        examples = dataset.with_transform(DiffusionExamples(registry, args.resolution, args.map_shapes))
    else:
        examples = latent_examples(args, dataset, registry, vae)
    evaluate = fid_evaluation(args, heldout, registry) if args.compute_fid_every else None
    with pushing_checkpoints(args) as on_checkpoint:
        run = train_diffusion(unet, noise_scheduler, examples, args.config, evaluate=evaluate,
                              evaluate_every=args.compute_fid_every, vae=vae, save_best_fid=args.save_best_fid,
                              on_checkpoint=on_checkpoint)
    if args.push_to_hub and run.pipeline is not None:
        push(args, run, registry, dataset_label)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main))
