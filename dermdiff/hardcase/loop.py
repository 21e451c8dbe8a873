"""The hard-case loop (Silva & Georgieva 2024): classify, mine what the classifier gets wrong, generate more, retrain.

`run_hardcase_loop` reads top to bottom. Round 0 trains the baseline on the real training split. Then
every round k = 1..`rounds`:

1. the classifier of the current pool: the baseline in round 1, afterwards the model retrained in the
   round before (it was trained on exactly the current pool);
2. evaluate it on the **mining split** and mine the hard cases (misclassified, and with `margin` the
   correct ones closer than `margin` to the decision boundary). Mining on the test split is refused
   unless `allow_test_mining`, and then every report carries `dermdiff.hardcase.mining.LEAKAGE_WARNING`;
3. generate more like each hard case (`dermdiff.hardcase.synthesis`: `map`, `sdedit`, `adversarial`), labelled
   with the case's TRUE class;
4. optionally filter: drop images the baseline (trained on real data only) does not recognise as their
   label, and images too close to a training image;
5. write them to `output_dir/synthetic/round_k/` (an image folder with metadata.csv), retrain on real +
   all synthetic so far, evaluate on the untouched **test split** and compare with the model of step 1
   (McNemar + paired bootstrap).

When the test split has Fitzpatrick skin types (a `skin_type` column with at least one known value, as
PAD-UFES-20 and the phantom have; HAM10000 does not), every test evaluation and comparison is also done per
skin type (`dermdiff.metrics.subgroups`), so a gain on the common types cannot hide a loss on the rare ones.

Rounds stop at `rounds` or when the validation balanced accuracy has not improved for `patience`
rounds. Every seed comes from `seed` through `dermdiff.hardcase.synthesis.derive_seed`; every round appends its
config, index, seeds, mined sample ids, what was generated from each case (file, strategy, seed), pool
sizes and metrics with CIs to `output_dir/ledger.jsonl`. The end writes `report.md`, `report.json` (the
before/after table per round) and `metrics_per_round.png`.

Synthetic images never enter an evaluation split: they live in their own folders, only the training
pool is concatenated with them, and `check_no_synthetic_in_evaluation` verifies (ids and pixel hashes)
before every retraining.

Example:
    >>> weights = rare_class_weights(["melanoma", "vascular"])
    >>> splits = make_splits(phantom_dataset(n=600, size=32, class_weights=weights))
    >>> pipe = DermDiffPipeline.from_pretrained("outputs/dermdiff-phantom-32")
    >>> result = run_hardcase_loop(splits, pipe, {"rounds": 2, "strategies": ("map", "sdedit"),
    ...                                          "classifier": {"resolution": 32, "num_epochs": 10},
    ...                                          "generation": {"num_inference_steps": 20}}, "out/loop")
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace

from ..data.synthetic_folder import write_synthetic
from ..loops.classifier import ClassifierTrainingConfig, predict, train_classifier
from ..metrics.classification import classification_metrics, compare_classifiers
from ..metrics.fixed_broken import fixed_broken
from ..metrics.subgroups import UNKNOWN, compare_by_group, group_key, metrics_by_group
from ..pipelines.generation_settings import GenerationSettings
from ..pipelines.scheduler_names import use_scheduler
from .filters import filter_by_distance, filter_by_reference
from .mining import Ledger, check_mining_split, mine_hard_cases
from .report import group_side, write_report
from .synthesis import (
    STRATEGIES,
    case_source,
    check_strategies,
    derive_seed,
    parse_strategies,
    pipeline_registry,
    synthesize_hard_cases,
)

EVALUATION_SPLITS = ("validation", "mining", "test")


LOOP = "loop"


def check_n_boot(n_boot: int) -> int:
    """Bootstrap replicates of a report's CIs and paired tests: at least one (the hard-case loop, the augmentation
    experiment)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return n_boot


