"""The demo's one-page report (`report.html`) and its before/after summary, from what the steps wrote.

Everything on the page is read from the step markers and the files they list (the hard-case loop's
`result.json`, the evaluation's `metrics.json`), so the report can be rebuilt without rerunning anything.
Pictures are linked with paths relative to the demo folder; small images are scaled up without smoothing.
"""

from __future__ import annotations

import math
import os

from .html_report import render_page
from .metrics.classification import format_entry

# the conditions the demo makes rare in its training data (dermdiff.demo weights them down)
RARE_CONDITIONS = ("melanoma", "vascular")
CLASSIFIER_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
PER_CLASS_METRICS = ("sensitivity", "specificity", "f1")


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def plus_minus(entry: dict | None, digits: int = 2) -> str:
    """`value ± ci95` of an FID/KID entry."""
    if not entry or entry.get("value") is None:
        return "n/a"
    return f"{_number(entry['value'], digits)} ± {_number(entry.get('ci95'), digits)}"


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def classifier_rows(hardcase: dict, rare_only: bool = True) -> list[dict]:
    """Test-split metrics of the baseline and of the model after the hard-case round, with CIs and the change.

    Overall accuracy, balanced accuracy and macro F1, then per class sensitivity, specificity and F1 (with
    `rare_only`: only the sensitivity of the demo's rare conditions). The change is the paired-bootstrap
    difference (after - before).
    """
    final = hardcase["baseline_vs_final"]
    before, after, difference = final["a"], final["b"], final["difference"]
    rows = []
    for key in CLASSIFIER_METRICS:
        rows.append(_row(_label(key), before["overall"].get(key), after["overall"].get(key),
                         difference["overall"].get(key)))
    classes = [name for name in before["per_class"] if not rare_only or name in RARE_CONDITIONS]
    for name in classes:
        for key in PER_CLASS_METRICS if not rare_only else ("sensitivity",):
            rows.append(_row(f"{name} {key}", before["per_class"][name].get(key), after["per_class"][name].get(key),
                             difference["per_class"][name].get(key)))
    return rows


def skin_type_balanced_accuracy_rows(hardcase: dict) -> list[dict]:
    """Balanced accuracy per Fitzpatrick type, baseline vs after the round (empty without skin types).

    The demo's point is control over skin tone, so the report shows whether the loop helped every tone or
    only the common ones; each row names its n because a type's interval is only as good as its count.
    """
    rows = []
    for skin_type, entry in (hardcase.get("baseline_vs_final_by_skin_type") or {}).items():
        comparison = entry["comparison"]
        row = _row(
            "balanced accuracy",
            comparison["a"]["overall"].get("balanced_accuracy"),
            comparison["b"]["overall"].get("balanced_accuracy"),
            comparison["difference"]["overall"].get("balanced_accuracy"),
        )
        rows.append(dict(row, skin_type=skin_type, n=entry["n"]))
    return rows


def _trend(change: dict | None) -> str:
    """`better` / `worse` when the change's whole interval lies above / below zero, else ``."""
    ci = (change or {}).get("ci") or (None, None)
    if ci[0] is not None and ci[0] > 0:
        return "better"
    if ci[1] is not None and ci[1] < 0:
        return "worse"
    return ""


def _row(metric: str, before: dict | None, after: dict | None, change: dict | None) -> dict:
    p_value = (change or {}).get("p_value")
    return {"metric": metric, "before": format_entry(before), "after": format_entry(after), "trend": _trend(change),
            "change": format_entry(change, signed=True) + ("" if p_value is None else f" (p={p_value:.2g})")}


