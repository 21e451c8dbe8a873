"""Reconstruction quality of latent DermDiff's autoencoder on real HAM10000 images, against CPU-minutes.

Three steps (issue 12). The autoencoder is trained on the train split of `make_splits(seed=0)` only, and
measured on the test split, whose lesions it never saw:

    # 1. the splits as image folders at 128 px (train for the trainer, test for the measurement)
    python benchmarks/autoencoder_quality.py export --data /work/shared/data/ham10000 --resolution 128 \\
        --out outputs/ham10000-128
    # 2. train, keeping a checkpoint every N updates (the curve's points)
    OMP_NUM_THREADS=1 accelerate launch training/train_autoencoder.py \\
        --train_data_dir outputs/ham10000-128/train --resolution 128 --crop_size 64 --checkpointing_steps 100 \\
        --output_dir outputs/ae-ham10000-128 ...
    # 3. PSNR / SSIM / classifier-feature distance on the test split for every checkpoint and the final model
    python benchmarks/autoencoder_quality.py measure --run outputs/ae-ham10000-128 \\
        --test_dir outputs/ham10000-128/test --num_images 500 --markdown benchmarks/results/autoencoder_quality.md
    # 4. (optional) what the autoencoder alone costs a classifier: the test folder rebuilt through it, scored by
    #    a classifier trained on real images beside the original folder (a ceiling for any latent generator)
    python benchmarks/autoencoder_quality.py reconstruct --vae outputs/ae-ham10000-128 \\
        --test_dir outputs/ham10000-128/test --out outputs/ham10000-128/test-rebuilt
    dermdiff classify --classifier REF --data outputs/ham10000-128/test-rebuilt --out eval/rebuilt \\
        --loader-kwargs '{"size": 64}'

CPU-minutes of a checkpoint are the training process's own CPU time (`time.process_time`, which the loop
logs as `cpu_minutes`), read from the run's tensorboard log: on a shared machine wall-clock time would
count the other jobs. PSNR is on 8-bit images,
SSIM is scikit-image's on RGB (7 x 7 window, data range 255), both per image and averaged with a 95%
bootstrap interval. The feature distance is the mean L2 distance between the pooled features of an image
and its reconstruction under an ImageNet-free extractor (`dermdiff.metrics.load_extractor`), divided by
the mean distance between two different test images, so 0 = identical features and 1 = as far apart as
unrelated images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

DATA_ROOT = os.environ.get("DERMDIFF_DATA", "/work/shared/data")


# ----------------------------------------------------------------------------------------------------------------
# 1. export
# ----------------------------------------------------------------------------------------------------------------
def export(args) -> int:
    from dermdiff.data import load_any, make_splits, save_image_folder

    dataset = load_any(args.data, size=args.resolution)
    parts = make_splits(dataset, seed=args.split_seed)
    for name in args.splits:
        folder = save_image_folder(parts[name], os.path.join(args.out, name))
        print(f"{name}: {len(parts[name])} images -> {folder}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# 2. measure
# ----------------------------------------------------------------------------------------------------------------
def folder_images(folder: str, resolution: int, num_images: int) -> torch.Tensor:
    """The first `num_images` images of a folder, (N, 3, R, R) in [-1, 1], preprocessed as in training."""
    from dermdiff.data.folder import load_dataset_dir
    from dermdiff.data.info import registry_of
    from dermdiff.loops.diffusion import DiffusionExamples

    rows = load_dataset_dir(folder)
    rows = rows.select(range(min(num_images, len(rows))))
    examples = rows.with_transform(DiffusionExamples(registry_of(rows), resolution))
    return torch.stack([examples[i]["pixel_values"] for i in range(len(rows))])


def ssim_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """scikit-image SSIM of uint8 (N, H, W, 3) pairs."""
    from skimage.metrics import structural_similarity

    return np.array([structural_similarity(x, y, channel_axis=2, data_range=255, win_size=7) for x, y in zip(a, b)])


def bootstrap_ci(values: np.ndarray, seed: int = 0, rounds: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(rounds)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def feature_distance(originals, reconstructions, extractor) -> float:
    """Mean ||f(x) - f(x_hat)|| over mean ||f(x_i) - f(x_j)|| (i != j); see the module docstring."""
    from dermdiff.metrics.sources import ExtractOptions, ImageListSource

    options = ExtractOptions(extractor, None, 32, 0, "cpu", False)
    real = torch.as_tensor(ImageListSource(originals).features(options).features, dtype=torch.float64)
    fake = torch.as_tensor(ImageListSource(reconstructions).features(options).features, dtype=torch.float64)
    paired = (real - fake).norm(dim=1).mean()
    between = torch.cdist(real, real)
    unrelated = between.sum() / (len(real) * (len(real) - 1))
    return float(paired / unrelated)


def measure_model(vae, images: torch.Tensor, extractor=None) -> dict:
    """PSNR, SSIM (means, 95% CIs) and optionally the feature distance of D(mu(x)) against x."""
    from dermdiff.loops.autoencoder import latent_channel_statistics, psnr, reconstruct, to_pil

    vae.eval()
    reconstruction = reconstruct(vae, images)
    values = psnr(reconstruction, images).numpy()
    originals, rebuilt = to_pil(images), to_pil(reconstruction)
    ssim = ssim_per_image(np.stack([np.asarray(x) for x in originals]), np.stack([np.asarray(x) for x in rebuilt]))
    result = {"psnr": float(values.mean()), "psnr_ci95": bootstrap_ci(values), "ssim": float(ssim.mean()),
              "ssim_ci95": bootstrap_ci(ssim), "n": len(images), "latents": latent_channel_statistics(vae, images)}
    if extractor is not None:
        result["feature_distance"] = feature_distance(originals, rebuilt, extractor)
    return result


def step_minutes(run_dir: str) -> dict[int, float]:
    """CPU-minutes of the training process at each logged step (the loop logs `cpu_minutes`; restarts add up)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = os.path.join(run_dir, "logs", "train_autoencoder")
    if not os.path.isdir(folder):
        return {}
    minutes: dict[int, float] = {}
    for name in sorted(os.listdir(folder)):  # one events file per (re)start, named by its start time
        if not name.startswith("events"):
            continue
        events = EventAccumulator(os.path.join(folder, name))
        events.Reload()
        if "cpu_minutes" not in events.Tags().get("scalars", []):
            continue
        offset = max(minutes.values(), default=0.0)
        for scalar in events.Scalars("cpu_minutes"):
            minutes[scalar.step] = offset + scalar.value
    return minutes


