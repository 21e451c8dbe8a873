"""How images are generated, as one frozen object: the settings every face that samples a pipeline carries.

The hard-case loop (`HardCaseConfig.generation`), the augmentation experiment (`AugmentationConfig.generation`),
the demo (`DemoConfig.generation`) and `dermdiff generate` each hold one `GenerationSettings`; it is
validated once, here, passed whole down to the pipeline call (`call_kwargs`), and recorded whole in the
hard-case ledger (`dataclasses.asdict`). The command-line flags of `training/adversarial_loop.py`,
`training/augment_experiment.py`, `dermdiff generate` and `dermdiff evaluate` are generated from its fields
(`dermdiff.config_args`; the two commands keep their own flag names through subclasses).

Example:
    >>> settings = GenerationSettings(num_inference_steps=20, guidance_scale=2.0, scheduler="dpm")
    >>> pipe(semantic_map=maps, generator=generators, **settings.call_kwargs(pipe))
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

GROUP = "generator"
# the short scheduler names (their diffusers classes: `dermdiff.pipelines.scheduler_names`); here so that
# reading settings imports no diffusers
SCHEDULER_NAMES = ("ddpm", "ddim", "dpm", "euler", "unipc")
# images per pipeline call when an evaluation (FID, `dermdiff evaluate`) samples: it holds a feature
# extractor beside the pipeline, so it asks for smaller batches than generation does
EVALUATION_BATCH_SIZE = 8


def parse_scheduler(text: str) -> str | None:
    """A `--scheduler` value: a short name, or '' / 'none' for the pipeline's own scheduler (None)."""
    key = text.strip().lower()
    if key in ("", "none"):
        return None
    if key not in SCHEDULER_NAMES:
        raise ValueError(f"takes one of {', '.join(SCHEDULER_NAMES)} ('' keeps the pipeline's), got {text!r}")
    return key


@dataclass(frozen=True)
class GenerationSettings:
    """The sampling settings of a map-conditioned pipeline; each field's help is its documentation."""

    num_inference_steps: int = field(default=50, metadata={"help": "Denoising steps (diffusion only).",
                                                           "group": GROUP})
    guidance_scale: float | None = field(default=None, metadata={
        "help": "Classifier-free guidance weight (diffusion only; default: the pipeline's).", "group": GROUP})
    strength: float | None = field(default=0.6, metadata={
        "help": "SDEdit noise level in (0, 1] (None: the pipeline's default for its start image, 0.8, or 1.0 with a "
                "mask).", "group": GROUP})
    adversarial_guidance_scale: float = field(default=0.05, metadata={
        "help": "RMS step of classifier guidance per guided step (dermdiff.hardcase.synthesis.AdversarialGuidance).",
        "group": GROUP})
    adversarial_start: float = field(default=0.5, metadata={
        "help": "Fraction of the denoising steps before classifier guidance starts.", "group": GROUP})
    max_shift: float = field(default=0.25, metadata={
        "help": "Map jitter: largest region shift, as a fraction of the side (SemanticMap.random_variation).",
        "group": GROUP})
    batch_size: int = field(default=16, metadata={"help": "Images per generator call.",
                                                  "flag": "generation_batch_size", "group": GROUP})
    scheduler: str | None = field(default=None, metadata={
        "help": f"Swap the diffusion scheduler: {', '.join(SCHEDULER_NAMES)} (default: the pipeline's saved one).",
        "parse": parse_scheduler, "group": GROUP})

    def __post_init__(self):
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.guidance_scale is not None and not math.isfinite(self.guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number or None, got {self.guidance_scale}")
        if self.strength is not None and not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if not self.adversarial_guidance_scale >= 0:
            raise ValueError(f"adversarial_guidance_scale must be >= 0, got {self.adversarial_guidance_scale}")
        if not 0.0 <= self.adversarial_start <= 1.0:
            raise ValueError(f"adversarial_start must be in [0, 1], got {self.adversarial_start}")
        if not 0.0 <= self.max_shift <= 1.0:
            raise ValueError(f"max_shift must be in [0, 1], got {self.max_shift}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.scheduler is not None:
            key = str(self.scheduler).strip().lower()
            if key not in SCHEDULER_NAMES:
                raise ValueError(f"scheduler must be one of {sorted(SCHEDULER_NAMES)} or None, got {self.scheduler!r}")
            object.__setattr__(self, "scheduler", key)  # frozen: the one normalisation, at construction

    @classmethod
    def from_value(cls, value) -> "GenerationSettings":
        """`value` itself, or the settings of a dict (a config read back from JSON); None gives the defaults."""
        if value is None:
            return cls()
        return value if isinstance(value, cls) else cls(**value)

    @classmethod
    def for_evaluation(cls, value=None) -> "GenerationSettings":
        """`value` (as `from_value` reads it), or when None the evaluation samplers' defaults: batches of
        `EVALUATION_BATCH_SIZE`, since an evaluation holds a feature extractor in memory beside the pipeline."""
        return cls(batch_size=EVALUATION_BATCH_SIZE) if value is None else cls.from_value(value)

    def call_kwargs(self, pipe) -> dict:
        """The keyword arguments of `pipe(...)` these settings decide, for the ones its `__call__` takes.

        A DermGAN pipeline takes no steps or guidance; a guidance scale of None leaves the pipeline's default.
        The SDEdit `strength` is passed by the caller with its start images.
        """
        kwargs = {}
        if takes_argument(pipe, "num_inference_steps"):
            kwargs["num_inference_steps"] = self.num_inference_steps
        if self.guidance_scale is not None and takes_argument(pipe, "guidance_scale"):
            kwargs["guidance_scale"] = self.guidance_scale
        return kwargs


def takes_argument(pipe, name: str) -> bool:
    """Whether `pipe(...)` names the argument `name` (diffusion pipelines take num_inference_steps, GANs do not).

    Named only: `**kwargs` may hold deprecated aliases, not every argument. A callable whose signature cannot be
    read is taken to accept it.
    """
    try:
        parameters = inspect.signature(pipe.__call__ if hasattr(pipe, "__call__") else pipe).parameters
    except (TypeError, ValueError):
        return True
    return name in parameters