@dataclass
class HardCaseConfig:
    """Settings of the hard-case loop (see `run_hardcase_loop`); each field's help is its documentation, and
    `training/adversarial_loop.py`'s flags are generated from the fields. How images are generated is one
    `GenerationSettings` (`generation`), validated there."""

    rounds: int = field(default=3, metadata={"help": "Maximum number of rounds.", "group": LOOP})
    patience: int = field(default=1, metadata={
        "help": "Rounds without a better validation balanced accuracy before stopping.", "flag": "round_patience",
        "group": LOOP})
    margin: float | None = field(default=None, metadata={
        "help": "Also mine correct cases with p(true) - max p(other) < margin.", "group": LOOP})
    max_cases: int | None = field(default=None, metadata={
        "help": "At most this many hard cases per round (hardest first).", "group": LOOP})
    mining_classes: list | None = field(default=None, metadata={
        "help": "Only mine cases of these classes (indices; the command line takes comma-separated names).",
        "cli": False})
    mining_split: str = field(default="mining", metadata={
        "help": "Where cases are mined; 'test' needs allow_test_mining.", "cli": False})
    allow_test_mining: bool = field(default=False, metadata={
        "help": "Mine on the TEST split (leakage; every report warns).", "group": LOOP})
    strategies: tuple = field(default=("map",), metadata={
        "help": f"Comma-separated generation strategies of {STRATEGIES}.", "parse": parse_strategies,
        "group": LOOP})
    per_case: int = field(default=4, metadata={"help": "Images per hard case and strategy.", "group": LOOP})
    generation: GenerationSettings = field(default_factory=GenerationSettings, metadata={
        "help": "How images are generated (steps, guidance, SDEdit strength, classifier guidance, map jitter).",
        "cli": False})
    reference_filter: bool = field(default=False, metadata={
        "help": "Drop images the real-data baseline does not recognise.", "group": LOOP})
    min_reference_probability: float | None = field(default=None, metadata={
        "help": "Recognised = p(label) >= this (default: top class).", "group": LOOP})
    min_mse: float | None = field(default=None, metadata={
        "help": "Drop images closer than this pixel MSE (in [0, 1] units) to a training image.", "group": LOOP})
    min_feature_distance: float | None = field(default=None, metadata={
        "help": "Drop images closer than this to a training image in the baseline's penultimate features "
                "(an absolute distance: meaningful only for a trained baseline; check ledger "
                "nearest_feature_distance).", "group": LOOP})
    fine_tune: bool = field(default=False, metadata={
        "help": "Retrain by fine-tuning the current model instead of from scratch.", "group": LOOP})
    seed: int = field(default=0, metadata={"help": "The one base seed of every round.", "group": LOOP})
    n_boot: int = field(default=1000, metadata={"help": "Bootstrap replicates of the CIs and the paired test.",
                                                "group": LOOP})
    classifier: dict = field(default_factory=dict, metadata={
        "help": "ClassifierTrainingConfig fields (backbone, resolution, num_epochs, balance, ...); resolution "
                "defaults to the generator's image size."})

    def __post_init__(self):
        self.strategies = tuple(self.strategies)
        self.generation = GenerationSettings.from_value(self.generation)
        for name in ("rounds", "patience", "per_case"):  # one at a time: the message names only the bad one
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        unknown = [name for name in self.strategies if name not in STRATEGIES]
        if unknown or not self.strategies:
            raise ValueError(f"strategies must be a non-empty subset of {STRATEGIES}, got {list(self.strategies)}")
        if self.margin is not None and not 0 <= self.margin <= 1:
            raise ValueError(f"margin must be in [0, 1], got {self.margin}")
        check_n_boot(self.n_boot)
        known = {item.name for item in fields(ClassifierTrainingConfig)}
        if set(self.classifier) - known:
            raise ValueError(
                f"unknown classifier setting(s) {sorted(set(self.classifier) - known)}; allowed: {sorted(known)}"
            )


# ----------------------------------------------------------------------------------------------------
# Helpers of the loop
# ----------------------------------------------------------------------------------------------------


def image_hash(image) -> str:
    """Content hash of a picture (mode, size and pixels), to prove two splits share no image."""
    image = image.convert("RGB")
    return hashlib.sha1(repr(image.size).encode() + image.tobytes()).hexdigest()


