"""More images like a hard case: the hard-case loop's generation strategies (Silva & Georgieva 2024), DermGAN maps.

A strategy turns one hard case (its image, its semantic map, its true class, the class the classifier
confuses it with) into `per_case` synthetic images, all labelled with the case's TRUE class:

| strategy      | what is generated                                                   | generator needs             |
|---------------|---------------------------------------------------------------------|-----------------------------|
| `map`         | the case's map jittered as DermGAN samples maps (`random_variation`) | `semantic_map=`             |
| `sdedit`      | the case's image noised to `strength` and denoised under its map      | `image=` + `strength=`      |
| `adversarial` | jittered maps, sampling pushed by the classifier's gradient towards  | `callback_on_step_end=`     |
|               | the class it confuses the case with (`AdversarialGuidance`)          |                             |

The generator is any map-conditioned pipeline (`DermDiffPipeline`, `DermGANPipeline`). Shared code asks
what a pipeline can do by its call signature (`supported_strategies`), never by its class, and a
strategy it cannot do raises `ValueError` before anything is generated.

Every image carries its provenance (`SyntheticImage`: source case id, strategy, seed, target class). Seeds
come from one base seed through `derive_seed`, so a run is repeatable image by image.

Optional filters drop images a reference classifier trained on real data does not recognise as their
label (`filter_by_reference`), and images too close to a training image (`filter_by_distance`).

Example:
    >>> images = synthesize_hard_cases(pipe, cases, strategies=("map", "sdedit"), per_case=4, seed=0,
    ...                                settings=GenerationSettings(num_inference_steps=50))
    >>> images[0].source_id, images[0].strategy, images[0].seed, images[0].label_name
    >>> write_synthetic(images, "out/synthetic/round_1", registry)
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..conditions import get_registry
from ..pipelines.generation_settings import GenerationSettings
from ..semantic_map import SemanticMap

STRATEGIES = ("map", "sdedit", "adversarial")
# the keyword arguments of a pipeline call each strategy relies on
_NEEDS = {
    "map": ("semantic_map",),
    "sdedit": ("semantic_map", "image", "strength"),
    "adversarial": ("semantic_map", "callback_on_step_end"),
}


# ----------------------------------------------------------------------------------------------------
# Seeds, capabilities, provenance
# ----------------------------------------------------------------------------------------------------


def derive_seed(base_seed: int, *keys) -> int:
    """A 31-bit seed determined by `base_seed` and `keys` (strings or ints): independent streams, one base."""
    text = json.dumps([int(base_seed)] + [str(key) for key in keys])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little") & 0x7FFFFFFF


def parse_strategies(text: str) -> tuple[str, ...]:
    """Comma-separated strategy names ("map,sdedit") as a tuple; `ValueError` naming what is allowed."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown or not names:
        raise ValueError(f"takes a comma-separated subset of {STRATEGIES}, got {unknown or 'nothing'}")
    return names


def supported_strategies(pipe) -> tuple[str, ...]:
    """The strategies `pipe` can run, read off the keyword arguments its `__call__` accepts."""
    parameters = inspect.signature(pipe.__call__).parameters
    return tuple(name for name in STRATEGIES if all(arg in parameters for arg in _NEEDS[name]))


