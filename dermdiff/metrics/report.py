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
from PIL import Image

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


def image_grid(rows: Sequence[Sequence], cell: int = 96) -> Image.Image:
    """Pastes rows of images (PIL or arrays; maps included) into one picture, each cell `cell` px square."""
    width = max(len(row) for row in rows) * cell
    grid = Image.new("RGB", (max(width, cell), len(rows) * cell), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
            grid.paste(pil.convert("RGB").resize((cell, cell), Image.NEAREST), (c * cell, r * cell))
    return grid


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


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dermdiff evaluation</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; } .warn { color: #a00; font-weight: bold; }
code { background: #f5f5f5; padding: 0 0.2em; } section { margin-bottom: 2.5em; }
</style></head><body>
<h1>dermdiff evaluation</h1>

<section id="settings"><h2>Settings</h2>
<table>
{% for key, value in settings.items() %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>{% endfor %}
</table>
{% if random_init %}<p class="warn">The feature extractor has random weights: its FID/KID only rank models evaluated
with the same extractor and are not comparable with published numbers.</p>{% endif %}
</section>

<section id="samples"><h2>Samples</h2>
<p>Generated images (top of each pair of rows) and the semantic maps they were asked for.</p>
{% if figures.samples %}<img src="{{ figures.samples }}" alt="samples">{% endif %}
</section>

<section id="distribution"><h2>Distribution metrics</h2>
{% if distribution %}
<p>Extractor <code>{{ distribution.extractor.name }}</code> ({{ distribution.extractor_text }}), resolution
{{ distribution.resolution }}, {{ distribution.num_generated }} generated vs {{ distribution.num_reference }}
real images.
Intervals: ± 1.96 std over {{ distribution.fid.trials }} subsamples of {{ distribution.fid.subset_size }} images (FID)
and over {{ distribution.kid.subsets }} subsets of {{ distribution.kid.subset_size }} (KID).
Reference features: {{ distribution.cache_text }}.</p>
<table><tr><th>metric</th><th>value ± 95% CI</th></tr>
<tr><td>FID</td><td>{{ ci(distribution.fid) }}</td></tr>
<tr><td>real-vs-real floor (FID of real against real)</td><td>{{ distribution.floor_text }}</td></tr>
{% if distribution.floor and distribution.floor.at_generated_size %}<tr><td>real-vs-real floor at the samples'
size</td><td>{{ distribution.floor_matched_text }}</td></tr>{% endif %}
<tr><td>KID</td><td>{{ ci(distribution.kid, 4) }}</td></tr></table>
{% for title, key in [("per condition", "per_class"), ("per Fitzpatrick type", "per_skin_type")] %}
<h3>FID {{ title }}</h3>
{% if distribution[key] %}
<table><tr><th>group</th><th>generated</th><th>real</th><th>FID ± 95% CI</th></tr>
{% for name, entry in distribution[key].items() %}<tr><td>{{ name }}</td><td>{{ entry.num_generated }}</td>
<td>{{ entry.num_reference }}</td><td>{{ ci(entry.fid) if entry.fid else entry.skipped }}</td></tr>{% endfor %}
</table>
{% else %}<p>No generated image carries this information.</p>{% endif %}
{% if figures[key] %}<img src="{{ figures[key] }}" alt="FID {{ title }}">{% endif %}
{% endfor %}
{% else %}<p>Not computed: {{ skipped.distribution }}</p>{% endif %}
</section>

<section id="fidelity"><h2>Conditioning fidelity</h2>
<h3>Class fidelity</h3>
{% if fidelity.classes %}
<p>A classifier trained on real data labels the generated images; accuracy per requested condition
(overall {{ fmt(fidelity.classes.overall.accuracy) }} on {{ fidelity.classes.overall.n }} images).</p>
<table><tr><th>requested</th><th>n</th><th>accuracy</th><th>predicted as</th></tr>
{% for name, entry in fidelity.classes.per_condition.items() %}<tr><td>{{ name }}</td><td>{{ entry.n }}</td>
<td>{{ fmt(entry.accuracy) }}</td><td>{{ entry.predicted }}</td></tr>{% endfor %}</table>
{% else %}<p>Not computed: {{ skipped.classes }}</p>{% endif %}
<h3>Placement</h3>
{% if fidelity.placement and fidelity.placement.overall %}
<p>Lesion segmented in each sample ({{ fidelity.segmenter }}) against the requested mask and box.</p>
<table><tr><th>condition</th><th>n</th><th>IoU (mask)</th><th>IoU (box)</th></tr>
{% for name, entry in fidelity.placement.per_condition.items() %}<tr><td>{{ name }}</td><td>{{ entry.n }}</td>
<td>{{ fmt(entry.iou_mask) }}</td><td>{{ fmt(entry.iou_box) }}</td></tr>{% endfor %}
<tr><th>all</th><th>{{ fidelity.placement.overall.n }}</th><th>{{ fmt(fidelity.placement.overall.iou_mask) }}</th>
<th>{{ fmt(fidelity.placement.overall.iou_box) }}</th></tr></table>
{% else %}<p>No sample asked for a lesion.</p>{% endif %}
<h3>Skin tone (ITA of the non-lesion skin)</h3>
{% if fidelity.skin_tone and fidelity.skin_tone.per_type %}
<table><tr><th>requested type</th><th>n</th><th>median ITA</th><th>reference ITA</th><th>reference</th>
<th>error</th><th>mean |error|</th><th>in the type's ITA band</th></tr>
{% for name, entry in fidelity.skin_tone.per_type.items() %}<tr><td>{{ name }}</td><td>{{ entry.n }}</td>
<td>{{ fmt(entry.median_ita, 1) }}</td><td>{{ fmt(entry.reference_ita, 1) }}</td><td>{{ entry.reference }}</td>
<td>{{ fmt(entry.error, 1) }}</td><td>{{ fmt(entry.mean_abs_error, 1) }}</td>
<td>{{ fmt(entry.band_accuracy) }}</td></tr>{% endfor %}
</table>
{% else %}<p>No sample asked for a known skin type.</p>{% endif %}
</section>

<section id="sweeps"><h2>Sweeps</h2>
{% for sweep in sweeps.skin_type %}
<h3>Skin-type sweep {{ sweep.id }} (DermGAN figure 5)</h3><img src="{{ sweep.figure }}" alt="skin-type sweep">
<table><tr><th>requested type</th>{% for row in sweep.scores.rows %}<td>{{ row.skin_type }}</td>{% endfor %}</tr>
<tr><th>ITA</th>{% for row in sweep.scores.rows %}<td>{{ fmt(row.ita, 1) }}</td>{% endfor %}</tr>
<tr><th>type read from ITA</th>{% for row in sweep.scores.rows %}<td>{{ row.measured_type }}</td>{% endfor %}</tr>
</table>
<p>ITA falls with every darker type: {{ sweep.scores.monotonic }}</p>
{% endfor %}
{% for sweep in sweeps.size %}
<h3>Size sweep {{ sweep.id }} (DermGAN figure 6)</h3><img src="{{ sweep.figure }}" alt="size sweep">
<table><tr><th>scale factor</th>{% for row in sweep.scores.rows %}<td>{{ fmt(row.factor, 2) }}</td>{% endfor %}</tr>
<tr><th>requested area</th>{% for row in sweep.scores.rows %}<td>{{ fmt(row.requested_area) }}</td>{% endfor %}</tr>
<tr><th>segmented area</th>{% for row in sweep.scores.rows %}<td>{{ fmt(row.measured_area) }}</td>{% endfor %}</tr>
<tr><th>IoU</th>{% for row in sweep.scores.rows %}<td>{{ fmt(row.iou_mask) }}</td>{% endfor %}</tr></table>
<p>Spearman correlation of requested and segmented area: {{ fmt(sweep.scores.spearman) }}</p>
{% endfor %}
{% if not sweeps.skin_type and not sweeps.size %}<p>No sweeps in this evaluation.</p>{% endif %}
</section>

<section id="memorisation"><h2>Memorisation (nearest training images)</h2>
{% if memorisation %}
<p>{{ memorisation.num_flagged }} of {{ memorisation.pairs|length }} samples
({{ fmt(100 * memorisation.share_flagged, 1) }}%) have a training image with SSIM ≥ {{ memorisation.ssim_threshold }}
(median nearest SSIM {{ fmt(memorisation.median_nearest_ssim) }},
median nearest MSE {{ fmt(memorisation.median_nearest_mse, 4) }};
{{ memorisation.settings.num_training }} training images searched at {{ memorisation.settings.size }} px).</p>
{% if figures.memorisation %}<img src="{{ figures.memorisation }}" alt="nearest pairs">{% endif %}
{% else %}<p>Not computed: {{ skipped.memorisation }}</p>{% endif %}
</section>

<section id="discriminator"><h2>Discriminator overfitting</h2>
{% if figures.discriminator %}{% for figure in figures.discriminator %}<img src="{{ figure }}" alt="discriminator gap">
{% endfor %}<p>Last logged gap (training - held out):
{% for name, value in discriminator_gap.items() %}{{ name }} {{ fmt(value) }}{% if not loop.last %}, {% endif %}
{% endfor %}</p>
{% else %}<p>No GAN discriminator log given (<code>--gan-log</code>).</p>{% endif %}
</section>
</body></html>
"""


def render_report(metrics: dict, figures: dict, out_dir: str, sweeps: dict | None = None,
                  discriminator_gap: dict | None = None) -> str:
    """Writes `out_dir/report.html` (jinja2) and `out_dir/metrics.json`; returns the HTML path.

    Args:
        metrics (`dict`): what `evaluate` measured (keys `settings`, `distribution`, `fidelity`, `sweeps`,
            `memorisation`, `skipped`).
        figures (`dict`): figure name -> path relative to `out_dir`.
        sweeps (`dict`, *optional*): `{"skin_type": [...], "size": [...]}` with `id`, `figure`, `scores`.
        discriminator_gap (`dict`, *optional*): last logged gap per discriminator name.
    """
    from jinja2 import Environment, select_autoescape

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
    environment = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = environment.from_string(_TEMPLATE).render(
        settings=metrics.get("settings", {}), distribution=distribution, fidelity=metrics.get("fidelity", {}),
        memorisation=metrics.get("memorisation"), skipped=metrics.get("skipped", {}), figures=figures,
        sweeps=sweeps or {"skin_type": [], "size": []}, discriminator_gap=discriminator_gap,
        random_init=bool(distribution and distribution["extractor"].get("random_init")), fmt=_fmt, ci=_ci,
    )
    path = os.path.join(out_dir, "report.html")
    with open(path, "w") as handle:
        handle.write(html)
    return path


def _cache_text(info: dict | None) -> str:
    if not info:
        return "not cached"
    return f"{'loaded from' if info['hit'] else 'computed and cached in'} {info['path']}"
