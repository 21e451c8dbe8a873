"""`dermdiff generate`: sample images from a saved DermDiffPipeline for a condition, skin type and place."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..config_args import add_config_arguments, parsed_config, with_flag
from ..errors import UsageError
from ..pipelines.generation_settings import GenerationSettings
from .flags import check_device

NAME = "generate"
HELP = "Generate skin images with a DermDiffPipeline (folder or Hub id) for a condition, skin type and lesion place."
EXAMPLES = """\
  dermdiff generate --pipeline runs/phantom-32 --condition melanoma --skin-type 5 --box 8,8,24,24 \
      --num-images 8 --out gen/
  dermdiff generate --pipeline runs/phantom-32 --map map.png --scheduler dpm --steps 20 --guidance-scale 2 --out gen/
  dermdiff generate --pipeline runs/phantom-32 --image healthy.png --mask spot.png --condition psoriasis --out gen/

  dermdiff maps vary map.png --count 1000 --out maps/ && \
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 -m dermdiff.cli \
      generate --pipeline runs/phantom-32 --maps maps/ --out big/        (on GPUs: accelerate launch -m ...)

Writes gen/images/*.png, gen/maps/*.png (gen/masks/*.png with --mask), gen/metadata.csv
(file_name,label,skin_type,boxes,mask_file,map_file,seed) and
gen/dataset_info.json (registry + generation settings): a folder `dermdiff.data.load_dataset_dir` reads.
Image i uses seed SEED + i (and with --maps the i-th map, cycling), so any single image can be regenerated
alone and the images are the same whatever the number of processes. Under `accelerate launch` the batches
are shared out across processes; each image is written once (temp file + rename), its metadata row is
appended as soon as it is written, and a killed run resumes by running the same command again: finished
images are kept, the folder loads at any moment.
"""


@dataclass(frozen=True)
class GenerateSampling(GenerationSettings):
    """The `GenerationSettings` of `dermdiff generate`, under this command's flag names (`--steps`, `--batch-size`)."""

    num_inference_steps: int = with_flag(GenerationSettings, "num_inference_steps", "steps")
    batch_size: int = with_flag(GenerationSettings, "batch_size", "batch_size")


# --strength defaults to None here: the pipeline picks the noise level for the start image (0.8, or 1.0 with a mask)
FLAG_DEFAULTS = {"strength": None}


# the settings of map jitter and classifier guidance are the hard-case loop's, not this command's
NOT_FLAGS = ("adversarial_guidance_scale", "adversarial_start", "max_shift")


def configure(parser) -> None:
    from .maps import _parse_box

    parser.add_argument("--pipeline", required=True, help="saved pipeline folder or Hugging Face Hub id")
    parser.add_argument("--condition", help="condition name or code of the model's registry (omit for healthy skin)")
    parser.add_argument("--skin-type", dest="skin_type", help="Fitzpatrick type 1..6 or I..VI (omit if unknown)")
    parser.add_argument("--box", action="append", type=_parse_box, default=None, help="x0,y0,x1,y1 (repeatable)")
    parser.add_argument("--map", help="semantic-map PNG at the model's size (instead of --condition/--box)")
    parser.add_argument("--maps", help="folder of semantic-map PNGs (sorted by name): image i uses map i, cycling")
    parser.add_argument("--mask", help="lesion mask PNG (white = lesion); with --image the region to regenerate")
    parser.add_argument("--image", help="start image: a variation of it, or with --mask a lesion grown into it")
    parser.add_argument("--num-images", dest="num_images", type=int, default=None,
                        help="images to write (default 4, or one per map with --maps)")
    # --steps, --guidance-scale, --strength, --batch-size, --scheduler: GenerationSettings fields
    add_config_arguments(parser, GenerateSampling, exclude=NOT_FLAGS, dashes=True, defaults=FLAG_DEFAULTS)
    parser.add_argument("--seed", type=int, default=0, help="seed of image 0; image i uses seed + i")
    parser.add_argument("--device", default=None,
                        help="torch device (default: this process's accelerate device, e.g. cpu or cuda:N)")
    parser.add_argument("--out", required=True, help="output folder")


def _open(path: str, what: str):
    from ..data.files import read_image

    return read_image(path, f"--{what}", f"{what} file")


def _check_flags(args) -> GenerationSettings:
    """Flag values checked before the pipeline is loaded, so a typo fails at once and names its flag."""
    if args.num_images is not None and args.num_images < 1:
        raise UsageError(f"--num-images must be >= 1, got {args.num_images}")
    if args.maps and (args.map or args.condition or args.skin_type or args.box or args.mask):
        raise UsageError("--maps replaces --map/--condition/--skin-type/--box/--mask; pass one or the other")
    if args.map and (args.condition or args.skin_type or args.box):
        raise UsageError("--map replaces --condition/--skin-type/--box; pass one or the other")
    if args.strength is not None and not args.image:
        raise UsageError("--strength needs --image (the noise level the start image is taken to)")
    check_device(args.device)
    return parsed_config(GenerateSampling, args, dashes=True)  # validated once, in GenerationSettings


# the settings that decide the images: a folder is resumed only with the same ones
SETTINGS = ("pipeline", "condition", "skin_type", "box", "map", "maps", "mask", "image", "strength", "scheduler",
            "steps", "guidance_scale", "seed")
COLUMNS = ("file_name", "label", "skin_type", "boxes", "mask_file", "map_file", "seed")


def map_files(folder: str) -> list[str]:
    """The map PNGs of `--maps`, sorted by name; one clear error for a missing or empty folder."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--maps folder {folder} does not exist")
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(".png"))
    if not names:
        raise ValueError(f"--maps folder {folder} holds no .png map")
    return [os.path.join(folder, name) for name in names]


def run(args) -> int:
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from ..data.append_folder import AppendingImageFolder
    from ..data.folder_writer import image_stem
    from ..pipelines.loading import load_pipeline
    from ..pipelines.map_inputs import resolve_semantic_maps, to_mask_array
    from ..semantic_map import SemanticMap
    from .maps import decode_map

    sampling = _check_flags(args)
    files = {what: _open(getattr(args, what), what) for what in ("mask", "image") if getattr(args, what)}
    state = PartialState()
    pipe = load_pipeline(args.pipeline, kinds=("DermDiffPipeline",), scheduler=sampling.scheduler,
                         device=args.device or state.device, progress_bar=False)
    registry, size = pipe.unet.registry, pipe.sample_size

    # 1. the maps (one for every image, or a folder's, cycling) and the optional start image / mask
    mask = to_mask_array(files["mask"], size) if args.mask else None
    sources = map_files(args.maps) if args.maps else [args.map]

    def read_map(path):
        if path is None:
            condition = int(args.condition) if args.condition and args.condition.isdigit() else args.condition
            maps = resolve_semantic_maps(None, condition, args.skin_type, args.box, mask, size=size, registry=registry)
        else:
            decoded = decode_map(_open(path, "map"), path, registry)
            maps = resolve_semantic_maps(decoded, size=size, registry=registry)
        return maps[0] if maps else None

    first_map = read_map(sources[0])  # bad maps fail here, before anything is written
    num_images = args.num_images or (len(sources) if args.maps else 4)
    image = files["image"].convert("RGB") if args.image else None
    call = dict(sampling.call_kwargs(pipe), output_type="pil", image=image, strength=sampling.strength,
                mask=mask if image is not None else None)
    lesion_png = None
    if mask is not None:  # the lesion's shape, in the dataset layout's `mask_file` column
        from PIL import Image

        lesion_png = Image.fromarray((first_map.lesion_mask * 255).astype("uint8"), mode="L")

    # 2. the folder: settings checked, header and registry written before any image
    settings = {key: getattr(args, key) for key in SETTINGS}
    folder = AppendingImageFolder(args.out, COLUMNS, is_main=state.is_main_process)
    folder.prepare({"registry": registry.to_dict(), "generation": {**settings, "num_images": num_images}},
                   compare=SETTINGS, subfolders=("images", "maps") + (("masks",) if mask is not None else ()))
    state.wait_for_everyone()
    finished = folder.finished()

    # 3. batches of fixed members (image i in batch i // batch_size) shared out by striding, so every image
    #    is computed in the same batch whatever the number of processes; image i from seed + i
    batches = range(math.ceil(num_images / sampling.batch_size))[state.process_index :: state.num_processes]
    cache = {0: first_map}
    for batch in tqdm(batches, desc="generate", disable=not state.is_main_process):
        members = range(batch * sampling.batch_size, min((batch + 1) * sampling.batch_size, num_images))
        missing = [i for i in members if f"images/{image_stem(i)}.png" not in finished]
        if not missing:
            continue
        maps = [cache.get(i % len(sources)) or read_map(sources[i % len(sources)]) for i in members]
        generators = [torch.Generator().manual_seed(args.seed + i) for i in members]
        if maps[0] is None:
            images = pipe(num_images_per_prompt=len(members), generator=generators, **call).images
        else:
            images = pipe(semantic_map=maps, generator=generators, **call).images
        for i, picture, smap in zip(members, images, maps):
            if i not in missing:
                continue
            stem = image_stem(i)  # 6 digits: a resumed run may ask for more images
            smap = smap or SemanticMap.from_annotations(None, size=size, registry=registry)  # null map: all zero
            files = {f"maps/{stem}.png": smap.to_pil()}
            if lesion_png is not None:
                files[f"masks/{stem}.png"] = lesion_png
            files[f"images/{stem}.png"] = picture  # last: its presence marks the image finished
            folder.add(files, _row(stem, smap, with_mask=lesion_png is not None, seed=args.seed + i))

    # 4. every process done: the main process sorts the metadata
    state.wait_for_everyone()
    total = folder.finish()
    if state.is_main_process:
        print(f"wrote {total - len(finished)} images to {args.out} ({total} in the folder)")
    return 0


def _row(stem: str, smap, with_mask: bool, seed: int) -> dict:
    return {
        "file_name": f"images/{stem}.png",
        "label": smap.condition or "",
        "skin_type": smap.skin_type,
        "boxes": [list(box) for box in smap.boxes],
        "mask_file": f"masks/{stem}.png" if with_mask else "",
        "map_file": f"maps/{stem}.png",
        "seed": seed,
    }
