"""Do the ported GANs learn the phantom? A short CPU training of each, statistics at step 0 vs the end.

For each model (DermGAN, DCGAN, targeted lesion edit, CycleGAN lesion edit) the script trains with the
library loop (`dermdiff.loops.gan.train_gan`, the same code the `training/` scripts run) on the
procedural phantom and compares generated images with real held-out phantom images before and after:

- colour distance: Euclidean distance between the per-channel (R, G, B) means and standard deviations
  of generated and real images, in [0, 1] units;
- feature distance: Frechet distance between features of a fixed random-weight ResNet-18
  (`dermdiff.metrics.features`, `torchvision:resnet18:random`). Random features only rank models on one
  machine; the numbers are not FIDs comparable with papers.

What is compared with what:
- DermGAN: images generated for the held-out maps vs the held-out images (also the mean l1 between each
  pair, since DermGAN reconstructs the image of a map);
- DCGAN: unconditional samples vs held-out images;
- lesion edit, "add": edited held-out healthy photos vs held-out lesion photos; "remove": edited lesion
  photos vs healthy photos; for the targeted mode also the MSE outside the mask (relevancy) of the adds.
  Removal is also scored directly against the truth the phantom knows: each held-out lesion photo has a
  healthy twin (same seed and index, pixel-identical outside the lesion mask), so "MSE to the healthy
  twin inside the mask" says how well the lesion was removed (the unedited photo's value is the
  reference) and "MSE outside the mask" how much healthy skin the edit damaged (0 for the unedited photo).

    python benchmarks/gan_phantom.py                  # ~3-5 minutes on a shared 2-core CPU
    python benchmarks/gan_phantom.py --models targeted cycle   # the lesion-edit models only (~2-4 minutes)

Measured (seed 0, 300 updates of batch 16, edit lr 5e-5; step 0 -> end): targeted add feature distance
3.45 -> 1.79, remove 3.45 -> 2.24, remove MSE to the healthy twin in the mask 0.187 -> 0.035 (0.0045
outside); cycle add 3.45 -> 2.04, remove 3.45 -> 2.89, twin MSE in the mask 0.187 -> 0.045 (0.0051 outside).
    python benchmarks/gan_phantom.py --steps 100 --images 160   # quicker, noisier
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch

from dermdiff.conditions import get_registry
from dermdiff.data.info import registry_of
from dermdiff.data.phantom import generate_phantom_sample, phantom_dataset
from dermdiff.data.transforms import model_transform
from dermdiff.loops.gan import GANTrainingConfig, train_gan
from dermdiff.loops.gan_tasks import (
    EditPairs,
    dcgan_task,
    dermgan_task,
    edit_task,
    lesion_and_healthy_indices,
    split_heldout,
    stack_examples,
)
from dermdiff.losses import relevancy_loss
from dermdiff.metrics.features import load_extractor
from dermdiff.metrics.fid import fid_from_features
from dermdiff.models import (
    DCGANGenerator,
    DermGANGenerator,
    MultiScaleDiscriminator,
    PatchGANDiscriminator,
    TranslationGenerator,
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="Training updates per model.")
    parser.add_argument("--images", type=int, default=320, help="Phantom images (a quarter held out).")
    parser.add_argument("--resolution", type=int, default=32, help="Image side.")
    parser.add_argument("--batch_size", type=int, default=16, help="Images per update.")
    parser.add_argument(
        "--learning_rate",
        type=float,
        default=2e-4,
        help="Adam lr of DermGAN and DCGAN (higher than the paper's 5e-5 so a few hundred steps show movement).",
    )
    parser.add_argument(
        "--edit_learning_rate",
        type=float,
        default=5e-5,
        help="Adam lr of the lesion-edit models (Furger et al.'s 5e-5 moves them within a few hundred steps).",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["dermgan", "dcgan", "targeted", "cycle"],
        choices=["dermgan", "dcgan", "targeted", "cycle"],
        help="Which models to train.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of data, weights and training.")
    return parser.parse_args()


# ----------------------------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------------------------
def colour_distance(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Distance between per-channel means and stds of two image batches in [-1, 1] (reported in [0, 1] units)."""

    def stats(images):
        images = (images.clamp(-1, 1) + 1) / 2
        return torch.cat([images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))])

    return float((stats(fake) - stats(real)).norm())


