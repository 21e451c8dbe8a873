"""Does a box-only map (DermGAN's format) yield a lesion of natural shape inside the box? Measured on the phantom.

Issue 12 item 6. Two diffusion models are trained on the same phantom images with the same budget, one
on maps drawn from the lesion masks only (`--map_shapes mask`, the old behaviour) and one on a half/half
mix of mask-drawn and box-drawn maps (`--map_shapes mask,box`, the default). Both are then asked for
lesions with held-out BOX maps (each region of a held-out phantom map replaced by its bounding box).

For every sample the lesion is segmented (`dermdiff.metrics.fidelity.segment_lesion`, the same colour/contrast
segmenter for generated and real images) and we report:

- fill in box = segmented lesion pixels inside the box / box area (and, next to it, the whole segmented area
  / box area). A model that paints the box gives ~1.0; the target is the real phantom's fill: the same
  segmenter on the real held-out images against the box of their true mask (and the true mask's own
  area / box area, for reference);
- inside = share of the segmented lesion inside the requested box (placement still honoured);
- box IoU of the segmented lesion's bounding box with the requested box.

Usage (trains both models unless --model_dirs is given; each training run has a fixed number of
updates, the wall-clock time is reported):

    OMP_NUM_THREADS=1 python benchmarks/box_maps_phantom.py --out outputs/bench/box_maps
    python benchmarks/box_maps_phantom.py --out outputs/bench/box_maps --model_dirs mask,box=runs/a mask=runs/b

Writes `box_maps.json`, `box_maps.md` and `box_samples.png` (maps, then each model's samples, upscaled).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import numpy as np
import torch
from diffusion_quality_phantom import (
    ROOT,
    add_training_arguments,
    phantom_training_command,
    validate_training_arguments,
)

from dermdiff.config_args import add_config_arguments, config_from_args
from dermdiff.pipelines.generation_settings import GenerationSettings

VARIANTS = ("mask,box", "mask")
# a quarter of the default UNet's width: two of these train in ~40 wall-minutes on a shared 2-core machine
SMALL_MODEL = {"block_out_channels": [16, 32, 64], "norm_num_groups": 8}
# the settings this benchmark runs differently from the library's defaults (--help shows these): 600 updates of
# batch 16 at a learning rate of 1e-3 per model (TrainingRunConfig, passed on to training/train_diffusion.py);
# 25 DPM-Solver++ steps at guidance 2 (GenerationSettings), sampled 25 maps per pipeline call
TRAINING_DEFAULTS = {"max_train_steps": 600, "train_batch_size": 16, "learning_rate": 1e-3}
GENERATION_DEFAULTS = {"num_inference_steps": 25, "guidance_scale": 2.0}
SAMPLING = {"scheduler": "dpm", "batch_size": 25}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/bench/box_maps", help="Run folder.")
    parser.add_argument("--model_dirs", nargs="*", default=None, metavar="SHAPES=DIR",
                        help="Trained pipelines to measure instead of training, e.g. mask,box=runs/a mask=runs/b.")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--train_images", type=int, default=3000, help="Phantom images to train on.")
    parser.add_argument("--model_config", default=None,
                        help="SemanticUNet2DModel JSON (default: the small UNet of SMALL_MODEL).")
    add_training_arguments(parser, TRAINING_DEFAULTS)  # per model
    parser.add_argument("--samples", type=int, default=100, help="Held-out box maps to sample.")
    add_config_arguments(parser, GenerationSettings, defaults=GENERATION_DEFAULTS,
                         only=("num_inference_steps", "guidance_scale"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    validate_training_arguments(parser, args)
    args.generation = config_from_args(parser, GenerationSettings, args, **SAMPLING)
    return args


def train_model(args, shapes: str, model_dir: str) -> float:
    """Runs training/train_diffusion.py for one map-shape setting; returns the wall-clock minutes."""
    model_config = args.model_config
    if model_config is None:
        model_config = os.path.join(args.out, "small_unet.json")
        with open(model_config, "w") as handle:
            json.dump(SMALL_MODEL, handle)
    command = phantom_training_command(
        args, model_dir, "--lr_warmup_steps", "100", "--augment", "flip", "--map_shapes", shapes,
        "--checkpointing_steps", "400", "--checkpoints_total_limit", "1", "--validation_steps", "0",
        "--model_config", model_config,
    )
    print("training:", " ".join(command), flush=True)
    started = time.time()
    subprocess.run(command + ["--resume_from_checkpoint", "latest"], check=True, cwd=ROOT)
    return (time.time() - started) / 60


def box_scores(masks, boxes) -> dict:
    """Mean fill (area / box area), share inside the box and bounding-box IoU of segmented lesions."""
    from dermdiff.metrics.fidelity import box_iou, mask_box

    fill, fill_in_box, inside, iou, empty = [], [], [], [], 0
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        area = int(mask.sum())
        if area == 0:
            empty += 1
        box_area = (x1 - x0) * (y1 - y0)
        fill.append(area / box_area)
        fill_in_box.append(float(mask[y0:y1, x0:x1].sum() / box_area))
        inside.append(float(mask[y0:y1, x0:x1].sum() / area) if area else 0.0)
        iou.append(box_iou(mask_box(mask), (x0, y0, x1, y1)))
    return {"fill_in_box": float(np.mean(fill_in_box)), "fill_mean": float(np.mean(fill)), "fill_median": float(np.median(fill)),
            "fill_sd": float(np.std(fill)), "inside_box": float(np.mean(inside)), "box_iou": float(np.mean(iou)),
            "empty_segmentations": empty, "n": len(fill)}


def held_out_maps(args):
    """Single-region held-out phantom rows: their images, true maps and box maps."""
    from dermdiff import SemanticMap
    from dermdiff.data import phantom_dataset

    rows = phantom_dataset(n=args.samples * 2, size=args.resolution, seed=args.seed + 7919)
    images, maps = [], []
    for row in rows:
        smap = SemanticMap.decode(row["semantic_map"], registry="phantom")
        if len(smap.regions) == 1 and len(maps) < args.samples:
            images.append(row["image"].convert("RGB"))
            maps.append(smap)
    return images, maps


def sample(model_dir: str, box_maps, args) -> list:
    from dermdiff.pipelines.pipeline_dermdiff import DermDiffPipeline
    from dermdiff.pipelines.scheduler_names import use_scheduler

    settings = args.generation
    pipe = use_scheduler(DermDiffPipeline.from_pretrained(model_dir), settings.scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = []
    for start in range(0, len(box_maps), settings.batch_size):
        batch = box_maps[start : start + settings.batch_size]
        generators = [torch.Generator().manual_seed(args.seed + start + k) for k in range(len(batch))]
        images += pipe(semantic_map=batch, generator=generators, **settings.call_kwargs(pipe)).images
    return images


def picture(box_maps, samples: dict, path: str, columns: int = 10) -> None:
    """Rows: box maps, then each model's samples of them; every image upscaled 4x (nearest)."""
    from diffusers.utils import make_image_grid
    from PIL import Image

    columns = min(columns, len(box_maps))
    rows = [[m.to_pil() for m in box_maps[:columns]]] + [images[:columns] for images in samples.values()]
    tiles = [image.resize((image.width * 4, image.height * 4), Image.NEAREST) for row in rows for image in row]
    make_image_grid(tiles, rows=len(rows), cols=columns).save(path)


