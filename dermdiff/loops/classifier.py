"""Train, evaluate and run a `SkinClassifier`: the loop the hard-case rounds and the scripts call.

`train_classifier` is a plain function so the hard-case loop can call it once per round (fresh or
fine-tuning a given model) and `training/train_classifier.py` is only its command-line face. The loop:

1. wrap the data: any `datasets.Dataset` with `image` (PIL) and `label` (int) columns, or any torch
   `Dataset` of `(image, label)` pairs (PIL or tensor), becomes `(tensor in [-1, 1], label)` with the
   augmentations Ghorbani et al. 2020 used for their MobileNet (flips, colour jitter) on the training split only;
2. balance the classes if asked (`balance="sampler"`: class-balanced `WeightedRandomSampler`;
   `"loss"`: class-weighted cross-entropy, weight n / (K n_k));
3. train with accelerate; after each epoch measure the validation balanced accuracy, keep the best
   weights, stop after `patience` epochs without improvement (never before `min_epochs`), and save an atomic checkpoint
   (`dermdiff.loops.common`: `checkpoint-<step>` with the model as a `save_pretrained` folder plus
   this loop's early-stopping state), so `resume_from_checkpoint="latest"` continues where it stopped;
4. write the best model to `output_dir` with `save_pretrained` (label names in its config). The
   per-epoch history goes to `output_dir/history.json` after every epoch (atomically, so a run that is
   still going, or one that crashed, can be watched and plotted), and each epoch's validation scores
   are printed.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, fields, replace
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..classifier import SkinClassifier
from ..data.transforms import resize_pixels
from ..metrics.classification import classification_metrics
from .balanced_sampling import balanced_sampler, class_weights
from .classifier_config import BALANCE_MODES, ClassifierTrainingConfig  # noqa: F401  (its public home before)
from .common import (
    build_accelerator,
    epoch_batches,
    progress_bar,
    register_pretrained_hooks,
    resume,
    save_checkpoint,
    tracker_config,
    updates_per_epoch,
)

TRAINER_STATE_FILE = "trainer_state.json"
BEST_WEIGHTS_FILE = "best_model.safetensors"
HISTORY_FILE = "history.json"


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def dataset_labels(dataset) -> np.ndarray:
    """The integer labels of a dataset without decoding its images where possible."""
    if hasattr(dataset, "column_names") and "label" in dataset.column_names:
        return np.asarray(dataset["label"], dtype=np.int64)
    for attribute in ("targets", "labels"):
        if hasattr(dataset, attribute):
            return np.asarray(getattr(dataset, attribute), dtype=np.int64)
    if hasattr(dataset, "tensors") and len(dataset.tensors) >= 2:
        return dataset.tensors[1].cpu().numpy().astype(np.int64).reshape(-1)
    return np.asarray([int(_split_item(dataset[i])[1]) for i in range(len(dataset))], dtype=np.int64)


def dataset_label_names(dataset) -> Optional[list]:
    """Class names carried by a dataset (dermdiff registry, `ClassLabel`, or torchvision `classes`)."""
    features = getattr(dataset, "features", None)
    if features is not None and "label" in features:
        try:
            from ..data.info import registry_of

            return list(registry_of(dataset).names)
        except (ImportError, ValueError):
            pass
        names = getattr(features["label"], "names", None)
        if names:
            return list(names)
    classes = getattr(dataset, "classes", None)
    return list(classes) if classes else None


def split_class_counts(parts: dict, label_names: Sequence[str]) -> dict:
    """`{split: {"n": rows, "labels": {class: count}}}`: the class counts of each split, for reports and cards.

    Rows without a label (healthy skin, -1) are counted under `"unlabelled"` when there are any.
    """
    composition = {}
    for name, part in parts.items():
        labels = dataset_labels(part)
        counts = np.bincount(labels[labels >= 0], minlength=len(label_names))
        row = {"n": int(labels.size), "labels": {str(label): int(count) for label, count in zip(label_names, counts)}}
        if (labels < 0).any():
            row["labels"]["unlabelled"] = int((labels < 0).sum())
        composition[name] = row
    return composition


def _split_item(item):
    if isinstance(item, dict):
        if "image" not in item or "label" not in item:
            raise ValueError(f"dataset rows need 'image' and 'label', got columns {sorted(item)}")
        return item["image"], item["label"]
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise ValueError(
        f"dataset items must be (image, label) pairs or dicts with 'image' and 'label', got {type(item).__name__}"
    )


def image_transform(resolution: Optional[int], augment: bool):
    """PIL or tensor image -> float tensor `(3, H, W)` in [-1, 1], resized, optionally augmented.

    Tensors are taken as dermdiff images: uint8 in [0, 255] or float in [-1, 1]. The resize is the
    classifier's one (`data.transforms.resize_pixels`: the whole picture stretched, bilinear on tensors).
    """
    from torchvision.transforms import v2

    # Ghorbani et al.'s (2020) "flipping, saturation, jitters"; dermoscopic images have no canonical orientation
    pipeline = v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
    ]) if augment else None

    def transform(image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            unit = image.float() / 255.0 if image.dtype == torch.uint8 else (image.float() + 1.0) / 2.0
        else:
            unit = v2.functional.to_dtype(v2.functional.to_image(image.convert("RGB")), torch.float32, scale=True)
        if unit.ndim != 3 or unit.shape[0] != 3:
            raise ValueError(f"images must be RGB (3, H, W), got shape {tuple(unit.shape)}")
        if resolution is not None:
            unit = resize_pixels(unit, resolution)
        if pipeline is not None:
            unit = pipeline(unit)
        return unit.clamp(0.0, 1.0) * 2.0 - 1.0

    return transform


class ClassificationDataset(Dataset):
    """`(image tensor in [-1, 1], label)` view of a `datasets.Dataset` or a torch `Dataset`."""

    def __init__(self, dataset, resolution: Optional[int] = None, augment: bool = False):
        if hasattr(dataset, "column_names"):
            missing = {"image", "label"} - set(dataset.column_names)
            if missing:
                raise ValueError(f"the dataset lacks column(s) {sorted(missing)}; it has {dataset.column_names}")
            dataset = dataset.select_columns(["image", "label"])
        self.dataset = dataset
        self.transform = image_transform(resolution, augment)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = _split_item(self.dataset[index])
        return self.transform(image), int(label)


# ----------------------------------------------------------------------------------------------------
# Prediction and evaluation
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def predict(
    model: SkinClassifier,
    dataset,
    batch_size: int = 128,
    resolution: Optional[int] = None,
    progress: bool = False,
    num_workers: int = 0,
) -> dict:
    """Predictions of `model` on every item of `dataset`, in dataset order.

    Args:
        model (`SkinClassifier`): put in eval mode for the call and restored afterwards.
        dataset: a `datasets.Dataset` (`image`, `label`) or a torch `Dataset` of `(image, label)`.
        batch_size (`int`, defaults to 128).
        resolution (`int`, *optional*): default the model's `image_size`.
        progress (`bool`, defaults to `False`): show a tqdm bar over images.
        num_workers (`int`, defaults to 0): DataLoader worker processes (image decoding).

    Returns:
        `dict` of numpy arrays: `labels` `(n,)`, `predictions` `(n,)`, `probabilities` `(n, K)`.
    """
    wrapped = ClassificationDataset(dataset, resolution or model.config.image_size, augment=False)
    loader = DataLoader(wrapped, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    labels, probabilities = [], []
    bar = tqdm(total=len(wrapped), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for images, batch_labels in loader:
            probabilities.append(model.predict_proba(images.to(device)).cpu())
            labels.append(batch_labels)
            bar.update(len(batch_labels))
    finally:
        bar.close()
        model.train(was_training)
    probabilities = torch.cat(probabilities).numpy() if probabilities else np.zeros((0, model.config.num_labels))
    labels = torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64)
    return {"labels": labels, "predictions": probabilities.argmax(axis=1), "probabilities": probabilities}


def evaluate_classifier(
    model: SkinClassifier,
    dataset,
    batch_size: int = 128,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    resolution: Optional[int] = None,
) -> dict:
    """[`classification_metrics`] of `model` on `dataset` (with AUC and bootstrap CIs), class names from the model."""
    output = predict(model, dataset, batch_size=batch_size, resolution=resolution)
    return classification_metrics(
        output["labels"],
        output["predictions"],
        output["probabilities"],
        num_classes=model.config.num_labels,
        label_names=model.config.label_names,
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
    )


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------


class _EarlyStopping:
    """Best validation score, its epoch and weights, epochs since it, and the per-epoch history.

    The run stops after `patience` epochs without a better score, but never before `min_epochs` epochs are done.
    """

    SAVED_FIELDS = ("best_score", "best_epoch", "bad_epochs", "stopped", "history")

    def __init__(self, patience: Optional[int], min_epochs: int = 0):
        self.patience = patience
        self.min_epochs = min_epochs
        self.best_score = -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.stopped = False
        self.history: list = []
        self.best_weights: Optional[dict] = None

    def update(self, score: float, epoch: int, model) -> bool:
        """Records epoch `epoch`'s score; returns True when it is the best so far."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            self.best_weights = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
            return True
        self.bad_epochs += 1
        if self.patience is not None and self.bad_epochs >= self.patience and epoch + 1 >= self.min_epochs:
            self.stopped = True
        return False

    def save(self, folder: str) -> None:
        from safetensors.torch import save_file

        state = {key: getattr(self, key) for key in self.SAVED_FIELDS}
        with open(os.path.join(folder, TRAINER_STATE_FILE), "w") as handle:
            json.dump(state, handle, indent=2)
        if self.best_weights is not None:
            save_file(self.best_weights, os.path.join(folder, BEST_WEIGHTS_FILE))

    def load(self, folder: str) -> None:
        from safetensors.torch import load_file

        with open(os.path.join(folder, TRAINER_STATE_FILE)) as handle:
            state = json.load(handle)
        missing = [key for key in self.SAVED_FIELDS if key not in state] if isinstance(state, dict) else ["all"]
        if missing:
            raise ValueError(f"{os.path.join(folder, TRAINER_STATE_FILE)}: missing {missing}")
        for key in self.SAVED_FIELDS:
            setattr(self, key, state[key])
        path = os.path.join(folder, BEST_WEIGHTS_FILE)
        self.best_weights = load_file(path) if os.path.isfile(path) else None


