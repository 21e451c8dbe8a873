"""DermGAN's ablation table (Ghorbani et al. 2020, Table 1) as a runnable benchmark: FID +/- 1.96 std per model.

Trains the full DermGAN and each ablation for the same budget (same data, seed and number of updates)
with the library loop (`dermdiff.loops.gan.train_gan`, what `training/train_dermgan.py` runs):

| row                     | what changes                                                      |
|-------------------------|-------------------------------------------------------------------|
| DermGAN                 | resize-conv upsampling, GAN + l1 + ROI l1 + feature matching     |
| no resize-conv          | `upsample="transposed"` (pix2pix's deconvolution)                 |
| no ROI loss             | ROI l1 weight 0                                                   |
| no feature matching     | feature-matching weight 0                                         |
| real vs real            | reference: held-out real images vs other real images of the data  |

Each model generates one image per held-out map for `--repeats` dropout seeds; each repeat gives one
Frechet distance to the held-out real images, and the table shows mean +/- 1.96 std over the repeats, as
Table 1 does. The real-vs-real row compares the held-out images with up to `--repeats` disjoint draws of as
many training images (as many as the training rows hold).

Feature space: clean-fid's Inception weights cannot be downloaded here, so the distances use the
project's offline extractor path `dermdiff.metrics.features.load_extractor("torchvision:resnet18:random")`
(a fixed random-weight ResNet-18, penultimate layer) and `dermdiff.metrics.fid.fid_from_features`
(clean-fid's `frechet_distance`). They rank models on this data; they are not Inception FIDs comparable
with the paper's numbers. Pass `--extractor inception:DIR` (or any `EXTRACTOR_SPECS` spelling) where the
weights are available.

    python benchmarks/dermgan_ablation.py                       # phantom, ~20 CPU-minutes
    python benchmarks/dermgan_ablation.py --data /work/shared/data/ham10000 --resolution 64
    python benchmarks/dermgan_ablation.py --steps 50 --images 160 --repeats 3   # smoke run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from dataclasses import replace

import numpy as np
import torch
from gan_phantom import config
from tqdm.auto import tqdm

from dermdiff.conditions import get_registry
from dermdiff.data.info import registry_of
from dermdiff.data.phantom import phantom_dataset
from dermdiff.data.transforms import model_transform
from dermdiff.loops.gan import DermGANLossWeights, train_gan
from dermdiff.loops.gan_tasks import dermgan_task, split_heldout, stack_examples
from dermdiff.metrics.features import load_extractor
from dermdiff.metrics.fid import fid_from_features
from dermdiff.models import DermGANGenerator, PatchGANDiscriminator

ROWS = {
    "DermGAN": ({}, {}),
    "no resize-conv": ({"upsample": "transposed"}, {}),
    "no ROI loss": ({}, {"roi": 0.0}),
    "no feature matching": ({}, {"feature_matching": 0.0}),
}


def add_run_arguments(parser: argparse.ArgumentParser, steps: int, images: int, repeats_of: str) -> None:
    """The flags both GAN-table benchmarks share (training budget, data size, repeats, features, output)."""
    parser.add_argument("--steps", type=int, default=steps, help="Training updates per model.")
    parser.add_argument("--images", type=int, default=images, help="Phantom images (a quarter held out).")
    parser.add_argument("--resolution", type=int, default=32, help="Image side (of the phantom / --data).")
    parser.add_argument("--batch_size", type=int, default=16, help="Images per update.")
    parser.add_argument("--learning_rate", type=float, default=2e-4, help="Adam lr (beta1 0.5).")
    parser.add_argument("--repeats", type=int, default=5, help=f"{repeats_of} (the +/- is over these).")
    parser.add_argument("--extractor", default="torchvision:resnet18:random", help="Feature extractor spec.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of data, weights and training.")
    parser.add_argument("--markdown", default=None, help="Also write the table to this Markdown file.")


def check_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("steps", "images", "resolution", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="Folder with lesion masks (e.g. HAM10000); default phantom.")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="Which models to train.")
    add_run_arguments(parser, steps=600, images=480, repeats_of="Dropout seeds per model")
    args = parser.parse_args(argv)
    check_run_arguments(parser, args)
    return args


def load_rows(args):
    """(training rows, held-out rows, registry): the phantom, or `--data` resized, split 3:1 by `split_heldout`."""
    if args.data:
        from dermdiff.data.dispatch import load_any

        dataset = load_any(args.data, size=args.resolution)
        if "semantic_map" not in dataset.column_names:
            raise SystemExit(f"--data {args.data}: no lesion masks found (DermGAN needs semantic maps)")
    else:
        dataset = phantom_dataset(n=args.images, size=args.resolution, seed=args.seed, healthy_fraction=0.2)
    registry = registry_of(dataset) or get_registry("phantom")
    train_rows, heldout_rows = split_heldout(dataset, 0.25, args.seed)
    return train_rows, heldout_rows, registry


class Distance:
    """Frechet distance between image batches in [-1, 1] in the extractor's feature space."""

    def __init__(self, spec: str, resolution: int):
        self.extractor = load_extractor(spec, resolution=resolution)
        self.name = self.extractor.name

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> np.ndarray:
        resizer_size = int(self.extractor.resolution)
        pixels = (images.clamp(-1, 1) + 1) * 127.5
        if pixels.shape[-1] != resizer_size:
            pixels = torch.nn.functional.interpolate(pixels, size=resizer_size, mode="bicubic").clamp(0, 255)
        return torch.cat([self.extractor(chunk) for chunk in pixels.split(64)]).double().numpy()

    def __call__(self, fake_features: np.ndarray, real_features: np.ndarray) -> float:
        return fid_from_features(fake_features, real_features)