def run_models(run_dir: str, with_initial: bool = False):
    """(step, label, AutoencoderKL): initial weights (optional), each checkpoint (its EMA if kept), the final model."""
    from diffusers import AutoencoderKL

    from dermdiff.loops.common import checkpoint_step, list_checkpoints

    checkpoints = list_checkpoints(run_dir)
    if with_initial and checkpoints:  # the run's architecture with the seed-0 initial weights (train_autoencoder's)
        torch.manual_seed(0)
        config = AutoencoderKL.load_config(os.path.join(checkpoints[0], "vae"))
        yield 0, "initial", AutoencoderKL.from_config(config)
    for path in checkpoints:
        sub = "vae_ema" if os.path.isdir(os.path.join(path, "vae_ema")) else "vae"
        yield checkpoint_step(path), os.path.basename(path), AutoencoderKL.from_pretrained(os.path.join(path, sub))
    if os.path.isfile(os.path.join(run_dir, "config.json")):
        yield None, "final", AutoencoderKL.from_pretrained(run_dir)


def measure(args) -> int:

    with torch.no_grad():  # not set_grad_enabled(False): that would outlive the call in a test process
        return _measure(args)


def _measure(args) -> int:
    from dermdiff.metrics.features import load_extractor

    images = folder_images(args.test_dir, args.resolution, args.num_images)
    extractor = load_extractor(args.extractor) if args.extractor != "none" else None
    minutes = step_minutes(args.run)
    rows = []
    for step, label, vae in run_models(args.run, args.with_initial):
        last = step if step is not None else max(minutes, default=0)
        minutes.setdefault(0, 0.0)
        use_extractor = extractor if (step is None or args.features_every_checkpoint) else None
        result = {"label": label, "step": last, "cpu_minutes": minutes.get(last),
                  **measure_model(vae, images, use_extractor)}
        rows.append(result)
        print(json.dumps(result), flush=True)
    if args.markdown:
        write_markdown(args, rows)
    return 0


