"""`dermdiff maps`: draw, inspect and vary semantic maps without writing Python."""

from __future__ import annotations

import json
import math
import os

from ..config_args import add_config_arguments, parsed_config
from ..errors import DataError, UsageError
from ..pipelines.generation_settings import GenerationSettings
from .flags import parse_skin_types

NAME = "maps"
HELP = "Draw, inspect and vary DermGAN semantic maps (R = skin type, G/B = condition inside its region)."
EXAMPLES = """\
  dermdiff maps draw --condition mel --skin-type 5 --box 8,8,40,36 --size 64 --out map.png
  dermdiff maps draw --condition psoriasis --registry phantom --skin-type 2 --mask lesion.png --out map.png
  dermdiff maps inspect map.png
  dermdiff maps vary map.png --count 8 --seed 0 --skin-types 1,6 --out varied/
"""


def _parse_box(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"--box takes x0,y0,x1,y1 (four integers), got {text!r}")
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        raise ValueError(f"--box takes x0,y0,x1,y1 (four integers), got {text!r}") from None


def configure(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    draw = actions.add_parser("draw", help="write a map PNG from a condition, a skin type and boxes or a mask")
    draw.add_argument("--condition", help="condition name or code (omit for healthy skin)")
    draw.add_argument("--skin-type", dest="skin_type", help="Fitzpatrick type 1..6 or I..VI (omit if unknown)")
    draw.add_argument("--box", action="append", default=[], help="x0,y0,x1,y1 in pixels (repeatable)")
    draw.add_argument("--mask", help="binary mask image (lesion = white); sets the size")
    draw.add_argument("--size", type=int, nargs="+", help="SIZE or HEIGHT WIDTH (needed without --mask)")
    draw.add_argument("--registry", default="ham10000", help="condition registry (ham10000, clinical, phantom, ...)")
    draw.add_argument("--out", required=True, help="output PNG")

    inspect = actions.add_parser("inspect", help="print a map's skin type and regions as JSON")
    inspect.add_argument("map", help="map PNG")
    inspect.add_argument("--registry", default="ham10000")

    vary = actions.add_parser("vary", help="write DermGAN-style random variations of a map")
    vary.add_argument("map", help="map PNG")
    vary.add_argument("--registry", default="ham10000")
    vary.add_argument("--count", type=int, default=4)
    vary.add_argument("--seed", type=int, default=0)
    # --max-shift: GenerationSettings' field (the map jitter of the hard-case loop is the same variation)
    add_config_arguments(vary, GenerationSettings, only=("max_shift",), dashes=True)
    vary.add_argument("--scale", type=float, nargs=2, metavar=("LOW", "HIGH"), help="random box scale range")
    vary.add_argument("--skin-types", dest="skin_types", help="comma-separated types to swap in, e.g. 1,2,5,6")
    vary.add_argument("--out", required=True, help="output folder")


def decode_map(image, path: str, registry):
    """The `SemanticMap` in an image read from `path`; a file that is no map of `registry` is a `DataError`."""
    from ..conditions import get_registry
    from ..semantic_map import SemanticMap

    registry = get_registry(registry)
    try:
        return SemanticMap.decode(image.convert("RGB"), registry=registry, source=path)
    except ValueError as error:  # the file is no map of this registry: its content is wrong
        raise DataError(f"{error} (is {path} a semantic map of registry {registry.registry_name!r}?)") from None


def _load(path: str, registry: str):
    from ..conditions import get_registry
    from ..data.files import read_image

    registry = get_registry(registry)  # an unknown --registry is a usage error, raised before the file is read
    return decode_map(read_image(path, "MAP", "map file"), path, registry)


def _check_vary_flags(args) -> list[int] | None:
    """--count, --max-shift, --scale and --skin-types, checked before any map is written."""
    if args.count < 1:
        raise UsageError(f"--count must be >= 1, got {args.count}")
    parsed_config(GenerationSettings, args, dashes=True)  # --max-shift, validated in GenerationSettings
    if args.scale is not None:
        low, high = args.scale
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise UsageError(f"--scale LOW HIGH needs 0 < LOW <= HIGH (finite), got {low} {high}")
    return parse_skin_types(args.skin_types) if args.skin_types else None


def run(args) -> int:
    from ..limits import check_image_size
    from ..semantic_map import SemanticMap

    if args.action == "draw":
        size = None
        if args.size:
            if len(args.size) > 2 or min(args.size) < 1:
                raise UsageError(f"--size must be positive: SIZE or HEIGHT WIDTH, got {' '.join(map(str, args.size))}")
            size = args.size[0] if len(args.size) == 1 else tuple(args.size)
            check_image_size(args.size[-1], args.size[0], "--size", UsageError)
        elif not args.mask:
            raise UsageError("give --size SIZE (or HEIGHT WIDTH), or --mask (whose size is used)")
        if not args.out.lower().endswith(".png"):
            raise UsageError(f"--out must name a .png file (a map must be stored losslessly), got {args.out}")
        mask = None
        if args.mask:
            from ..data.files import read_image

            mask = read_image(args.mask, "--mask", "mask file")
        condition = args.condition
        if condition is not None and condition.isdigit():
            condition = int(condition)
        smap = SemanticMap.from_annotations(
            condition, skin_type=args.skin_type, boxes=[_parse_box(b) for b in args.box], mask=mask, size=size,
            registry=args.registry,
        )
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        smap.to_pil().save(args.out)
        print(json.dumps(smap.to_annotations()["regions"]))
        return 0
    skin_types = _check_vary_flags(args) if args.action == "vary" else None
    smap = _load(args.map, args.registry)
    if args.action == "inspect":
        print(json.dumps(smap.to_annotations(), indent=2))
        return 0
    os.makedirs(args.out, exist_ok=True)
    for index in range(args.count):
        varied = smap.random_variation(
            seed=args.seed + index, max_shift=args.max_shift, scale_range=args.scale, skin_types=skin_types
        )
        varied.to_pil().save(os.path.join(args.out, f"map_{index:04d}.png"))
    print(f"wrote {args.count} maps to {args.out}")
    return 0