def evaluation_fingerprints(splits: dict) -> tuple[set, set]:
    """(ids, pixel hashes) of every evaluation split present in `splits`."""
    ids, hashes = set(), set()
    for name in EVALUATION_SPLITS:
        if name not in splits:
            continue
        part = splits[name]
        if "image_id" in part.column_names:
            ids.update(str(value) for value in part["image_id"])
        hashes.update(image_hash(image) for image in part["image"])
    return ids, hashes


def check_no_synthetic_in_evaluation(fingerprints: tuple[set, set], synthetic: Sequence) -> None:
    """Raises `RuntimeError` if any synthetic image's id or pixels belong to an evaluation split."""
    ids, hashes = fingerprints
    clashes = [item.image_id for item in synthetic if item.image_id in ids or image_hash(item.image) in hashes]
    if clashes:
        raise RuntimeError(f"synthetic images {clashes[:5]} are in an evaluation split; refusing to continue")


def training_pool(real, synthetic_folders: Sequence[str], registry):
    """Real training rows + every synthetic folder so far, as one `datasets.Dataset` of (image, label)."""
    import datasets

    from ..data import load_dataset_dir

    base = real.select_columns(["image", "label"])
    parts = [base]
    for folder in synthetic_folders:
        part = load_dataset_dir(folder, registry=registry, with_masks=False).select_columns(["image", "label"])
        parts.append(part.cast(base.features))
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else base


def split_metrics(output: dict, label_names, n_boot: int, seed: int, groups=None) -> dict:
    """Metrics with CIs of one `predict` output; with `groups` (one per row), per group instead."""
    common = dict(num_classes=len(label_names), label_names=label_names, n_boot=n_boot, seed=seed)
    arrays = (output["labels"], output["predictions"], output["probabilities"])
    if groups is None:
        return classification_metrics(*arrays, **common)
    return metrics_by_group(*arrays, groups, **common)


def paired(before: dict, after: dict, label_names, n_boot: int, seed: int, names=("before", "after"), groups=None):
    """Paired comparison (McNemar + paired bootstrap) of two `predict` outputs on the same split.

    With `groups` (one per row), one comparison per group (`dermdiff.metrics.subgroups.compare_by_group`).
    """
    labels, predictions = before["labels"], (before["predictions"], after["predictions"])
    common = dict(
        y_prob_a=before["probabilities"],
        y_prob_b=after["probabilities"],
        num_classes=len(label_names),
        label_names=label_names,
        names=names,
        n_boot=n_boot,
        seed=seed,
    )
    if groups is None:
        return compare_classifiers(labels, *predictions, **common)
    return compare_by_group(labels, *predictions, groups, **common)


def rescore_hard_cases(baseline: dict, after: dict, label_names, n_boot: int, seed: int, groups=None) -> dict:
    """The test split's baseline mistakes the new model fixes, and its right answers the new model breaks.

    `dermdiff.metrics.fixed_broken` of two `predict` outputs, overall, per class and per `groups` (skin type).
    """
    return fixed_broken(
        baseline["labels"], baseline["predictions"], after["predictions"],
        label_names=label_names, groups=groups, n_boot=n_boot, seed=seed,
    )


def skin_types_of(split) -> list | None:
    """The split's skin types in row order (the order `predict` keeps), or None when no row has one."""
    if "skin_type" not in split.column_names:
        return None
    values = list(split["skin_type"])
    return values if any(group_key(value) != UNKNOWN for value in values) else None


def group_tests(by_group: dict) -> dict:
    """A `compare_by_group` result without the two full metric sets: McNemar and the differences per group."""
    return {
        key: {"n": entry["n"], "comparison": {name: entry["comparison"][name] for name in ("mcnemar", "difference")}}
        for key, entry in by_group.items()
    }


def fit_classifier(pool, validation, classifier_config, output_dir, label_names, seed, model=None):
    settings = dict(classifier_config, seed=seed)
    model, history = train_classifier(
        pool, validation, settings, output_dir=output_dir, model=model, label_names=label_names
    )
    model.eval()
    return model, history