def markdown(results: dict) -> str:
    lines = ["| lesions in a box | fill in box = (lesion in box) / box | area / box area | share inside box "
             "| box IoU | no lesion found |", "|---|---|---|---|---|---|"]
    real = results["real"]
    lines.append(f"| real phantom, true mask | {real['true_mask_fill']:.3f} | {real['true_mask_fill']:.3f} | 1.000 "
                 "| 1.000 | 0 |")
    rows = [("real phantom, segmented", real["segmented"])]
    for shapes, row in results["models"].items():
        budget = f"{row['train_steps']} updates, {row['train_minutes']:.1f} min" if row["train_steps"] else "given"
        rows.append((f"samples of box maps, trained on `{shapes}` ({budget})", row["scores"]))
    for name, s in rows:
        lines.append(f"| {name} | {s['fill_in_box']:.3f} | {s['fill_mean']:.3f} | {s['inside_box']:.3f} | "
                     f"{s['box_iou']:.3f} | {s['empty_segmentations']} of {s['n']} |")
    return "\n".join(lines) + "\n"


def main(args) -> dict:
    from dermdiff.metrics.fidelity import segment_lesion

    os.makedirs(args.out, exist_ok=True)
    given = dict(item.split("=", 1) for item in args.model_dirs or [])
    model_dirs = given or {shapes: os.path.join(args.out, "model-" + shapes.replace(",", "-")) for shapes in VARIANTS}
    minutes = {}
    for shapes, model_dir in model_dirs.items():
        if not given and not os.path.isfile(os.path.join(model_dir, "model_index.json")):
            minutes[shapes] = train_model(args, shapes, model_dir)

    real_images, maps = held_out_maps(args)
    box_maps = [m.to_box_map() for m in maps]
    boxes = [m.boxes[0] for m in maps]
    results = {"resolution": args.resolution, "samples": len(maps), "sampler": f"{args.generation.scheduler}-{args.num_inference_steps}",
               "guidance_scale": args.guidance_scale,
               "real": {"true_mask_fill": float(np.mean([m.lesion_mask.sum() / b.lesion_mask.sum()
                                                          for m, b in zip(maps, box_maps)])),
                        "segmented": box_scores([segment_lesion(image) for image in real_images], boxes)},
               "models": {}}
    samples = {}
    for shapes, model_dir in model_dirs.items():
        images = sample(model_dir, box_maps, args)
        samples[shapes] = images
        results["models"][shapes] = {"model": model_dir, "train_minutes": minutes.get(shapes, float("nan")),
                                     "train_steps": args.max_train_steps if shapes in minutes else None,
                                     "scores": box_scores([segment_lesion(image) for image in images], boxes)}
    with open(os.path.join(args.out, "box_maps.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    table = markdown(results)
    with open(os.path.join(args.out, "box_maps.md"), "w") as handle:
        handle.write(table)
    picture(box_maps, samples, os.path.join(args.out, "box_samples.png"))
    print(table)
    return results


if __name__ == "__main__":
    main(parse_args())
