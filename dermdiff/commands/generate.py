"""`dermdiff generate`: sample images from a saved DermDiffPipeline for a condition, skin type and place."""

from __future__ import annotations

import json
import os

NAME = "generate"
HELP = "Generate skin images with a DermDiffPipeline (folder or Hub id) for a condition, skin type and lesion place."
EXAMPLES = """\
  dermdiff generate --pipeline runs/phantom-32 --condition melanoma --skin-type 5 --box 8,8,24,24 \
      --num-images 8 --out gen/
  dermdiff generate --pipeline runs/phantom-32 --map map.png --scheduler dpm --steps 20 --guidance-scale 2 --out gen/
  dermdiff generate --pipeline runs/phantom-32 --image healthy.png --mask spot.png --condition psoriasis --out gen/

Writes gen/images/*.png, gen/maps/*.png (gen/masks/*.png with --mask), gen/metadata.csv
(file_name,label,skin_type,boxes,mask_file,map_file) and
gen/dataset_info.json (registry + generation settings): a folder `dermdiff.data.load_dataset_dir` reads.
Image i uses seed SEED + i, so any single image can be regenerated alone.
"""


def configure(parser) -> None:
    from .maps import _parse_box

    parser.add_argument("--pipeline", required=True, help="saved pipeline folder or Hugging Face Hub id")
    parser.add_argument("--condition", help="condition name or code of the model's registry (omit for healthy skin)")
    parser.add_argument("--skin-type", dest="skin_type", help="Fitzpatrick type 1..6 or I..VI (omit if unknown)")
    parser.add_argument("--box", action="append", type=_parse_box, default=None, help="x0,y0,x1,y1 (repeatable)")
    parser.add_argument("--map", help="semantic-map PNG at the model's size (instead of --condition/--box)")
    parser.add_argument("--mask", help="lesion mask PNG (white = lesion); with --image the region to regenerate")
    parser.add_argument("--image", help="start image: a variation of it, or with --mask a lesion grown into it")
    parser.add_argument("--strength", type=float, help="noise level to start --image from, in (0, 1]")
    parser.add_argument("--num-images", dest="num_images", type=int, default=4, help="images to write (default 4)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=16, help="images per forward pass")
    parser.add_argument("--scheduler", choices=("ddpm", "ddim", "dpm", "euler", "unipc"),
                        help="swap in this scheduler (default: the pipeline's own)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    parser.add_argument("--guidance-scale", dest="guidance_scale", type=float,
                        help="classifier-free guidance weight (default 2.0, or 1.0 for a model without map dropout)")
    parser.add_argument("--seed", type=int, default=0, help="seed of image 0; image i uses seed + i")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--out", required=True, help="output folder")


def load_pipeline(name_or_path: str):
    """A DermDiffPipeline from a folder or a Hub id; one clear `ValueError` / `FileNotFoundError` line otherwise."""
    from ..pipelines.pipeline_dermdiff import DermDiffPipeline

    looks_local = os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or os.path.exists(name_or_path)
    if looks_local:
        folder = os.path.expanduser(name_or_path)
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise FileNotFoundError(f"{name_or_path} is not a saved pipeline folder (no model_index.json)")
        return DermDiffPipeline.from_pretrained(folder)
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # the error below is the one line; no "Couldn't connect" chatter
    try:
        return DermDiffPipeline.from_pretrained(name_or_path)
    except Exception as error:  # offline, unknown repo, gated, ...: the hub raises many types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"could not load pipeline {name_or_path!r}: not a local folder, and the Hugging Face Hub failed "
            f"({type(error).__name__}: {first_line[:300]})"
        ) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)


def _open(path: str, what: str):
    from ..limits import open_image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file {path} does not exist")
    with open_image(path, f"{what} file {path}") as image:
        image.load()
        return image.copy()


