"""Does the diffusion model generate what the map asks for? Measured on the phantom, where truth is known.

Issue 4's quality bar, on held-out maps (maps of a phantom drawn with another seed, never trained on):

- class: a classifier trained on *real* phantom images labels >= 85% of samples as requested;
- placement: IoU of the segmented lesion with the requested lesion box >= 0.5;
- skin tone: mean |ITA error| against real phantom images of the requested type <= 8 degrees.

Usage (trains the model first unless --pipeline is given):

    python benchmarks/diffusion_quality_phantom.py --out outputs/bench/quality
    python benchmarks/diffusion_quality_phantom.py --out outputs/bench/quality --pipeline outputs/bench/quality/model

Prints a table and writes `quality.json` and a grid of samples next to their maps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

from dermdiff.config_args import add_config_arguments, config_from_args
from dermdiff.loops.run_config import TrainingRunConfig
from dermdiff.pipelines.generation_settings import GenerationSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the settings this benchmark runs differently from the library's defaults (--help shows these): a 2000-update run
# of batch 32 at a learning rate of 1e-3 (TrainingRunConfig, passed on to training/train_diffusion.py); 50 DDIM
# steps at guidance 2 (GenerationSettings), sampled 50 maps per pipeline call
TRAINING_DEFAULTS = {"max_train_steps": 2000, "train_batch_size": 32, "learning_rate": 1e-3}
GENERATION_DEFAULTS = {"num_inference_steps": 50, "guidance_scale": 2.0, "scheduler": "ddim"}
SAMPLING_BATCH = 50


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/bench/quality", help="Run folder.")
    parser.add_argument("--pipeline", default=None, help="A trained DermDiffPipeline folder (skips training).")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--train_images", type=int, default=3000, help="Phantom images to train on.")
    add_training_arguments(parser, TRAINING_DEFAULTS)
    parser.add_argument("--samples_per_class", type=int, default=40)
    add_config_arguments(parser, GenerationSettings, defaults=GENERATION_DEFAULTS,
                         only=("num_inference_steps", "guidance_scale", "scheduler"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    validate_training_arguments(parser, args)
    args.generation = config_from_args(parser, GenerationSettings, args, batch_size=SAMPLING_BATCH)
    return args


def add_training_arguments(parser, defaults: dict) -> None:
    """The optimiser flags `phantom_training_command` passes on, generated from `TrainingRunConfig` with this
    benchmark's `defaults` (--max_train_steps, --train_batch_size, --learning_rate)."""
    add_config_arguments(parser, TrainingRunConfig, defaults=defaults,
                         only=("max_train_steps", "train_batch_size", "learning_rate"))


def validate_training_arguments(parser, args) -> None:
    """Validates the training flags once, by `TrainingRunConfig`, before any run starts (a bad value: one line naming
    its flag)."""
    config_from_args(parser, TrainingRunConfig, args, output_dir=args.out)


