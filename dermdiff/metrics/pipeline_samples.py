"""The generated set `dermdiff evaluate --pipeline DIR` scores, for every kind of pipeline dermdiff saves.

Each kind is asked for what it can make, and every image is written with the map it was asked for, so
the rest of the evaluation (FID per condition / skin type, placement, skin tone, memorisation) reads one
layout (`dermdiff.metrics.generated`):

| kind    | pipelines                  | what is drawn                        | map written with each image      |
|---------|----------------------------|--------------------------------------|----------------------------------|
| `maps`  | DermDiff, DermGAN          | maps of real reference rows + sweeps | that map                         |
| `noise` | DCGAN                      | `batch_size` samples of seeded noise | the null map (nothing asked)     |
| `edit`  | LesionEdit (`add`)         | real photos (healthy rows first) +   | the mask's condition on the      |
|         |                            | lesion masks of other real rows      | photo's skin type (null map for  |
|         |                            |                                      | an untargeted CycleGAN model)    |

Null maps ask for no lesion, so placement and sweeps skip those images and FID per condition groups
them under "no condition"; FID, KID and memorisation apply to every kind.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..pipelines.generation_settings import GenerationSettings
from ..semantic_map import SemanticMap
from .generated import generate_evaluation_set, lesion_maps, read_generated_set, write_generated_set

KINDS = ("maps", "noise", "edit")


def pipeline_kind(pipe) -> str:
    """"maps", "noise" or "edit", read off the pipeline's call signature."""
    parameters = inspect.signature(pipe.__call__).parameters
    if "semantic_map" in parameters:
        return "maps"
    if "image" in parameters and "mask" in parameters:
        return "edit"
    if "batch_size" in parameters:
        return "noise"
    raise ValueError(
        f"{type(pipe).__name__} takes neither semantic_map=, image= + mask= nor batch_size=; "
        f"--pipeline needs a map-conditioned, lesion-edit or unconditional dermdiff pipeline"
    )


def reference_maps(dataset, registry, count: int, seed: int) -> list:
    """`count` maps of seeded random rows (with replacement when the data has fewer rows)."""
    rows = np.random.default_rng(seed).choice(len(dataset), count, replace=count > len(dataset))
    return [SemanticMap.decode(dataset[int(i)]["semantic_map"], registry=registry) for i in rows]


def sample_evaluation_set(pipe, reference, registry, num_images: int, out_dir: str,
                          settings: GenerationSettings | None = None, seed: int = 0, num_sweeps: int = 1,
                          verbose: bool = True):
    """Generates and writes the evaluation set of `pipe` (see the module table); returns the `GeneratedSet`.

    `settings`: steps, guidance scale and images per call (default `GenerationSettings.for_evaluation()`).
    """
    settings, kind = GenerationSettings.for_evaluation(settings), pipeline_kind(pipe)
    if kind == "maps":
        maps = reference_maps(reference, registry, num_images, seed)
        return generate_evaluation_set(pipe, maps, out_dir, registry, settings=settings, seed=seed,
                                       sweep_maps=lesion_maps(maps)[:num_sweeps], verbose=verbose)
    if kind == "noise":
        images = _noise_samples(pipe, num_images, settings, seed, verbose)
        size = images[0].size[::-1]
        maps = [SemanticMap.from_annotations(None, None, size=size, registry=registry) for _ in images]
    else:
        images, maps = _edited_photos(pipe, reference, registry, num_images, settings.batch_size, seed, verbose)
    write_generated_set(out_dir, images, maps, registry)
    return read_generated_set(out_dir, registry)


def pipeline_source(pipe, reference, registry, num_images: int, maps=None, settings: GenerationSettings | None = None,
                    seed: int = 0):
    """`pipe`'s images as a FID source, drawn as `sample_evaluation_set` draws them but kept in memory.

    Used by FID during training (`dermdiff.loops.fid_tracking.PipelineFID`), so the number a trainer logs is
    the one `dermdiff evaluate --pipeline` reports. `maps` (map pipelines only) replaces the seeded draw of
    reference rows' maps, e.g. with the held-out rows' own maps in order.
    """
    from .sources import ImageListSource, PipelineSource

    settings, kind = GenerationSettings.for_evaluation(settings), pipeline_kind(pipe)
    if kind == "edit":
        images, _ = _edited_photos(pipe, reference, registry, num_images, settings.batch_size, seed, verbose=False)
        return ImageListSource(images, name="edited")
    if kind == "maps" and maps is None:
        maps = reference_maps(reference, registry, num_images, seed)
    return PipelineSource(pipe, num_images, maps=maps if kind == "maps" else None, settings=settings, seed=seed)


def _noise_samples(pipe, num_images: int, settings: GenerationSettings, seed: int, verbose: bool):
    from tqdm.auto import tqdm

    from .sources import PipelineSource

    source = PipelineSource(pipe, num_images=max(2, num_images), settings=settings, seed=seed)
    images = []
    for start in tqdm(range(0, num_images, source.batch_size), desc="generate", disable=not verbose):
        images += source.generate(start, min(start + source.batch_size, num_images))
    return images


def _edited_photos(pipe, reference, registry, num_images: int, batch_size: int, seed: int, verbose: bool):
    """Real photos (healthy rows first) with the lesion masks of other real rows added ("add" direction)."""
    from tqdm.auto import tqdm

    if pipe.add_model is None:
        raise ValueError("this lesion-edit pipeline has no add_model; the evaluation adds lesions to real photos")
    targeted = bool(pipe.add_model.config.mask_channels)
    rng = np.random.default_rng(seed)
    conditions = reference["condition"] if "condition" in reference.column_names else [None] * len(reference)
    pool = [i for i, condition in enumerate(conditions) if condition is None] or list(range(len(reference)))
    photo_rows = rng.choice(pool, num_images, replace=num_images > len(pool))
    lesions = lesion_maps(reference_maps(reference, registry, max(num_images, 16), seed + 1))
    if targeted and not lesions:
        raise ValueError("--pipeline with a targeted lesion-edit model needs real rows with lesion masks to add")
    images, maps = [], []
    for start in tqdm(range(0, num_images, batch_size), desc="edit", disable=not verbose):
        rows = [reference[int(i)] for i in photo_rows[start : start + batch_size]]
        call = {"image": [row["image"].convert("RGB") for row in rows], "direction": "add", "output_type": "pil"}
        chosen = [lesions[(start + j) % len(lesions)] for j in range(len(rows))] if targeted else [None] * len(rows)
        if targeted:
            call["mask"] = [np.asarray(smap.lesion_mask) for smap in chosen]
        images += pipe(**call).images
        for smap, row in zip(chosen, rows):
            size = rows[0]["image"].size[::-1]
            if smap is None:  # untargeted: the lesion goes wherever the model puts it
                maps.append(SemanticMap.from_annotations(None, row.get("skin_type"), size=size, registry=registry))
            else:
                maps.append(SemanticMap.from_annotations(smap.condition, row.get("skin_type"), mask=smap.lesion_mask,
                                                         size=size, registry=registry))
    return images, maps
