"""`evaluate(...)`: everything that applies to a generator, in one report (the face of `dermdiff evaluate`).

1. the generated set: sampled from a pipeline folder (maps drawn from the real data, plus skin-type and size
   sweeps) into `out/generated/`, or read from a folder in the same layout (`generated.py`), or real data in
   any layout `dermdiff.data.load_any` reads (each image with the map of its own annotations);
2. the real data (any layout `dermdiff.data.load_any` reads), resized to the generation resolution;
3. FID/KID with intervals, per condition and per skin type (reference features cached), always beside the
   real-vs-real floor (`floor.py`: the reference's own split-half distance, or training split vs reference,
   and the same at the generated set's size when that is smaller);
4. conditioning fidelity: class (when a classifier is given), placement, skin tone; the sweeps' numbers;
5. memorisation: nearest training images under MSE, features and SSIM;
6. the discriminator-overfitting plot when a GAN log is given;
7. `out/report.html`, `out/metrics.json`, `out/figures/`.

Example:
    >>> from dermdiff.metrics import evaluate
    >>> metrics = evaluate(data="/data/ham10000", out="eval/", pipeline="runs/ham-64", num_images=500,
    ...                    extractor="classifier:runs/clf", reference_split="validation")
    >>> metrics["distribution"]["fid"]
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataError, UsageError, read_json
from ..image_grid import image_grid
from ..pipelines.generation_settings import GenerationSettings
from ..pipelines.loading import load_pipeline
from .features import describe_extractor, load_extractor
from .fid import compute_fid_kid, default_cache_dir, source_features
from .fidelity import (
    class_fidelity,
    ita_by_skin_type,
    placement_scores,
    size_sweep_scores,
    skin_tone_fidelity,
    skin_type_sweep_scores,
)
from .floor import evaluation_floors
from .generated import is_generated_set, read_generated_set, real_image_set
from .memorisation import nearest_neighbours, plot_nearest_pairs
from .pipeline_samples import sample_evaluation_set
from .report import plot_discriminator_gap, plot_group_fid, render_report
from .sources import DatasetSource, ImageListSource


def _pipeline_resolution(pipe) -> int:
    size = getattr(pipe, "sample_size", None)
    if size is None:
        raise ValueError(f"{type(pipe).__name__} has no fixed sample_size (it edits photos of any size); "
                         f"pass --resolution (resolution=)")
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _split_rows(dataset, split: str | None, what: str):
    if split is None:
        return dataset
    if "split" not in dataset.column_names:
        raise ValueError(f"{what} split {split!r} asked for, but the data has no split column")
    keep = [i for i, value in enumerate(dataset["split"]) if value == split]
    if not keep:
        raise ValueError(f"no rows with split {split!r}; splits present: {sorted(set(dataset['split']) - {None})}")
    return dataset.select(keep)


def _train_rows(dataset, split: str | None, limit: int, seed: int):
    if split is not None and "split" in dataset.column_names and split in set(dataset["split"]):
        dataset = _split_rows(dataset, split, "training")
    if len(dataset) > limit:
        dataset = dataset.select(sorted(np.random.default_rng(seed).choice(len(dataset), limit, replace=False)))
    return dataset


def _reference_ita(dataset, per_type: int, seed: int) -> dict:
    """ITA per Fitzpatrick type of (at most `per_type` per type) real images, lesions masked out."""
    if "skin_type" not in dataset.column_names:
        return {}
    rng, chosen = np.random.default_rng(seed), []
    skin_types = np.array([t or 0 for t in dataset["skin_type"]])
    for skin_type in sorted(set(skin_types.tolist()) - {0}):
        rows = np.flatnonzero(skin_types == skin_type)
        chosen += sorted(rng.choice(rows, min(per_type, rows.size), replace=False).tolist())
    if not chosen:
        return {}
    subset = dataset.select(chosen)
    masks = [np.asarray(m) > 0 if m is not None else None for m in subset["mask"]] if "mask" in subset.column_names \
        else None
    return ita_by_skin_type(subset["image"], subset["skin_type"], masks)


def _floor(real, reference_split, reference_features, size: int, extractor, data: str, options: dict,
           trials: int, seed: int) -> dict:
    """The real-vs-real floors (`floor.evaluation_floors`) and the seconds they added to the evaluation.

    Training split vs reference when the reference is another split of data that has a `train` split (the
    training features are extracted, and cached like the reference's); else the reference split in two.
    """
    started = time.perf_counter()
    other = None
    if reference_split not in (None, "train") and "split" in real.column_names and "train" in set(real["split"]):
        train = DatasetSource(_split_rows(real, "train", "training"), name=os.path.basename(os.path.normpath(data)),
                              split="train")
        other = source_features(train, extractor, **options)[0].features
    floor = evaluation_floors(reference_features.features, size, other, trials=max(trials, 1), seed=seed)
    floor["seconds"] = round(time.perf_counter() - started, 2)
    return floor


def read_gan_log(gan_log):
    """A discriminator log (JSON list or JSON lines) from a file, its errors naming file and line."""
    if gan_log is None or isinstance(gan_log, list):
        return gan_log
    with open(gan_log, encoding="utf-8") as handle:
        text = handle.read().strip()
    if text.startswith("["):
        return read_json(gan_log, "discriminator log")
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"discriminator log {gan_log} line {number} is not JSON ({error.msg}); expected "
                                "JSON lines of {step, d_train, d_heldout} or one JSON list") from None
    return records


def evaluate(
    data: str,
    out: str,
    pipeline=None,
    generated: str | None = None,
    num_images: int = 64,
    extractor="inception",
    extractor_resolution: int | None = None,
    classifier=None,
    resolution: int | None = None,
    reference_split: str | None = None,
    train_split: str | None = "train",
    data_limit: int | None = None,
    generated_limit: int | None = None,
    cache_dir: str | None = "default",
    trials: int = 50,
    generation: GenerationSettings | None = None,
    seed: int = 0,
    num_sweeps: int = 1,
    ssim_threshold: float = 0.9,
    max_train_images: int = 2000,
    ita_images_per_type: int = 100,
    min_group_size: int = 10,
    gan_log=None,
    device: str | None = None,
    verbose: bool = True,
) -> dict:
    """Runs every evaluation that applies and writes `out/report.html` + `out/metrics.json`.

    Args:
        data (`str`): real data (a folder or name `dermdiff.data.load_any` reads).
        out (`str`): output folder.
        pipeline (`str` or pipeline, *optional*): a pipeline (or its folder) to sample `num_images` images from.
        generated (`str`, *optional*): instead of `pipeline`, a folder of generated images + maps
            (`dermdiff.metrics.generated` layout), or real data in any layout `load_any` reads.
        num_images (`int`, defaults to 64): samples to generate (pipeline only).
        extractor (`str` or `nn.Module`, defaults to `"inception"`): feature extractor (`features.EXTRACTOR_SPECS`).
        extractor_resolution (`int`, *optional*): input side of a torchvision / classifier extractor spec.
        classifier (`str` or `SkinClassifier`, *optional*): a classifier trained on real data, for class fidelity.
        resolution (`int`, *optional*): evaluation resolution; default the pipeline's / generated images' size.
        reference_split (`str`, *optional*): rows of `data` used as FID reference (default: all rows).
        train_split (`str`, defaults to `"train"`): rows searched for memorisation (all rows if absent).
        data_limit (`int`, *optional*): read only the first rows of `data` (quick looks).
        generated_limit (`int`, *optional*): read only the first rows of a real `generated` folder.
        cache_dir (`str` or `None`): reference-feature cache (`"default"`: `fid.default_cache_dir()`).
        trials (`int`, defaults to 50): FID subsamples for the intervals.
        generation (`GenerationSettings`, *optional*): how a pipeline is sampled (steps, guidance scale, images
            per call, scheduler); default `GenerationSettings.for_evaluation()`.
        seed (`int`, defaults to 0): image i of a pipeline is seeded `seed + i`; also drives the subsampling.
        num_sweeps (`int`, defaults to 1): maps swept over skin types and sizes (pipeline only).
        ssim_threshold (`float`, defaults to 0.9): memorisation flag.
        max_train_images (`int`, defaults to 2000): training images searched (a seeded subset when more).
        ita_images_per_type (`int`, defaults to 100): real images per skin type for the ITA reference.
        min_group_size (`int`, defaults to 10): per-group FIDs need this many images in both sets.
        gan_log (`str` or `list`, *optional*): discriminator log (JSON list or JSON lines of
            {step, d_train, d_heldout[, discriminator]}, e.g. a GAN run's `discriminator_gap.jsonl`) for the
            overfitting plot, one per discriminator.
        device (`str`, *optional*): torch device; default CUDA when available.

    Returns:
        the metrics `dict` (also written to `metrics.json`); `distribution["floor"]` is the real-vs-real floor
        (`floor.evaluation_floors`: with `at_generated_size`, plus the `seconds` both took).
    """
    from ..data import load_any, registry_of

    if (pipeline is None) == (generated is None):
        raise ValueError("give exactly one of pipeline= (sample now) or generated= (a folder of samples + maps)")
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2, got {num_images}")
    if generated_limit is not None and (isinstance(generated_limit, bool) or generated_limit < 2):
        raise ValueError(f"generated_limit (--generated-limit) must be >= 2 rows, got {generated_limit!r}")
    if data_limit is not None and (isinstance(data_limit, bool) or int(data_limit) != data_limit or data_limit < 1):
        raise UsageError(f"data_limit (--data-limit) must be a whole number of rows >= 1, got {data_limit!r}")
    started = time.perf_counter()
    figures_dir = os.path.join(out, "figures")
    os.makedirs(figures_dir, exist_ok=True)
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    extractor_module = load_extractor(extractor, resolution=extractor_resolution)

    # 1. the generated set (and the resolution it fixes)
    if pipeline is not None:
        generation = GenerationSettings.for_evaluation(generation)
        if isinstance(pipeline, (str, os.PathLike)):
            pipe = load_pipeline(os.fspath(pipeline), scheduler=generation.scheduler, device=device)
        else:
            from ..pipelines.scheduler_names import use_scheduler

            pipe = use_scheduler(pipeline, generation.scheduler)  # None keeps the pipeline's own
        if not verbose and hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        resolution = resolution or _pipeline_resolution(pipe)
    elif is_generated_set(generated):
        if generated_limit is not None:
            raise ValueError(f"generated_limit (--generated-limit) reads part of real data; {generated!r} is a "
                             "generated set (metadata.csv with map_file), which is always read whole")
        gen_set = read_generated_set(generated)
        resolution = resolution or gen_set.images[0].size[1]
    else:
        gen_set = real_image_set(generated, resolution, generated_limit)
        resolution = resolution or gen_set.images[0].size[1]

    # 2. real data at that resolution
    real = load_any(data, size=resolution, **({"limit": data_limit} if data_limit is not None else {}))
    registry = registry_of(real)
    reference = _split_rows(real, reference_split, "reference")
    if pipeline is not None:  # any kind: map-conditioned, unconditional (DCGAN) or lesion edit
        gen_set = sample_evaluation_set(pipe, reference, registry, num_images, os.path.join(out, "generated"),
                                        settings=generation, seed=seed, num_sweeps=num_sweeps, verbose=verbose)
    images, maps = gen_set.samples()
    skipped, figures = {}, {}
    settings = {
        "data": os.path.abspath(data) if os.path.exists(data) else data,
        "generated": os.path.abspath(generated) if generated else os.path.join(os.path.abspath(out), "generated"),
        "pipeline": str(pipeline) if isinstance(pipeline, (str, os.PathLike)) else type(pipeline).__name__
        if pipeline is not None else "–",
        "registry": f"{registry.to_dict()['name']}: {', '.join(registry.names)}",
        "resolution": resolution, "samples": len(images), "real images (reference)": len(reference),
        "reference split": reference_split or "all rows", "extractor": describe_extractor(extractor_module)["name"],
        "seed": seed,
    }

    # 3. samples grid
    grid_rows = []
    for start in range(0, min(len(images), 16), 8):
        grid_rows += [images[start:start + 8], [m.to_pil() for m in maps[start:start + 8]]]
    image_grid(grid_rows, cell=96, fill="white").save(os.path.join(figures_dir, "samples.png"))
    figures["samples"] = "figures/samples.png"

    # 4. distribution metrics
    generated_source = ImageListSource(images, [m.condition for m in maps], [m.skin_type for m in maps],
                                       name="generated")
    reference_source = DatasetSource(reference, name=os.path.basename(os.path.normpath(str(data))),
                                     split=reference_split or "all")
    distribution = None
    try:
        options = dict(resolution=resolution, cache_dir=cache_dir, device=device, verbose=verbose)
        reference_features, cache_info = source_features(reference_source, extractor_module, **options)
        distribution = compute_fid_kid(generated_source, reference_features, extractor_module, resolution=resolution,
                                       cache_dir=None, trials=trials, min_group_size=min_group_size, seed=seed,
                                       device=device, verbose=verbose)
        distribution["reference_cache"] = cache_info
        try:
            distribution["floor"] = _floor(real, reference_split, reference_features, len(images),
                                           extractor_module, str(data), options, trials, seed)
        except ValueError as error:  # e.g. fewer than 4 reference images: say why instead of a number
            distribution["floor"] = {"skipped": str(error)}
        for key, title in (("per_class", "FID per condition"), ("per_skin_type", "FID per Fitzpatrick type")):
            if any("fid" in entry for entry in distribution[key].values()):
                figures[key] = os.path.relpath(plot_group_fid(distribution[key], title,
                                                              os.path.join(figures_dir, f"fid_{key}.png")), out)
    except ValueError as error:  # e.g. fewer than 2 images
        skipped["distribution"] = str(error)

    # 5. conditioning fidelity and sweeps
    fidelity = {"segmenter": "colour/contrast (Lab distance from the median skin colour, Otsu, largest component)"}
    if classifier is not None:
        if isinstance(classifier, (str, os.PathLike)):
            from ..classifier import SkinClassifier

            classifier = SkinClassifier.from_pretrained(os.fspath(classifier))
        fidelity["classes"] = class_fidelity(images, [m.condition or "" for m in maps], classifier,
                                             device=device or "cpu")
    else:
        skipped["classes"] = "no classifier given (--classifier DIR)"
    fidelity["placement"] = placement_scores(images, maps)
    real_ita = _reference_ita(reference, ita_images_per_type, seed)
    fidelity["real_ita_by_type"] = real_ita
    fidelity["skin_tone"] = skin_tone_fidelity(images, maps, real_ita)
    sweeps, sweep_metrics = {"skin_type": [], "size": []}, {"skin_type": [], "size": []}
    for kind in ("skin_type", "size"):
        for sweep in gen_set.sweeps(kind):
            if kind == "skin_type":
                scores = skin_type_sweep_scores(sweep["images"], sweep["maps"])
            else:
                scores = size_sweep_scores(sweep["images"], sweep["maps"], factors=sweep["values"])
            name = f"figures/sweep_{kind}_{sweep['id']}.png"
            figure = image_grid([sweep["images"], [m.to_pil() for m in sweep["maps"]]], cell=96, fill="white")
            figure.save(os.path.join(out, name))
            sweeps[kind].append({"id": sweep["id"], "figure": name, "scores": scores})
            sweep_metrics[kind].append({"id": sweep["id"], **scores})

    # 6. memorisation
    memorisation = None
    train = _train_rows(real, train_split, max_train_images, seed)
    train_images = list(train["image"])
    try:
        train_split_name = train_split if "split" in real.column_names else "all"
        train_features, _ = source_features(
            DatasetSource(train, name=os.path.basename(os.path.normpath(str(data))), split=f"{train_split_name}-nn"),
            extractor_module, resolution=resolution, cache_dir=cache_dir, device=device, verbose=verbose)
        generated_features, _ = source_features(generated_source, extractor_module, resolution=resolution,
                                                device=device, verbose=False)
        memorisation = nearest_neighbours(images, train_images, ssim_threshold=ssim_threshold,
                                          size=min(resolution, 128),
                                          generated_features=generated_features.features,
                                          training_features=train_features.features, verbose=verbose)
        memorisation["settings"]["extractor"] = describe_extractor(extractor_module)
        plot_nearest_pairs(memorisation, images, train_images, os.path.join(figures_dir, "nearest_pairs.png"))
        figures["memorisation"] = "figures/nearest_pairs.png"
    except ValueError as error:
        skipped["memorisation"] = str(error)

    # 7. discriminator overfitting
    log, gap = read_gan_log(gan_log), None
    if log:
        # one curve set per discriminator (the GAN loops log several: multi-scale, CycleGAN's two)
        groups: dict[str, list] = {}
        for entry in log:
            groups.setdefault(str(entry.get("discriminator", "D")), []).append(entry)
        figures["discriminator"], gap = [], {}
        for index, (name, entries) in enumerate(sorted(groups.items())):
            suffix = "" if len(groups) == 1 else f"_{index}"
            target = f"figures/discriminator_gap{suffix}.png"
            plot_discriminator_gap(entries, os.path.join(out, target), title=f"{name} overfitting")
            figures["discriminator"].append(target)
            last = max(entries, key=lambda entry: entry["step"])
            gap[name] = float(last["d_train"] - last["d_heldout"])

    settings["seconds"] = round(time.perf_counter() - started, 1)
    metrics = {"settings": settings, "distribution": distribution, "fidelity": fidelity, "sweeps": sweep_metrics,
               "memorisation": memorisation, "discriminator_gap": gap, "skipped": skipped}
    path = render_report(metrics, figures, out, sweeps=sweeps, discriminator_gap=gap)
    if verbose:
        tqdm.write(f"report: {path}")
    return metrics