def phantom_training_command(args, model_dir: str, *flags: str) -> list[str]:
    """`accelerate launch training/train_diffusion.py` on the phantom with `args`' data and optimiser settings."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", os.path.join(ROOT, "accelerate_config.yaml"),
        os.path.join(ROOT, "training", "train_diffusion.py"),
        "--phantom", "--phantom_num_images", str(args.train_images), "--phantom_seed", str(args.seed),
        "--resolution", str(args.resolution), "--train_batch_size", str(args.train_batch_size),
        "--max_train_steps", str(args.max_train_steps), "--learning_rate", str(args.learning_rate),
        "--lr_scheduler", "cosine", "--output_dir", model_dir, "--seed", str(args.seed), "--report_to", "none", *flags,
    ]  # fmt: skip


def train_model(args, model_dir: str) -> None:
    """Runs training/train_diffusion.py under accelerate with a wall-clock budget, then keeps its output."""
    command = phantom_training_command(
        args, model_dir, "--lr_warmup_steps", "200", "--random_flip", "--checkpointing_steps", "500",
        "--checkpoints_total_limit", "2", "--validation_steps", "1000",
    )
    print("training:", " ".join(command), flush=True)
    started = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    print(f"training took {(time.time() - started) / 60:.1f} min", flush=True)


def main(args) -> dict:
    from dermdiff import SemanticMap
    from dermdiff.data import make_splits, phantom_dataset
    from dermdiff.image_grid import image_grid
    from dermdiff.loops.classifier import train_classifier
    from dermdiff.metrics.fidelity import class_fidelity, ita_by_skin_type, placement_scores, skin_tone_fidelity
    from dermdiff.pipelines.pipeline_dermdiff import DermDiffPipeline
    from dermdiff.pipelines.scheduler_names import use_scheduler

    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    registry_names = ["nevus", "melanoma", "psoriasis", "dermatofibroma", "vascular"]

    # 1. the diffusion model ----------------------------------------------------------------------------------
    model_dir = args.pipeline or os.path.join(args.out, "model")
    if not args.pipeline and not os.path.isfile(os.path.join(model_dir, "model_index.json")):
        train_model(args, model_dir)
    pipe = DermDiffPipeline.from_pretrained(model_dir)
    use_scheduler(pipe, args.generation.scheduler)
    pipe.set_progress_bar_config(disable=True)

    # 2. real phantom images: a reference classifier and the ITA of real skin per type ------------------------
    real = phantom_dataset(n=2000, size=args.resolution, seed=args.seed + 101)
    splits = make_splits(real, fractions={"train": 0.8, "validation": 0.2}, seed=args.seed)
    classifier_dir = os.path.join(args.out, "reference_classifier")
    classifier, history = train_classifier(
        splits["train"], splits["validation"], {"backbone": "resnet18", "resolution": args.resolution,
                                                 "num_epochs": 8, "batch_size": 64, "seed": args.seed},
        output_dir=classifier_dir,
    )
    print(f"reference classifier: validation balanced accuracy {history['best_val_balanced_accuracy']:.3f}")
    real_rows = splits["train"].select(range(min(600, len(splits["train"]))))
    reference_ita = ita_by_skin_type(
        list(real_rows["image"]), list(real_rows["skin_type"]), lesion_masks=[np.asarray(m) > 0 for m in real_rows["mask"]]
    )

    # 3. held-out maps: a phantom drawn with another seed (never seen in training) -----------------------------
    held_out = phantom_dataset(n=args.samples_per_class * len(registry_names) * 2, size=args.resolution,
                               seed=args.seed + 7919)
    maps, per_class = [], {name: 0 for name in registry_names}
    for row in held_out:
        smap = SemanticMap.decode(row["semantic_map"], registry="phantom")
        if per_class[smap.condition] < args.samples_per_class:
            per_class[smap.condition] += 1
            maps.append(smap)

    # 4. sample -------------------------------------------------------------------------------------------------
    images, started = [], time.time()
    generator = torch.Generator().manual_seed(args.seed)
    for start in range(0, len(maps), args.generation.batch_size):
        batch = maps[start : start + args.generation.batch_size]
        images += pipe(semantic_map=batch, generator=generator, **args.generation.call_kwargs(pipe)).images
    sampling_seconds = time.time() - started

    # 5. measure ------------------------------------------------------------------------------------------------
    fidelity = class_fidelity(images, [m.condition for m in maps], classifier)
    placement = placement_scores(images, maps)
    tone = skin_tone_fidelity(images, maps, reference=reference_ita)
    results = {
        "model": model_dir, "resolution": args.resolution, "scheduler": args.scheduler,
        "num_inference_steps": args.num_inference_steps, "guidance_scale": args.guidance_scale,
        "num_samples": len(images), "sampling_seconds": sampling_seconds,
        "reference_classifier_val_balanced_accuracy": history["best_val_balanced_accuracy"],
        "class_accuracy": fidelity["overall"]["accuracy"],
        "class_accuracy_per_condition": {k: v["accuracy"] for k, v in fidelity["per_condition"].items()},
        "placement_box_iou": placement["overall"]["iou_box"], "placement_mask_iou": placement["overall"]["iou_mask"],
        "placement_per_condition": placement["per_condition"],
        "ita_mean_abs_error": tone["overall"]["mean_abs_error"],
        "ita_per_type": tone["per_type"], "reference_ita": reference_ita,
    }
    with open(os.path.join(args.out, "quality.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    cells = [image for pair in zip(images[:: args.samples_per_class // 4 or 1][:20],
                                   [m.to_pil() for m in maps[:: args.samples_per_class // 4 or 1][:20]]) for image in pair]
    # 8 cells (4 sample | map pairs) a row; a short last row is padded (a small run has fewer than 8k cells)
    image_grid([cells[i : i + 8] for i in range(0, len(cells), 8)]).save(os.path.join(args.out, "samples_and_maps.png"))

    print(f"\nheld-out maps: {len(images)} samples, {args.scheduler}-{args.num_inference_steps}, "
          f"guidance {args.guidance_scale}, {len(images) / sampling_seconds:.1f} images/s")
    print(f"{'measure':<42}{'value':>10}{'target':>10}")
    print(f"{'class recognised as requested':<42}{results['class_accuracy']:>10.3f}{'>= 0.85':>10}")
    for name, value in results["class_accuracy_per_condition"].items():
        print(f"{'  ' + name:<42}{value:>10.3f}")
    print(f"{'lesion box IoU (segmented vs requested)':<42}{results['placement_box_iou']:>10.3f}{'>= 0.5':>10}")
    print(f"{'lesion mask IoU':<42}{results['placement_mask_iou']:>10.3f}")
    print(f"{'mean |ITA error| vs real, degrees':<42}{results['ita_mean_abs_error']:>10.2f}{'<= 8':>10}")
    for skin_type, row in results["ita_per_type"].items():
        print(f"{'  type ' + skin_type:<42}{row['mean_abs_error']:>10.2f}")
    return results


if __name__ == "__main__":
    main(parse_args())