def check_strategies(pipe, strategies: Sequence[str]) -> tuple[str, ...]:
    """Validates `strategies` for `pipe`; raises `ValueError` naming what is unknown or unsupported."""
    strategies = tuple(strategies)
    if not strategies:
        raise ValueError(f"give at least one strategy of {STRATEGIES}")
    unknown = [name for name in strategies if name not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {unknown}; allowed: {STRATEGIES}")
    supported = supported_strategies(pipe)
    missing = [name for name in strategies if name not in supported]
    if missing:
        needs = "; ".join(f"{name} needs {'/'.join(_NEEDS[name])}=" for name in missing)
        raise ValueError(
            f"{type(pipe).__name__} cannot run strategy {missing} ({needs}); it supports {list(supported)}. "
            "sdedit and adversarial need a diffusion generator (DermDiffPipeline)."
        )
    return strategies


def pipeline_registry(pipe):
    """The condition registry of a map-conditioned pipeline (held by its model component)."""
    for component in pipe.components.values():
        registry = getattr(component, "registry", None)
        if registry is not None:
            return get_registry(registry)
    raise ValueError(f"{type(pipe).__name__} has no component with a condition registry; is it map-conditioned?")


@dataclass
class SyntheticImage:
    """One generated image and where it came from. `label` is the registry index of the TRUE class."""

    image: Image.Image
    label: int
    label_name: str
    semantic_map: SemanticMap
    source_id: str
    strategy: str
    seed: int
    target: int | None = None  # adversarial: the class the classifier was pushed towards
    image_id: str = ""
    file_name: str | None = None
    extra: dict = field(default_factory=dict)

    def provenance(self) -> dict:
        """JSON-ready record of this image (no pixels): what the ledger stores."""
        return {
            "image_id": self.image_id,
            "file": self.file_name,
            "source_id": self.source_id,
            "strategy": self.strategy,
            "seed": self.seed,
            "label": self.label,
            "label_name": self.label_name,
            "target": self.target,
            **self.extra,
        }


@dataclass(frozen=True)
class CaseSource:
    """What a strategy needs to know about one hard case."""

    sample_id: str
    label: int
    semantic_map: SemanticMap
    image: Image.Image | None = None
    target: int | None = None  # the class the current classifier confuses it with


def case_source(row: dict, registry, case=None, size=None) -> CaseSource:
    """A `CaseSource` from a dermdiff dataset row (`image`, `label`, `semantic_map`, `image_id`), at `size`.

    `case` (a `dermdiff.hardcase.mining.HardCase`) supplies the id and the confusion target.
    """
    registry = get_registry(registry)
    smap = SemanticMap.decode(row["semantic_map"], registry=registry, source=f"row {row.get('image_id')}")
    image = row["image"].convert("RGB")
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if smap.size != size:
            smap = smap.resize(size)
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BICUBIC)
    sample_id = case.sample_id if case is not None else str(row.get("image_id"))
    target = case.confusion_target if case is not None else None
    return CaseSource(sample_id, int(row["label"]), smap, image, None if target is None or target < 0 else target)


# ----------------------------------------------------------------------------------------------------
# Classifier guidance through the pipeline callback
# ----------------------------------------------------------------------------------------------------


