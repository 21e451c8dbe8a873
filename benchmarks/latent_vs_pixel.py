"""Generator quality side by side: a latent 128 px DermDiff vs the pixel 64 px one (issue 12, "what to measure").

Given saved generator folders (any `DermDiffPipeline`, with or without a VAE) trained on the train split of
`make_splits(seed=--split_seed)`, this fills one table, each column through the project's own metrics:

- recognisability: a reference classifier trained on the real train split (`loops.classifier`) labels
  generated images of each class (drawn from real train-split maps); its balanced accuracy on them vs on the
  real test split (target: generated >= 0.8 x real);
- CAS (classification accuracy score, Ravuri & Vinyals 2019): a classifier with the same settings trained
  only on generated images, in the train split's class proportions, tested on the real test split; ratio to
  the real-trained classifier's balanced accuracy (target >= 0.6). Both train for a fixed number of epochs
  without a validation split, so neither picks its weights on real held-out data;
- domain Frechet distance (`metrics.fid.fid_with_ci`) of generated vs real test images in the reference
  classifier's penultimate features, beside the real-vs-real floor (`metrics.floor.real_floor`: real train
  vs real test through the same extractor, at the generated set's size); target <= 3 x the floor;
- memorisation (`metrics.memorisation.nearest_neighbours`): nearest training image by SSIM for every
  generated image; count above 0.9 (target 0 of N);
- skin tone: whether each generated image's skin has the ITA-estimated Fitzpatrick type of the real train image
  whose map it draws (`dermdiff.data.skin_types`); with `--estimate_skin_type` the maps carry that type, for
  generators trained with the same flag;
- a picture per run: one row per class, real | each generator, every image upscaled with nearest
  neighbour to at least 128 px (`dermdiff.image_grid`), so a person can judge it.

`--autoencoder NAME=DIR` (repeatable, with or without generators) adds a second table: each autoencoder's ceiling,
what a generator that reproduced its training images exactly would score through it (recognisability of the real
test images rebuilt, paired with them as they are; CAS and FD of the chosen train images rebuilt; test PSNR), and a
grid of real test images beside their reconstructions. A latent generator's FD is bounded by its decoder's: an
autoencoder whose ceiling is far above 3x the floor is unlikely to carry a generator below it.

Generated sets are written once per generator (`generated/<name>/`, `dermdiff evaluate`'s layout) and reused
by a rerun with the same settings; the reference classifier too (`reference_classifier/`).

    python benchmarks/latent_vs_pixel.py --data /work/shared/data/ham10000 \\
        --generator pixel-64=runs/dermdiff-ham10000-64 --generator latent-128=runs/dermdiff-latent-128 \\
        --out outputs/latent-vs-pixel --markdown benchmarks/results/latent_vs_pixel_ham10000.md
    python benchmarks/latent_vs_pixel.py --quick --generator a=DIR --generator b=DIR --out /tmp/lvp  # phantom, tiny

`--num_generated` defaults to the size of the train split (CAS then sees exactly its class counts); a smaller
number keeps the proportions (at least one map per class). Sampling: DPM-Solver++ (`--scheduler dpm`),
`--num_inference_steps` 20, the pipeline's default guidance unless `--guidance_scale`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

from dermdiff.config_args import add_config_arguments, config_from_args, with_flag
from dermdiff.loops.classifier_config import ClassifierTrainingConfig
from dermdiff.loops.data_flags import (
    add_estimate_skin_type_argument,
    add_phantom_arguments,
    add_split_seed_argument,
    add_stratify_argument,
)
from dermdiff.pipelines.generation_settings import GenerationSettings

DATA_ROOT = os.environ.get("DERMDIFF_DATA", "/work/shared/data")
# the settings this benchmark runs differently from the library's defaults (--help shows these): DPM-Solver++ with
# 20 steps (GenerationSettings); reference and CAS classifiers at 64 px (ClassifierTrainingConfig)
GENERATION_DEFAULTS = {"num_inference_steps": 20, "scheduler": "dpm"}
CLASSIFIER_DEFAULTS = {"resolution": 64}


@dataclass(frozen=True)
class SamplingSettings(GenerationSettings):
    """`GenerationSettings` whose batch size keeps this script's flag name, `--batch_size`."""

    batch_size: int = with_flag(GenerationSettings, "batch_size", "batch_size")


