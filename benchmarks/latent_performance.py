"""What a latent 128 px DermDiff costs on a CPU next to a pixel 32 px one (issue 12, performance).

A latent UNet on the (4, 32, 32) latents of a factor-4 autoencoder is the same network as a pixel UNet on
(3, 32, 32) images, so a 128 px latent image should cost about what a 32 px pixel image does, plus the
VAE. Measured, each in its own process (so each has its own peak RSS), with 1 intra-op thread, on process
CPU time (on a shared machine wall-clock time counts the other jobs):

1. sampling: CPU-seconds per image, DPM-Solver++ 20 steps, classifier-free guidance 2.0 (one UNet pass over
   twice the batch per step); latent: the VAE decode is included. Ratio latent 128 / pixel 32, target <= 1.5.
2. training: images per CPU-second of `train_diffusion` (EMA on) from the latent cache (`cached_latents`:
   rows read from disk, z ~ q(z | x) drawn per step) vs from the pixel 32 px images (`DiffusionExamples`: PNG
   decode + resize per row, the real data path). Ratio, target >= 0.95. Steady state: updates `warmup` to
   the last, timed by when each batch's first row is read.
3. the autoencoder at 128 px: encode and decode images per CPU-second (posterior mean; decode of a latent).
4. peak RSS of each process.

Models: the README's defaults, `SemanticUNet2DModel()` (sample_size 32; 4 in/out channels for latents) and
`train_autoencoder.py`'s `AutoencoderKL` (f = 4, 2.6 M parameters); untrained weights (timing only).

    OMP_NUM_THREADS=1 python benchmarks/latent_performance.py --markdown benchmarks/results/latent_performance.md
    python benchmarks/latent_performance.py --quick      # tiny sizes, a few seconds: checks the script runs

On a GPU (`--device cuda --mixed_precision bf16`, what `benchmarks/gpu_check.sh` runs) the clock is wall
time with `torch.cuda.synchronize()` instead of CPU time, training runs under accelerate's bf16 autocast,
sampling under `torch.autocast(bfloat16)`, and each process also reports its peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

GUIDANCE = 2.0
PHASES = ("sample_pixel", "sample_latent", "train_pixel", "train_latent", "codec")


# ----------------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------------
def autoencoder(args):
    import torch
    from diffusers import AutoencoderKL

    from dermdiff.loops.autoencoder import default_autoencoder_config

    torch.manual_seed(0)
    config = default_autoencoder_config(args.latent_resolution)
    if args.quick:
        config.update(block_out_channels=[8, 16, 16], norm_num_groups=4)
    vae = AutoencoderKL(**config).eval()
    vae.register_to_config(scaling_factor=0.5)
    return vae.to(args.device)


class Clock:
    """Seconds of process CPU time on a CPU; of wall time, after the GPU's queued work, on a GPU."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __call__(self) -> float:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