class FeatureDistance:
    """Frechet distance in the space of a fixed random ResNet-18 (inputs in [0, 255] at the image size)."""

    def __init__(self, resolution: int):
        self.extractor = load_extractor("torchvision:resnet18:random", resolution=resolution)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> np.ndarray:
        pixels = (images.clamp(-1, 1) + 1) * 127.5
        return torch.cat([self.extractor(chunk) for chunk in pixels.split(64)]).double().numpy()

    def __call__(self, fake: torch.Tensor, real: torch.Tensor) -> float:
        return fid_from_features(self.features(fake), self.features(real))


def report(name: str, before: dict, after: dict, seconds: float) -> None:
    for key in before:
        change = after[key] - before[key]
        print(f"{name:9s} {key:36s} step 0: {before[key]:9.4f}   end: {after[key]:9.4f}   change: {change:+.4f}")
    print(f"{name:9s} {'training time (s)':36s} {seconds:.0f}")


# ----------------------------------------------------------------------------------------------------------------
# one run per model
# ----------------------------------------------------------------------------------------------------------------
def config(args, output_dir, learning_rate: float) -> GANTrainingConfig:
    return GANTrainingConfig(
        output_dir=output_dir,
        train_batch_size=args.batch_size,
        max_train_steps=args.steps,
        learning_rate=learning_rate,
        adam_beta1=0.5,
        seed=args.seed,
        checkpointing_steps=0,
        validation_steps=0,
        monitor_steps=0,
        report_to=None,
    )


@torch.no_grad()
def evaluate_dermgan(generator, heldout, distance):
    generator.eval()
    fake = generator(heldout["semantic_map"], generator=torch.Generator().manual_seed(0), stochastic=True).sample
    generator.train()
    real = heldout["pixel_values"]
    return {
        "colour distance": colour_distance(fake, real),
        "feature distance": distance(fake, real),
        "l1 to the map's real image": float((fake - real).abs().mean()),
    }


@torch.no_grad()
def evaluate_dcgan(generator, heldout, distance):
    generator.eval()
    z = torch.randn(
        heldout["pixel_values"].shape[0], generator.config.latent_dim, generator=torch.Generator().manual_seed(0)
    )
    fake = generator(z).sample
    generator.train()
    real = heldout["pixel_values"]
    return {"colour distance": colour_distance(fake, real), "feature distance": distance(fake, real)}