@dataclass
class BenchmarkClassifierConfig(ClassifierTrainingConfig):
    """`ClassifierTrainingConfig` under this script's flag names, `--classifier_resolution` and
    `--classifier_batch_size` (`--batch_size` is the generators')."""

    resolution: int | None = with_flag(ClassifierTrainingConfig, "resolution", "classifier_resolution")
    batch_size: int = with_flag(ClassifierTrainingConfig, "batch_size", "classifier_batch_size")


# ----------------------------------------------------------------------------------------------------------------
# data and generators
# ----------------------------------------------------------------------------------------------------------------
def load_splits(args):
    from dermdiff.data import load_any, make_splits, phantom_dataset
    from dermdiff.data.splits import parse_stratify_by

    if args.data is None:
        rows = phantom_dataset(n=args.phantom_num_images, size=args.image_size, seed=args.phantom_seed)
    else:
        rows = load_any(args.data, size=args.image_size)
    if args.estimate_skin_type:  # the generators then draw each map's measured skin tone (train with the same flag)
        from dermdiff.data.skin_types import estimate_skin_types

        rows = estimate_skin_types(rows)
    return make_splits(rows, seed=args.split_seed, stratify_by=parse_stratify_by(args.stratify_by))


def parse_generators(values: list[str], flag: str = "--generator", kind: str = "pipeline") -> list[tuple[str, str]]:
    """NAME=FOLDER pairs of `flag` (repeated), each folder existing and each name once."""
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} takes NAME={kind.upper()}_DIR, got {value!r}")
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{flag} {name}: {kind} folder {path} does not exist")
        out.append((name, path))
    if len({name for name, _ in out}) != len(out):
        raise ValueError(f"{flag} names must differ, got {[name for name, _ in out]}")
    return out