class AdversarialGuidance:
    r"""`callback_on_step_end` that pushes each sample towards a target class of a classifier.

    After denoising step i (of `num_steps`), for the steps in the later part of sampling
    (`start * num_steps <= i < num_steps - 1`), the current sample x is moved along the gradient of the
    classifier's log-probability of the target class:

        g = \nabla_x log p_\phi(y_target | x),    x <- x + s * g / rms(g)

    with s = `scale`: each guided step changes the sample by an RMS of `scale` (in [-1, 1] image units),
    whatever the classifier's gradient magnitude. Early steps are left alone because the classifier was
    trained on clean images, not noisy ones; the last step is left to the denoiser, so the change is
    carried by the model rather than pasted on as an adversarial perturbation. The semantic map stays
    the hard case's, so the image keeps its true condition while looking more like the confusion.

    Args:
        classifier (`torch.nn.Module`): maps images (B, 3, H, W) in [-1, 1] to logits (or an output with
            `.logits`); samples are resized (differentiably) to its `config.image_size` when it has one.
            It runs in eval mode during the call.
        targets (`Sequence[int]`): the target class of each image of the batch.
        scale (`float`): RMS step per guided step; 0 disables guidance.
        num_steps (`int`, *optional*): denoising steps the pipeline runs (for SDEdit only the tail). Left out,
            it is read from the pipeline at the first step (`pipe.num_timesteps`, the length of the schedule it
            actually loops over, which counts a scheduler's `order` and SDEdit's `strength` as diffusers'
            img2img pipelines do).
        start (`float`, defaults to `GenerationSettings.adversarial_start`): fraction of the steps after which
            guidance starts.
    """

    tensor_inputs: ClassVar[list] = ["latents"]

    def __init__(self, classifier, targets: Sequence[int], scale: float, num_steps: int | None = None,
                 start: float = GenerationSettings.adversarial_start):
        GenerationSettings(adversarial_guidance_scale=scale, adversarial_start=start)  # the one validation
        self.classifier = classifier
        self.targets = torch.as_tensor(list(targets), dtype=torch.long)
        self.scale = float(scale)
        self.num_steps = None if num_steps is None else int(num_steps)
        self.start = float(start)
        self.guided_steps: list[int] = []

    def is_guided(self, step: int) -> bool:
        last = self.num_steps - 1
        return self.scale > 0 and step >= self.start * self.num_steps and (step < last or self.num_steps == 1)

    def gradient(self, sample: torch.Tensor) -> torch.Tensor:
        """\nabla_x of the summed target log-probabilities at `sample` (computed with gradients enabled)."""
        targets = self.targets.to(sample.device)
        if targets.numel() != sample.shape[0]:
            raise ValueError(f"got {targets.numel()} targets for a batch of {sample.shape[0]} samples")
        was_training = getattr(self.classifier, "training", False)
        self.classifier.eval()  # batch-norm statistics of the training data, not of this batch
        resolution = getattr(getattr(self.classifier, "config", None), "image_size", None)
        try:
            with torch.enable_grad():
                x = sample.detach().float().requires_grad_(True)
                pixels = x.clamp(-1.0, 1.0)
                if resolution is not None and tuple(pixels.shape[-2:]) != (resolution, resolution):
                    pixels = F.interpolate(pixels, size=(resolution, resolution), mode="bilinear", align_corners=False)
                output = self.classifier(pixels)
                logits = output.logits if hasattr(output, "logits") else output
                selected = F.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).sum()
                (grad,) = torch.autograd.grad(selected, x)
        finally:
            self.classifier.train(was_training)
        return grad.to(sample.dtype)

    def __call__(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        if self.num_steps is None:
            self.num_steps = int(pipe.num_timesteps)
        if not self.is_guided(step):
            return callback_kwargs
        latents = callback_kwargs["latents"]
        grad = self.gradient(latents)
        rms = grad.flatten(1).pow(2).mean(dim=1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
        self.guided_steps.append(int(step))
        return {"latents": latents + self.scale * grad / rms}


# ----------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------


def _call_pipeline(pipe, maps, seeds, settings: GenerationSettings, images=None, classifier=None, targets=None):
    """One batched pipeline call: `images` make it SDEdit (at `settings.strength`), `classifier` + `targets` add
    `AdversarialGuidance` (its step count read from the pipeline as the call runs)."""
    kwargs = {
        "semantic_map": list(maps),
        "generator": [torch.Generator().manual_seed(int(seed)) for seed in seeds],
        "output_type": "pil",
        **settings.call_kwargs(pipe),
    }
    if images is not None:
        kwargs["image"] = list(images)
        kwargs["strength"] = settings.strength
    if classifier is not None:
        kwargs["callback_on_step_end"] = AdversarialGuidance(
            classifier, targets, settings.adversarial_guidance_scale, start=settings.adversarial_start
        )
        kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
    return pipe(**kwargs).images


def generate_from_maps(
    pipe,
    maps: Sequence[SemanticMap],
    labels: Sequence[int],
    seeds: Sequence[int],
    source_ids: Sequence[str],
    strategy: str = "map",
    settings: GenerationSettings | None = None,
    images: Sequence[Image.Image] | None = None,
    classifier=None,
    targets: Sequence[int] | None = None,
) -> list[SyntheticImage]:
    """One image per map, in batches of `settings.batch_size`; the building block of every strategy and of the
    augmentation experiment.

    Image i is drawn from its own `torch.Generator` seeded with `seeds[i]` and labelled `labels[i]`.
    `images` make it SDEdit (at `settings.strength`); `classifier` + `targets` add `AdversarialGuidance`.
    """
    settings = GenerationSettings.from_value(settings)
    batch_size = settings.batch_size
    count = len(maps)
    if not (len(labels) == len(seeds) == len(source_ids) == count):
        raise ValueError(
            f"need one label, seed and source id per map; got {len(labels)}, {len(seeds)}, "
            f"{len(source_ids)} for {count} maps"
        )
    registry = pipeline_registry(pipe)
    out: list[SyntheticImage] = []
    progress = tqdm(total=count, desc=f"generating ({strategy})", unit="img", leave=False)
    for start in range(0, count, batch_size):
        part = slice(start, start + batch_size)
        generated = _call_pipeline(
            pipe,
            maps[part],
            seeds[part],
            settings,
            images=None if images is None else images[part],
            classifier=classifier,
            targets=None if targets is None else list(targets[part]),
        )
        for offset, picture in enumerate(generated):
            i = start + offset
            out.append(
                SyntheticImage(
                    image=picture,
                    label=int(labels[i]),
                    label_name=registry.names[int(labels[i])],
                    semantic_map=maps[i],
                    source_id=str(source_ids[i]),
                    strategy=strategy,
                    seed=int(seeds[i]),
                    target=None if targets is None else int(targets[i]),
                )
            )
        progress.update(len(generated))
    progress.close()
    return out


def synthesize_hard_cases(
    pipe,
    cases: Sequence[CaseSource],
    strategies: Sequence[str] = ("map",),
    per_case: int = 4,
    seed: int = 0,
    settings: GenerationSettings | None = None,
    classifier=None,
) -> list[SyntheticImage]:
    """`per_case` images per case and strategy, labelled with each case's TRUE class.

    Args:
        pipe: a map-conditioned pipeline (`DermDiffPipeline`, `DermGANPipeline`).
        cases (`Sequence[CaseSource]`): the hard cases at the generator's size (see `case_source`).
        strategies (`Sequence[str]`, defaults to `("map",)`): any of `STRATEGIES`; checked against `pipe`.
        per_case (`int`, defaults to 4): images per case and strategy.
        seed (`int`, defaults to 0): base seed; image k of case c and strategy s gets
            `derive_seed(seed, c, s, k)` (also the seed of its map jitter).
        settings (`GenerationSettings`, *optional*): steps, guidance, SDEdit strength, classifier-guidance
            scale and start, map jitter, batch size (validated there; default: its defaults).
        classifier (*optional*): the current classifier; needed by `adversarial`.
    """
    strategies = check_strategies(pipe, strategies)
    settings = GenerationSettings.from_value(settings)
    if per_case < 1:
        raise ValueError(f"per_case must be >= 1, got {per_case}")
    if "adversarial" in strategies and classifier is None:
        raise ValueError("strategy 'adversarial' needs the current classifier (classifier=)")
    size = tuple(pipe.sample_size)
    out: list[SyntheticImage] = []
    for strategy in strategies:
        jobs = []  # (case, seed, map, image, target)
        for case in cases:
            if case.semantic_map.size != size:
                raise ValueError(f"case {case.sample_id}: map is {case.semantic_map.size}, generator makes {size}")
            for k in range(per_case):
                image_seed = derive_seed(seed, case.sample_id, strategy, k)
                if strategy == "sdedit":
                    smap = case.semantic_map  # the image and its own map: a variation of this very case
                else:
                    smap = case.semantic_map.random_variation(image_seed, max_shift=settings.max_shift)
                target = case.target if case.target is not None and case.target != case.label else None
                if strategy == "adversarial" and target is None:
                    continue  # nothing to push towards (a correct case without a runner-up)
                jobs.append((case, image_seed, smap, case.image, target))
        if not jobs:
            continue
        if strategy == "sdedit" and any(job[3] is None for job in jobs):
            raise ValueError("strategy 'sdedit' needs the hard cases' images")
        generated = generate_from_maps(
            pipe,
            maps=[job[2] for job in jobs],
            labels=[job[0].label for job in jobs],
            seeds=[job[1] for job in jobs],
            source_ids=[job[0].sample_id for job in jobs],
            strategy=strategy,
            settings=settings,
            images=[job[3] for job in jobs] if strategy == "sdedit" else None,
            classifier=classifier if strategy == "adversarial" else None,
            targets=[job[4] for job in jobs] if strategy == "adversarial" else None,
        )
        if strategy == "sdedit":
            for item in generated:
                item.extra["strength"] = settings.strength
        if strategy == "adversarial":
            for item in generated:
                item.extra["adversarial_guidance_scale"] = settings.adversarial_guidance_scale
        out.extend(generated)
    return out
