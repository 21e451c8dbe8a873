"""Training throughput of `dermdiff.loops.diffusion.train_diffusion` on CPU, printed as measured numbers.

1. Loop overhead: images/s of `train_diffusion` vs a minimal hand-written accelerate loop (noise, forward,
   MSE, backward, clip, AdamW, lr schedule) on the same default model, batch and in-memory tensors.
   Both see the same dataset wrapper, which timestamps every example it hands out; the steady-state
   rate is taken between update `warmup` and the last update, so start-up and the final save do not
   count. The ratio is computed per repeat; repeats are interleaved because the CPU is shared.
2. Scaling: the same loop under `accelerate launch` with 1 and with 2 CPU processes (gloo), one
   intra-op thread each; efficiency = images/s(2) / (2 x images/s(1)).
3. Peak RSS of one training process at 64 px, batch 16, default model, EMA on.
4. One vs two intra-op threads (on a shared CPU, contended threads spin).
5. The data transform (`DiffusionExamples`: PNG map decode + resize) in rows/s, for scale.

Run: `python benchmarks/train_throughput.py [--repeats 3] [--steps 20] [--resolution 32]`.
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


# ----------------------------------------------------------------------------------------------------------------
# worker: one measured training run (started as a subprocess, possibly under accelerate launch)
# ----------------------------------------------------------------------------------------------------------------
class TimedExamples:
    """`length` training examples cycling over `base`; remembers when (wall and CPU clock) each was handed out."""

    def __init__(self, base: list, length: int):
        self.base, self.length, self.times, self.cpu_times = base, length, [], []

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())
        return self.base[int(index) % len(self.base)]


def tensor_examples(resolution: int, count: int = 64) -> list:
    from dermdiff.data.info import registry_of
    from dermdiff.data.phantom import phantom_dataset
    from dermdiff.loops.diffusion import DiffusionExamples

    rows = phantom_dataset(n=count, size=resolution, seed=0)
    transform = DiffusionExamples(registry_of(rows), resolution)
    return [transform.example(r["image"], r["semantic_map"], r["label"]) for r in rows]


def minimal_loop(model, dataset, batch_size: int, steps: int) -> int:
    """The baseline: what any accelerate user would write for epsilon-prediction training."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    accelerator = Accelerator()
    scheduler = DDPMScheduler()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6)
    lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=steps)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    model.train()
    done = 0
    for batch in loader:
        clean, maps = batch["pixel_values"], batch["semantic_map"]
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],))
        prediction = model(scheduler.add_noise(clean, noise, timesteps), timesteps, maps).sample
        loss = F.mse_loss(prediction, noise)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        done += 1
        if done >= steps:
            break
    return accelerator.process_index


def ours(model, dataset, batch_size: int, steps: int, use_ema: bool, output_dir: str) -> int:
    from diffusers import DDPMScheduler

    from dermdiff.loops import common
    from dermdiff.loops.diffusion import DiffusionTrainingConfig, train_diffusion

    config = DiffusionTrainingConfig(
        output_dir=output_dir, train_batch_size=batch_size, max_train_steps=steps, lr_warmup_steps=2,
        use_ema=use_ema, checkpointing_steps=0, validation_steps=0, report_to="tensorboard", seed=0,
    )
    accelerator = common.build_accelerator(output_dir, report_to="tensorboard", seed=0)
    train_diffusion(model, DDPMScheduler(), dataset, config, accelerator=accelerator)
    return accelerator.process_index