def proportional_indices(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` row indices with the classes in the proportions of `labels` (largest remainders; each class >= 1)."""
    rng = np.random.default_rng(seed)
    classes, totals = np.unique(labels, return_counts=True)
    if count >= len(labels):
        return np.arange(len(labels))
    share = totals * count / len(labels)
    wanted = np.minimum(totals, np.maximum(1, np.floor(share).astype(int)))
    for k in np.argsort(-(share - np.floor(share)), kind="stable"):  # largest remainders first, where room is left
        if wanted.sum() >= count:
            break
        wanted[k] += int(wanted[k] < totals[k])
    chosen = [rng.choice(np.flatnonzero(labels == k), n, replace=False) for k, n in zip(classes, wanted)]
    return np.sort(np.concatenate(chosen))


def generated_set(name: str, folder: str, train, indices: np.ndarray, args):
    """The generator's images for the chosen train rows' maps (written once, reused while the settings match)."""
    from dermdiff.data import registry_of
    from dermdiff.hardcase.cli import load_generator
    from dermdiff.metrics.generated import generate_evaluation_set, read_generated_set
    from dermdiff.semantic_map import SemanticMap

    out = os.path.join(args.out, "generated", name)
    settings = {"pipeline": os.path.abspath(folder), "rows": indices.tolist(), "steps": args.num_inference_steps,
                "scheduler": args.scheduler, "guidance_scale": args.guidance_scale, "seed": args.seed}
    if args.estimate_skin_type:  # other maps, other images (sets written before the flag existed stay valid)
        settings["estimate_skin_type"] = True
    stamp = os.path.join(out, "settings.json")
    if os.path.isfile(stamp) and json.load(open(stamp, encoding="utf-8")) == settings:
        return read_generated_set(out)
    pipe = load_generator(folder, scheduler=args.scheduler)
    side = pipeline_side(pipe)
    registry = registry_of(train)
    maps = [SemanticMap.decode(train[int(i)]["semantic_map"], registry).resize(side) for i in indices]
    result = generate_evaluation_set(pipe, maps, out, registry, settings=args.generation, seed=args.seed)
    with open(stamp, "w", encoding="utf-8") as handle:  # last: a killed run is regenerated, never half-read
        json.dump(settings, handle)
    return result


def pipeline_side(pipe) -> int:
    """The image side a pipeline draws (the UNet's side times the VAE's factor; a GAN's sample_size)."""
    from dermdiff.latent_maps import vae_factor

    model = getattr(pipe, "unet", None) or getattr(pipe, "dermgan", None)
    size = model.config.sample_size
    size = size if isinstance(size, int) else size[0]
    return size * vae_factor(getattr(pipe, "vae", None))


# ----------------------------------------------------------------------------------------------------------------
# classifiers
# ----------------------------------------------------------------------------------------------------------------
def image_rows(images, labels):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": list(images), "label": [int(v) for v in labels]}, features=features)


def classifier_settings(args) -> dict:
    return {"backbone": args.backbone, "resolution": args.classifier_resolution, "num_epochs": args.num_epochs,
            "batch_size": args.classifier_batch_size, "balance": "sampler", "patience": None,
            "checkpoints_total_limit": 1, "seed": args.seed}


def train_or_load(rows, folder: str, args, label_names):
    """A classifier trained on `rows` (fixed epochs, no validation split), or the one already in `folder`."""
    from dermdiff.classifier import SkinClassifier
    from dermdiff.loops.classifier import train_classifier

    if os.path.isfile(os.path.join(folder, "config.json")):
        return SkinClassifier.from_pretrained(folder).eval()
    model, _ = train_classifier(rows, None, classifier_settings(args), output_dir=folder, label_names=label_names)
    return model.eval()


def balanced_accuracy(model, rows, args) -> dict:
    from dermdiff.loops.classifier import evaluate_classifier

    entry = evaluate_classifier(model, rows, n_boot=args.n_boot, seed=args.seed)["overall"]["balanced_accuracy"]
    return {"value": entry["value"], "ci": entry.get("ci")}


# ----------------------------------------------------------------------------------------------------------------
# the measurements
# ----------------------------------------------------------------------------------------------------------------
def features(extractor, images, args) -> np.ndarray:
    from dermdiff.metrics.fid import source_features
    from dermdiff.metrics.sources import ImageListSource

    found, _ = source_features(ImageListSource(images), extractor, resolution=args.classifier_resolution,
                               device="cpu", verbose=False)
    return found.features


def measure_generator(name, generated, label_index, reference, extractor, real, args) -> dict:
    from dermdiff.metrics.fid import fid_with_ci
    from dermdiff.metrics.floor import real_floor
    from dermdiff.metrics.memorisation import nearest_neighbours

    images, maps = generated.samples()
    labels = [label_index[smap.condition] for smap in maps]
    rows = image_rows(images, labels)
    recognised = balanced_accuracy(reference, rows, args)
    cas_model = train_or_load(rows, os.path.join(args.out, "cas", name), args, real["label_names"])
    cas = balanced_accuracy(cas_model, real["test"], args)
    generated_features = features(extractor, images, args)
    fd = fid_with_ci(generated_features, real["test_features"], trials=args.trials, seed=args.seed)
    floor = real_floor(real["test_features"], size=len(images), other=real["train_features"], trials=args.trials,
                       seed=args.seed)
    nearest = nearest_neighbours(images, real["train_images"], k=5, size=args.memorisation_size,
                                 ssim_threshold=0.9, verbose=False)
    if [smap.condition for smap in maps] != real["chosen_conditions"]:
        raise ValueError(f"{name}: the generated set's maps are not the chosen train rows' (stale generated/{name}?)")
    tone = skin_tone_agreement(images, maps, real["chosen_ita"], args)
    return {"name": name, "n": len(images), "side": images[0].size[0],
            "recognisability": recognised, "recognisability_ratio": recognised["value"] / real["reference"]["value"],
            "cas": cas, "cas_ratio": cas["value"] / real["reference"]["value"],
            "domain_fd": fd, "floor": floor, "fd_over_floor": fd["value"] / floor["value"],
            "memorised": nearest["num_flagged"], "median_nearest_ssim": nearest["median_nearest_ssim"],
            "skin_tone": tone}


def skin_tone_agreement(images, maps, real_ita, args) -> dict:
    """Does each generated image have the skin tone of the real image whose map it draws?

    Share of generated images whose ITA-estimated Fitzpatrick type (`dermdiff.data.skin_types`) equals the real
    image's, with a bootstrap interval, and the median |ITA difference| in degrees. A generator that ignores skin
    tone still scores the chance agreement of the two type distributions: compare rows, not with 1.0.
    """
    from dermdiff.data.skin_types import surrounding_skin_ita
    from dermdiff.skin_tone import ita_to_skin_type

    pairs = [(surrounding_skin_ita(image, smap.resize(image.size[::-1]).lesion_mask), real)
             for image, smap, real in zip(images, maps, real_ita)]
    pairs = np.array([pair for pair in pairs if None not in pair], dtype=float).reshape(-1, 2)
    if not len(pairs):  # no image showed enough skin to measure
        return {"n": 0, "same_type": {"value": float("nan"), "ci": [float("nan")] * 2},
                "median_abs_ita_difference": float("nan")}
    same = (ita_to_skin_type(pairs[:, 0]) == ita_to_skin_type(pairs[:, 1])).astype(float)
    rng = np.random.default_rng(args.seed)
    boot = [same[rng.integers(0, len(same), len(same))].mean() for _ in range(args.n_boot)]
    return {"n": int(len(same)), "same_type": {"value": float(same.mean()), "ci": np.percentile(boot, [2.5, 97.5]).tolist()},
            "median_abs_ita_difference": float(np.median(np.abs(pairs[:, 0] - pairs[:, 1])))}


def rebuild(vae, images, batch_size: int):
    """Every image through the autoencoder and back, D(mu(x)): (originals, reconstructions) as [-1, 1] tensors."""
    import torch

    from dermdiff.data.transforms import pixel_values
    from dermdiff.loops.autoencoder import reconstruct

    pixels = torch.stack([pixel_values(img, (img.height, img.width)) for img in images])
    return pixels, reconstruct(vae, pixels, batch_size)


def measure_autoencoder(name, folder, train, indices, reference, extractor, real, args) -> dict:
    """What a perfect generator through this autoencoder would score: its ceiling on every column.

    Recognisability: the reference classifier on the real test images rebuilt by the autoencoder, paired
    with the same images as they are (a generated image is only ever decoded, so it can look no more like
    its class than a rebuilt real one, on average). CAS and domain FD: the chosen train-split images (the
    ones whose maps the generators draw) rebuilt, in place of generated images: the set a generator that
    reproduced its training images exactly would decode to.
    """
    from dermdiff.hardcase.loop import paired
    from dermdiff.loops.autoencoder import load_vae, psnr, to_pil
    from dermdiff.loops.classifier import predict
    from dermdiff.metrics.fid import fid_with_ci
    from dermdiff.metrics.floor import real_floor

    vae = load_vae(folder).eval()
    test = real["test"]
    originals, reconstructions = rebuild(vae, list(test["image"]), args.batch_size)
    quality = psnr(reconstructions, originals)
    rebuilt_test = to_pil(reconstructions)
    before = predict(reference, test)
    after = predict(reference, image_rows(rebuilt_test, test["label"]))
    comparison = paired(before, after, real["label_names"], args.n_boot, args.seed, names=("real", "rebuilt"))
    chosen = train.select(indices)
    rebuilt_train = to_pil(rebuild(vae, list(chosen["image"]), args.batch_size)[1])
    cas_model = train_or_load(image_rows(rebuilt_train, chosen["label"]),
                              os.path.join(args.out, "cas", f"autoencoder-{name}"), args, real["label_names"])
    cas = balanced_accuracy(cas_model, test, args)
    fd = fid_with_ci(features(extractor, rebuilt_train, args), real["test_features"], trials=args.trials,
                     seed=args.seed)
    floor = real_floor(real["test_features"], size=len(rebuilt_train), other=real["train_features"],
                       trials=args.trials, seed=args.seed)
    recognised = comparison["b"]["overall"]["balanced_accuracy"]
    return {"name": name, "folder": os.path.abspath(folder), "latent_channels": vae.config.latent_channels,
            "test_psnr": float(quality.mean()), "n": len(rebuilt_train),
            "recognisability": recognised, "recognisability_ratio": recognised["value"] / real["reference"]["value"],
            "paired_difference": comparison["difference"]["overall"]["balanced_accuracy"],
            "recall": {label: comparison["b"]["per_class"][label]["sensitivity"]["value"]
                       for label in real["label_names"]},
            "real_recall": {label: comparison["a"]["per_class"][label]["sensitivity"]["value"]
                            for label in real["label_names"]},
            "cas": cas, "cas_ratio": cas["value"] / real["reference"]["value"],
            "domain_fd": fd, "floor": floor, "fd_over_floor": fd["value"] / floor["value"],
            "rebuilt_test": rebuilt_test}


def rebuilt_grid(test, ceilings: list[dict], label_names, per_class: int, path: str) -> str:
    """Rows = classes; columns = `per_class` real test images, then the same images rebuilt by each autoencoder."""
    labels = np.asarray(test["label"])
    rows = []
    for k in range(len(label_names)):
        picked = np.flatnonzero(labels == k)[:per_class].tolist()
        row = [test[i]["image"] for i in picked] + [None] * (per_class - len(picked))
        for ceiling in ceilings:
            row += [ceiling["rebuilt_test"][i] for i in picked] + [None] * (per_class - len(picked))
        rows.append(row)
    return save_grid(rows, path)


def class_grid(real_rows, sets: dict, label_names, per_class: int, path: str) -> str:
    """Rows = classes; columns = `per_class` real images, then `per_class` of each generator; >= 128 px cells."""
    rows = []
    for k, name in enumerate(label_names):
        row = [img for img, lab in zip(real_rows["image"], real_rows["label"]) if lab == k][:per_class]
        row += [None] * (per_class - len(row))
        for generated in sets.values():
            images, maps = generated.samples()
            picked = [img for img, smap in zip(images, maps) if smap.condition == name][:per_class]
            row += picked + [None] * (per_class - len(picked))
        rows.append(row)
    return save_grid(rows, path)


def save_grid(rows, path: str) -> str:
    """Rows of images (None = an empty white cell) as one picture, every cell >= 128 px (nearest upscaling)."""
    from dermdiff.image_grid import image_grid

    sides = [img.size[0] for row in rows for img in row if img is not None]
    blank = np.full((8, 8, 3), 255, np.uint8)
    image_grid([[blank if img is None else img for img in row] for row in rows], cell=max(128, *sides),
               fill="white").save(path)
    return path


def run(args) -> dict:
    from dermdiff.data import registry_of
    from dermdiff.data.skin_types import surrounding_skin_ita
    from dermdiff.metrics.features import ClassifierFeatures
    from dermdiff.semantic_map import SemanticMap

    generators = parse_generators(args.generator)
    autoencoders = parse_generators(args.autoencoder, "--autoencoder", "autoencoder")
    os.makedirs(args.out, exist_ok=True)
    splits = load_splits(args)
    train, test = splits["train"], splits["test"]
    registry = registry_of(train)
    label_names = list(registry.names)
    label_index = {name: k for k, name in enumerate(label_names)}
    reference = train_or_load(train, os.path.join(args.out, "reference_classifier"), args, label_names)
    extractor = ClassifierFeatures(reference, resolution=args.classifier_resolution)
    real = {"label_names": label_names, "test": test, "reference": balanced_accuracy(reference, test, args),
            "train_images": list(train["image"]), "test_features": features(extractor, list(test["image"]), args)}
    real["train_features"] = features(extractor, real["train_images"], args)
    count = args.num_generated or len(train)
    indices = proportional_indices(np.asarray(train["label"]), count, args.seed)
    chosen = [train[int(i)] for i in indices]
    real["chosen_conditions"] = [row["label_name"] for row in chosen]
    real["chosen_ita"] = [surrounding_skin_ita(row["image"], SemanticMap.decode(row["semantic_map"], registry).lesion_mask)
                          for row in chosen]
    sets = {name: generated_set(name, folder, train, indices, args) for name, folder in generators}
    results = [measure_generator(name, sets[name], label_index, reference, extractor, real, args) for name in sets]
    grid = class_grid(test, sets, label_names, args.per_class,
                      os.path.join(args.out, "classes_real_vs_generated.png")) if sets else None
    ceilings = [measure_autoencoder(name, folder, train, indices, reference, extractor, real, args)
                for name, folder in autoencoders]
    rebuilt = rebuilt_grid(test, ceilings, label_names, args.per_class,
                           os.path.join(args.out, "classes_real_vs_rebuilt.png")) if ceilings else None
    summary = {"data": args.data or "phantom", "split_seed": args.split_seed, "train": len(train), "test": len(test),
               "reference_test_balanced_accuracy": real["reference"], "generators": results, "grid": grid,
               "autoencoders": [{k: v for k, v in c.items() if k != "rebuilt_test"} for c in ceilings],
               "rebuilt_grid": rebuilt,
               "settings": {key: value for key, value in vars(args).items() if key not in ("markdown",)}}
    with open(os.path.join(args.out, "latent_vs_pixel.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1, default=str)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------------
def guidance_label(scale) -> str:
    """The guidance scale as the table states it (None: each pipeline's saved default, which may differ)."""
    return "each pipeline's default" if scale is None else f"{scale:g}"


def markdown(summary: dict) -> str:
    from dermdiff.metrics.classification import format_entry

    ref = summary["reference_test_balanced_accuracy"]
    settings = summary["settings"]
    names = [g["name"] for g in summary["generators"]] + [a["name"] for a in summary.get("autoencoders", [])]
    lines = [
        f"# Generator quality: {', '.join(names)} ({summary['data']})", "",
        f"Splits: make_splits(seed={summary['split_seed']}), train {summary['train']} / test {summary['test']} images. "
        f"Reference classifier: {settings['backbone']} at {settings['classifier_resolution']} px, "
        f"{settings['num_epochs']} epochs on the real train split, balanced accuracy on the real test split "
        f"{ref['value']:.3f}. Sampling: {settings['scheduler']}, {settings['num_inference_steps']} steps, "
        f"guidance {guidance_label(settings.get('guidance_scale'))}.", "",
    ]
    if summary["generators"]:
        lines += [
            "Skin tone: the ITA-estimated Fitzpatrick type of each generated image's skin (outside the lesion and the "
            "vignette, `dermdiff.data.skin_types`) against that of the real train image whose map it draws. A "
            "generator that ignores skin tone still scores the two type distributions' chance agreement.", "",
            "| generator | side | N | recognised (bal. acc.) | / real (>= 0.8) | CAS bal. acc. | CAS ratio (>= 0.6) "
            "| domain FD | real floor | FD / floor (<= 3) | nearest-train SSIM > 0.9 | skin type as the real image's "
            "| median abs. ITA difference |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for g in summary["generators"]:
            lines.append(
                f"| {g['name']} | {g['side']} | {g['n']} | {g['recognisability']['value']:.3f} | "
                f"{g['recognisability_ratio']:.2f} | {g['cas']['value']:.3f} | {g['cas_ratio']:.2f} | "
                f"{g['domain_fd']['value']:.3g} | {g['floor']['value']:.3g} | {g['fd_over_floor']:.2f} | "
                f"{g['memorised']} of {g['n']} | {format_entry(g['skin_tone']['same_type'])} | "
                f"{g['skin_tone']['median_abs_ita_difference']:.1f} deg |")
        lines += ["", f"Per-class grid (real | {' | '.join(g['name'] for g in summary['generators'])}): "
                  f"`{summary['grid']}`", ""]
    if summary.get("autoencoders"):
        lines += [
            "Autoencoder ceilings (what a generator that reproduced its training images exactly would score through "
            "each autoencoder): recognised = the reference classifier on the real test images rebuilt, paired with "
            "them as they are; CAS and FD on the N chosen train images rebuilt.", "",
            "| autoencoder | latent channels | test PSNR (dB) | recognised (bal. acc.) | / real | rebuilt - real "
            "| CAS bal. acc. | CAS ratio | domain FD | real floor | FD / floor |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for a in summary["autoencoders"]:
            lines.append(
                f"| {a['name']} | {a['latent_channels']} | {a['test_psnr']:.2f} | {format_entry(a['recognisability'])} | "
                f"{a['recognisability_ratio']:.2f} | {format_entry(a['paired_difference'], signed=True)} | "
                f"{format_entry(a['cas'])} | {a['cas_ratio']:.2f} | {a['domain_fd']['value']:.3g} | "
                f"{a['floor']['value']:.3g} | {a['fd_over_floor']:.2f} |")
        first = summary["autoencoders"][0]
        recalls = [("real test images", first["real_recall"])] + [(a["name"], a["recall"]) for a in summary["autoencoders"]]
        lines += ["", "Recall of the reference classifier per class, on the real test images and on them rebuilt:", "",
                  "| images | " + " | ".join(first["recall"]) + " |", "|---|" + "---|" * len(first["recall"])]
        lines += [f"| {name} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in recall.values()) + " |"
                  for name, recall in recalls]
        lines += ["", f"Per-class grid (real test images | rebuilt by each autoencoder): `{summary['rebuilt_grid']}`", ""]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="any dataset dermdiff reads (default with --quick: the phantom)")
    parser.add_argument("--generator", action="append", default=[], help="NAME=PIPELINE_DIR; repeat per generator")
    parser.add_argument("--autoencoder", action="append", default=[],
                        help="NAME=AUTOENCODER_DIR (any AutoencoderKL folder); repeat: adds its ceiling row")
    parser.add_argument("--out", required=True, help="run folder (generated sets, classifiers, json, grid)")
    parser.add_argument("--markdown", default=None, help="also write the table here")
    parser.add_argument("--image_size", type=int, default=128, help="side real images are loaded at (>= generators')")
    add_split_seed_argument(parser)
    add_stratify_argument(parser)
    add_estimate_skin_type_argument(parser)
    parser.add_argument("--num_generated", type=int, default=None, help="images per generator (default: train size)")
    add_config_arguments(parser, SamplingSettings, defaults=GENERATION_DEFAULTS,
                         only=("num_inference_steps", "scheduler", "guidance_scale", "batch_size"))
    add_config_arguments(parser, BenchmarkClassifierConfig, defaults=CLASSIFIER_DEFAULTS,
                         only=("backbone", "resolution", "num_epochs", "batch_size"))
    parser.add_argument("--n_boot", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=20, help="subsamples of the FD interval and the floor")
    parser.add_argument("--memorisation_size", type=int, default=64, help="side images are compared at for SSIM")
    parser.add_argument("--per_class", type=int, default=4, help="images per class and source in the grid")
    parser.add_argument("--seed", type=int, default=0)
    add_phantom_arguments(parser, num_images=600, switch=False)  # the phantom without --data (--quick)
    parser.add_argument("--quick", action="store_true",
                        help="phantom unless --data, tiny classifier and sets: checks the script end to end in minutes")
    args = parser.parse_args(argv)
    if not args.generator and not args.autoencoder:
        parser.error("give at least one --generator NAME=PIPELINE_DIR or --autoencoder NAME=AUTOENCODER_DIR")
    if args.data is None and not args.quick:
        parser.error("give --data (e.g. /work/shared/data/ham10000), or --quick for the phantom")
    if args.quick:
        args.backbone, args.num_epochs, args.n_boot, args.trials = "mobilenet_v3_small", 1, 20, 3
        args.phantom_num_images, args.image_size, args.classifier_resolution = 120, 16, 16
        args.num_generated, args.num_inference_steps, args.memorisation_size, args.per_class = 12, 2, 16, 2
    # the sampling and classifier settings are validated by their dataclasses (a bad value names its flag)
    args.generation = config_from_args(parser, SamplingSettings, args)
    config_from_args(parser, BenchmarkClassifierConfig, args)
    for name in ("n_boot", "per_class"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.num_generated is not None and args.num_generated < 2:
        parser.error(f"--num_generated must be >= 2, got {args.num_generated}")
    return args


def main(argv=None) -> int:
    """Parse, measure, print and write the table; a bad input (a --generator or --autoencoder folder that does not
    exist, ...) is one stderr line and exit status 2, not a traceback (`dermdiff.errors.run_script`)."""
    from dermdiff.errors import run_script

    return run_script(parse_args, measure_and_report, argv)


def measure_and_report(args) -> int:
    summary = run(args)
    table = markdown(summary)
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(table + f"\nReproduce: `python {' '.join(sys.argv)}`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