def finalize(args) -> int:
    """What train_autoencoder does at the end of a run, for a run stopped at a checkpoint."""
    from diffusers import AutoencoderKL

    from dermdiff.loops.autoencoder import measured_latent_normalisation

    sub = next((s for s in ("vae_ema", "vae") if os.path.isdir(os.path.join(args.checkpoint, s))), "")
    vae = AutoencoderKL.from_pretrained(os.path.join(args.checkpoint, sub)).eval()
    images = folder_images(args.train_dir, args.resolution, args.scaling_num_images)
    with torch.no_grad():
        vae.register_to_config(**measured_latent_normalisation(vae, images, args.per_channel_latents))
    vae.save_pretrained(args.out)
    print(f"saved {args.out} (scaling_factor {vae.config.scaling_factor:.4f}, latents_std "
          f"{vae.config.latents_std})")
    return 0


def reconstruct_folder(args) -> int:
    """The test folder with every image replaced by its reconstruction D(mu(x)); maps, labels and ids kept.

    Why: a latent generator can be no more recognisable than its autoencoder's reconstructions. Scoring this
    folder and the original with the same real-trained classifier separates what the autoencoder loses from
    what the UNet does not learn.
    """
    from dermdiff.data import save_image_folder
    from dermdiff.data.folder import load_dataset_dir
    from dermdiff.loops.autoencoder import load_vae, reconstruct, to_pil

    vae = load_vae(args.vae).eval()  # reconstruct() runs under no_grad; nothing global is switched
    rows = load_dataset_dir(args.test_dir)
    images = folder_images(args.test_dir, args.resolution, len(rows))
    rebuilt = to_pil(reconstruct(vae, images, args.batch_size, args.clamp_latents))
    rows = rows.map(lambda _, index: {"image": rebuilt[index]}, with_indices=True)
    print(f"{len(rows)} reconstructions -> {save_image_folder(rows, args.out)}")
    return 0


def _per_channel(values, spec: str) -> str:
    return " / ".join(format(value, spec) for value in values)