def _resolve_label_names(label_names, model, train_dataset, labels: np.ndarray) -> list:
    if label_names is not None:
        return [str(name) for name in label_names]
    if model is not None:
        return list(model.config.label_names)
    names = dataset_label_names(train_dataset)
    if names is not None:
        return names
    return [f"class_{k}" for k in range(max(2, int(labels.max()) + 1))]


def _build_model(config: ClassifierTrainingConfig, label_names: list) -> SkinClassifier:
    return SkinClassifier(
        backbone=config.backbone,
        num_labels=len(label_names),
        label_names=label_names,
        image_size=config.resolution or 224,
        pretrained=config.pretrained,
        backbone_config=config.backbone_config,
    )


def _validation_scores(model, val_dataset, config, resolution) -> dict:
    output = predict(model, val_dataset, batch_size=config.eval_batch_size, resolution=resolution)
    result = classification_metrics(
        output["labels"], output["predictions"], num_classes=model.config.num_labels, n_boot=0
    )
    return {f"val_{key}": entry["value"] for key, entry in result["overall"].items()}


def train_classifier(
    train_dataset,
    val_dataset=None,
    config: Optional[Union[ClassifierTrainingConfig, dict]] = None,
    output_dir: str = "classifier-output",
    model: Optional[SkinClassifier] = None,
    label_names: Optional[Sequence[str]] = None,
    epoch_callback: Optional[Callable[[dict], None]] = None,
    on_checkpoint: Optional[Callable[[str], None]] = None,
    **overrides,
):
    """Trains a [`SkinClassifier`] (a new one, or fine-tunes `model`) and saves the best weights.

    Args:
        train_dataset: `datasets.Dataset` with `image` (PIL) and `label` (int), or a torch `Dataset` of
            `(image, label)` (PIL, uint8 tensor, or float tensor in [-1, 1]).
        val_dataset (*optional*): same form; drives early stopping and best-weight selection (balanced
            accuracy). Without it every epoch runs and the last weights are kept.
        config (`ClassifierTrainingConfig` or `dict`, *optional*): run settings; `overrides` replace fields.
        output_dir (`str`, defaults to `"classifier-output"`): the model (`save_pretrained`),
            `history.json`, `checkpoint-<step>` folders and logs go here.
        model (`SkinClassifier`, *optional*): fine-tune this model (trained in place) instead of building one.
        label_names (`Sequence[str]`, *optional*): class names; default the model's, else the dataset's.
        epoch_callback (`Callable[[dict], None]`, *optional*): called on the main process after each
            epoch with that epoch's record, once `history.json` holds it.
        on_checkpoint (`Callable[[str], None]`, *optional*): called on the main process with each complete
            checkpoint folder (e.g. `dermdiff.hub_sync.CheckpointPusher.checkpoint_saved` for `--hub_strategy`).

    Returns:
        `(model, history)`: the trained model on CPU/device with the best weights loaded, and a dict
        with `epochs` (one dict per epoch: losses, accuracy, validation scores, lr, seconds),
        `best_epoch`, `best_val_balanced_accuracy`, `stopped_early`, `global_step`, `config`.

    Example:
        >>> model, history = train_classifier(train, val, {"backbone": "resnet18", "resolution": 28,
        ...                                   "num_epochs": 20, "balance": "sampler"}, output_dir="out/clf")
        >>> evaluate_classifier(model, test)["overall"]["balanced_accuracy"]
    """
    if config is None:
        config = ClassifierTrainingConfig()
    elif isinstance(config, dict):
        config = ClassifierTrainingConfig(**config)
    known = {field.name for field in fields(ClassifierTrainingConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown training setting(s) {sorted(unknown)}; allowed: {sorted(known)}")
    config = replace(config, **overrides)
    if len(train_dataset) == 0:
        raise ValueError("train_dataset is empty")

    # 1. accelerator, model, label bookkeeping
    accelerator = build_accelerator(
        output_dir,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        report_to=config.report_to,
        seed=config.seed,
    )
    labels = dataset_labels(train_dataset)
    label_names = _resolve_label_names(label_names, model, train_dataset, labels)
    if model is None:
        model = _build_model(config, label_names)
    num_labels = model.config.num_labels
    if len(label_names) != num_labels or int(labels.max()) >= num_labels or int(labels.min()) < 0:
        raise ValueError(
            f"labels must lie in 0..{num_labels - 1} with {num_labels} label_names; got labels "
            f"{int(labels.min())}..{int(labels.max())} and {len(label_names)} names"
        )
    resolution = config.resolution or model.config.image_size

    # 2. data, balancing
    train_data = ClassificationDataset(train_dataset, resolution, augment=config.augment)
    sampler = None
    if config.balance == "sampler":
        sampler = balanced_sampler(labels, config.seed, num_labels)
    loader = DataLoader(
        train_data,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=config.dataloader_num_workers,
        drop_last=len(train_data) > config.batch_size,
    )
    loss_weights = None
    if config.balance == "loss":
        loss_weights = torch.as_tensor(
            class_weights(labels, num_labels), dtype=torch.float32, device=accelerator.device
        )

    # 3. optimisation
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = updates_per_epoch(len(loader), config.gradient_accumulation_steps)
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.num_epochs * steps_per_epoch * accelerator.num_processes,
    )
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)

    # 4. checkpoint hooks (model as a save_pretrained folder + early-stopping state), resume
    stopping = _EarlyStopping(config.patience, config.min_epochs)
    register_pretrained_hooks(accelerator, ["classifier"])

    def save_state_hook(models, weights, folder):
        if accelerator.is_main_process:
            stopping.save(folder)

    def load_state_hook(models, folder):
        stopping.load(folder)

    accelerator.register_save_state_pre_hook(save_state_hook)
    accelerator.register_load_state_pre_hook(load_state_hook)
    position = resume(
        accelerator, output_dir, config.resume_from_checkpoint, steps_per_epoch,
        allow_inexact_resume=config.allow_inexact_resume,
    )
    global_step = position.global_step
    if config.report_to:
        accelerator.init_trackers("train_classifier", config=tracker_config(asdict(config)))

    # 5. epochs
    unwrapped = accelerator.unwrap_model(model)
    bar = progress_bar(accelerator, config.num_epochs * steps_per_epoch, initial=global_step)
    for epoch in range(position.epoch, config.num_epochs):
        if stopping.stopped:
            break
        started = time.time()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for images, batch_labels in epoch_batches(
            accelerator, loader, epoch, position.batch_in_epoch if epoch == position.epoch else 0
        ):
            with accelerator.accumulate(model):
                logits = model(images).logits
                loss = F.cross_entropy(
                    logits, batch_labels, weight=loss_weights, label_smoothing=config.label_smoothing
                )
                accelerator.backward(loss)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            loss_sum += loss.item() * batch_labels.shape[0]
            correct += (logits.argmax(dim=1) == batch_labels).sum().item()
            seen += batch_labels.shape[0]
            if accelerator.sync_gradients:
                global_step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        record = {
            "epoch": epoch,
            "global_step": global_step,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "learning_rate": lr_scheduler.get_last_lr()[0],
        }
        if val_dataset is not None:
            record.update(_validation_scores(unwrapped, val_dataset, config, resolution))
            score = record.get("val_balanced_accuracy")
            stopping.update(-math.inf if score is None else score, epoch, unwrapped)
        else:
            stopping.update(float(epoch), epoch, unwrapped)  # no validation: the latest epoch is the best
        record["seconds"] = time.time() - started
        stopping.history.append(record)
        accelerator.log({key: value for key, value in record.items() if value is not None}, step=global_step)
        saved = save_checkpoint(accelerator, output_dir, global_step, config.checkpoints_total_limit)
        if accelerator.is_main_process and on_checkpoint is not None:
            on_checkpoint(saved)
        if accelerator.is_main_process:
            write_history(output_dir, _history(stopping, val_dataset, global_step, config))
            bar.write(epoch_summary(record))
            if epoch_callback is not None:
                epoch_callback(record)
    bar.close()

    # 6. best weights -> output_dir
    if stopping.best_weights is not None:
        unwrapped.load_state_dict(stopping.best_weights)
    history = _history(stopping, val_dataset, global_step, config)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(output_dir)
        write_history(output_dir, history)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return unwrapped, history


def _history(stopping: _EarlyStopping, val_dataset, global_step: int, config: ClassifierTrainingConfig) -> dict:
    return {
        "epochs": stopping.history,
        "best_epoch": stopping.best_epoch,
        "best_val_balanced_accuracy": stopping.best_score
        if val_dataset is not None and stopping.best_epoch >= 0
        else None,
        "stopped_early": stopping.stopped,
        "global_step": global_step,
        "config": asdict(config),
    }


def write_history(output_dir: str, history: dict) -> str:
    """Writes `output_dir/history.json` through a temporary file and `os.replace`, so a reader never sees half."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, HISTORY_FILE)
    with open(path + ".tmp", "w") as handle:
        json.dump(history, handle, indent=2)
    os.replace(path + ".tmp", path)
    return path


def epoch_summary(record: dict) -> str:
    """One printed line per epoch: training loss/accuracy and every validation score."""
    parts = [f"epoch {record['epoch']}", f"train_loss {record['train_loss']:.4f}",
             f"train_accuracy {record['train_accuracy']:.3f}"]
    parts += [f"{key} {value:.3f}" for key, value in record.items() if key.startswith("val_") and value is not None]
    return "  ".join(parts)