def validation_score(model, validation, batch_size) -> float:
    output = predict(model, validation, batch_size=batch_size)
    result = classification_metrics(
        output["labels"], output["predictions"], num_classes=model.config.num_labels, n_boot=0
    )
    return float(result["overall"]["balanced_accuracy"]["value"])


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------


def run_hardcase_loop(
    splits,
    pipe,
    config: HardCaseConfig | dict | None = None,
    output_dir: str = "hardcase-output",
    **overrides,
) -> dict:
    """Runs the hard-case loop (module docstring) and writes ledger, synthetic folders and reports.

    Args:
        splits (`dict` or `datasets.DatasetDict`): `train`, `validation`, `test` and the mining split
            (`config.mining_split`, default `mining`), each a dermdiff dataset (`image`, `label`,
            `semantic_map`, `image_id`).
        pipe: the generator, a map-conditioned pipeline (`DermDiffPipeline` or `DermGANPipeline`) of the
            data's registry.
        config (`HardCaseConfig` or `dict`, *optional*): settings; `overrides` replace fields.
        output_dir (`str`, defaults to `"hardcase-output"`).

    Returns:
        `dict`: `rounds` (one summary per round, round 0 = the baseline), `stopped` (why),
        `leakage_warning`, `baseline_vs_final` (the paired comparison on the test split), `paths`, and
        `models` (the baseline and the final classifier). When the test split has skin types, each round
        also has `test_by_skin_type` (rounds >= 1 also `before_test_by_skin_type` and
        `comparison_by_skin_type`) and the result has `baseline_vs_final_by_skin_type`
        (`dermdiff.metrics.subgroups` shapes).
    """
    # -- 0. settings, checks, folders, ledger --------------------------------------------------------------
    if config is None:
        config = HardCaseConfig()
    elif isinstance(config, dict):
        config = HardCaseConfig(**config)
    config = replace(config, **overrides)
    for name in ("train", "validation", "test", config.mining_split):
        if name not in splits or len(splits[name]) == 0:
            raise ValueError(
                f"the loop needs a non-empty {name!r} split; got {[(k, len(v)) for k, v in splits.items()]}"
            )
    leakage_warning = check_mining_split(config.mining_split, config.allow_test_mining)
    use_scheduler(pipe, config.generation.scheduler)
    check_strategies(pipe, config.strategies)
    registry = pipeline_registry(pipe)
    label_names = list(registry.names)
    from ..data import registry_of

    if list(registry_of(splits["train"]).names) != label_names:
        raise ValueError(
            f"the generator's conditions {label_names} differ from the data's {registry_of(splits['train']).names}"
        )
    classifier_config = asdict(ClassifierTrainingConfig(**config.classifier))
    if classifier_config["resolution"] is None:  # not 224: the generator's size, which synthetic images have
        classifier_config["resolution"] = pipe.sample_size[0]
    batch_size = classifier_config["eval_batch_size"]
    os.makedirs(output_dir, exist_ok=True)
    ledger = Ledger(os.path.join(output_dir, "ledger.jsonl"))
    fingerprints = evaluation_fingerprints(splits)
    train, validation, test, mining = (
        splits["train"],
        splits["validation"],
        splits["test"],
        splits[config.mining_split],
    )
    mining_ids = (
        [str(value) for value in mining["image_id"]]
        if "image_id" in mining.column_names
        else [str(i) for i in range(len(mining))]
    )
    ledger.append(
        {
            "event": "start",
            "config": asdict(config),
            "leakage_warning": leakage_warning,
            "sizes": {name: len(part) for name, part in splits.items()},
            "label_names": label_names,
        }
    )

    # -- 1. round 0: the baseline on real data only -------------------------------------------------------
    baseline, _ = fit_classifier(
        train,
        validation,
        classifier_config,
        os.path.join(output_dir, "classifiers", "round_0"),
        label_names,
        derive_seed(config.seed, "classifier", 0),
    )
    current, current_test = baseline, predict(baseline, test, batch_size=batch_size)
    skin_types = skin_types_of(test)
    baseline_test = current_test
    best_val = validation_score(baseline, validation, batch_size)
    summaries = [
        {
            "round": 0,
            "pool": {"real": len(train), "synthetic": 0},
            "validation_balanced_accuracy": best_val,
            "test": split_metrics(current_test, label_names, config.n_boot, config.seed),
        }
    ]
    if skin_types is not None:
        summaries[0]["test_by_skin_type"] = split_metrics(
            current_test, label_names, config.n_boot, config.seed, groups=skin_types
        )
    ledger.append(
        {
            "event": "round",
            "round": 0,
            "what": "baseline on real data",
            "leakage_warning": leakage_warning,
            **summaries[0],
        }
    )
    synthetic_folders: list[str] = []
    synthetic_total, bad_rounds, stopped = 0, 0, f"reached --rounds {config.rounds}"

    for k in range(1, config.rounds + 1):
        round_seeds = {name: derive_seed(config.seed, name, k) for name in ("generate", "classifier")}

        # -- 2. mine the current classifier's hard cases on the mining split ----------------------------------
        mined = predict(current, mining, batch_size=batch_size)
        cases = mine_hard_cases(
            mining_ids,
            mined["labels"],
            mined["probabilities"],
            margin=config.margin,
            max_cases=config.max_cases,
            classes=config.mining_classes,
        )
        if not cases:
            stopped = f"round {k}: no hard cases on the {config.mining_split!r} split"
            ledger.append({"event": "stop", "round": k, "reason": stopped, "leakage_warning": leakage_warning})
            break

        # -- 3. generate more like each case, labelled with its true class -------------------------------------
        sources = [case_source(mining[case.index], registry, case, size=pipe.sample_size) for case in cases]
        current.eval()
        generated = synthesize_hard_cases(
            pipe,
            sources,
            strategies=config.strategies,
            per_case=config.per_case,
            seed=round_seeds["generate"],
            settings=config.generation,
            classifier=current,
        )

        # -- 4. optional filters ----------------------------------------------------------------------------
        dropped = []
        if config.reference_filter:
            generated, out = filter_by_reference(generated, baseline, config.min_reference_probability)
            dropped += [dict(item.provenance(), dropped_by="reference") for item in out]
        if config.min_mse is not None or config.min_feature_distance is not None:
            generated, out = filter_by_distance(
                generated,
                train["image"],
                config.min_mse,
                config.min_feature_distance,
                feature_model=baseline,
                size=pipe.sample_size[0],
            )
            dropped += [dict(item.provenance(), dropped_by="distance") for item in out]

        # -- 5. write, retrain on real + all synthetic, evaluate on the untouched test split ------------------
        folder = os.path.join(output_dir, "synthetic", f"round_{k}")
        write_synthetic(generated, folder, registry, prefix=f"syn-r{k}")
        check_no_synthetic_in_evaluation(fingerprints, generated)
        if generated:
            synthetic_folders.append(folder)
        synthetic_total += len(generated)
        pool = training_pool(train, synthetic_folders, registry)
        start_model = copy.deepcopy(current) if config.fine_tune else None
        retrained, _ = fit_classifier(
            pool,
            validation,
            classifier_config,
            os.path.join(output_dir, "classifiers", f"round_{k}"),
            label_names,
            round_seeds["classifier"],
            model=start_model,
        )
        after_test = predict(retrained, test, batch_size=batch_size)
        val_score = validation_score(retrained, validation, batch_size)
        comparison = paired(current_test, after_test, label_names, config.n_boot, config.seed)
        by_case = {case.sample_id: [] for case in cases}
        for item in generated:
            by_case[item.source_id].append(
                {
                    "file": os.path.join(folder, item.file_name),
                    "strategy": item.strategy,
                    "seed": item.seed,
                    "target": item.target,
                }
            )
        summary = {
            "round": k,
            "seeds": round_seeds,
            "pool": {
                "real": len(train),
                "synthetic": synthetic_total,
                "synthetic_this_round": len(generated),
                "dropped_this_round": len(dropped),
                "total": len(pool),
            },
            "mined_ids": [case.sample_id for case in cases],
            "hard_cases": [dict(case.to_dict(), generated=by_case[case.sample_id]) for case in cases],
            "dropped": dropped,
            "synthetic_folder": folder,
            "validation_balanced_accuracy": val_score,
            "test": comparison["b"],
            "before_test": comparison["a"],
            "comparison": {"mcnemar": comparison["mcnemar"], "difference": comparison["difference"]},
            "fixed_broken": rescore_hard_cases(
                baseline_test, after_test, label_names, config.n_boot, config.seed, skin_types
            ),
        }
        if skin_types is not None:
            by_type = paired(current_test, after_test, label_names, config.n_boot, config.seed, groups=skin_types)
            summary["test_by_skin_type"] = group_side(by_type, "b")
            summary["before_test_by_skin_type"] = group_side(by_type, "a")
            summary["comparison_by_skin_type"] = group_tests(by_type)
        summaries.append(summary)
        ledger.append({"event": "round", "config": asdict(config), "leakage_warning": leakage_warning, **summary})
        current, current_test = retrained, after_test

        # -- stop when the validation balanced accuracy stops improving --------------------------------------
        if val_score > best_val:
            best_val, bad_rounds = val_score, 0
        else:
            bad_rounds += 1
            if bad_rounds >= config.patience:
                stopped = f"round {k}: validation balanced accuracy {val_score:.4f} did not improve on {best_val:.4f}"
                break

    # -- final: baseline vs final on the test split, report, plot -------------------------------------------
    final = paired(baseline_test, current_test, label_names, config.n_boot, config.seed, names=("baseline", "final"))
    final_rescored = rescore_hard_cases(baseline_test, current_test, label_names, config.n_boot, config.seed, skin_types)
    end = {
        "event": "end",
        "stopped": stopped,
        "leakage_warning": leakage_warning,
        "baseline_vs_final": {"mcnemar": final["mcnemar"], "difference": final["difference"]},
        "baseline_vs_final_fixed_broken": final_rescored,
    }
    result = {
        "rounds": summaries,
        "stopped": stopped,
        "leakage_warning": leakage_warning,
        "baseline_vs_final": final,
        "baseline_vs_final_fixed_broken": final_rescored,
        "label_names": label_names,
    }
    if skin_types is not None:
        by_type = paired(
            baseline_test, current_test, label_names, config.n_boot, config.seed, ("baseline", "final"), skin_types
        )
        result["baseline_vs_final_by_skin_type"] = by_type
        end["baseline_vs_final_by_skin_type"] = group_tests(by_type)
    ledger.append(end)
    paths = write_report(result, output_dir)
    result["paths"] = dict(paths, ledger=ledger.path)
    result["models"] = {"baseline": baseline, "final": current}
    return result


def seed_control(splits, result: dict, config: HardCaseConfig | dict, output_dir: str) -> dict:
    """Is the loop's gain the synthetic data, or just a different classifier seed?

    Retrains on the real training split alone with the seed the last round's classifier used, and pairs
    that model with the loop's final model on the test split. Seed variation alone can move a small
    classifier by as much as a loop round, so a gain that survives this comparison is the data's.
    Returns the paired comparison (`names`: "real only, same seed", "final").
    """
    config = HardCaseConfig(**config) if isinstance(config, dict) else config
    names = result["label_names"]
    last = result["rounds"][-1]["round"]
    control, _ = fit_classifier(
        splits["train"],
        splits["validation"],
        config.classifier,
        os.path.join(output_dir, "seed_control"),
        names,
        derive_seed(config.seed, "classifier", last),
    )
    batch_size = ClassifierTrainingConfig(**config.classifier).eval_batch_size
    return paired(
        predict(control, splits["test"], batch_size=batch_size),
        predict(result["models"]["final"], splits["test"], batch_size=batch_size),
        names,
        config.n_boot,
        config.seed,
        names=("real only, same seed", "final"),
    )
