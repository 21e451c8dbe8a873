"""Can a generator trained on real data be asked for a skin type? One map per row, swept over Fitzpatrick I..VI.

Real dermoscopy sets record no skin type, so a generator trained on them is trained with `--estimate_skin_type`
(`dermdiff.data.skin_types`: the type read from the ITA of the skin around each lesion). This script takes
`--maps_per_class` train-split maps of every class (the maps the generator trained on, with their estimated types),
renders each on all six types from the same noise (`pipelines.sweeps.skin_type_sweep`), and measures the skin of
every image the same way the training types were measured:

- per requested type: the median ITA of the generated skin and the share of images whose estimated type is the
  requested one (chance, for a generator that ignores the request: about 1/6 overall, more where its one
  background colour happens to fall);
- per map: Spearman's rho between requested type and measured ITA (-1 = the skin darkens at every step asked) and
  whether ITA falls at every step;
- a picture: one row per map, its six images (128 px cells), and the real image it comes from at the left.

A generator trained without the flag can be swept too: it has never seen a type in its maps, so its row is the
"does nothing" reference.

    python benchmarks/skin_type_control_real.py --data /work/shared/data/ham10000 \\
        --generator wide-ita=runs/wide-ita --generator wide=runs/wide --out outputs/skin-type-control \\
        --markdown benchmarks/results/skin_type_control_ham10000.md
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from latent_vs_pixel import parse_generators, pipeline_side  # the sibling benchmark's NAME=DIR and image-side rules

from dermdiff.loops.data_flags import add_split_seed_argument

DATA_ROOT = os.environ.get("DERMDIFF_DATA", "/work/shared/data")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(DATA_ROOT, "ham10000"), help="any dataset dermdiff reads")
    parser.add_argument("--generator", action="append", default=[], help="NAME=PIPELINE_DIR; repeat per generator")
    parser.add_argument("--out", required=True, help="run folder (json, grids)")
    parser.add_argument("--markdown", default=None, help="also write the table here")
    parser.add_argument("--image_size", type=int, default=128, help="side real images and maps are loaded at")
    add_split_seed_argument(parser)  # the generator's train split
    parser.add_argument("--maps_per_class", type=int, default=2)
    parser.add_argument("--num_inference_steps", type=int, default=20)
    parser.add_argument("--scheduler", default="dpm")
    parser.add_argument("--guidance_scale", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.generator:
        parser.error("give at least one --generator NAME=PIPELINE_DIR")
    try:
        args.generators = parse_generators(args.generator)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.maps_per_class < 1:
        parser.error(f"--maps_per_class must be >= 1, got {args.maps_per_class}")
    return args


def chosen_rows(train, per_class: int, seed: int) -> list[int]:
    """`per_class` train rows of every class, drawn with `seed`, in class order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(train["label"])
    return [int(i) for k in np.unique(labels)
            for i in rng.choice(np.flatnonzero(labels == k), min(per_class, int((labels == k).sum())), replace=False)]


def sweep_scores(itas: np.ndarray) -> dict:
    """`itas`: (maps, 6) measured ITA per map and requested type I..VI (NaN: too little skin)."""
    from scipy.stats import spearmanr

    from dermdiff.skin_tone import ita_to_skin_type

    requested = np.arange(1, 7)
    per_type = {}
    for column, skin_type in enumerate(requested):
        values = itas[:, column][~np.isnan(itas[:, column])]
        per_type[int(skin_type)] = {
            "n": int(values.size), "median_ita": float(np.median(values)) if values.size else float("nan"),
            "same_type": float(np.mean(ita_to_skin_type(values) == skin_type)) if values.size else float("nan")}
    rhos = [spearmanr(requested, row).statistic for row in itas if not np.isnan(row).any() and np.ptp(row) > 0]
    falling = [bool(np.all(np.diff(row) < 0)) for row in itas if not np.isnan(row).any()]
    measured = itas[~np.isnan(itas)]
    types = np.tile(requested, (len(itas), 1))[~np.isnan(itas)]
    return {"per_type": per_type, "median_rho": float(np.median(rhos)) if rhos else float("nan"),
            "falling": int(sum(falling)), "maps": len(itas),
            "same_type": float(np.mean(ita_to_skin_type(measured) == types)) if measured.size else float("nan")}


