"""The hard-case loop's report: `report.md`, `report.json` and `metrics_per_round.png` from the loop's result.

`run_hardcase_loop` returns a plain dict (per round: pool sizes, test metrics with CIs, the paired
comparison with the model before it, the per-skin-type breakdown); everything here only reads that dict,
so a report can be re-rendered from a saved result without training anything.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..metrics.classification import format_entry
from ..metrics.fixed_broken import fixed_broken_markdown
from ..metrics.subgroups import subgroups_to_markdown

REPORT_METRICS = ("sensitivity", "specificity", "f1")
SKIN_TYPE_SECTION = "Per skin type (test split)"


def group_side(by_group: dict, side: str) -> dict:
    """One classifier (`"a"` or `"b"`) of a `compare_by_group` result, shaped like `metrics_by_group`'s."""
    return {key: {"n": entry["n"], "metrics": entry["comparison"][side]} for key, entry in by_group.items()}


def _cell(entry: dict | None, signed: bool = False) -> str:
    return format_entry(entry, 3, signed)


def metric_rows(result: dict) -> list[tuple[str, dict]]:
    """(row name, metric entry) for accuracy, balanced accuracy and sensitivity / specificity / F1 per class."""
    rows = [(key, result["overall"][key]) for key in ("accuracy", "balanced_accuracy")]
    for name, values in result["per_class"].items():
        rows += [(f"{name} {key}", values.get(key)) for key in REPORT_METRICS]
    return rows


def before_after_markdown(before: dict, after: dict, comparison: dict | None = None, names=("before", "after")) -> str:
    """Markdown table: metric | before [CI] | after [CI] | after - before [CI] | p."""
    lines = [f"| metric | {names[0]} | {names[1]} | {names[1]} - {names[0]} [95% CI] | p |", "|---|---|---|---|---|"]
    difference = (comparison or {}).get("difference", {})
    for (label, a), (_, b) in zip(metric_rows(before), metric_rows(after)):
        if " " in label:
            name, key = label.rsplit(" ", 1)
            diff = difference.get("per_class", {}).get(name, {}).get(key)
        else:
            diff = difference.get("overall", {}).get(label)
        p = "n/a" if not diff or diff.get("p_value") is None else f"{diff['p_value']:.3g}"
        lines.append(f"| {label} | {_cell(a)} | {_cell(b)} | {_cell(diff, signed=True)} | {p} |")
    mcnemar = (comparison or {}).get("mcnemar")
    if mcnemar:
        lines += [
            "",
            (
                f"McNemar ({mcnemar['method']}) on accuracy: b = {mcnemar['b']} ({names[0]} right only), "
                f"c = {mcnemar['c']} ({names[1]} right only), p = {mcnemar['p_value']:.3g}."
            ),
        ]
    return "\n".join(lines) + "\n"


