"""Sampling speed of DermDiffPipeline against a hand-written loop over the same UNet and scheduler.

Issue 4, performance: the pipeline's conveniences (map handling, guidance batching, callbacks, output
conversion) must cost at most 5% over the bare loop a researcher would write (overhead ratio <= 1.05), and
we report images/s at 32 and 64 px for DDPM-1000, DDIM-50 and DPM-Solver++-20 on CPU with the default
`SemanticUNet2DModel()` (guidance 2.0, so each step is one forward pass over twice the batch).

Both sides get the same maps, batch, steps, seed and scheduler config, run interleaved (pipeline, loop,
pipeline, ...) so that load from other processes hits both alike, and must produce the same pixels: the
script checks that, so the comparison is of equal work; the order alternates between repeats. Reported
times are the best of the repeats. The
overhead ratio is given on process CPU time (one torch thread, so it counts our work and not the time spent
waiting for a CPU that other jobs hold) and on wall clock. Images/s are given on wall clock (what this
machine delivered while shared) and per CPU-second (what one uncontended core of it would deliver).

DDPM-1000 is timed over its first `--ddpm-steps` steps (default 50) of the 1000-step schedule and scaled
to 1000 (marked "extrapolated"); pass `--ddpm-steps 1000` for the full run. Untrained weights: speed only.

    python benchmarks/sampling_overhead.py                # ~2 CPU-minutes (longer wall time on a shared CPU)
    python benchmarks/sampling_overhead.py --quick        # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDPMScheduler

from dermdiff import DermDiffPipeline, SemanticMap, SemanticUNet2DModel
from dermdiff.conditions import get_registry
from dermdiff.pipelines.scheduler_names import scheduler_from_name

GUIDANCE = 2.0


class StopSampling(Exception):
    """Raised from the step callback to end a truncated (timed-prefix) DDPM-1000 run."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="image sizes (default 32 64)")
    parser.add_argument("--batch", type=int, default=2, help="images per call for DDIM / DPM-Solver++ (default 2)")
    parser.add_argument("--ddpm-batch", type=int, default=1, help="images per call for DDPM-1000 (default 1)")
    parser.add_argument("--ddpm-steps", type=int, default=50, help="DDPM-1000 steps actually timed (default 50)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats per configuration (default 2)")
    parser.add_argument("--overhead-repeats", type=int, default=4, help="repeats of the overhead runs (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 32 px, few steps, one repeat")
    args = parser.parse_args(argv)
    if min(args.batch, args.ddpm_batch, args.repeats, args.overhead_repeats, args.threads) < 1:
        parser.error("--batch, --ddpm-batch, --repeats, --overhead-repeats and --threads must be >= 1")
    if not 1 <= args.ddpm_steps <= 1000:
        parser.error(f"--ddpm-steps must be in 1..1000, got {args.ddpm_steps}")
    return args