def sweep_generator(name, folder, rows, registry, args) -> dict:
    import torch

    from dermdiff.data.skin_types import surrounding_skin_ita
    from dermdiff.hardcase.cli import load_generator
    from dermdiff.semantic_map import SemanticMap
    from pipelines.sweeps import skin_type_sweep

    pipe = load_generator(folder, scheduler=args.scheduler)
    side = pipeline_side(pipe)
    images, itas = [], []
    for index, row in enumerate(rows):
        smap = SemanticMap.decode(row["semantic_map"], registry).resize(side)
        swept = skin_type_sweep(pipe, smap, generator=torch.Generator().manual_seed(args.seed + index),
                                num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale)
        images.append(swept)
        itas.append([np.nan if (ita := surrounding_skin_ita(image, smap.lesion_mask)) is None else ita
                     for image in swept])
    return {"name": name, "side": side, "images": images, "itas": np.array(itas, dtype=float)}


def run(args) -> dict:
    from dermdiff.data import load_any, make_splits, registry_of
    from dermdiff.data.skin_types import estimate_skin_types
    from dermdiff.image_grid import image_grid

    os.makedirs(args.out, exist_ok=True)
    rows = estimate_skin_types(load_any(args.data, size=args.image_size))
    train = make_splits(rows, seed=args.split_seed)["train"]
    registry = registry_of(train)
    chosen = [train[i] for i in chosen_rows(train, args.maps_per_class, args.seed)]
    results = []
    for name, folder in args.generators:
        swept = sweep_generator(name, folder, chosen, registry, args)
        grid = image_grid([[row["image"], *images] for row, images in zip(chosen, swept["images"])], cell=128)
        path = os.path.join(args.out, f"skin_type_sweep_{name}.jpg")
        grid.save(path, quality=90)
        results.append({"name": name, "grid": path, "itas": swept["itas"].tolist(), **sweep_scores(swept["itas"])})
    summary = {"data": args.data, "maps": [{"image_id": row["image_id"], "label": row["label_name"],
                                            "skin_type": row["skin_type"]} for row in chosen],
               "generators": results, "settings": vars(args)}
    with open(os.path.join(args.out, "skin_type_control.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1, default=str)
    return summary


def markdown(summary: dict) -> str:
    settings = summary["settings"]
    lines = [f"# Skin-type control on real data ({summary['data']})", "",
             f"{len(summary['maps'])} train-split maps ({settings['maps_per_class']} per class), each rendered on "
             f"Fitzpatrick I..VI from the same noise; {settings['scheduler']}, {settings['num_inference_steps']} "
             f"steps, guidance {settings['guidance_scale']:g}. Measured: ITA of the skin outside the map's lesion "
             "and the vignette (`dermdiff.data.skin_types`), read as a type.", "",
             "| generator | median ITA at I / II / III / IV / V / VI (deg) | measured type = requested | "
             "median Spearman rho (type, ITA) | maps whose ITA falls at every step |",
             "|---|---|---|---|---|"]
    for g in summary["generators"]:
        medians = " / ".join(f"{g['per_type'][t]['median_ita']:.0f}" for t in g["per_type"])
        lines.append(f"| {g['name']} | {medians} | {g['same_type']:.2f} | {g['median_rho']:.2f} | "
                     f"{g['falling']} of {g['maps']} |")
    lines += [""] + [f"Picture ({g['name']}; left: the real image the map comes from): `{g['grid']}`"
                     for g in summary["generators"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    summary = run(args)
    table = markdown(summary)
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
