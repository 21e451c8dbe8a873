"""Ghorbani et al.'s (2020) augmentation experiment: do synthetic images of the rare classes help a classifier?

1. train a baseline on the real training split (early stopping on the validation split);
2. for the chosen classes (default: the under-represented ones), generate `num_images` images each from
   semantic maps sampled from the validation split and varied as DermGAN does
   (`SemanticMap.random_variation`: keep a subset of regions, move them, optionally swap skin type);
3. train again, with the same seed and settings, on real + synthetic;
4. evaluate both on the untouched test split with bootstrap CIs, and compare them pairwise (McNemar on
   accuracy, paired bootstrap on every metric).

The synthetic images are labelled with the condition of their map, written to `output_dir/synthetic/`
as an image folder, and checked (ids and pixel hashes) to be absent from every evaluation split.

Example:
    >>> result = run_augmentation_experiment(make_splits(dataset), pipe, {"num_images": 200,
    ...                                      "classifier": {"resolution": 32, "num_epochs": 20}}, "out/augment")
    >>> print(open(result["paths"]["markdown"]).read())
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..config_args import with_default
from ..data.synthetic_folder import write_synthetic
from ..loops.classifier import ClassifierTrainingConfig, dataset_labels, predict
from ..pipelines.generation_settings import GenerationSettings
from ..pipelines.scheduler_names import use_scheduler
from ..semantic_map import SemanticMap
from .loop import (
    HardCaseConfig,
    check_n_boot,
    check_no_synthetic_in_evaluation,
    evaluation_fingerprints,
    fit_classifier,
    paired,
    training_pool,
)
from .report import before_after_markdown, metric_rows
from .synthesis import derive_seed, generate_from_maps, pipeline_registry


def parse_names(text: str) -> list[str] | None:
    """Comma-separated names ("melanoma,vascular") as a list; empty gives None."""
    return [name.strip() for name in text.split(",") if name.strip()] or None


def parse_skin_type_list(text: str) -> list[int] | None:
    """Comma-separated integer skin types ("1,5") as a list; empty gives None."""
    try:
        return [int(value) for value in text.split(",") if value.strip()] or None
    except ValueError:
        raise ValueError(f"takes comma-separated integers, got {text!r}") from None


EXPERIMENT = "experiment"


@dataclass
class AugmentationConfig:
    """Settings of the augmentation experiment; each field's help is its documentation, and
    `training/augment_experiment.py`'s flags are generated from the fields. How images are generated (steps,
    guidance, map jitter `max_shift`, batch size) is one `GenerationSettings` (`generation`)."""

    classes: list | None = field(default=None, metadata={
        "help": "Comma-separated class names (or indices) to augment (default: the rare ones of the train split).",
        "parse": parse_names, "group": EXPERIMENT})
    num_images: int = field(default=100, metadata={"help": "Synthetic images per augmented class.",
                                                   "group": EXPERIMENT})
    map_split: str = field(default="validation", metadata={"help": "Where the maps are sampled from.", "cli": False})
    skin_types: list | None = field(default=None, metadata={
        "help": "Comma-separated skin types to swap maps to, as DermGAN does (default: keep the map's).",
        "parse": parse_skin_type_list, "group": EXPERIMENT})
    generation: GenerationSettings = field(default_factory=GenerationSettings, metadata={
        "help": "How images are generated (steps, guidance, map jitter, batch size).", "cli": False})
    seed: int = field(default=0, metadata={"help": "Base seed of maps, images and both classifiers.",
                                           "group": EXPERIMENT})
    n_boot: int = with_default(HardCaseConfig, "n_boot", HardCaseConfig.n_boot, group=EXPERIMENT)
    classifier: dict = field(default_factory=dict, metadata={
        "help": "ClassifierTrainingConfig fields, shared by both runs."})

    def __post_init__(self):
        self.generation = GenerationSettings.from_value(self.generation)
        if self.num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {self.num_images}")
        check_n_boot(self.n_boot)


def rare_classes(labels: Sequence[int], num_classes: int, fraction: float = 0.5) -> list[int]:
    """Classes with fewer than `fraction` x the mean count of the present classes; at least the rarest one.

    Example:
        >>> rare_classes([0] * 30 + [1] * 2 + [2] * 30 + [3] * 3, 4)
        [1, 3]
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    present = counts > 0
    if not present.any():
        raise ValueError("no labels to choose rare classes from")
    mean = counts[present].mean()
    chosen = [int(k) for k in np.flatnonzero(present & (counts < fraction * mean))]
    return chosen or [int(np.flatnonzero(present)[np.argmin(counts[present])])]


def _class_indices(classes, names: list) -> list[int]:
    out = []
    for item in classes:
        if isinstance(item, str) and not item.isdigit():
            if item not in names:
                raise ValueError(f"unknown class {item!r}; the classes are {names}")
            out.append(names.index(item))
        else:
            index = int(item)
            if not 0 <= index < len(names):
                raise ValueError(f"class index {index} outside 0..{len(names) - 1}")
            out.append(index)
    return sorted(set(out))


