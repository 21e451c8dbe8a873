"""The three GAN runs as `GANTask`s for `dermdiff.loops.gan.train_gan`, and the data they train on.

| builder        | models (checkpoint subfolders)                          | batch keys                         |
|----------------|---------------------------------------------------------|------------------------------------|
| `dermgan_task` | `dermgan`, `discriminator` (PatchGAN)                   | `pixel_values`, `semantic_map`     |
| `dcgan_task`   | `dcgan`, `discriminator` (multi-scale)                  | `pixel_values`                     |
| `edit_task`    | `add_model`, `remove_model`, `lesion_discriminator`,    | `healthy`, `lesion`, `lesion_mask` |
|                | `healthy_discriminator` (both multi-scale)              | (an `EditPairs` dataset)           |

Training examples come from `dermdiff.data.transforms.model_transform` (`pixel_values` in [-1, 1],
`semantic_map` channels), so every trainer reads data the same way.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .gan import DermGANLossWeights, GANTask, dcgan_step, dermgan_step, edit_step, roi_mask


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------
def split_heldout(dataset, fraction: float, seed: int = 0):
    """(train, held-out) rows; the held-out rows only feed the discriminator-overfitting monitor."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or len(dataset) < 2:
        return dataset, None
    count = min(len(dataset) - 1, max(1, round(len(dataset) * fraction)))
    parts = dataset.train_test_split(test_size=count, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def stack_examples(examples, indices: Sequence[int], keys: Sequence[str] = ("pixel_values", "semantic_map")) -> dict:
    """Fixed tensors of some rows of a transformed dataset (for monitors and validation)."""
    rows = [examples[int(i)] for i in indices]
    return {key: torch.stack([row[key] for row in rows]) for key in keys}


def lesion_and_healthy_indices(dataset) -> tuple[list[int], list[int]]:
    """Row indices with a lesion (label >= 0) and of healthy skin (label < 0 or missing)."""
    lesion, healthy = [], []
    for index, label in enumerate(dataset["label"]):
        (lesion if label is not None and int(label) >= 0 else healthy).append(index)
    return lesion, healthy


class EditPairs(torch.utils.data.Dataset):
    """Unpaired (healthy photo, lesion photo + its mask) examples for the lesion-edit GANs.

    Item i pairs healthy photo i mod H with lesion photo i mod L, for max(H, L) items, so every photo of
    the larger set is used and the smaller set's photos (and masks) repeat: one segmentation serves
    several healthy photos, as Furger et al. 2020 (4.2) do. The mask is the lesion's region in its semantic map.

    Args:
        examples: a transformed dataset giving `pixel_values` and `semantic_map` per row.
        healthy_indices, lesion_indices (`Sequence[int]`): rows of each domain (both non-empty).
    """

    def __init__(self, examples, healthy_indices: Sequence[int], lesion_indices: Sequence[int]):
        if not healthy_indices or not lesion_indices:
            raise ValueError(
                f"lesion editing needs healthy and lesion images; got {len(healthy_indices)} healthy and "
                f"{len(lesion_indices)} lesion rows (phantom: --phantom_healthy_fraction > 0)"
            )
        self.examples = examples
        self.healthy, self.lesion = list(healthy_indices), list(lesion_indices)

    def __len__(self) -> int:
        return max(len(self.healthy), len(self.lesion))

    def __getitem__(self, index: int) -> dict:
        healthy = self.examples[self.healthy[index % len(self.healthy)]]
        lesion = self.examples[self.lesion[index % len(self.lesion)]]
        return {
            "healthy": healthy["pixel_values"],
            "lesion": lesion["pixel_values"],
            "lesion_mask": roi_mask(lesion["semantic_map"][None])[0],
        }


def domain_monitor(examples, train_rows, heldout_examples, heldout_rows, limit: int) -> dict:
    """Per domain, (training, held-out) real images for the overfitting monitor of `edit_task`."""
    monitor = {}
    train_domains, heldout_domains = lesion_and_healthy_indices(train_rows), lesion_and_healthy_indices(heldout_rows)
    for domain, train_indices, heldout_indices in zip(("lesion", "healthy"), train_domains, heldout_domains):
        count = min(limit, len(train_indices), len(heldout_indices))
        if count:
            monitor[domain] = (
                stack_examples(examples, train_indices[:count], ("pixel_values",))["pixel_values"],
                stack_examples(heldout_examples, heldout_indices[:count], ("pixel_values",))["pixel_values"],
            )
    return monitor


def edit_batches(examples, dataset, limit: int) -> dict:
    """Fixed healthy / lesion / mask tensors of up to `limit` rows of each domain of `dataset`."""
    lesion, healthy = lesion_and_healthy_indices(dataset)
    pairs = EditPairs(examples, healthy[:limit], lesion[:limit])
    rows = [pairs[i] for i in range(min(limit, len(pairs)))]
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


# ----------------------------------------------------------------------------------------------------------------
# tasks
# ----------------------------------------------------------------------------------------------------------------
def dermgan_task(
    generator,
    discriminator,
    weights: DermGANLossWeights | None = None,
    validation_maps=None,
    validation_cols: int = 3,
    monitor: tuple[dict, dict] | None = None,
    seed: int = 0,
) -> GANTask:
    """DermGAN: PatchGAN on (map, image), l1 + ROI l1 + feature matching + GAN.

    Args:
        generator (`DermGANGenerator`), discriminator (`PatchGANDiscriminator`).
        weights (`DermGANLossWeights`, *optional*): loss weights (0 ablates a term).
        validation_maps (`list[SemanticMap]`, *optional*): maps of the validation grid.
        monitor (`(train, heldout)` batches of `pixel_values` + `semantic_map`, *optional*).
    """
    weights = weights or DermGANLossWeights()

    def step(state, batch):
        return dermgan_step(state, batch, weights)

    def make_pipeline(models):
        from ..pipelines.pipeline_dermgan import DermGANPipeline

        return DermGANPipeline(dermgan=models["dermgan"])

    def validation(pipeline, global_step):
        return pipeline(semantic_map=list(validation_maps), generator=torch.Generator().manual_seed(seed)).images

    return GANTask(
        name="train_dermgan",
        generators={"dermgan": generator},
        discriminators={"discriminator": discriminator},
        step=step,
        make_pipeline=make_pipeline,
        validation=validation if validation_maps else None,
        validation_cols=validation_cols,
        monitor={"discriminator": (*monitor, ("pixel_values", "semantic_map"))} if monitor else None,
    )


def dcgan_task(
    generator,
    discriminator,
    num_validation_images: int = 16,
    truncation: float | None = None,
    monitor: tuple[dict, dict] | None = None,
    seed: int = 0,
) -> GANTask:
    """Furger et al.'s unconditional DCGAN with the multi-scale discriminator."""

    def make_pipeline(models):
        from ..pipelines.pipeline_dcgan import DCGANPipeline

        return DCGANPipeline(dcgan=models["dcgan"])

    def validation(pipeline, global_step):
        rng = torch.Generator().manual_seed(seed)  # the same z at every validation
        return pipeline(batch_size=num_validation_images, truncation=truncation, generator=rng).images

    return GANTask(
        name="train_dcgan",
        generators={"dcgan": generator},
        discriminators={"discriminator": discriminator},
        step=dcgan_step,
        make_pipeline=make_pipeline,
        validation=validation if num_validation_images else None,
        validation_cols=min(4, max(1, num_validation_images)),
        monitor={"discriminator": (*monitor, ("pixel_values",))} if monitor else None,
    )


def edit_task(
    add_model,
    remove_model,
    lesion_discriminator,
    healthy_discriminator,
    mode: str = "targeted",
    lambda_rel: float = 10.0,
    lambda_cyc: float = 10.0,
    cycle_distance: str = "mse",
    validation_batch: dict | None = None,
    monitor: dict[str, tuple] | None = None,
) -> GANTask:
    """Both lesion-edit directions: targeted (masks + relevancy loss) or cycle (CycleGAN, cycle loss).

    Args:
        add_model, remove_model (`TranslationGenerator`): `mask_channels=1` for targeted, 0 for cycle.
        lesion_discriminator, healthy_discriminator (`MultiScaleDiscriminator`): D_Y and D_X.
        mode (`str`, defaults to `"targeted"`): `"targeted"` or `"cycle"`.
        lambda_rel, lambda_cyc (`float`, default 10): Furger et al.'s (2020) weights.
        cycle_distance (`str`, defaults to `"mse"`): `"mse"` (Furger et al. 2020, eq. 3) or `"l1"` (CycleGAN).
        validation_batch (`dict`, *optional*): fixed `healthy`, `lesion`, `lesion_mask` tensors; the grid
            shows rows of (healthy, lesion added, lesion photo, lesion removed).
        monitor (`dict`, *optional*): domain (`"lesion"` / `"healthy"`) -> (training, held-out) real images
            scored by that domain's discriminator; a domain without held-out images is left out.
    """
    targeted = mode == "targeted"
    for name, model in (("add_model", add_model), ("remove_model", remove_model)):
        if bool(model.config.mask_channels) != targeted:
            raise ValueError(
                f"{name} has mask_channels={model.config.mask_channels} but mode={mode!r} needs {1 if targeted else 0}"
            )

    def step(state, batch):
        return edit_step(state, batch, mode, lambda_rel, lambda_cyc, cycle_distance)

    def make_pipeline(models):
        from ..pipelines.pipeline_lesion_edit import LesionEditPipeline

        return LesionEditPipeline(add_model=models["add_model"], remove_model=models["remove_model"])

    def validation(pipeline, global_step):
        healthy, lesion = validation_batch["healthy"], validation_batch["lesion"]
        mask = validation_batch["lesion_mask"] if targeted else None
        added = pipeline(image=(healthy + 1) / 2, mask=mask, direction="add").images
        removed = pipeline(image=(lesion + 1) / 2, mask=mask, direction="remove").images
        originals = pipeline.image_processor.postprocess(torch.cat([healthy, lesion]), output_type="pil")
        rows = []
        for i in range(healthy.shape[0]):
            rows += [originals[i], added[i], originals[healthy.shape[0] + i], removed[i]]
        return rows

    monitor_spec = {
        f"{domain}_discriminator": ({"pixel_values": train}, {"pixel_values": heldout}, ("pixel_values",))
        for domain, (train, heldout) in (monitor or {}).items()
    }
    return GANTask(
        name=f"train_lesion_edit_{mode}",
        generators={"add_model": add_model, "remove_model": remove_model},
        discriminators={"lesion_discriminator": lesion_discriminator, "healthy_discriminator": healthy_discriminator},
        step=step,
        make_pipeline=make_pipeline,
        validation=validation if validation_batch else None,
        validation_cols=4,
        monitor=monitor_spec or None,
    )
