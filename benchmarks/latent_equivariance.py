"""Is a flipped / turned latent the latent of the flipped / turned image? (issue 12 item 5)

`--augment dihedral` with cached latents could either cache the latent of every orientation (what
`dermdiff.latent_cache` does) or rotate the cached latent. The second is exact only if the encoder is
equivariant, E(T x) = T E(x) for each of the 7 non-identity symmetries T of the square, and convolutional
encoders are not in general (learned kernels have orientations). This measures how far off it is, per VAE:

- latent error: ||T mu(x) - mu(T x)|| / ||mu(T x)||, mu the posterior mean, averaged over images and T;
- what the diffusion model would be taught: decoding T mu(x) vs T x (PSNR, dB), next to the VAE's own
  reconstruction of T x, decode(mu(T x)) vs T x; the gap is the error the shortcut adds.

    python benchmarks/latent_equivariance.py --data /work/shared/data/ham10000 --vae initial \\
        --vae tiny --vae outputs/ae-ham10000-128 --num_images 64 --markdown benchmarks/results/latent_equivariance.md

`initial` is `train_autoencoder.py`'s default model with its seed-0 initial weights, `tiny` a 2-level
8/16-wide one (the tests' size); any other value is an AutoencoderKL folder. Images: the test split of
`make_splits(seed=0)` (lesions never trained on), or the phantom when `--data` is not given.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

TINY = {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 4, "latent_channels": 4}


def load_images(data: str | None, resolution: int, num_images: int) -> torch.Tensor:
    """(N, 3, R, R) in [-1, 1]: the test split's first images (or the phantom's), preprocessed as in training."""
    from dermdiff.data import load_any, make_splits, phantom_dataset
    from dermdiff.data.info import registry_of
    from dermdiff.loops.diffusion import DiffusionExamples

    if data is None:
        rows = phantom_dataset(n=num_images, size=resolution, seed=0)
    else:
        rows = make_splits(load_any(data, size=resolution), seed=0)["test"]
    rows = rows.select(range(min(num_images, len(rows))))
    examples = rows.with_transform(DiffusionExamples(registry_of(rows), resolution))
    return torch.stack([examples[i]["pixel_values"] for i in range(len(rows))])


def load_named_vae(name: str, resolution: int):
    from diffusers import AutoencoderKL

    from dermdiff.loops.autoencoder import default_autoencoder_config, load_vae

    if name in ("initial", "tiny"):
        torch.manual_seed(0)
        config = default_autoencoder_config(resolution) if name == "initial" else {**TINY, "sample_size": resolution}
        return AutoencoderKL(**config).eval()
    return load_vae(name).eval()


@torch.no_grad()
def measure(vae, images: torch.Tensor, batch_size: int = 16) -> dict:
    """Latent error and the PSNR of decoding turned latents vs the VAE's own reconstruction of turned images."""
    from dermdiff.loops.autoencoder import psnr
    from dermdiff.loops.pair_augment import DIHEDRAL_ORDER, dihedral

    def mean(x):
        return torch.cat([vae.encode(x[i:i + batch_size]).latent_dist.mean for i in range(0, len(x), batch_size)])

    def decode(z):
        return torch.cat([vae.decode(z[i:i + batch_size]).sample for i in range(0, len(z), batch_size)])

    base = mean(images)
    errors, shortcut, exact = [], [], []
    for index in range(1, DIHEDRAL_ORDER):
        turned = dihedral(images, index)
        truth = mean(turned)
        moved = dihedral(base, index)
        errors.append(((moved - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)).mean().item())
        shortcut.append(psnr(decode(moved), turned).mean().item())
        exact.append(psnr(decode(truth), turned).mean().item())
    return {"latent_error": sum(errors) / len(errors), "worst_latent_error": max(errors),
            "psnr_turned_latent": sum(shortcut) / len(shortcut), "psnr_exact": sum(exact) / len(exact),
            "per_symmetry": errors, "n": len(images)}


def write_markdown(path: str, args, rows) -> None:
    source = args.data or "the phantom"
    lines = [
        "# Does a turned latent equal the latent of the turned image? (issue 12 item 5)", "",
        f"{rows[0][1]['n']} images of {source} (test split of make_splits(seed=0) for real data), {args.resolution} px; "
        "the 7 non-identity flips / quarter turns T. Latent error = ||T mu(x) - mu(T x)|| / ||mu(T x)|| (0 = "
        "equivariant). PSNR against T x of decode(T mu(x)) (the shortcut) and of decode(mu(T x)) (exact).", "",
        "| VAE | latent error (mean over T) | worst T | PSNR turned latent (dB) | PSNR exact (dB) | shortcut loss (dB) |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in rows:
        lines.append(f"| {name} | {result['latent_error']:.3f} | {result['worst_latent_error']:.3f} | "
                     f"{result['psnr_turned_latent']:.2f} | {result['psnr_exact']:.2f} | "
                     f"{result['psnr_exact'] - result['psnr_turned_latent']:.2f} |")
    lines += ["", f"Reproduce: `{' '.join(['python', *sys.argv])}`", ""]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a dataset dermdiff reads (default: the phantom)")
    parser.add_argument("--vae", action="append", default=None,
                        help="'initial', 'tiny' or an AutoencoderKL folder; repeat for several (default: initial, tiny)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--num_images", type=int, default=32)
    parser.add_argument("--markdown", default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.resolution < 8:
        parser.error("--num_images must be >= 1 and --resolution >= 8")
    args.vae = args.vae or ["initial", "tiny"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    images = load_images(args.data, args.resolution, args.num_images)
    rows = []
    for name in args.vae:
        result = measure(load_named_vae(name, args.resolution), images)
        rows.append((name, result))
        print(f"{name}: latent error {result['latent_error']:.3f} (worst {result['worst_latent_error']:.3f}); PSNR "
              f"turned latent {result['psnr_turned_latent']:.2f} dB vs exact {result['psnr_exact']:.2f} dB")
    if args.markdown:
        write_markdown(args.markdown, args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
