"""The demo's one-page report (`report.html`) and its before/after summary, from what the steps wrote.

Everything on the page is read from the step markers and the files they list (the hard-case loop's
`result.json`, the evaluation's `metrics.json`), so the report can be rebuilt without rerunning anything.
Pictures are linked with paths relative to the demo folder; small images are scaled up without smoothing.
"""

from __future__ import annotations

import math
import os

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
_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dermdiff demo report</title>
<style>
:root { --ink: #1d2430; --muted: #5b6575; --line: #dde2ea; --accent: #8a3b2f; --bg: #f6f4f1; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: var(--bg);
       margin: 0; }
header { background: #2b2521; color: #f7efe8; padding: 1.6em 2em 1.2em; }
header h1 { margin: 0 0 0.2em; font-size: 1.7em; letter-spacing: 0.01em; }
header p { margin: 0; color: #d9cbbf; }
nav { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line);
      padding: 0.5em 2em; font-size: 0.9em; }
nav a { color: var(--accent); text-decoration: none; margin-right: 1.1em; }
main { max-width: 1120px; margin: 0 auto; padding: 1em 2em 3em; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 1.1em 1.5em 1.3em;
          margin: 1.3em 0; }
h2 { margin: 0 0 0.5em; font-size: 1.3em; color: var(--accent); }
h3 { margin: 1.1em 0 0.4em; font-size: 1.05em; }
p.note { color: var(--muted); font-size: 0.9em; margin: 0.3em 0 0.8em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.88em; }
th, td { border-bottom: 1px solid var(--line); padding: 0.3em 0.75em; text-align: right; white-space: nowrap; }
th { background: #f3efea; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
tr.better td.change { color: #1f6f3a; } tr.worse td.change { color: #a32a1f; }
figure { display: inline-block; margin: 0.4em 1.2em 0.8em 0; vertical-align: top; }
figcaption { color: var(--muted); font-size: 0.85em; margin-top: 0.25em; max-width: 520px; }
img { border: 1px solid var(--line); border-radius: 4px; background: #fff; }
img.px { image-rendering: pixelated; }
.cols { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.labels { display: grid; font-size: 0.72em; overflow-wrap: anywhere; line-height: 1.2; color: var(--muted);
          text-align: center; margin-bottom: 0.2em; }
.warn { color: #a32a1f; font-weight: 600; }
code { background: #f3efea; padding: 0 0.25em; border-radius: 3px; }
</style></head><body>
<header><h1>dermdiff demo report</h1>
<p>{{ "Quick run" if config.quick else "Full run" }} on the built-in phantom · seed {{ config.seed }} ·
{{ config.size }}×{{ config.size }} px · {{ total_seconds }} s of step time ·
research and education only, not a diagnostic device</p></header>
<nav><a href="#summary">Summary</a><a href="#data">Data</a><a href="#diffusion">Diffusion training</a>
<a href="#sweeps">Sweeps</a><a href="#transfer">Lesion transfer</a><a href="#classifier">Classifier</a>
<a href="#distribution">FID/KID</a><a href="#fidelity">Fidelity</a><a href="#memorisation">Memorisation</a>
<a href="#steps">Steps</a></nav>
<main>

<section id="summary"><h2>Summary</h2>
<p class="note">Classifier metrics on the untouched test split ({{ n_test }} images): the baseline trained on real
images only, and the model retrained after one round of the hard-case loop ({{ hard.hard_cases }} hard cases mined on
the mining split, {{ hard.synthetic }} synthetic images added). Brackets: 95% percentile-bootstrap intervals; change =
paired bootstrap difference (after − before) with its two-sided p-value; green / red: its whole interval lies
above / below zero.{% if config.quick %} <b>Quick run:</b> a few training steps on a tiny phantom; these numbers show
that every part runs, not how good the method is.{% endif %}
{% if leakage %} <span class="warn">{{ leakage }}</span>{% endif %}</p>
<table><tr><th>metric</th><th>baseline</th><th>after hard-case round</th><th>change</th></tr>
{% for row in summary.classifier %}<tr class="{{ row.trend }}"><td>{{ row.metric }}</td><td>{{ row.before }}</td>
<td>{{ row.after }}</td><td class="change">{{ row.change }}</td></tr>{% endfor %}</table>
<table><tr><th>generator</th><th>value</th></tr>
{% for row in summary.generator %}<tr><td>{{ row.metric }}</td><td>{{ row.value }}</td></tr>{% endfor %}</table>
</section>

<section id="data"><h2>1 · Data: an imbalanced phantom</h2>
<p class="note">{{ data.counts.images }} lesion images and {{ data.counts.healthy }} healthy photos, drawn procedurally
(so the truth is known); {{ rare|join(" and ") }} are rare on purpose ({{ (100 * config.rare_fraction)|round|int }}% of
the lesions each). Seeded splits keep the test split away from training, mining and model choice.</p>
<table><tr><th>split</th>{% for name in class_names %}<th>{{ name }}</th>{% endfor %}<th>total</th></tr>
{% for split, counts in data.split_counts.items() %}<tr><td>{{ split }}</td>{% for name in class_names %}
<td>{{ counts[name] }}</td>{% endfor %}<td>{{ counts.values()|sum }}</td></tr>{% endfor %}</table>
<figure><img class="px" src="{{ rel(data.examples) }}" width="{{ 6 * 48 }}" alt="phantom examples">
<figcaption>Real phantom images: one column per Fitzpatrick type I–VI; rows per condition and healthy skin,
each followed by its semantic map.</figcaption></figure>
</section>

<section id="diffusion"><h2>2 · Diffusion training</h2>
<p class="note">A {{ diffusion_params }} semantic-map-conditioned UNet trained for {{ diffusion.steps }} steps on
{{ diffusion.training_images }} images (training split + healthy skin) with EMA weights, classifier-free-guidance map
dropout and checkpoints every {{ config.checkpointing_steps }} steps{% if diffusion.resumed_from_step %}; resumed from
the checkpoint of step {{ diffusion.resumed_from_step }}{% endif %}. Final loss {{ fmt(diffusion.last_loss) }}.</p>
{% for grid in diffusion.validation_grids[-2:] %}
<figure><img class="px" src="{{ rel(grid) }}" width="{{ 3 * 96 }}" alt="validation grid">
<figcaption>Validation grid at step {{ step_of(grid) }} (EMA weights, fixed noise): rows = conditions
({{ class_names|join(", ") }}), columns = skin types I, III, VI.</figcaption></figure>
{% endfor %}
</section>

<section id="sweeps"><h2>3 · Sweeps</h2>
<figure><img class="px" src="{{ rel(pictures.skin_type_sweep) }}" width="{{ 6 * 80 }}" alt="skin-type sweep">
<figcaption>Skin-type sweep (DermGAN fig. 5): one melanoma map on types I → VI, the same noise in every column;
maps below.</figcaption></figure>
<figure><img class="px" src="{{ rel(pictures.size_sweep) }}" width="{{ 5 * 80 }}" alt="size sweep">
<figcaption>Size sweep (DermGAN fig. 6): the lesion box scaled ×0.5, 0.75, 1, 1.5, 2.</figcaption></figure>
{% for sweep in evaluation_sweeps.skin_type %}
<h3>Measured on the evaluation's own sweeps (a map drawn from a real image)</h3>
<table><tr><th>requested type</th>{% for row in sweep.rows %}<td>{{ row.skin_type }}</td>{% endfor %}</tr>
<tr><th>skin ITA (deg)</th>{% for row in sweep.rows %}<td>{{ fmt(row.ita, 1) }}</td>{% endfor %}</tr>
<tr><th>type read from ITA</th>{% for row in sweep.rows %}<td>{{ row.measured_type }}</td>{% endfor %}</tr></table>
{% endfor %}
{% for sweep in evaluation_sweeps.size %}
<table><tr><th>scale factor</th>{% for row in sweep.rows %}<td>{{ fmt(row.factor, 2) }}</td>{% endfor %}</tr>
<tr><th>requested area</th>{% for row in sweep.rows %}<td>{{ fmt(row.requested_area) }}</td>{% endfor %}</tr>
<tr><th>segmented area</th>{% for row in sweep.rows %}<td>{{ fmt(row.measured_area) }}</td>{% endfor %}</tr></table>
<p class="note">Spearman correlation of requested and segmented lesion area: {{ fmt(sweep.spearman) }}.</p>
{% endfor %}
</section>

<section id="transfer"><h2>4 · Lesion transfer onto healthy skin</h2>
<p class="note">Held-out healthy photos (never trained on); inside the mask the model paints each condition, outside it
the photo is kept exactly.</p>
<div class="labels" style="grid-template-columns: repeat({{ pictures.transfer_columns|length }}, 80px);
width: {{ 80 * pictures.transfer_columns|length }}px">
{% for name in pictures.transfer_columns %}<span>{{ name }}</span>{% endfor %}</div>
<img class="px" src="{{ rel(pictures.lesion_transfer) }}" width="{{ 80 * pictures.transfer_columns|length }}"
alt="lesion transfer">
</section>

<section id="classifier"><h2>5 · Classifier before and after the hard-case loop</h2>
<p class="note">{{ config.classifier_backbone or "resnet18" }} at {{ config.size }} px, {{ config.classifier_epochs }} epoch(s), class-balanced sampling.
One round:
mine what the baseline gets wrong on the mining split, generate {{ config.per_case }} image(s) per case and strategy
(map jitter, SDEdit) labelled with the true class, retrain on real + synthetic. Stopped: {{ hard.stopped }}.</p>
<div class="cols">
<figure><img src="{{ rel(hard.confusion.before) }}" width="420" alt="confusion before">
<figcaption>Baseline (real data only),
test split; rows = true class, row-normalised.</figcaption></figure>
<figure><img src="{{ rel(hard.confusion.after) }}" width="420" alt="confusion after"><figcaption>After one hard-case
round, same test split.</figcaption></figure>
</div>
<h3>Every metric, test split</h3>
<table><tr><th>metric</th><th>baseline</th><th>after</th><th>change</th></tr>
{% for row in all_classifier_rows %}<tr class="{{ row.trend }}"><td>{{ row.metric }}</td><td>{{ row.before }}</td>
<td>{{ row.after }}</td><td class="change">{{ row.change }}</td></tr>{% endfor %}</table>
<p class="note">McNemar ({{ mcnemar.method }}) on accuracy: baseline right only {{ mcnemar.b }}, retrained right only
{{ mcnemar.c }}, p = {{ fmt(mcnemar.p_value) }}. Ledger, synthetic images and the loop's own report:
<code>{{ rel(hard.folder) }}/</code>.</p>
{% if skin_type_rows %}<h3>Per Fitzpatrick skin type, test split</h3>
<table><tr><th>skin type</th><th>n</th><th>baseline balanced accuracy</th><th>after</th><th>change</th></tr>
{% for row in skin_type_rows %}<tr class="{{ row.trend }}"><td>{{ row.skin_type }}</td><td>{{ row.n }}</td>
<td>{{ row.before }}</td><td>{{ row.after }}</td><td class="change">{{ row.change }}</td></tr>{% endfor %}</table>
<p class="note">Paired bootstrap over each type's own test images; a small n gives a wide or degenerate interval.</p>
{% endif %}</section>

<section id="distribution"><h2>6 · FID / KID</h2>
{% if evaluation.distribution %}{% set d = evaluation.distribution %}
<p class="note">Offline extractor: the baseline classifier's penultimate features ("domain FD", no download);
{{ d.num_generated }} generated vs {{ d.num_reference }} real images; ± = 1.96 std over {{ d.fid.trials }}
subsamples (FID) / {{ d.kid.subsets }} subsets (KID). Numbers rank models under this extractor only; they are not
Inception FIDs.</p>
<table><tr><th>metric</th><th>value ± 95% CI</th></tr><tr><td>FID</td><td>{{ pm(d.fid) }}</td></tr>
<tr><td>KID</td><td>{{ pm(d.kid, 4) }}</td></tr></table>
<h3>FID per condition and per skin type</h3>
<div class="cols">{% for key in ("per_class", "per_skin_type") %}
<table><tr><th>{{ "condition" if key == "per_class" else "skin type" }}</th><th>generated</th><th>real</th>
<th>FID ± CI</th></tr>
{% for name, entry in (d[key] or {}).items() %}<tr><td>{{ name }}</td><td>{{ entry.num_generated }}</td>
<td>{{ entry.num_reference }}</td><td>{{ pm(entry.fid) if entry.fid else entry.skipped }}</td></tr>{% endfor %}</table>
{% endfor %}</div>
{% else %}<p>Not computed: {{ evaluation.skipped.distribution }}</p>{% endif %}
<figure><img class="px" src="{{ rel(eval_folder ~ '/figures/samples.png') }}" width="{{ 8 * 64 }}" alt="samples">
<figcaption>Evaluation samples (maps drawn from real images) above the maps they were asked for.</figcaption></figure>
</section>

<section id="fidelity"><h2>7 · Conditioning fidelity</h2>
{% set f = evaluation.fidelity %}
<div class="cols">
{% if f.classes %}<table><tr><th>requested</th><th>n</th><th>classifier agrees</th></tr>
{% for name, entry in f.classes.per_condition.items() %}<tr><td>{{ name }}</td><td>{{ entry.n }}</td>
<td>{{ fmt(entry.accuracy) }}</td></tr>{% endfor %}<tr><th>all</th><th>{{ f.classes.overall.n }}</th>
<th>{{ fmt(f.classes.overall.accuracy) }}</th></tr></table>{% endif %}
{% if f.placement and f.placement.overall %}<table><tr><th>condition</th><th>IoU mask</th><th>IoU box</th></tr>
{% for name, entry in f.placement.per_condition.items() %}<tr><td>{{ name }}</td><td>{{ fmt(entry.iou_mask) }}</td>
<td>{{ fmt(entry.iou_box) }}</td></tr>{% endfor %}<tr><th>all</th><th>{{ fmt(f.placement.overall.iou_mask) }}</th>
<th>{{ fmt(f.placement.overall.iou_box) }}</th></tr></table>{% endif %}
{% if f.skin_tone and f.skin_tone.per_type %}
<table><tr><th>skin type</th><th>n</th><th>median ITA</th><th>real ITA</th>
<th>|error|</th><th>in band</th></tr>
{% for name, entry in f.skin_tone.per_type.items() %}<tr><td>{{ name }}</td><td>{{ entry.n }}</td>
<td>{{ fmt(entry.median_ita, 1) }}</td><td>{{ fmt(entry.reference_ita, 1) }}</td>
<td>{{ fmt(entry.mean_abs_error, 1) }}</td>
<td>{{ fmt(entry.band_accuracy, 2) }}</td></tr>{% endfor %}</table>{% endif %}
</div>
<p class="note">Class: does the baseline classifier (trained on real images) name the requested condition? Placement:
the lesion segmented by colour contrast against the requested mask and box. Skin tone: ITA of the skin around the
lesion against real images of the requested Fitzpatrick type.</p>
</section>

<section id="memorisation"><h2>8 · Memorisation</h2>
{% set m = evaluation.memorisation %}
{% if m %}<p class="note">Nearest real image of each sample by pixel MSE and by domain features, scored with SSIM:
{{ m.num_flagged }} of {{ m.pairs|length }} samples have a real image with SSIM ≥ {{ m.ssim_threshold }}
(median nearest SSIM {{ fmt(m.median_nearest_ssim) }}; {{ m.settings.num_training }} real images searched).</p>
<img src="{{ rel(eval_folder ~ '/figures/nearest_pairs.png') }}" style="max-width: 100%" alt="nearest pairs">
{% else %}<p>Not computed: {{ evaluation.skipped.memorisation }}</p>{% endif %}
<p class="note">The evaluation's own full report:
<a href="{{ rel(eval_folder ~ '/report.html') }}">{{ rel(eval_folder ~ '/report.html') }}</a>.</p>
</section>

<section id="steps"><h2>Steps</h2>
<table><tr><th>step</th><th>seconds</th><th>finished</th></tr>
{% for name, marker in markers.items() %}<tr><td>{{ name }}</td><td>{{ marker.seconds }}</td>
<td>{{ when(marker.finished_at) }}</td></tr>{% endfor %}</table>
<p class="note">Rerun with <code>dermdiff demo --out {{ out }} --resume</code> to rebuild only what is missing.</p>
</section>
</main></body></html>
"""


def render_demo_report(out: str, config, markers: dict, hardcase: dict, evaluation: dict, summary: dict) -> str:
    """Writes `out/report.html` and returns its path."""
    import time

    from jinja2 import Environment, select_autoescape

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
    environment = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = environment.from_string(_TEMPLATE).render(
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
    path = os.path.join(out, "report.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(html)
    return path
