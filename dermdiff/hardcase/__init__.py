"""The hard-case loop (the Aveiro thesis proposal): mine what a classifier gets wrong, generate more like it, retrain.

The package is the story in modules, read in this order:

- `mining`: evaluate on the mining split, collect the misclassified (or low-margin) cases, the ledger;
- `synthesis`: the generation strategies (`map`, `sdedit`, `adversarial`) and per-image provenance;
- `filters`: drop synthetic images a real-data classifier does not recognise, and near-copies;
- `loop`: `run_hardcase_loop`, round by round, and the seed control;
- `report`: `report.md`, `report.json` and the per-round plot from the loop's result;
- `augmentation`: the baseline experiment (generic rare-class augmentation without mining);
- `cli`: the flags and loaders shared by `training/adversarial_loop.py` and `training/augment_experiment.py`.

The synthetic images are written by `dermdiff.data.synthetic_folder.write_synthetic`; the classifier is
trained by `dermdiff.loops.classifier`. `dermdiff.hardcase` was one module before 0.2: its public names
stay importable from the package (lazily, so `dermdiff.hardcase.cli` does not load torch).
"""

from __future__ import annotations

from ..lazy import lazy_exports

# name -> module that defines it (relative to this package): the public names of the old `dermdiff/hardcase.py`
_EXPORTS = {
    "EVALUATION_SPLITS": ".loop",
    "HardCaseConfig": ".loop",
    "image_hash": ".loop",
    "evaluation_fingerprints": ".loop",
    "check_no_synthetic_in_evaluation": ".loop",
    "training_pool": ".loop",
    "split_metrics": ".loop",
    "paired": ".loop",
    "rescore_hard_cases": ".loop",
    "skin_types_of": ".loop",
    "group_tests": ".loop",
    "fit_classifier": ".loop",
    "validation_score": ".loop",
    "run_hardcase_loop": ".loop",
    "seed_control": ".loop",
    "REPORT_METRICS": ".report",
    "SKIN_TYPE_SECTION": ".report",
    "group_side": ".report",
    "metric_rows": ".report",
    "before_after_markdown": ".report",
    "report_markdown": ".report",
    "rescored_markdown": ".report",
    "skin_type_markdown": ".report",
    "plot_rounds": ".report",
    "skin_type_rows": ".report",
    "write_report": ".report",
    "seed_control_markdown": ".report",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