def worker(args) -> None:
    import torch

    from dermdiff.conditions import get_registry
    from dermdiff.models.semantic_unet import SemanticUNet2DModel

    world = int(os.environ.get("WORLD_SIZE", "1"))
    base = tensor_examples(args.resolution)
    dataset = TimedExamples(base, args.batch_size * (args.steps + 2) * world)
    torch.manual_seed(0)
    model = SemanticUNet2DModel(sample_size=args.resolution, **get_registry("phantom").model_kwargs())
    with tempfile.TemporaryDirectory() as output_dir:
        if args.mode == "minimal":
            rank = minimal_loop(model, dataset, args.batch_size, args.steps)
        else:
            rank = ours(model, dataset, args.batch_size, args.steps, args.mode == "ours_ema", output_dir)
    starts = dataset.times[:: args.batch_size]  # the first example of every batch
    cpu_starts = dataset.cpu_times[:: args.batch_size]
    first, last = args.warmup, min(args.steps, len(starts)) - 1
    images = (last - first) * args.batch_size
    report = {"mode": args.mode, "rank": rank, "world_size": world,
              "images_per_s": images / (starts[last] - starts[first]),
              "images_per_cpu_s": images / (cpu_starts[last] - cpu_starts[first]),
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with open(f"{args.out}.rank{rank}.json", "w") as handle:
        json.dump(report, handle)


# ----------------------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------------------
def launch(mode: str, processes: int, args, resolution=None, batch_size=None, steps=None, threads=1) -> list[dict]:
    """Runs one worker (under `accelerate launch` for 2 processes); returns the per-rank reports."""
    out = os.path.join(tempfile.mkdtemp(), "report")
    worker_args = [
        os.path.abspath(__file__), "--worker", "--mode", mode, "--out", out,
        "--resolution", str(resolution or args.resolution), "--batch_size", str(batch_size or args.batch_size),
        "--steps", str(steps or args.steps), "--warmup", str(args.warmup),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), ACCELERATE_USE_CPU="1")
    if processes > 1:  # `--cpu --num_processes 2` would silently start a single process
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   *worker_args]  # fmt: skip
    else:
        command = [sys.executable, *worker_args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{mode} x{processes} failed:\n{result.stderr[-3000:]}")
    reports = [json.load(open(f"{out}.rank{rank}.json")) for rank in range(processes)]
    if any(report["world_size"] != processes for report in reports):
        raise RuntimeError(f"expected world size {processes}, got {[r['world_size'] for r in reports]}")
    return reports


def transform_rate(resolution: int, rows: int = 256) -> float:
    from dermdiff.data.info import registry_of
    from dermdiff.data.phantom import phantom_dataset
    from dermdiff.loops.diffusion import DiffusionExamples

    dataset = phantom_dataset(n=rows, size=resolution, seed=0)
    examples = dataset.with_transform(DiffusionExamples(registry_of(dataset), resolution))
    start = time.perf_counter()
    for index in range(rows):
        examples[index]
    return rows / (time.perf_counter() - start)


def summary(values: list[float]) -> str:
    spread = f" (min {min(values):.3g}, max {max(values):.3g})" if len(values) > 1 else ""
    return f"{statistics.median(values):.3g}{spread}"


def loop_overhead(args) -> None:
    modes = ("minimal", "ours", "ours_ema")
    reports = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        for mode in modes:
            reports[mode].append(launch(mode, 1, args)[0])
        line = ", ".join(f"{m} {r[-1]['images_per_s']:.2f} img/s {r[-1]['images_per_cpu_s']:.2f} img/CPU-s"
                         for m, r in reports.items())
        print(f"repeat {repeat + 1}: {line}", flush=True)
    print("\n1. loop overhead (1 process); CPU-seconds are the fair clock on a shared machine, wall-seconds shown too")
    for clock in ("images_per_cpu_s", "images_per_s"):
        rates = {mode: [r[clock] for r in reports[mode]] for mode in modes}
        for mode in modes:
            print(f"   {mode:9s} {clock}: {summary(rates[mode])}")
        ratios = [o / m for o, m in zip(rates["ours"], rates["minimal"])]
        ratios_ema = [o / m for o, m in zip(rates["ours_ema"], rates["minimal"])]
        print(f"   ratio train_diffusion / minimal ({clock}), no EMA: {summary(ratios)}   target >= 0.95")
        print(f"   ratio with EMA on (EMA update included):          {summary(ratios_ema)}")


def scaling(args) -> None:
    single, double = [], []
    for _ in range(args.repeats):
        single.append(launch("ours", 1, args)[0]["images_per_s"])
        double.append(sum(r["images_per_s"] for r in launch("ours", 2, args)))
    efficiency = [d / (2 * s) for s, d in zip(single, double)]
    print("\n2. scaling (ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2, gloo)")
    print(f"   1 process  images/s: {summary(single)}")
    print(f"   2 processes images/s (sum of ranks): {summary(double)}")
    print(f"   scaling efficiency: {summary(efficiency)}")


def peak_memory(args) -> None:
    memory = launch("ours_ema", 1, args, resolution=64, batch_size=16, steps=args.warmup + 2)[0]
    print("\n3. peak RSS, 64 px, batch 16, default model, EMA on")
    print(f"   {memory['peak_rss_mib']:.0f} MiB  ({memory['images_per_s']:.2f} images/s)")


def threads(args) -> None:
    print("\n4. intra-op threads of one process (OMP_NUM_THREADS), EMA on")
    for count in (1, 2):
        report = launch("ours_ema", 1, args, steps=args.warmup + 6, threads=count)[0]
        print(f"   {count} thread(s): {report['images_per_s']:.2f} img/s, {report['images_per_cpu_s']:.2f} img/CPU-s")


def data_transform(args) -> None:
    print("\n5. data transform (PNG map decode + tensors)")
    print(f"   {transform_rate(args.resolution):.0f} rows/s at {args.resolution} px")


PARTS = {"1": loop_overhead, "2": scaling, "3": peak_memory, "4": threads, "5": data_transform}


def main(args) -> None:
    print(f"CPU cores visible: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f} (shared machine)")
    print(f"default SemanticUNet2DModel, {args.resolution} px, batch {args.batch_size}, {args.steps} updates, "
          f"rate measured from update {args.warmup}, 1 intra-op thread per process\n")
    for part in args.parts.split(","):
        PARTS[part](args)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=32, help="Image side for throughput runs.")
    parser.add_argument("--batch_size", type=int, default=16, help="Images per process per update.")
    parser.add_argument("--steps", type=int, default=20, help="Updates per run.")
    parser.add_argument("--warmup", type=int, default=4, help="Updates excluded from the rate.")
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved repeats.")
    parser.add_argument("--parts", default="1,2,3,4,5", help="Which parts to run (comma-separated numbers).")
    parser.add_argument("--worker", action="store_true", help="Internal: run one measured training run.")
    parser.add_argument("--mode", choices=["minimal", "ours", "ours_ema"], default="ours", help="Internal.")
    parser.add_argument("--out", default=None, help="Internal: report path prefix.")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup + 1:
        parser.error("--steps must exceed --warmup + 1")
    return args


if __name__ == "__main__":
    parsed = parse_args()
    worker(parsed) if parsed.worker else main(parsed)
