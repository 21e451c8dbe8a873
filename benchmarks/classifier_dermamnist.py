"""ResNet-18 on DermaMNIST (28 px) on CPU: how far a few epochs get against MedMNIST+'s ~73% test accuracy.

    python benchmarks/classifier_dermamnist.py --epochs 3 --output_dir /tmp/dermamnist_resnet18

Trains `SkinClassifier(backbone="resnet18")` from random initialisation with `train_classifier` on the
official train split (7,007 images; flips + colour jitter), keeps the last epoch's weights (no model
selection on val, so the val numbers are not optimistic) and reports accuracy, balanced accuracy and
per-class sensitivity on the official val split (1,003 images) with 95% bootstrap CIs. The official
test split is not in /work/shared/data, so val is the only held-out split here.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

from dermdiff.config_args import add_config_arguments, config_from_args, with_flag
from dermdiff.loops.classifier import ClassifierTrainingConfig, evaluate_classifier, train_classifier
from dermdiff.metrics.classification import metrics_to_markdown, save_metrics

DEFAULT_NPZ = "/work/shared/data/dermamnist/dermamnist_28_from_jpeg.npz"
LABEL_NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


# this benchmark's settings where they differ from ClassifierTrainingConfig's (--help shows these): 3 epochs fit a
# CPU, batch 128 as MedMNIST used
CLASSIFIER_DEFAULTS = {"num_epochs": 3, "batch_size": 128}


@dataclass
class DermaMNISTClassifierConfig(ClassifierTrainingConfig):
    """`ClassifierTrainingConfig` under this script's flag names, `--epochs` and `--batch_size`."""

    num_epochs: int = with_flag(ClassifierTrainingConfig, "num_epochs", "epochs")
    batch_size: int = with_flag(ClassifierTrainingConfig, "batch_size", "batch_size")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--npz", default=DEFAULT_NPZ, help="DermaMNIST npz with train_/val_ images and labels.")
    add_config_arguments(parser, DermaMNISTClassifierConfig, defaults=CLASSIFIER_DEFAULTS,
                         only=("num_epochs", "batch_size", "learning_rate", "balance", "seed"))
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N training images.")
    parser.add_argument("--n_boot", type=int, default=1000, help="Bootstrap replicates.")
    parser.add_argument("--output_dir", default="/tmp/dermamnist_resnet18", help="Run folder.")
    args = parser.parse_args(argv)
    # ResNet-18 from scratch at 28 px, the last epoch's weights (no model selection on val), validated once here
    args.config = config_from_args(parser, DermaMNISTClassifierConfig, args, backbone="resnet18", resolution=28,
                                   patience=None, checkpoints_total_limit=1)
    return args


def tensor_split(arrays, split: str, limit=None) -> TensorDataset:
    images = torch.from_numpy(arrays[f"{split}_images"]).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, 28, 28)
    labels = torch.from_numpy(arrays[f"{split}_labels"].reshape(-1).astype(np.int64))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return TensorDataset(images, labels)


def main(args):
    if not os.path.isfile(args.npz):
        raise SystemExit(f"{args.npz} not found")
    arrays = np.load(args.npz)
    train, val = tensor_split(arrays, "train", args.limit), tensor_split(arrays, "val")
    config = args.config
    started = time.time()
    model, history = train_classifier(train, None, config, output_dir=args.output_dir, label_names=LABEL_NAMES)
    train_seconds = time.time() - started
    result = evaluate_classifier(model, val, n_boot=args.n_boot, seed=args.seed)
    save_metrics(result, args.output_dir, stem="metrics_val", title="ResNet-18, DermaMNIST 28 px, val split")
    summary = {
        "train_images": len(train),
        "val_images": len(val),
        "epochs": args.epochs,
        "balance": args.balance,
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / max(1, len(history["epochs"])), 1),
        "train_loss_per_epoch": [round(r["train_loss"], 4) for r in history["epochs"]],
        "val_accuracy": result["overall"]["accuracy"],
        "val_balanced_accuracy": result["overall"]["balanced_accuracy"],
        "val_macro_auc": result["overall"]["macro_auc"],
        "reference": "MedMNIST+ ResNet-18 (28 px, 100 epochs): ~0.73 test accuracy",
    }
    print(metrics_to_markdown(result))
    print(json.dumps(summary, indent=2))
    with open(os.path.join(args.output_dir, "benchmark_summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main(parse_args())