def report_markdown(result: dict) -> str:
    """The loop's report: leakage warning (if any), a per-round summary, and a before/after table per round."""
    lines = ["# Hard-case loop report", ""]
    if result.get("leakage_warning"):
        lines += [f"> **{result['leakage_warning']}**", ""]
    lines += [f"Stopped: {result['stopped']}.", "", "## Test split, per round (round 0 = baseline on real data)", ""]
    names = result["label_names"]
    header = ["round", "real", "synthetic", "hard cases", "val bal. acc.", "accuracy", "balanced accuracy"]
    header += [f"{name} sensitivity" for name in names]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in result["rounds"]:
        test = summary["test"]
        cells = [
            str(summary["round"]),
            str(summary["pool"]["real"]),
            str(summary["pool"]["synthetic"]),
            str(len(summary.get("mined_ids", []))) if summary["round"] else "-",
            f"{summary['validation_balanced_accuracy']:.3f}",
            _cell(test["overall"]["accuracy"]),
            _cell(test["overall"]["balanced_accuracy"]),
        ]
        cells += [_cell(test["per_class"][name]["sensitivity"]) for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    for summary in result["rounds"][1:]:
        lines += ["", f"## Round {summary['round']}: before / after on the test split", ""]
        if result.get("leakage_warning"):
            lines += [f"> **{result['leakage_warning']}**", ""]
        lines.append(before_after_markdown(summary["before_test"], summary["test"], summary["comparison"]))
        lines += rescored_markdown(summary["fixed_broken"], f"round {summary['round']}")
    final = result["baseline_vs_final"]
    lines += ["", "## Baseline vs final model on the test split", ""]
    if result.get("leakage_warning"):
        lines += [f"> **{result['leakage_warning']}**", ""]
    lines.append(before_after_markdown(final["a"], final["b"], final, names=("baseline", "final")))
    lines.append(
        f"n = {final['a']['n']} test images; {final['bootstrap']['n_boot']} bootstrap replicates, "
        f"seed {final['bootstrap']['seed']}; CIs are 95% percentile intervals."
    )
    lines += rescored_markdown(result["baseline_vs_final_fixed_broken"], "final")
    if "baseline_vs_final_by_skin_type" in result:
        lines += skin_type_markdown(result)
    return "\n".join(lines) + "\n"


def rescored_markdown(rescored: dict, name: str) -> list[str]:
    """The 'hard cases re-scored' subsection: the baseline's test mistakes fixed and its right answers broken."""
    return [
        "",
        f"### Hard cases re-scored: baseline → {name} (test split)",
        "",
        f"Of the test images the baseline got wrong, how many the {name} model gets right (fixed); of those it "
        "got right, how many are now wrong (broken). (fixed - broken) / n is the accuracy change on those rows, "
        "with a paired bootstrap interval.",
        "",
        fixed_broken_markdown(rescored, names=("baseline", name), group_name="skin type"),
    ]


def skin_type_markdown(result: dict) -> list[str]:
    """The per-skin-type section of the report: before → after per round, then baseline → final."""
    lines = [
        "",
        f"## {SKIN_TYPE_SECTION}",
        "",
        "Fitzpatrick type from the test split's `skin_type` column (`unknown` = not recorded). Each cell: "
        "before → after (after - before [95% CI], paired bootstrap over that type's images). "
        "A type with few images has a wide interval, or a degenerate one (zero width): read its n.",
    ]
    for summary in result["rounds"][1:]:
        lines += ["", f"### Round {summary['round']}: before → after", ""]
        lines.append(
            subgroups_to_markdown(
                summary["before_test_by_skin_type"],
                summary["test_by_skin_type"],
                summary["comparison_by_skin_type"],
                group_name="skin type",
            )
        )
    by_type = result["baseline_vs_final_by_skin_type"]
    lines += ["", "### Baseline → final", ""]
    lines.append(
        subgroups_to_markdown(group_side(by_type, "a"), group_side(by_type, "b"), by_type, group_name="skin type")
    )
    return lines


def plot_rounds(result: dict, path: str):
    """Accuracy, balanced accuracy and each class's sensitivity on the test split per round, with CIs (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rounds = [summary["round"] for summary in result["rounds"]]
    series = {
        "accuracy": [s["test"]["overall"]["accuracy"] for s in result["rounds"]],
        "balanced accuracy": [s["test"]["overall"]["balanced_accuracy"] for s in result["rounds"]],
    }
    for name in result["label_names"]:
        series[f"{name} sensitivity"] = [s["test"]["per_class"][name]["sensitivity"] for s in result["rounds"]]
    figure = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for index, (label, entries) in enumerate(series.items()):
        values = np.array([np.nan if e is None or e["value"] is None else e["value"] for e in entries], dtype=float)
        low = np.array(
            [np.nan if not e or not e.get("ci") or e["ci"][0] is None else e["ci"][0] for e in entries], dtype=float
        )
        high = np.array(
            [np.nan if not e or not e.get("ci") or e["ci"][1] is None else e["ci"][1] for e in entries], dtype=float
        )
        errors = np.nan_to_num(np.stack([values - low, high - values]), nan=0.0).clip(min=0)
        offset = (index - len(series) / 2) * 0.02
        axes.errorbar(
            np.array(rounds) + offset,
            values,
            yerr=errors,
            marker="o",
            capsize=2,
            linewidth=2.5 if index < 2 else 1.0,
            label=label,
        )
    axes.set_xticks(rounds)
    axes.set_xlabel("round (0 = baseline on real data)")
    axes.set_ylabel("test split (95% CI)")
    axes.set_ylim(-0.02, 1.02)
    title = "hard-case loop"
    if result.get("leakage_warning"):
        title += " — LEAKAGE: mined on the test split"
    axes.set_title(title)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return figure


def skin_type_rows(after: dict, before: dict | None = None, comparison: dict | None = None, names=("before", "after")):
    """report.json's per-skin-type rows: n, the overall metrics after (and before, McNemar, differences)."""
    rows = {}
    for key, entry in after.items():
        row = {"n": entry["n"], names[1]: entry["metrics"]["overall"]}
        if before is not None:
            paired_result = comparison[key]["comparison"]
            row[names[0]] = before[key]["metrics"]["overall"]
            row["mcnemar"] = paired_result["mcnemar"]
            row["difference"] = paired_result["difference"]["overall"]
        rows[key] = row
    return rows


def write_report(result: dict, output_dir: str) -> dict:
    """`report.md`, `report.json` (before/after table per round) and `metrics_per_round.png`."""
    paths = {
        name: os.path.join(output_dir, file)
        for name, file in (("markdown", "report.md"), ("json", "report.json"), ("plot", "metrics_per_round.png"))
    }
    with open(paths["markdown"], "w", encoding="utf-8") as handle:
        handle.write(report_markdown(result))
    table = []
    for summary in result["rounds"]:
        row = {
            "round": summary["round"],
            "pool": summary["pool"],
            "validation_balanced_accuracy": summary["validation_balanced_accuracy"],
            "after": dict(metric_rows(summary["test"])),
        }
        if "before_test" in summary:
            row["before"] = dict(metric_rows(summary["before_test"]))
            row["mcnemar"] = summary["comparison"]["mcnemar"]
            row["difference"] = summary["comparison"]["difference"]
            row["fixed_broken"] = summary["fixed_broken"]
        if "test_by_skin_type" in summary:
            row["by_skin_type"] = skin_type_rows(
                summary["test_by_skin_type"],
                summary.get("before_test_by_skin_type"),
                summary.get("comparison_by_skin_type"),
            )
        table.append(row)
    final = result["baseline_vs_final"]
    payload = {
        "leakage_warning": result.get("leakage_warning"),
        "stopped": result["stopped"],
        "label_names": result["label_names"],
        "rounds": table,
        "baseline_vs_final": {
            "baseline": dict(metric_rows(final["a"])),
            "final": dict(metric_rows(final["b"])),
            "mcnemar": final["mcnemar"],
            "difference": final["difference"],
            "fixed_broken": result["baseline_vs_final_fixed_broken"],
        },
    }
    if "baseline_vs_final_by_skin_type" in result:
        by_type = result["baseline_vs_final_by_skin_type"]
        payload["baseline_vs_final_by_skin_type"] = skin_type_rows(
            group_side(by_type, "b"), group_side(by_type, "a"), by_type, names=("baseline", "final")
        )
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    plot_rounds(result, paths["plot"])
    return paths


def seed_control_markdown(comparison: dict) -> str:
    """`seed_control`'s comparison as a titled before/after table."""
    title = "## Seed control: real data only with the last round's classifier seed vs the final model"
    table = before_after_markdown(comparison["a"], comparison["b"], comparison, names=comparison["names"])
    return f"\n{title}\n\n{table}"
