"""The evaluation report: one self-contained folder with `report.html`, `metrics.json` and `figures/`.

Figures are PNG files next to the HTML (relative links), so the folder can be zipped, attached to a model
card or opened offline. Every number appears with the feature extractor and settings that produced it.

Also here: `plot_discriminator_gap`, the discriminator-overfitting monitor of Furger et al. 2020 (figure 6): the mean
discriminator output on training minus held-out real images over training. A growing gap means the
discriminator memorises its training images.
"""

from __future__ import annotations

import json
import math
import os
from typing import Sequence

import numpy as np

from ..html_report import render_page
from .floor import floor_text

SECTIONS = ("settings", "samples", "distribution", "fidelity", "sweeps", "memorisation", "discriminator")


# ----------------------------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------------------------
def plot_discriminator_gap(log: Sequence[dict], path: str | None = None, title: str = "discriminator overfitting"):
    """Mean D output on training vs held-out real images over training, and their gap (Furger et al. 2020, figure 6).

    Args:
        log (`Sequence[dict]`): entries `{"step": int, "d_train": float, "d_heldout": float}` (any order).
        path (`str`, *optional*): save the figure as PNG here.
        title (`str`): figure title.

    Returns:
        the matplotlib `Figure`.

    Example:
        >>> log.append({"step": step, "d_train": d(real_train).mean().item(), "d_heldout": d(real_val).mean().item()})
        >>> plot_discriminator_gap(log, "d_gap.png")
    """
    from matplotlib.figure import Figure

    if not log:
        raise ValueError("the discriminator log is empty")
    for entry in log:
        missing = {"step", "d_train", "d_heldout"} - set(entry)
        if missing:
            raise ValueError(f"log entry {entry} lacks {sorted(missing)}; each needs step, d_train, d_heldout")
    entries = sorted(log, key=lambda entry: entry["step"])
    steps = [entry["step"] for entry in entries]
    train = np.array([entry["d_train"] for entry in entries], dtype=float)
    heldout = np.array([entry["d_heldout"] for entry in entries], dtype=float)
    figure = Figure(figsize=(6, 3.5))
    ax = figure.subplots()
    ax.plot(steps, train, label="D(real, training)")
    ax.plot(steps, heldout, label="D(real, held out)")
    ax.plot(steps, train - heldout, label="gap (training - held out)", color="black", linestyle="--")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("mean discriminator output")
    ax.set_title(title)
    ax.legend(fontsize=8)
    figure.tight_layout()
    if path:
        figure.savefig(path, dpi=100)
    return figure


def plot_group_fid(groups: dict, title: str, path: str):
    """Bar chart of per-group FID with its 95% interval (groups that were skipped are left out)."""
    from matplotlib.figure import Figure

    names = [name for name, entry in groups.items() if "fid" in entry]
    figure = Figure(figsize=(max(3.0, 0.8 * len(names) + 1.5), 3.2))
    ax = figure.subplots()
    if names:
        values = [groups[name]["fid"]["value"] for name in names]
        errors = [_finite(groups[name]["fid"]["ci95"]) for name in names]
        ax.bar(range(len(names)), values, yerr=errors, capsize=3, color="#7a9cc6")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("FID (± 1.96 std)")
    ax.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _finite(value) -> float:
    return 0.0 if value is None or not math.isfinite(value) else float(value)


# ----------------------------------------------------------------------------------------------------------------
# json + html
# ----------------------------------------------------------------------------------------------------------------
def to_jsonable(value):
    """NaN/inf -> None and numpy scalars -> Python, so `metrics.json` is strict JSON."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _ci(entry: dict | None, digits: int = 3) -> str:
    if not entry:
        return "–"
    return f"{_fmt(entry.get('value'), digits)} ± {_fmt(entry.get('ci95'), digits)}"




def render_report(metrics: dict, figures: dict, out_dir: str, sweeps: dict | None = None,
                  discriminator_gap: dict | None = None) -> str:
    """Writes `out_dir/report.html` (`dermdiff/templates/evaluation_report.html`) and `out_dir/metrics.json`; returns the HTML path.

    Args:
        metrics (`dict`): what `evaluate` measured (keys `settings`, `distribution`, `fidelity`, `sweeps`,
            `memorisation`, `skipped`).
        figures (`dict`): figure name -> path relative to `out_dir`.
        sweeps (`dict`, *optional*): `{"skin_type": [...], "size": [...]}` with `id`, `figure`, `scores`.
        discriminator_gap (`dict`, *optional*): last logged gap per discriminator name.
    """
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.json"), "w") as handle:
        json.dump(to_jsonable(metrics), handle, indent=2, allow_nan=False)
    distribution = metrics.get("distribution")
    if distribution:
        extractor = distribution["extractor"]
        distribution = {**distribution,
                        "extractor_text": ", ".join(f"{k}={v}" for k, v in extractor.items() if k != "name"),
                        "cache_text": _cache_text(distribution.get("reference_cache")),
                        "floor_text": floor_text(distribution.get("floor")),
                        "floor_matched_text": floor_text((distribution.get("floor") or {}).get("at_generated_size"))}
    return render_page(
        "evaluation_report.html", os.path.join(out_dir, "report.html"),
        settings=metrics.get("settings", {}), distribution=distribution, fidelity=metrics.get("fidelity", {}),
        memorisation=metrics.get("memorisation"), skipped=metrics.get("skipped", {}), figures=figures,
        sweeps=sweeps or {"skin_type": [], "size": []}, discriminator_gap=discriminator_gap,
        random_init=bool(distribution and distribution["extractor"].get("random_init")), fmt=_fmt, ci=_ci,
    )


def _cache_text(info: dict | None) -> str:
    if not info:
        return "not cached"
    return f"{'loaded from' if info['hit'] else 'computed and cached in'} {info['path']}"
