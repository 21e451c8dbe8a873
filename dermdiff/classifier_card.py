"""The model card of a trained `SkinClassifier`: what it was tested on, how well, and on which class mix.

Why its own module: a classifier card must say where its numbers come from (the internal test split,
an external test set, or only the validation split that picked the epoch) and what the splits held,
since a test split drawn from the training population can flatter a model. `dermdiff.hub` writes and
uploads the card; this module only fills it in from `training/train_classifier.py`'s results.
"""

from __future__ import annotations

from .hub import ModelCardInfo
from .metrics.classification import metrics_to_markdown

# result key -> the card's section title, in the order they are shown
TESTED_ON = {
    "test": "Internal test split",
    "external_test": "External test set",
    "validation": "Validation split (used to pick the epoch; optimistic)",
}
HEADLINE = ("accuracy", "balanced_accuracy", "macro_auc")


def class_counts_markdown(class_counts: dict) -> str:
    """Markdown table: one row per split, its size and the count of each class."""
    classes = list(next(iter(class_counts.values()))["labels"])
    lines = ["| split | n | " + " | ".join(classes) + " |", "|---|---|" + "---|" * len(classes)]
    for name, row in class_counts.items():
        lines.append(f"| {name} | {row['n']} | " + " | ".join(str(row["labels"].get(c, 0)) for c in classes) + " |")
    return "\n".join(lines)


def classifier_card_info(
    results: dict,
    history: dict,
    dataset: str,
    backbone: str,
    repo_id: str,
    external_test: str | None = None,
) -> ModelCardInfo:
    """The `ModelCardInfo` of a classifier run (`results` as returned by `train_classifier.py`'s `main`)."""
    config = history["config"]
    metrics, sections = {}, {}
    for key, title in TESTED_ON.items():
        if key not in results:
            continue
        if key == "validation" and ("test" in results or "external_test" in results):
            continue  # a test set exists: the selection split's numbers stay out of the headline
        for name in HEADLINE:
            value = results[key]["overall"][name]["value"]
            if value is not None:
                metrics[f"{key} {name}"] = value
        heading = f"{title}: {external_test}" if key == "external_test" and external_test else title
        sections[heading] = metrics_to_markdown(results[key])
    shares = results.get("composition_markdown")  # make_splits' report: share of each label/group size/column
    counts = class_counts_markdown(results["class_counts"])
    sections["Split composition"] = f"{shares}\n\nImages per class:\n\n{counts}" if shares else counts
    names = list(next(iter(results["class_counts"].values()))["labels"])
    return ModelCardInfo(
        model_type=f"SkinClassifier ({backbone})",
        dataset=dataset,
        resolution=int(config["resolution"] or 224),
        train_steps=int(history["global_step"]),
        conditions=[name for name in names if name != "unlabelled"],
        metrics=metrics,
        hyperparameters={
            "backbone": backbone,
            "pretrained": config["pretrained"],
            "epochs run": len(history["epochs"]),
            "best epoch": history["best_epoch"],
            "batch_size": config["batch_size"],
            "learning_rate": config["learning_rate"],
            "balance": config["balance"],
        },
        usage=(
            "from dermdiff.classifier import SkinClassifier\n"
            f'model = SkinClassifier.from_pretrained("{repo_id}")\n'
            "probabilities = model.predict_proba(images)  # images: (B, 3, H, W) in [-1, 1]"
        ),
        summary="A skin-lesion image classifier trained with dermdiff (diffusers ModelMixin; class names in "
        "its config). Metrics below carry 95% bootstrap intervals over test images.",
        sections=sections,
        intended_use="Research and education only: benchmarking skin-lesion classifiers and data augmentation. "
        "**Not a diagnostic device**: it must not be used to diagnose, triage or treat anyone. Its numbers hold "
        "for data like its test sets; check it on your own population (e.g. with `dermdiff classify`).",
        limitations=[
            "Trained on a small dataset; classes, skin types and image sources that are rare in it are "
            "recognised less reliably (see the per-class rows and the split composition).",
            "A test split drawn from the training population can overstate accuracy on new clinics or devices.",
        ],
    )