def generator_rows(evaluation: dict) -> list[dict]:
    """FID/KID, class fidelity, placement, skin tone and memorisation in one (metric, value) list."""
    rows = []
    distribution = evaluation.get("distribution")
    if distribution:
        rows.append({"metric": "FID (domain features)", "value": plus_minus(distribution["fid"])})
        rows.append({"metric": "KID (domain features)", "value": plus_minus(distribution["kid"], 4)})
    fidelity = evaluation.get("fidelity", {})
    if fidelity.get("classes"):
        rows.append({"metric": "class fidelity (baseline classifier agrees)",
                     "value": _number(fidelity["classes"]["overall"]["accuracy"])})
    placement = (fidelity.get("placement") or {}).get("overall")
    if placement:
        rows.append({"metric": "placement IoU (mask / box)",
                     "value": f"{_number(placement.get('iou_mask'))} / {_number(placement.get('iou_box'))}"})
    tone = (fidelity.get("skin_tone") or {}).get("overall")
    if tone and tone.get("n"):
        rows.append({"metric": "skin tone: mean |ITA error| (deg), in type band",
                     "value": f"{_number(tone.get('mean_abs_error'), 1)}, {_number(tone.get('band_accuracy'), 2)}"})
    memorisation = evaluation.get("memorisation")
    if memorisation:
        rows.append({"metric": f"memorised (nearest SSIM >= {memorisation['ssim_threshold']})",
                     "value": f"{memorisation['num_flagged']} of {len(memorisation['pairs'])} "
                              f"(median nearest SSIM {_number(memorisation['median_nearest_ssim'], 2)})"})
    return rows


def summary_rows(hardcase: dict, evaluation: dict) -> dict:
    """What the terminal summary and the report's first table show."""
    return {"classifier": classifier_rows(hardcase), "generator": generator_rows(evaluation)}


def format_summary(summary: dict) -> str:
    """The summary as fixed-width text tables (classifier before/after, then the generator's numbers)."""

    def table(header, rows):
        lines = [header] + rows
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        text = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(text)

    classifier = [(r["metric"], r["before"], r["after"], r["change"]) for r in summary["classifier"]]
    generator = [(r["metric"], r["value"]) for r in summary["generator"]]
    return (table(("test split [95% CI]", "baseline", "after hard-case round", "change"), classifier) + "\n\n"
            + table(("generator", "value"), generator))


# ----------------------------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------------------------
def render_demo_report(out: str, config, markers: dict, hardcase: dict, evaluation: dict, summary: dict) -> str:
    """Writes `out/report.html` (`dermdiff/templates/demo_report.html`) and returns its path."""
    import time

    def rel(path: str) -> str:
        return os.path.relpath(path, out).replace(os.sep, "/")

    def fmt(value, digits: int = 3):
        return _number(value, digits) if isinstance(value, (int, float)) and not isinstance(value, bool) else (
            "n/a" if value is None else value)

    def step_of(path: str) -> int:
        return int(os.path.splitext(os.path.basename(path))[0].rsplit("-", 1)[-1])

    def when(stamp: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))

    rows = classifier_rows(hardcase, rare_only=False)
    data = markers["data"]["outputs"]
    counts = data["counts"]["conditions"]
    widths = "-".join(str(width) for width in config.block_out_channels)
    return render_page(
        "demo_report.html", os.path.join(out, "report.html"),
        config=config, summary=summary, all_classifier_rows=rows, skin_type_rows=skin_type_balanced_accuracy_rows(hardcase), data=data,
        class_names=list(counts),
        rare=list(RARE_CONDITIONS), diffusion=markers["diffusion"]["outputs"], pictures=markers["pictures"]["outputs"],
        hard=markers["classifiers"]["outputs"], evaluation=evaluation,
        eval_folder=markers["evaluation"]["outputs"]["folder"],
        evaluation_sweeps=evaluation.get("sweeps", {}), mcnemar=hardcase["baseline_vs_final"]["mcnemar"],
        leakage=hardcase.get("leakage_warning"), n_test=hardcase["baseline_vs_final"]["a"]["n"],
        markers=markers, total_seconds=round(sum(m["seconds"] for m in markers.values())),
        diffusion_params=f"{widths}-channel", out=out, rel=rel, fmt=fmt, pm=plus_minus, step_of=step_of, when=when,
    )