def autocast(args):
    """bf16 autocast for inference when asked (training gets it from accelerate's mixed_precision)."""
    import contextlib

    import torch

    if args.mixed_precision == "bf16":
        return torch.autocast(device_type="cuda" if args.device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def unet(args, latent_vae=None):
    import torch

    from dermdiff.conditions import get_registry
    from dermdiff.latent_maps import record_vae, vae_factor
    from dermdiff.models.semantic_unet import SemanticUNet2DModel

    torch.manual_seed(0)
    config = {"sample_size": args.pixel_resolution, **get_registry("phantom").model_kwargs()}  # the phantom's data
    if args.quick:
        config.update(block_out_channels=(8, 16, 16), norm_num_groups=4, attention_head_dim=4)
    if latent_vae is not None:
        channels = latent_vae.config.latent_channels
        config.update(in_channels=channels, out_channels=channels,
                      sample_size=args.latent_resolution // vae_factor(latent_vae))
    model = SemanticUNet2DModel(**config)
    model.register_to_config(condition_dropout=0.1)  # trained for guidance, as a real run records
    if latent_vae is not None:
        record_vae(model, latent_vae)
    return model


# ----------------------------------------------------------------------------------------------------------------
# workers (one per process)
# ----------------------------------------------------------------------------------------------------------------
def sample(args, latent: bool) -> dict:
    import torch
    from diffusers import DDPMScheduler
    from sampling_overhead import maps_for

    from dermdiff.pipelines.pipeline_dermdiff import DermDiffPipeline
    from dermdiff.pipelines.scheduler_names import scheduler_from_name

    vae = autoencoder(args) if latent else None
    size = args.latent_resolution if latent else args.pixel_resolution
    pipe = DermDiffPipeline(unet=unet(args, vae).eval(), scheduler=DDPMScheduler(num_train_timesteps=1000), vae=vae)
    pipe.scheduler = scheduler_from_name("dpm", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(args.device)
    maps = maps_for(size, args.sample_batch)
    clock = Clock(args.device)

    def call(steps):
        with autocast(args):
            return pipe(semantic_map=maps, num_inference_steps=steps, guidance_scale=GUIDANCE, output_type="np",
                        generator=torch.Generator().manual_seed(0)).images

    call(2)  # warm-up: first-call allocations, lazy imports, kernel selection
    start = clock()
    images = call(args.sample_steps)
    seconds = clock() - start
    assert images.shape[1] == size, images.shape
    return {"cpu_s_per_image": seconds / len(maps), "images_per_s": len(maps) / seconds, "images": len(maps),
            "side": size}


def training_rows(args, latent: bool, cache_dir: str):
    """The real data path: a phantom as rows, transformed per row (pixel) or encoded once into the cache (latent)."""
    from dermdiff.data.info import registry_of
    from dermdiff.data.phantom import phantom_dataset
    from dermdiff.latent_cache import cached_latents, hold_in_memory
    from dermdiff.loops.diffusion import DiffusionExamples

    size = args.latent_resolution if latent else args.pixel_resolution
    rows = phantom_dataset(n=args.train_rows, size=size, seed=0)
    examples = DiffusionExamples(registry_of(rows), size)
    if not latent:
        return rows.with_transform(examples), None
    vae = autoencoder(args)
    cache = cached_latents(rows, vae, examples, cache_dir, batch_size=8, verbose=False)
    return hold_in_memory(cache), vae  # as train_diffusion.py reads it


def train(args, latent: bool) -> dict:
    from diffusers import DDPMScheduler
    from train_throughput import TimedExamples

    from dermdiff.loops import common
    from dermdiff.loops.diffusion import DiffusionTrainingConfig, train_diffusion

    with tempfile.TemporaryDirectory() as folder:
        rows, vae = training_rows(args, latent, os.path.join(folder, "cache"))
        dataset = TimedExamples(rows, args.batch_size * (args.train_steps + 2))
        config = DiffusionTrainingConfig(output_dir=os.path.join(folder, "run"), train_batch_size=args.batch_size,
                                         max_train_steps=args.train_steps, lr_warmup_steps=2, use_ema=True,
                                         checkpointing_steps=0, validation_steps=0, report_to=None, seed=0,
                                         mixed_precision=args.mixed_precision)
        accelerator = common.build_accelerator(config.output_dir, mixed_precision=args.mixed_precision,
                                               report_to=None, seed=0)
        train_diffusion(unet(args, vae), DDPMScheduler(), dataset, config, accelerator=accelerator, vae=vae)
    # each update ends in loss.item(), which waits for the GPU: batch start times are update boundaries
    starts = (dataset.times if args.device.startswith("cuda") else dataset.cpu_times)[:: args.batch_size]
    first, last = args.warmup, min(args.train_steps, len(starts)) - 1
    return {"images_per_cpu_s": (last - first) * args.batch_size / (starts[last] - starts[first]),
            "updates_timed": last - first, "batch": args.batch_size}


def codec(args) -> dict:
    import torch

    vae = autoencoder(args)
    images = torch.rand(args.codec_images, 3, args.latent_resolution, args.latent_resolution, device=args.device) * 2 - 1
    clock = Clock(args.device)
    with torch.no_grad(), autocast(args):
        vae.decode(vae.encode(images[:1]).latent_dist.mean)  # warm-up
        start = clock()
        latents = torch.cat([vae.encode(images[i:i + 8]).latent_dist.mean for i in range(0, len(images), 8)])
        encode = clock() - start
        start = clock()
        for i in range(0, len(latents), 8):
            vae.decode(latents[i:i + 8])
        decode = clock() - start
    return {"encode_images_per_cpu_s": len(images) / encode, "decode_images_per_cpu_s": len(images) / decode}


def worker(args) -> None:
    import torch

    torch.set_num_threads(1)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    phase = args.worker
    if phase.startswith("sample_"):
        result = sample(args, latent=phase.endswith("latent"))
    elif phase.startswith("train_"):
        result = train(args, latent=phase.endswith("latent"))
    else:
        result = codec(args)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device.startswith("cuda"):
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


# ----------------------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------------------
SIZES = ("pixel_resolution", "latent_resolution", "sample_batch", "sample_steps", "train_rows", "train_steps",
         "batch_size", "warmup", "codec_images", "device", "mixed_precision")


def launch(phase: str, args) -> dict:
    out = os.path.join(tempfile.mkdtemp(), f"{phase}.json")
    command = [sys.executable, os.path.abspath(__file__), "--worker", phase, "--out", out]
    for name in SIZES:
        command += [f"--{name}", str(getattr(args, name))]
    command += ["--quick"] if args.quick else []
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if args.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{phase} failed:\n{result.stderr[-3000:]}")
    with open(out, encoding="utf-8") as handle:
        return json.load(handle)


def measure(args) -> dict:
    """Every phase `repeats` times, interleaved (the machine's load changes); medians and the per-repeat ratios."""
    runs = {phase: [] for phase in PHASES}
    for repeat in range(args.repeats):
        for phase in PHASES:
            runs[phase].append(launch(phase, args))
            print(f"repeat {repeat + 1}, {phase}: {runs[phase][-1]}", flush=True)
    med = statistics.median
    sample_ratio = [lat["cpu_s_per_image"] / pix["cpu_s_per_image"]
                    for lat, pix in zip(runs["sample_latent"], runs["sample_pixel"])]
    train_ratio = [lat["images_per_cpu_s"] / pix["images_per_cpu_s"]
                   for lat, pix in zip(runs["train_latent"], runs["train_pixel"])]
    return {
        "settings": {name: getattr(args, name) for name in (*SIZES, "repeats", "quick")},
        "sample_cpu_s_per_image": {"pixel": med(r["cpu_s_per_image"] for r in runs["sample_pixel"]),
                                   "latent": med(r["cpu_s_per_image"] for r in runs["sample_latent"])},
        "sample_ratio": med(sample_ratio), "sample_ratios": sample_ratio,
        "train_images_per_cpu_s": {"pixel": med(r["images_per_cpu_s"] for r in runs["train_pixel"]),
                                   "latent": med(r["images_per_cpu_s"] for r in runs["train_latent"])},
        "train_ratio": med(train_ratio), "train_ratios": train_ratio,
        "encode_images_per_cpu_s": med(r["encode_images_per_cpu_s"] for r in runs["codec"]),
        "decode_images_per_cpu_s": med(r["decode_images_per_cpu_s"] for r in runs["codec"]),
        "sample_images_per_s": {"pixel": med(r["images_per_s"] for r in runs["sample_pixel"]),
                                "latent": med(r["images_per_s"] for r in runs["sample_latent"])},
        "peak_rss_mib": {phase: max(r["peak_rss_mib"] for r in runs[phase]) for phase in PHASES},
        "peak_gpu_mib": {phase: max(r.get("peak_gpu_mib", 0.0) for r in runs[phase]) for phase in PHASES},
    }


def report_lines(result: dict) -> list[str]:
    s = result["settings"]
    sample, train = result["sample_cpu_s_per_image"], result["train_images_per_cpu_s"]
    on_gpu = s["device"].startswith("cuda")
    clock = "s (GPU wall)" if on_gpu else "CPU-s"
    threads = "" if on_gpu else "; 1 intra-op thread (OMP_NUM_THREADS=1), process CPU time"
    lines = [
        f"settings: {json.dumps(s)}{threads}",
        f"sampling, DPM-Solver++ {s['sample_steps']} steps, guidance {GUIDANCE}, batch {s['sample_batch']}: pixel "
        f"{s['pixel_resolution']} px {sample['pixel']:.4f} {clock}/image ({result['sample_images_per_s']['pixel']:.2f} "
        f"images/{clock}), latent {s['latent_resolution']} px (VAE decode included) {sample['latent']:.4f} "
        f"{clock}/image ({result['sample_images_per_s']['latent']:.2f} images/{clock}); ratio latent / pixel "
        f"{result['sample_ratio']:.2f} (target <= 1.5; per repeat {', '.join(f'{r:.2f}' for r in result['sample_ratios'])})",
        f"training ({s['mixed_precision']} precision, EMA on, batch {s['batch_size']}): pixel {s['pixel_resolution']} px "
        f"{train['pixel']:.2f} images/{clock}, cached latents ({s['latent_resolution']} px) {train['latent']:.2f} "
        f"images/{clock}; ratio {result['train_ratio']:.2f} (target >= 0.95; per repeat "
        f"{', '.join(f'{r:.2f}' for r in result['train_ratios'])})",
        f"autoencoder at {s['latent_resolution']} px: encode {result['encode_images_per_cpu_s']:.1f}, decode "
        f"{result['decode_images_per_cpu_s']:.1f} images/{clock}",
        "peak RSS (MiB): " + ", ".join(f"{phase} {value:.0f}" for phase, value in result["peak_rss_mib"].items()),
    ]
    if on_gpu:
        lines.append("peak GPU memory (MiB): " + ", ".join(f"{phase} {value:.0f}"
                                                           for phase, value in result["peak_gpu_mib"].items()))
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixel_resolution", type=int, default=32)
    parser.add_argument("--latent_resolution", type=int, default=128)
    parser.add_argument("--sample_batch", type=int, default=4, help="images per sampling call")
    parser.add_argument("--sample_steps", type=int, default=20)
    parser.add_argument("--train_rows", type=int, default=64)
    parser.add_argument("--train_steps", type=int, default=12)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2, help="updates left out of the training rate")
    parser.add_argument("--codec_images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when available)")
    parser.add_argument("--mixed_precision", default="no", choices=("no", "bf16"))
    parser.add_argument("--quick", action="store_true", help="tiny models and sizes: checks the script, no numbers")
    parser.add_argument("--json", default=None, help="write the result here")
    parser.add_argument("--markdown", default=None, help="write the report lines here")
    parser.add_argument("--worker", choices=PHASES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and args.worker is None:
        args.pixel_resolution, args.latent_resolution, args.sample_batch, args.sample_steps = 16, 32, 2, 3
        args.train_rows, args.train_steps, args.batch_size, args.warmup, args.codec_images = 8, 4, 4, 1, 4
        args.repeats = 1
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        parser.error(f"--device must be cpu, cuda or auto, got {args.device!r}")
    if args.train_steps - args.warmup < 2 or args.latent_resolution % 4:
        parser.error("--train_steps must exceed --warmup by >= 2 and --latent_resolution be a multiple of 4")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    result = measure(args)
    lines = report_lines(result)
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(f"# Latent {args.latent_resolution} px vs pixel {args.pixel_resolution} px on {args.device} "
                         f"(issue 12)\n\n")
            handle.write("\n".join(f"- {line}" for line in lines))
            handle.write(f"\n\nReproduce: `OMP_NUM_THREADS=1 python {' '.join(sys.argv)}`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