def run(args) -> int:
    import torch

    from ..pipelines.map_inputs import resolve_semantic_maps, to_mask_array
    from ..pipelines.scheduler_names import scheduler_from_name
    from ..semantic_map import SemanticMap

    if args.num_images < 1 or args.batch_size < 1:
        raise ValueError(f"--num-images and --batch-size must be >= 1, got {args.num_images} and {args.batch_size}")
    if args.map and (args.condition or args.skin_type or args.box):
        raise ValueError("--map replaces --condition/--skin-type/--box; pass one or the other")
    pipe = load_pipeline(args.pipeline).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    if args.scheduler:
        pipe.scheduler = scheduler_from_name(args.scheduler, pipe.scheduler.config)
    registry, size = pipe.unet.registry, pipe.sample_size

    # 1. the map (drawn once; every image uses it) and the optional start image / mask
    mask = to_mask_array(_open(args.mask, "mask"), size) if args.mask else None
    if args.map:
        decoded = SemanticMap.decode(_open(args.map, "map").convert("RGB"), registry=registry, source=args.map)
        maps = resolve_semantic_maps(decoded, size=size, registry=registry)
    else:
        condition = int(args.condition) if args.condition and args.condition.isdigit() else args.condition
        maps = resolve_semantic_maps(
            None, condition, args.skin_type, args.box, mask, size=size, registry=registry
        )
    image = _open(args.image, "image").convert("RGB") if args.image else None
    call = dict(num_inference_steps=args.steps, guidance_scale=args.guidance_scale, output_type="pil",
                image=image, strength=args.strength, mask=mask if image is not None else None)
    smap = maps[0] if maps else None
    written_map = smap or SemanticMap.from_annotations(None, size=size, registry=registry)  # null map: all zero

    # 2. sample in batches; image i from seed + i
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "maps"), exist_ok=True)
    lesion_png = None
    if mask is not None:  # the lesion's shape, in the dataset layout's `mask_file` column
        from PIL import Image

        os.makedirs(os.path.join(args.out, "masks"), exist_ok=True)
        lesion_png = Image.fromarray((written_map.lesion_mask * 255).astype("uint8"), mode="L")
    rows = []
    for start in range(0, args.num_images, args.batch_size):
        count = min(args.batch_size, args.num_images - start)
        generators = [torch.Generator().manual_seed(args.seed + start + k) for k in range(count)]
        if smap is None:
            images = pipe(num_images_per_prompt=count, generator=generators, **call).images
        else:
            images = pipe(semantic_map=[smap] * count, generator=generators, **call).images
        for k, picture in enumerate(images):
            stem = f"{start + k:06d}"
            picture.save(os.path.join(args.out, "images", f"{stem}.png"))
            written_map.to_pil().save(os.path.join(args.out, "maps", f"{stem}.png"))
            if lesion_png is not None:
                lesion_png.save(os.path.join(args.out, "masks", f"{stem}.png"))
            rows.append(_row(stem, written_map, with_mask=lesion_png is not None))

    # 3. metadata in the imagefolder convention, registry and settings beside it
    _write_metadata(os.path.join(args.out, "metadata.csv"), rows)
    settings = {key: getattr(args, key) for key in ("pipeline", "scheduler", "steps", "guidance_scale", "seed",
                                                    "strength", "image", "mask", "map")}
    with open(os.path.join(args.out, "dataset_info.json"), "w", encoding="utf-8") as handle:
        json.dump({"registry": registry.to_dict(), "generation": settings}, handle, indent=2)
    print(f"wrote {len(rows)} images to {args.out}")
    return 0


def _row(stem: str, smap, with_mask: bool) -> dict:
    return {
        "file_name": f"images/{stem}.png",
        "label": smap.condition or "",
        "skin_type": "" if smap.skin_type is None else smap.skin_type,
        "boxes": json.dumps([list(box) for box in smap.boxes]),
        "mask_file": f"masks/{stem}.png" if with_mask else "",
        "map_file": f"maps/{stem}.png",
    }


def _write_metadata(path: str, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        columns = ["file_name", "label", "skin_type", "boxes", "mask_file", "map_file"]
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
