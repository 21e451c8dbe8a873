"""Score a saved `SkinClassifier` on any dataset, or write its predicted probabilities.

Why: a classifier is only as good as the data it has never seen, and scoring it there should not need
glue code. `classify` takes a classifier folder (what `training/train_classifier.py` writes) and any
source `dermdiff.data.load_any` reads (an image folder, HAM10000/ISIC, a DermaMNIST npz split,
PAD-UFES-20, a `save_to_disk` folder, a Hub dataset id) and writes into `out`:

- `predictions.csv`: one row per image: its id, the probability of every class, the predicted class
  (and the true class when the data has one);
- unless `predict_only`: `metrics.json`, `metrics.md` and `metrics_confusion_matrix.png`: accuracy,
  balanced accuracy, per-class sensitivity / specificity / F1 / AUC, macro AUC, each with a bootstrap
  interval, plus a per-skin-type table where the data knows Fitzpatrick types.

Labels are matched by name, not by number: the data's classes must be among the classifier's (a test
set may lack a class; it may not bring a class the classifier never learnt), and they are renumbered
to the classifier's order. Rows without a label (healthy skin, label -1) are predicted but not scored.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Optional

import numpy as np

from .metrics.subgroups import group_key

PREDICTIONS_FILE = "predictions.csv"
ID_COLUMNS = ("image_id", "file_name")
SKIN_TYPE_COLUMN = "skin_type"


def align_labels(dataset, label_names, where: str = "the data"):
    """`dataset` with its labels renumbered to `label_names`' order, matched by class name.

    Args:
        dataset: a `datasets.Dataset` (its class names from the dermdiff registry or its `ClassLabel`)
            or any dataset without class names (then its labels are taken to be in the model's order).
        label_names (`list[str]`): the classifier's class names.
        where (`str`): how error messages name the data.

    Raises:
        ValueError: the data has a class the classifier does not know (one line with both label sets).
    """
    from .loops.classifier import dataset_label_names

    label_names = [str(name) for name in label_names]
    data_names = dataset_label_names(dataset)
    if data_names is None or list(data_names) == label_names:
        return dataset
    unknown = [name for name in data_names if name not in label_names]
    if unknown:
        raise ValueError(
            f"the classifier's label set {label_names} differs from {where}'s {list(data_names)} "
            f"({unknown} unknown to the classifier)"
        )
    import datasets

    mapping = np.array([label_names.index(name) for name in data_names], dtype=np.int64)
    old = np.asarray(dataset["label"], dtype=np.int64)
    new = np.where(old >= 0, mapping[np.clip(old, 0, None)], -1)
    feature = datasets.ClassLabel(names=label_names)
    return dataset.remove_columns("label").add_column("label", new.tolist()).cast_column("label", feature)


def image_ids(dataset) -> list:
    """A stable id per row: `image_id`, else `file_name`, else the row number."""
    columns = getattr(dataset, "column_names", None) or []
    for name in ID_COLUMNS:
        if name in columns:
            return [str(value) for value in dataset[name]]
    return [str(index) for index in range(len(dataset))]


def skin_types(dataset) -> Optional[list]:
    """The Fitzpatrick type of each row, or None when the data has none known."""
    if SKIN_TYPE_COLUMN not in (getattr(dataset, "column_names", None) or []):
        return None
    values = dataset[SKIN_TYPE_COLUMN]
    if all(group_key(value) == "unknown" for value in values):
        return None
    return values


def write_predictions(path: str, ids, probabilities: np.ndarray, label_names, labels=None) -> str:
    """`predictions.csv`: id, `p_<class>` per class, `predicted`, and `label` when known."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    predicted = probabilities.argmax(axis=1)
    header = ["image_id"] + [f"p_{name}" for name in label_names] + ["predicted"]
    if labels is not None:
        header.append("label")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row, identifier in enumerate(ids):
            cells = [identifier] + [f"{value:.6f}" for value in probabilities[row]] + [label_names[predicted[row]]]
            if labels is not None:
                cells.append(label_names[labels[row]] if labels[row] >= 0 else "")
            writer.writerow(cells)
    return path


def classify(
    classifier,
    data,
    out: str,
    loader_kwargs: Optional[dict] = None,
    predict_only: bool = False,
    batch_size: int = 128,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    device: Optional[str] = None,
    num_workers: int = 0,
    progress: bool = True,
) -> dict:
    """Predicts every image of `data` with `classifier`; scores the predictions unless `predict_only`.

    Args:
        classifier (`str` or `SkinClassifier`): a `save_pretrained` folder, or the model itself.
        data (`str` or `datasets.Dataset`): anything `dermdiff.data.load_any` reads, or a loaded dataset.
        out (`str`): output folder (created).
        loader_kwargs (`dict`, *optional*): options for the data's loader (e.g. `{"split": "test"}`).
        predict_only (`bool`, defaults to `False`): write `predictions.csv` only (labels are not compared).
        batch_size (`int`, defaults to 128), num_workers (`int`, defaults to 0): prediction batches.
        n_boot (`int`, defaults to 1000), confidence (`float`, defaults to 0.95), seed (`int`, defaults to 0):
            the bootstrap intervals, as in `classification_metrics`.
        device (`str`, *optional*): default CUDA when available, else CPU.
        progress (`bool`, defaults to `True`): a tqdm bar over images.

    Returns:
        `dict` with `paths` (written files), `n`, and unless `predict_only` the `metrics`
        (a `classification_metrics` result, with `by_skin_type` when the data knows skin types).

    Example:
        >>> result = classify("outputs/classifier", "/data/ham10000", "eval/ham", loader_kwargs={"size": 64})
        >>> result["metrics"]["overall"]["balanced_accuracy"]
    """
    import torch

    from .classifier import SkinClassifier
    from .loops.classifier import predict
    from .metrics.classification import classification_metrics, metrics_to_markdown, save_metrics
    from .metrics.subgroups import metrics_by_group, subgroups_to_markdown

    # 1. model and data, labels matched by name before any image is read
    model = classifier if isinstance(classifier, SkinClassifier) else load_classifier(classifier)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data_name = data if isinstance(data, str) else "the data"
    if isinstance(data, str):
        from .data import load_any

        data = load_any(data, **(loader_kwargs or {}))
    if len(data) == 0:
        raise ValueError(f"{data_name} has no rows to classify")
    names = model.label_names
    if not predict_only:
        data = align_labels(data, names, where=str(data_name))

    # 2. one pass of prediction; every row goes into predictions.csv
    output = predict(model, data, batch_size=batch_size, progress=progress, num_workers=num_workers)
    labels = None if predict_only else output["labels"]
    paths = {"predictions": write_predictions(
        os.path.join(out, PREDICTIONS_FILE), image_ids(data), output["probabilities"], names, labels
    )}
    result = {"paths": paths, "n": int(len(data))}
    if predict_only:
        return result

    # 3. metrics on the labelled rows, overall and per skin type
    scored = labels >= 0
    if not scored.any():
        raise ValueError(f"{data_name} has no labelled rows to score; use predict_only for unlabelled data")
    common = dict(num_classes=len(names), label_names=names, n_boot=n_boot, confidence=confidence, seed=seed)
    y_true, y_pred, y_prob = labels[scored], output["predictions"][scored], output["probabilities"][scored]
    metrics = classification_metrics(y_true, y_pred, y_prob, **common)
    if not scored.all():
        metrics["notes"].append(f"{int((~scored).sum())} rows without a label (healthy skin) were not scored")
    types = skin_types(data)
    if types is not None:
        types = [value for value, keep in zip(types, scored) if keep]
        metrics["by_skin_type"] = metrics_by_group(y_true, y_pred, y_prob, types, **common)
    title = f"{_name(classifier)} on {data_name}"
    paths.update(save_metrics(metrics, out, stem="metrics", title=title))
    if types is not None:
        table = subgroups_to_markdown(metrics["by_skin_type"], group_name="Fitzpatrick skin type")
        with open(paths["markdown"], "a", encoding="utf-8") as handle:
            handle.write(f"\n## Per skin type\n\n{table}")
    result["metrics"] = metrics
    result["markdown"] = metrics_to_markdown(metrics)
    return result


def load_classifier(path: str):
    """`SkinClassifier.from_pretrained(path)`, with a one-line error for a folder that is not one."""
    from .classifier import SkinClassifier

    config_path = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path!r} is not a classifier folder: no config.json (train one with "
                                "training/train_classifier.py, which writes it with save_pretrained)")
    with open(config_path) as handle:
        class_name = json.load(handle).get("_class_name")
    if class_name != "SkinClassifier":
        raise ValueError(f"{config_path} describes a {class_name!r}, not a SkinClassifier")
    return SkinClassifier.from_pretrained(path).eval()


def _name(classifier) -> str:
    return os.path.basename(os.path.normpath(classifier)) if isinstance(classifier, str) else "classifier"