def sample_varied_maps(
    dataset, label: int, count: int, size, registry, seed: int, max_shift: float, skin_types=None
) -> tuple[list, list]:
    """`count` maps of class `label` drawn (with replacement) from `dataset`'s maps and varied by up to `max_shift`
    (`GenerationSettings.max_shift`); with source ids."""
    rows = np.flatnonzero(dataset_labels(dataset) == label)
    if rows.size == 0:
        raise ValueError(f"class {registry.names[label]!r} has no image in the map split to sample maps from")
    rng = np.random.default_rng(seed)
    picks = rng.choice(rows, size=count, replace=True)
    maps_column = dataset.select_columns(["semantic_map"])
    ids = dataset["image_id"] if "image_id" in dataset.column_names else [str(i) for i in range(len(dataset))]
    maps, sources = [], []
    for n, row in enumerate(picks):
        smap = SemanticMap.decode(maps_column[int(row)]["semantic_map"], registry=registry)
        if smap.size != tuple(size):
            smap = smap.resize(tuple(size))
        maps.append(
            smap.random_variation(derive_seed(seed, "map", label, n), max_shift=max_shift, skin_types=skin_types)
        )
        sources.append(str(ids[int(row)]))
    return maps, sources


def run_augmentation_experiment(
    splits,
    pipe,
    config: AugmentationConfig | dict | None = None,
    output_dir: str = "augment-output",
    **overrides,
) -> dict:
    """Runs the experiment (module docstring); writes `report.md`, `report.json`, metrics files and the images.

    Returns:
        `dict` with `classes`, `synthetic` (count per class), `comparison` (`compare_classifiers` result:
        `a` = baseline, `b` = augmented), `paths`, and `models`.
    """
    # 0. settings and checks
    if config is None:
        config = AugmentationConfig()
    elif isinstance(config, dict):
        config = AugmentationConfig(**config)
    config = replace(config, **overrides)
    for name in ("train", "validation", "test", config.map_split):
        if name not in splits or len(splits[name]) == 0:
            raise ValueError(f"the experiment needs a non-empty {name!r} split; got {list(splits)}")
    use_scheduler(pipe, config.generation.scheduler)
    registry = pipeline_registry(pipe)
    names = list(registry.names)
    classifier_config = asdict(ClassifierTrainingConfig(**config.classifier))
    if classifier_config["resolution"] is None:  # not 224: the generator's size, which synthetic images have
        classifier_config["resolution"] = pipe.sample_size[0]
    batch_size = classifier_config["eval_batch_size"]
    classifier_seed = derive_seed(config.seed, "classifier")
    os.makedirs(output_dir, exist_ok=True)
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    classes = (
        _class_indices(config.classes, names) if config.classes else rare_classes(dataset_labels(train), len(names))
    )

    # 1. baseline on real data
    baseline, _ = fit_classifier(
        train, validation, classifier_config, os.path.join(output_dir, "baseline"), names, classifier_seed
    )

    # 2. synthetic images of the chosen classes from varied validation maps
    synthetic = []
    for label in classes:
        maps, sources = sample_varied_maps(
            splits[config.map_split],
            label,
            config.num_images,
            pipe.sample_size,
            registry,
            derive_seed(config.seed, "maps", label),
            config.generation.max_shift,
            config.skin_types,
        )
        seeds = [derive_seed(config.seed, "image", label, n) for n in range(len(maps))]
        synthetic += generate_from_maps(
            pipe,
            maps,
            [label] * len(maps),
            seeds,
            [f"{config.map_split}:{s}" for s in sources],
            strategy="map",
            settings=config.generation,
        )
    folder = write_synthetic(synthetic, os.path.join(output_dir, "synthetic"), registry, prefix="syn-aug")
    check_no_synthetic_in_evaluation(evaluation_fingerprints(splits), synthetic)

    # 3. the same training on real + synthetic
    pool = training_pool(train, [folder], registry)
    augmented, _ = fit_classifier(
        pool, validation, classifier_config, os.path.join(output_dir, "augmented"), names, classifier_seed
    )

    # 4. both on the test split, paired
    before, after = predict(baseline, test, batch_size=batch_size), predict(augmented, test, batch_size=batch_size)
    comparison = paired(before, after, names, config.n_boot, config.seed, names=("baseline", "augmented"))
    counts = {names[label]: sum(item.label == label for item in synthetic) for label in classes}
    paths = {"markdown": os.path.join(output_dir, "report.md"), "json": os.path.join(output_dir, "report.json")}
    lines = [
        "# Augmentation experiment (Ghorbani et al. 2020)",
        "",
        (
            f"Augmented classes: {', '.join(f'{name} (+{count})' for name, count in counts.items())}; maps "
            f"sampled from the {config.map_split!r} split and varied. Training pool: {len(train)} real + "
            f"{len(synthetic)} synthetic. Test split: {len(test)} real images (no synthetic image in any "
            "evaluation split)."
        ),
        "",
        before_after_markdown(comparison["a"], comparison["b"], comparison, names=("baseline", "augmented")),
        f"95% percentile-bootstrap CIs, {config.n_boot} replicates; differences by paired bootstrap.",
    ]
    with open(paths["markdown"], "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    payload = {
        "config": asdict(config),
        "classes": [names[k] for k in classes],
        "synthetic": counts,
        "pool": {"real": len(train), "synthetic": len(synthetic)},
        "baseline": dict(metric_rows(comparison["a"])),
        "augmented": dict(metric_rows(comparison["b"])),
        "mcnemar": comparison["mcnemar"],
        "difference": comparison["difference"],
        "provenance": [item.provenance() for item in synthetic],
    }
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    return {
        "classes": [names[k] for k in classes],
        "synthetic": counts,
        "comparison": comparison,
        "paths": paths,
        "models": {"baseline": baseline, "augmented": augmented},
    }
