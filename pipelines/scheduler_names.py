"""Short names for the diffusers schedulers a DermDiffPipeline can swap in (CLI flags, benchmarks, configs).

Every one is built with `from_config` from the pipeline's own scheduler config, so the noise schedule and
prediction type the model was trained with carry over; no retraining is needed.

| name    | scheduler                                  | typical steps |
|---------|--------------------------------------------|---------------|
| `ddpm`  | `DDPMScheduler` (ancestral, the training one) | 1000       |
| `ddim`  | `DDIMScheduler` (eta = 0, deterministic)   | 50            |
| `dpm`   | `DPMSolverMultistepScheduler` (DPM-Solver++, 2nd order) | 20   |
| `euler` | `EulerDiscreteScheduler`                   | 30            |
| `unipc` | `UniPCMultistepScheduler`                  | 20            |
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from .generation_settings import SCHEDULER_NAMES

SCHEDULERS = dict(zip(SCHEDULER_NAMES, (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler,
                                        EulerDiscreteScheduler, UniPCMultistepScheduler)))


def scheduler_from_name(name: str, config):
    """A scheduler of kind `name` (see the table) built from another scheduler's `config`."""
    key = str(name).strip().lower()
    if key not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    if key == "dpm":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    return SCHEDULERS[key].from_config(config)


def use_scheduler(pipe, name: str | None):
    """Swaps scheduler `name` (built from the pipeline's own scheduler config) into `pipe`; None keeps it.
    Returns `pipe`. For `GenerationSettings.scheduler`."""
    if name is None:
        return pipe
    if not hasattr(pipe, "scheduler"):
        raise ValueError(f"--scheduler {name!r}: {type(pipe).__name__} has no scheduler (it is not a diffusion pipeline)")
    pipe.scheduler = scheduler_from_name(name, pipe.scheduler.config)
    return pipe
