"""Write a study's answers and numbers: `answers.csv`, `summary.json` and `summary.md`."""

from __future__ import annotations

import csv
import json
import os
from datetime import datetime, timezone

from .stats import summarize
from .store import StudyStore

CSV_COLUMNS = (
    "rater", "task", "unit", "prompt", "item_id", "source", "condition", "path", "answer", "response_ms", "answered_at",
)
_TASK_TITLES = {
    "select": "Select the realistic images (DermGAN): TPR = real selected / real shown, FPR = synthetic selected / synthetic shown",
    "condition": "Which images show condition X (DermGAN): recall of real and of synthetic images of X",
    "timed": "Timed real-or-synthetic (Furger): F1 with synthetic as the positive class",
}


def _fmt(stat: dict) -> str:
    if stat["mean"] is None:
        return "–"
    if stat["std"] is None:
        return f"{stat['mean']:.3f} (n={stat['raters']})"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f} (n={stat['raters']})"


_HEADERS = {
    "tpr": "TPR (real selected)", "fpr": "FPR (synthetic selected)", "recall_real": "recall, real",
    "recall_synthetic": "recall, synthetic", "false_alarm": "distractors selected", "f1": "F1", "accuracy": "accuracy",
}


def _rate_table(rates: dict, names: tuple[str, ...]) -> list[str]:
    lines = ["| condition | " + " | ".join(_HEADERS[name] for name in names) + " |", "|---" * (len(names) + 1) + "|"]
    for condition, stats in rates.items():
        lines.append(f"| {condition} | " + " | ".join(_fmt(stats[name]) for name in names) + " |")
    return lines


def summary_markdown(summary: dict) -> str:
    """A human-readable `summary.md` (mean ± sample std across raters; n = raters with data)."""
    overview = (f"Raters: {', '.join(summary['raters']) or 'none'}; answers: {summary['answers']}. "
                "Rates are mean ± sample std across raters (n = raters with data).")
    lines = ["# Human study summary", "", overview, ""]
    if summary.get("skipped"):
        lines += [f"{summary['skipped']} image(s) could not be shown to a rater and were skipped for them "
                  "(not counted as answers; the server log names each).", ""]
    for task, result in summary["tasks"].items():
        lines += [f"## {_TASK_TITLES[task]}", "",
                  f"Raters: {len(result['raters'])}; images: {result['images']}; answers: {result['answers']}.", ""]
        rates = result["rates"]
        if task == "select":
            lines += _rate_table(rates, ("tpr", "fpr"))
        elif task == "condition":
            lines += _rate_table(rates, ("recall_real", "recall_synthetic", "false_alarm"))
        else:
            lines += ["| rater | F1 (synthetic +) | F1 (real +) | accuracy | answers |", "|---|---|---|---|---|"]
            for rater, s in rates["per_rater"].items():
                values = [s["f1"], s["f1_real_positive"], s["accuracy"]]
                cells = " | ".join("–" if v is None else f"{v:.3f}" for v in values)
                lines.append(f"| {rater} | {cells} | {s['answers']} |")
            lines += ["", f"F1 across raters: {_fmt(rates['f1'])}; accuracy: {_fmt(rates['accuracy'])}.", ""]
            lines += _rate_table(rates["per_condition"], ("f1", "accuracy"))
        kappa = result["fleiss_kappa"]
        value = "undefined" if kappa["kappa"] is None else f"{kappa['kappa']:.3f}"
        unit = "(image, prompt) pairs" if task == "condition" else "images"
        lines += ["", f"Fleiss' kappa: {value} over {kappa['items']} {unit} rated by all {kappa['raters']} raters.", ""]
    return "\n".join(lines) + "\n"


def export_study(db: str, out: str) -> dict:
    """Export a study database to `out/answers.csv`, `out/summary.json` and `out/summary.md`.

    Args:
        db (`str`): the study's SQLite file.
        out (`str`): output folder (created).

    Returns:
        `dict`: the summary written to `summary.json`.

    Example:
        >>> summary = export_study("study.sqlite", "study_export")  # doctest: +SKIP
        >>> summary["tasks"]["select"]["rates"]["all"]["tpr"]["mean"]  # doctest: +SKIP
        0.52
    """
    with StudyStore(db, create=False) as store:
        rows = store.answer_rows()
        skipped = store.skipped_rows()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "answers.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            stamp = datetime.fromtimestamp(row["answered_at"], tz=timezone.utc).isoformat(timespec="milliseconds")
            writer.writerow({**row, "answered_at": stamp})
    summary = {"database": os.path.abspath(db), **summarize(rows), "skipped": len(skipped)}
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write(summary_markdown(summary))
    return summary