def healthy_twins(rows, lesion_indices, count: int, size: int, seed: int) -> torch.Tensor:
    """The healthy twin of lesion row `lesion_indices[i % L]` for i < count (the `EditPairs` order), in [-1, 1]."""
    twins = []
    for i in range(count):
        row = rows[lesion_indices[i % len(lesion_indices)]]
        index, lesion_index = int(row["image_id"]), int(row["lesion_id"].lstrip("L"))
        twin = generate_phantom_sample(None, row["skin_type"], size, seed, index, lesion_index).image
        twins.append(torch.from_numpy(np.asarray(twin, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1)
    return torch.stack(twins)


def masked_mse(images: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared difference over the pixels (and channels) where `mask` is 1."""
    return float(((images - reference) ** 2 * mask).sum() / (mask.sum() * images.shape[1]).clamp_min(1))


@torch.no_grad()
def evaluate_edit(add, remove, pairs, distance, targeted):
    add.eval(), remove.eval()
    mask = pairs["lesion_mask"] if targeted else None
    added = add(pairs["healthy"], mask=mask).sample.clamp(-1, 1)
    removed = remove(pairs["lesion"], mask=mask).sample.clamp(-1, 1)
    add.train(), remove.train()
    scores = {
        "add: feature dist. to lesions": distance(added, pairs["lesion"]),
        "add: colour dist. to lesions": colour_distance(added, pairs["lesion"]),
        "remove: feature dist. to healthy": distance(removed, pairs["healthy"]),
        "remove: colour dist. to healthy": colour_distance(removed, pairs["healthy"]),
    }
    # references: the unedited photos against the other domain (what doing nothing scores)
    scores["ref: unedited healthy vs lesions"] = distance(pairs["healthy"], pairs["lesion"])
    lesion_mask, twins = pairs["lesion_mask"], pairs["twin"]
    scores["remove: MSE to healthy twin in mask"] = masked_mse(removed, twins, lesion_mask)
    scores["ref: unedited MSE to twin in mask"] = masked_mse(pairs["lesion"], twins, lesion_mask)
    scores["remove: MSE outside the mask"] = masked_mse(removed, pairs["lesion"], 1 - lesion_mask)
    if targeted:
        scores["add: MSE outside the mask"] = float(relevancy_loss(added, pairs["healthy"], mask))
    return scores


def run_model(kind, args, data, distance):
    train_examples, train_rows, heldout_examples, heldout_rows, registry = data
    res = args.resolution
    labels = {"conditions": list(registry.names), "registry_name": registry.registry_name}
    torch.manual_seed(args.seed)
    if kind == "dermgan":
        generator = DermGANGenerator(sample_size=res, block_out_channels=(16, 32, 64, 64, 64), **labels)
        discriminator = PatchGANDiscriminator(block_out_channels=(16, 32, 64), **labels)
        task = dermgan_task(generator, discriminator)
        heldout = stack_examples(heldout_examples, range(len(heldout_rows)))
        dataset = train_examples

        def evaluate():
            return evaluate_dermgan(generator, heldout, distance)
    elif kind == "dcgan":
        generator = DCGANGenerator(sample_size=res, num_upsamples=2, base_channels=64, dense_channels=32)
        discriminator = MultiScaleDiscriminator(sample_size=res, num_layers=3, base_channels=16)
        task = dcgan_task(generator, discriminator)
        heldout = stack_examples(heldout_examples, range(len(heldout_rows)), ("pixel_values",))
        dataset = train_examples

        def evaluate():
            return evaluate_dcgan(generator, heldout, distance)
    else:
        targeted = kind == "targeted"
        models = [
            TranslationGenerator(mask_channels=int(targeted), block_out_channels=(16, 32, 64), num_residual_blocks=4)
            for _ in range(2)
        ]
        discriminators = [MultiScaleDiscriminator(sample_size=res, num_layers=3, base_channels=16) for _ in range(2)]
        task = edit_task(*models, *discriminators, mode=kind)
        lesion, healthy = lesion_and_healthy_indices(train_rows)
        dataset = EditPairs(train_examples, healthy, lesion)
        held_lesion, held_healthy = lesion_and_healthy_indices(heldout_rows)
        held = EditPairs(heldout_examples, held_healthy, held_lesion)
        rows = [held[i] for i in range(len(held))]
        pairs = {key: torch.stack([row[key] for row in rows]) for key in rows[0]}
        pairs["twin"] = healthy_twins(heldout_rows, held_lesion, len(held), res, args.seed)

        def evaluate():
            return evaluate_edit(*models, pairs, distance, targeted)

    before = evaluate()
    start = time.time()
    with tempfile.TemporaryDirectory() as output_dir:
        learning_rate = args.edit_learning_rate if kind in ("targeted", "cycle") else args.learning_rate
        train_gan(task, dataset, config(args, output_dir, learning_rate))
    seconds = time.time() - start
    report(kind, before, evaluate(), seconds)


def main():
    args = parse_args()
    torch.set_num_threads(1)  # the CPU is shared; one thread is faster than contended ones
    warnings.filterwarnings("ignore", message="Matrix is singular")  # few images, 512-d features
    dataset = phantom_dataset(n=args.images, size=args.resolution, seed=args.seed, healthy_fraction=0.4)
    registry = registry_of(dataset) or get_registry("phantom")
    train_rows, heldout_rows = split_heldout(dataset, 0.25, args.seed)
    transform = model_transform(args.resolution, registry)
    data = (
        train_rows.with_transform(transform),
        train_rows,
        heldout_rows.with_transform(transform),
        heldout_rows,
        registry,
    )
    distance = FeatureDistance(args.resolution)
    print(
        f"phantom: {len(train_rows)} training / {len(heldout_rows)} held-out images at {args.resolution} px; "
        f"{args.steps} updates of batch {args.batch_size} per model "
        f"(lr {args.learning_rate}, lesion edit {args.edit_learning_rate})"
    )
    os.environ.setdefault("TQDM_DISABLE", "1")
    for kind in args.models:
        run_model(kind, args, data, distance)


if __name__ == "__main__":
    main()