def make_pipeline(size: int) -> DermDiffPipeline:
    torch.manual_seed(0)
    unet = SemanticUNet2DModel(sample_size=size, **get_registry("phantom").model_kwargs()).eval()
    pipe = DermDiffPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def maps_for(size: int, count: int) -> list[SemanticMap]:
    side = size // 2
    return [
        SemanticMap.from_annotations(name, skin, boxes=[(size // 4, size // 4, size // 4 + side, size // 4 + side)],
                                     size=size, registry="phantom")
        for name, skin in zip(["melanoma", "nevus", "psoriasis", "vascular"] * count, [2, 5, 3, 6] * count)
    ][:count]


@torch.no_grad()
def hand_loop(unet, scheduler, maps, steps: int, seed: int, stop_after: int | None = None) -> np.ndarray:
    """The loop a researcher writes: noise, one batched CFG forward per step, scheduler step, to numpy."""
    generator = torch.Generator().manual_seed(seed)
    channels = SemanticMap.stack_channels(maps)
    model_map = torch.cat([torch.zeros_like(channels), channels])
    size = unet.config.sample_size
    latents = torch.randn((len(maps), 3, size, size), generator=generator) * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    for i, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        null_eps, map_eps = unet(model_input, t, semantic_map=model_map).sample.chunk(2)
        eps = null_eps + GUIDANCE * (map_eps - null_eps)
        latents = scheduler.step(eps, t, latents, generator=generator).prev_sample
        if stop_after is not None and i + 1 == stop_after:
            break
    return (latents / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def pipeline_run(pipe, maps, steps: int, seed: int, stop_after: int | None = None) -> np.ndarray | None:
    def stop(pipe_, step, timestep, tensors):
        if step + 1 == stop_after:
            raise StopSampling
        return tensors

    try:
        return pipe(semantic_map=maps, num_inference_steps=steps, guidance_scale=GUIDANCE, output_type="np",
                    generator=torch.Generator().manual_seed(seed),
                    callback_on_step_end=stop if stop_after is not None else None).images
    except StopSampling:
        return None


@dataclass
class Timing:
    """Best-of-repeats seconds: wall clock (throughput) and process CPU time (the steadier overhead measure)."""

    pipeline_wall: float
    loop_wall: float
    pipeline_cpu: float
    loop_cpu: float

    @property
    def cpu_ratio(self) -> float:
        return self.pipeline_cpu / self.loop_cpu

    @property
    def wall_ratio(self) -> float:
        return self.pipeline_wall / self.loop_wall


def compare(pipe, scheduler_name: str, maps, steps: int, repeats: int, stop_after: int | None = None):
    """Best-of-`repeats` seconds of pipeline and hand loop, interleaved; checks they give the same pixels."""
    pipe.scheduler = scheduler_from_name(scheduler_name, DDPMScheduler(num_train_timesteps=1000).config)
    loop_scheduler = copy.deepcopy(pipe.scheduler)
    times = {"pipeline": [], "loop": []}
    cpu = {"pipeline": [], "loop": []}
    outputs = {}
    pipeline_run(pipe, maps[:1], 2, seed=0)  # warm-up: first-call allocations and lazy imports, untimed
    hand_loop(pipe.unet, loop_scheduler, maps[:1], 2, seed=0)
    for repeat in range(repeats):
        for name in ("pipeline", "loop") if repeat % 2 == 0 else ("loop", "pipeline"):
            start, start_cpu = time.perf_counter(), time.process_time()
            if name == "pipeline":
                outputs[name] = pipeline_run(pipe, maps, steps, seed=0, stop_after=stop_after)
            else:
                outputs[name] = hand_loop(pipe.unet, loop_scheduler, maps, steps, seed=0, stop_after=stop_after)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    if outputs["pipeline"] is not None:
        difference = float(np.abs(outputs["pipeline"] - outputs["loop"]).max())
        if difference > 1e-4:
            raise RuntimeError(f"pipeline and hand loop disagree by {difference}: not the same work")
    return Timing(min(times["pipeline"]), min(times["loop"]), min(cpu["pipeline"]), min(cpu["loop"]))


class _StubOutput:
    def __init__(self, sample):
        self.sample = sample


def _stub_forward(sample, timestep, semantic_map=None, class_labels=None, return_dict=True):
    """A near-zero-cost denoiser: what is left of a step's time is the sampling loop's own overhead."""
    return _StubOutput(sample * 0.1)


def loop_overhead_per_step(size: int, batch: int, scheduler_name: str, steps: int, repeats: int) -> tuple:
    """CPU ms per step of pipeline and hand loop around a stub unet (the overhead, free of UNet noise)."""
    pipe = make_pipeline(size)
    pipe.unet.forward = _stub_forward  # instance attribute: nn.Module.__call__ dispatches to it
    timing = compare(pipe, scheduler_name, maps_for(size, batch), steps, repeats)
    return 1000 * timing.pipeline_cpu / steps, 1000 * timing.loop_cpu / steps


def main(args) -> None:
    torch.set_num_threads(args.threads)
    if args.quick:
        args.sizes, args.repeats, args.overhead_repeats, args.ddpm_steps = [32], 1, 1, 3
    plan = [("DDPM-1000", "ddpm", 1000, args.ddpm_batch), ("DDIM-50", "ddim", 50, args.batch),
            ("DPM-Solver++-20", "dpm", 20, args.batch)]
    if args.quick:
        plan = [("DDPM-1000", "ddpm", 1000, 1), ("DDIM-50", "ddim", 5, 1), ("DPM-Solver++-20", "dpm", 4, 1)]
    print(f"torch {torch.__version__}, {args.threads} thread(s), guidance {GUIDANCE} (batched CFG), "
          f"default SemanticUNet2DModel, best of {args.repeats} interleaved repeats")

    # 1. Overhead ratio on the shortest full schedule, more repeats (the number the issue targets)
    pipe = make_pipeline(args.sizes[0])
    overhead_steps = plan[2][2]
    maps = maps_for(args.sizes[0], args.batch)
    timing = compare(pipe, "dpm", maps, overhead_steps, args.overhead_repeats)
    print(f"\noverhead ratio (pipeline / hand loop), {args.sizes[0]} px, DPM-Solver++-{overhead_steps}, batch "
          f"{args.batch}, best of {args.overhead_repeats}: CPU time {timing.cpu_ratio:.3f} "
          f"({timing.pipeline_cpu:.2f} s vs {timing.loop_cpu:.2f} s), wall clock {timing.wall_ratio:.3f} "
          f"({timing.pipeline_wall:.2f} s vs {timing.loop_wall:.2f} s)")

    # 1b. The same loops around a stub unet: the per-step overhead itself, measured without UNet jitter, and the
    #     ratio it implies against the real UNet's per-step CPU time from step 1
    unet_ms = 1000 * timing.loop_cpu / overhead_steps
    for label, scheduler_name, _, _ in plan:
        stub_steps = 20 if args.quick else 100
        pipe_ms, loop_ms = loop_overhead_per_step(args.sizes[0], args.batch, scheduler_name, stub_steps,
                                                  args.overhead_repeats)
        print(f"  loop overhead per step, stub unet, {label.split('-')[0]:<13}: pipeline {pipe_ms:.3f} ms vs hand "
              f"loop {loop_ms:.3f} ms CPU -> implied ratio with the real UNet ({unet_ms:.1f} ms/step): "
              f"{(unet_ms + pipe_ms) / (unet_ms + loop_ms):.4f}")

    # 2. Throughput table (images/s from wall clock; ratios from CPU time and wall clock)
    print(f"\n{'size':>4}  {'sampler':<16} {'batch':>5}  {'pipeline img/s':>14}  {'loop img/s':>10}  "
          f"{'pipeline img/CPU-s':>18}  {'cpu ratio':>9}  {'wall ratio':>10}  note")
    for size in args.sizes:
        pipe = make_pipeline(size)
        for label, scheduler_name, steps, batch in plan:
            maps = maps_for(size, batch)
            stop_after = args.ddpm_steps if scheduler_name == "ddpm" and args.ddpm_steps < steps else None
            timing = compare(pipe, scheduler_name, maps, steps, args.repeats, stop_after)
            scale = steps / stop_after if stop_after else 1.0
            note = f"extrapolated from {stop_after} steps" if stop_after else ""
            print(f"{size:>4}  {label:<16} {batch:>5}  {batch / (timing.pipeline_wall * scale):>14.4f}  "
                  f"{batch / (timing.loop_wall * scale):>10.4f}  {batch / (timing.pipeline_cpu * scale):>18.4f}  "
                  f"{timing.cpu_ratio:>9.3f}  {timing.wall_ratio:>10.3f}  "
                  f"{note}", flush=True)


if __name__ == "__main__":
    main(parse_args())