def train_row(name, args, train_examples, registry) -> DermGANGenerator:
    model_kwargs, weight_kwargs = ROWS[name]
    labels = {"conditions": list(registry.names), "registry_name": registry.registry_name}
    torch.manual_seed(args.seed)
    generator = DermGANGenerator(
        sample_size=args.resolution, block_out_channels=(16, 32, 64, 64, 64), **labels, **model_kwargs
    )
    discriminator = PatchGANDiscriminator(block_out_channels=(16, 32, 64), **labels)
    task = dermgan_task(generator, discriminator, weights=replace(DermGANLossWeights(), **weight_kwargs))
    with tempfile.TemporaryDirectory() as output_dir:
        train_gan(task, train_examples, config(args, output_dir, args.learning_rate))
    return generator.eval()


def summarise(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {1.96 * np.std(values):.3f}"


def table(results: dict, args, distance_name: str, seconds: dict) -> str:
    lines = [
        f"DermGAN ablation (Ghorbani et al., Table 1) on {'`' + args.data + '`' if args.data else 'the phantom'}, "
        f"{args.resolution} px, {args.steps} updates of batch {args.batch_size} per model, seed {args.seed}.",
        f"Frechet distance in the `{distance_name}` feature space (extractor `{args.extractor}`; not Inception FID), "
        f"mean ± 1.96 std over {args.repeats} dropout seeds (real vs real: over "
        f"{len(results.get('real vs real', []))} disjoint draws of training images).",
        "",
        "| model | FD ± 1.96 std | training time (s) |",
        "|---|---|---|",
    ]
    for name, values in results.items():
        lines.append(f"| {name} | {summarise(values)} | {seconds.get(name, '')} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)  # the CPU is shared; one thread is faster than contended ones
    warnings.filterwarnings("ignore", message="Matrix is singular")  # few images, 512-d features
    os.environ.setdefault("TQDM_DISABLE", "1")  # the loop's own bars; this script shows one per table
    train_rows, heldout_rows, registry = load_rows(args)
    transform = model_transform(args.resolution, registry)
    train_examples, heldout_examples = train_rows.with_transform(transform), heldout_rows.with_transform(transform)
    heldout = stack_examples(heldout_examples, range(len(heldout_rows)))
    distance = Distance(args.extractor, args.resolution)
    real_features = distance.features(heldout["pixel_values"])
    count = len(heldout_rows)
    print(f"{len(train_rows)} training / {count} held-out images at {args.resolution} px; features {distance.name}")

    results, seconds = {}, {}
    bar = tqdm(args.rows, desc="dermgan ablation", disable=False)
    for name in bar:
        bar.set_postfix_str(name)
        start = time.time()
        generator = train_row(name, args, train_examples, registry)
        seconds[name] = round(time.time() - start)
        scores = []
        with torch.no_grad():
            for repeat in range(args.repeats):
                rng = torch.Generator().manual_seed(1000 + repeat)
                fake = generator(heldout["semantic_map"], generator=rng, stochastic=True).sample
                scores.append(distance(distance.features(fake), real_features))
        results[name] = scores
        print(f"{name:22s} {summarise(scores)}  ({seconds[name]} s)")

    reference = real_vs_real(distance, train_examples, len(train_rows), real_features, count, args)
    if reference:
        results["real vs real"] = reference
    publish(table(results, args, distance.name, seconds), args.markdown)


def real_vs_real(distance, train_examples, train_count: int, real_features, count: int, args) -> list[float]:
    """Reference row: held-out real images vs up to `args.repeats` disjoint draws of `count` training images."""
    order = torch.randperm(train_count, generator=torch.Generator().manual_seed(args.seed)).tolist()
    draws = [order[i * count : (i + 1) * count] for i in range(args.repeats)]
    scores = []
    for draw in draws:
        if len(draw) == count:
            real = stack_examples(train_examples, draw, ("pixel_values",))["pixel_values"]
            scores.append(distance(distance.features(real), real_features))
    return scores


def publish(markdown: str, path: str | None) -> None:
    """Prints the table and writes it to `path` (--markdown) when given."""
    print(markdown)
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(markdown + "\n")


if __name__ == "__main__":
    main()
