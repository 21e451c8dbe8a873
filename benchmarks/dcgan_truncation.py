"""Furger et al.'s truncation table (2020, Table 3) as a runnable benchmark: FID per truncation threshold.

The truncation trick re-samples every latent component with |z| > threshold (`DCGANPipeline(truncation=)`):
lower thresholds trade variety for typical-looking images. For a trained DCGAN (`--pipeline DIR`, a saved
`DCGANPipeline`; by default one is trained here on the phantom with the library loop, as
`training/train_dcgan.py` does), the script draws as many samples as there are held-out real images at
each threshold, for `--repeats` latent seeds, and prints the Frechet distance to the held-out images as
mean +/- 1.96 std over the seeds, plus the real-vs-real reference.

Feature space: clean-fid's Inception weights cannot be downloaded here, so the distances use the
project's offline extractor path (`load_extractor("torchvision:resnet18:random")`, a fixed random-weight
ResNet-18, with clean-fid's `frechet_distance`); they rank thresholds on this data and are not Inception
FIDs comparable with the paper. `--extractor inception:DIR` uses Inception where the weights are.

    python benchmarks/dcgan_truncation.py                          # train on the phantom, ~15 CPU-minutes
    python benchmarks/dcgan_truncation.py --pipeline runs/dcgan --data /work/shared/data/ham10000
    python benchmarks/dcgan_truncation.py --steps 50 --repeats 2   # smoke run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import torch
from dermgan_ablation import Distance, add_run_arguments, check_run_arguments, publish, real_vs_real, summarise
from gan_phantom import config
from tqdm.auto import tqdm

from dermdiff.conditions import get_registry
from dermdiff.data.info import registry_of
from dermdiff.data.phantom import phantom_dataset
from dermdiff.data.transforms import model_transform
from dermdiff.loops.gan import train_gan
from dermdiff.loops.gan_tasks import dcgan_task, split_heldout, stack_examples
from dermdiff.models import DCGANGenerator, MultiScaleDiscriminator
from dermdiff.pipelines import DCGANPipeline

THRESHOLDS = ("none", "2.0", "1.5", "1.0", "0.75", "0.5", "0.25", "0.1")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", default=None, help="A saved DCGANPipeline folder; default: train one here.")
    parser.add_argument("--data", default=None, help="Real images to compare with (any layout); default phantom.")
    parser.add_argument(
        "--thresholds", nargs="+", default=list(THRESHOLDS), help="Truncation thresholds; 'none' = no truncation."
    )
    add_run_arguments(parser, steps=1500, images=640, repeats_of="Latent seeds per threshold")
    args = parser.parse_args(argv)
    check_run_arguments(parser, args)
    try:
        args.thresholds = [None if value == "none" else float(value) for value in args.thresholds]
    except ValueError:
        parser.error(f"--thresholds takes positive numbers or 'none', got {args.thresholds}")
    if any(value is not None and value <= 0 for value in args.thresholds):
        parser.error(f"--thresholds takes positive numbers or 'none', got {args.thresholds}")
    return args


def load_rows(args):
    if args.data:
        from dermdiff.data.dispatch import load_any

        dataset = load_any(args.data, size=args.resolution)
    else:
        dataset = phantom_dataset(n=args.images, size=args.resolution, seed=args.seed, healthy_fraction=0.2)
    return split_heldout(dataset, 0.25, args.seed)


def train_pipeline(args, train_examples) -> DCGANPipeline:
    torch.manual_seed(args.seed)
    res = args.resolution
    generator = DCGANGenerator(sample_size=res, num_upsamples=2, base_channels=64, dense_channels=32)
    discriminator = MultiScaleDiscriminator(sample_size=res, num_layers=3, base_channels=16)
    with tempfile.TemporaryDirectory() as output_dir:
        train_gan(dcgan_task(generator, discriminator), train_examples, config(args, output_dir, args.learning_rate))
    return DCGANPipeline(dcgan=generator.eval())


def table(results: dict, args, distance_name: str, source: str) -> str:
    lines = [
        f"DCGAN truncation (Furger et al. 2020, Table 3 layout): {source}; real images: "
        f"{'`' + args.data + '`' if args.data else 'the phantom'} at {args.resolution} px, seed {args.seed}.",
        f"Frechet distance in the `{distance_name}` feature space (extractor `{args.extractor}`; not Inception FID), "
        f"mean ± 1.96 std over {args.repeats} latent seeds.",
        "",
        "| truncation threshold | FD ± 1.96 std |",
        "|---|---|",
    ]
    lines += [f"| {name} | {summarise(values)} |" for name, values in results.items()]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)  # the CPU is shared; one thread is faster than contended ones
    warnings.filterwarnings("ignore", message="Matrix is singular")
    train_rows, heldout_rows = load_rows(args)
    transform = model_transform(args.resolution, registry_of(train_rows) or get_registry("phantom"))
    train_examples = train_rows.with_transform(transform)
    real = stack_examples(heldout_rows.with_transform(transform), range(len(heldout_rows)), ("pixel_values",))
    real = real["pixel_values"]
    distance = Distance(args.extractor, args.resolution)
    real_features = distance.features(real)

    if args.pipeline:
        pipe = DCGANPipeline.from_pretrained(args.pipeline)
        source = f"pipeline `{args.pipeline}`"
    else:
        start = time.time()
        os.environ.setdefault("TQDM_DISABLE", "1")
        pipe = train_pipeline(args, train_examples)
        seconds = time.time() - start
        source = f"DCGAN trained here for {args.steps} updates of batch {args.batch_size} ({seconds:.0f} s)"
    pipe.set_progress_bar_config(disable=True)

    results = {}
    for threshold in tqdm(args.thresholds, desc="truncation thresholds", disable=False):
        scores = []
        for repeat in range(args.repeats):
            images = pipe(batch_size=real.shape[0], truncation=threshold, output_type="pt",
                          generator=torch.Generator().manual_seed(1000 + repeat)).images
            fake = images.to(torch.float32) * 2 - 1
            if fake.shape[-2:] != real.shape[-2:]:
                fake = torch.nn.functional.interpolate(fake, size=real.shape[-2:], mode="bicubic").clamp(-1, 1)
            scores.append(distance(distance.features(fake), real_features))
        results["none" if threshold is None else f"{threshold:g}"] = scores
        print(f"truncation {threshold}: {summarise(scores)}")

    reference = real_vs_real(distance, train_examples, len(train_rows), real_features, real.shape[0], args)
    if reference:
        results["real vs real"] = reference
    publish(table(results, args, distance.name, source), args.markdown)


if __name__ == "__main__":
    main()
