"""`dermdiff phantom`: write the procedural phantom dataset (and a picture of it) from the command line."""

from __future__ import annotations

import os

from ..errors import UsageError
from .flags import check_at_least, check_fraction

NAME = "phantom"
HELP = "Write the procedural dermatology phantom (images, masks, semantic maps, metadata.csv) and/or a grid picture."
EXAMPLES = """\
  dermdiff phantom --out outputs/phantom --n 2000 --size 64
  dermdiff phantom --out outputs/rare --n 2000 --rare melanoma vascular --rare-fraction 0.05 --seed 1
  dermdiff phantom --out outputs/dark --n 500 --skin-types 5,6 --healthy-fraction 0.2
  dermdiff phantom --grid outputs/phantom_grid.png --size 64
"""


def configure(parser) -> None:
    parser.add_argument("--out", help="output folder (images/, masks/, maps/, metadata.csv, dataset_info.json)")
    parser.add_argument("--n", type=int, default=2000, help="number of images, healthy ones included (default 2000)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels, 16..256 (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes identical files")
    parser.add_argument("--rare", nargs="+", default=[], metavar="CLASS",
                        help="classes to make rare (nevus, melanoma, psoriasis, dermatofibroma, vascular)")
    parser.add_argument("--rare-fraction", dest="rare_fraction", type=float, default=0.05,
                        help="share of the lesion images each --rare class gets (default 0.05)")
    parser.add_argument("--skin-types", dest="skin_types",
                        help="comma-separated Fitzpatrick types to draw, equally often (default 1,2,3,4,5,6)")
    parser.add_argument("--healthy-fraction", dest="healthy_fraction", type=float, default=0.0,
                        help="share of images without a lesion, written to OUT/healthy/ (default 0)")
    parser.add_argument("--images-per-lesion", dest="images_per_lesion", type=int, default=1,
                        help="images showing the same lesion (shared lesion_id), for grouped splits (default 1)")
    parser.add_argument("--grid", help="also write a PNG grid of images and semantic maps (conditions x skin types)")
    parser.add_argument("--overwrite", action="store_true", help="replace a phantom already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _skin_type_weights(text: str | None):
    if not text:
        return None
    from ..semantic_map import validate_skin_type

    types = [validate_skin_type(part) for part in text.split(",") if part.strip()]
    if not types:
        raise ValueError(f"--skin-types takes comma-separated types 1..6, got {text!r}")
    return {skin_type: 1.0 for skin_type in types}


def run(args) -> int:
    from ..data.phantom import phantom_grid, rare_class_weights, write_phantom

    if not args.out and not args.grid:
        raise ValueError("nothing to do: give --out DIR (the dataset) and/or --grid PATH (a picture)")
    check_at_least(args, {"n": 1, "images_per_lesion": 1})
    check_fraction(args.healthy_fraction, "--healthy-fraction")
    if not 0 < args.rare_fraction < 1:
        raise UsageError(f"--rare-fraction must be in (0, 1), got {args.rare_fraction}")
    if args.out:
        class_weights = rare_class_weights(args.rare, args.rare_fraction) if args.rare else None
        write_phantom(
            args.out, n=args.n, size=args.size, seed=args.seed, class_weights=class_weights,
            skin_type_weights=_skin_type_weights(args.skin_types), healthy_fraction=args.healthy_fraction,
            images_per_lesion=args.images_per_lesion, overwrite=args.overwrite, progress=not args.quiet,
        )
        print(f"wrote {args.n} phantom images of {args.size}x{args.size} px to {args.out}")
    if args.grid:
        types = sorted(_skin_type_weights(args.skin_types) or range(1, 7))
        os.makedirs(os.path.dirname(os.path.abspath(args.grid)), exist_ok=True)
        phantom_grid(size=args.size, seed=args.seed, skin_types=types).save(args.grid)
        print(f"wrote grid to {args.grid} (rows: each condition and healthy skin, then their maps; types {types})")
    return 0