def write_markdown(args, rows) -> None:
    lines = [
        "# Autoencoder reconstruction quality (HAM10000 test split, 128 px)",
        "",
        f"Run: `{args.run}`; {rows[0]['n'] if rows else 0} test images from `{args.test_dir}` (make_splits seed 0);"
        f" PSNR on 8-bit RGB, SSIM 7 x 7 window; 95% bootstrap CIs. Feature distance: extractor `{args.extractor}`,"
        " paired distance / distance between unrelated test images (0 = identical).",
        "",
        "Latents (posterior means of the same images as the UNet sees them, normalised; per channel): std, max |z| and the share beyond 4"
        " (6e-5 for a unit Gaussian); channels far apart in std, or with a long tail, are what the UNet gets wrong.",
        "",
        "| model | step | CPU-minutes | PSNR (dB) | SSIM | feature distance | latent std | latent max abs "
        "| latent share > 4 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        minutes = f"{row['cpu_minutes']:.1f}" if row["cpu_minutes"] is not None else "?"
        feature = f"{row['feature_distance']:.3f}" if "feature_distance" in row else ""
        lines.append(
            f"| {row['label']} | {row['step']} | {minutes} | {row['psnr']:.2f} [{row['psnr_ci95'][0]:.2f}, "
            f"{row['psnr_ci95'][1]:.2f}] | {row['ssim']:.3f} [{row['ssim_ci95'][0]:.3f}, {row['ssim_ci95'][1]:.3f}] "
            f"| {feature} | {_per_channel(row['latents']['std'], '.2f')} | {_per_channel(row['latents']['max_abs'], '.1f')} "
            f"| {_per_channel(row['latents']['beyond_4'], '.4f')} |"
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
    with open(args.markdown, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"wrote {args.markdown}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    out = sub.add_parser("export", help="Write make_splits parts as image folders.")
    out.add_argument("--data", default=os.path.join(DATA_ROOT, "ham10000"), help="Any layout load_any reads.")
    out.add_argument("--resolution", type=int, default=128, help="Image side of the exported images.")
    out.add_argument("--split_seed", type=int, default=0, help="make_splits seed.")
    out.add_argument("--splits", nargs="+", default=["train", "test"], help="Parts to write.")
    out.add_argument("--out", required=True, help="Folder; each part goes to a subfolder of its name.")
    run = sub.add_parser("measure", help="PSNR / SSIM / feature distance of a run's checkpoints on test images.")
    run.add_argument("--run", required=True, help="train_autoencoder.py output folder.")
    run.add_argument("--test_dir", required=True, help="Image folder of the test split (from `export`).")
    run.add_argument("--resolution", type=int, default=128, help="Side the images are measured at.")
    run.add_argument("--num_images", type=int, default=500, help="Test images to measure.")
    run.add_argument("--extractor", default="none",
                     help="dermdiff.metrics.load_extractor spec for the feature distance ('none' to skip).")
    run.add_argument("--features_every_checkpoint", action="store_true",
                     help="Also compute the feature distance per checkpoint (default: final model only).")
    run.add_argument("--markdown", default=None, help="Write the table here.")
    run.add_argument("--with_initial", action="store_true", help="Also measure the untrained model (step 0).")
    final = sub.add_parser("finalize", help="Save a checkpoint's autoencoder as a model with its scaling_factor.")
    final.add_argument("--checkpoint", required=True,
                       help="A checkpoint-N folder of train_autoencoder.py, or an AutoencoderKL folder.")
    final.add_argument("--train_dir", required=True, help="Image folder of the training split.")
    final.add_argument("--resolution", type=int, default=128, help="Image side.")
    final.add_argument("--scaling_num_images", type=int, default=512, help="Training images for scaling_factor.")
    final.add_argument("--per_channel_latents", action="store_true",
                       help="Measure per-channel latents_mean / latents_std (scaling_factor 1), as the trainer's flag.")
    final.add_argument("--out", required=True, help="Where the AutoencoderKL is saved.")
    rebuild = sub.add_parser("reconstruct", help="Write a test folder rebuilt through an autoencoder.")
    rebuild.add_argument("--vae", required=True, help="AutoencoderKL folder, pipeline folder with vae/, or Hub id.")
    rebuild.add_argument("--test_dir", required=True, help="Image folder of the test split (from `export`).")
    rebuild.add_argument("--resolution", type=int, default=128, help="Side the images are rebuilt at.")
    rebuild.add_argument("--batch_size", type=int, default=16, help="Images per encode/decode call.")
    rebuild.add_argument("--clamp_latents", type=float, default=None,
                         help="Clamp the normalised latent to [-K, K] before decoding (what its outliers cost).")
    rebuild.add_argument("--out", required=True, help="Where the rebuilt image folder is written.")
    args = parser.parse_args(argv)
    if args.command == "reconstruct" and args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.command == "reconstruct" and args.clamp_latents is not None and not args.clamp_latents > 0:
        parser.error(f"--clamp_latents must be > 0, got {args.clamp_latents}")
    if args.command == "measure" and args.num_images < 2:
        parser.error(f"--num_images must be >= 2, got {args.num_images}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    commands = {"export": export, "measure": measure, "finalize": finalize, "reconstruct": reconstruct_folder}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
