"""The settings of one classifier training run, apart from the loop (`dermdiff.loops.classifier`).

Apart so that a script which only builds its flags from it (`benchmarks/latent_vs_pixel.py`) answers `--help`
without importing torch: the checks that need torch import it when a config is built. (`training/train_classifier.py`
still imports the loop at the top, and torch with it.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

BALANCE_MODES = (None, "sampler", "loss")


@dataclass
class ClassifierTrainingConfig:
    """Settings of one classifier training run; each field's help is its documentation (see `train_classifier`).

    The flags of `training/train_classifier.py` and the classifier flags of the hard-case scripts are generated
    from these fields (`dermdiff.config_args`); the backbone flags come from `dermdiff.classifier_flags`.
    """

    backbone: str = field(default="resnet18", metadata={"help": "See SkinClassifier; ignored when a model is given."})
    backbone_config: Optional[Union[dict, str]] = field(
        default=None, metadata={"help": "transformers config (see SkinClassifier)."})
    pretrained: Optional[str] = field(
        default=None, metadata={"help": "Initial weights (a local file/folder, or a download request)."})
    resolution: Optional[int] = field(default=None, metadata={
        "help": "Image side in pixels (default: the model's image_size, 224 for a new model; in the hard-case "
                "scripts the generator's)."})
    num_epochs: int = field(default=10, metadata={"help": "Maximum number of epochs."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size per process.",
                                                  "flag": "train_batch_size"})
    eval_batch_size: int = field(default=128, metadata={"help": "Batch size for validation and test."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    lr_scheduler: str = field(default="cosine", metadata={
        "help": "diffusers scheduler name (cosine, constant, linear, ...) over all planned steps."})
    lr_warmup_steps: int = field(default=0, metadata={"help": "Warm-up optimiser steps."})
    balance: Optional[str] = field(default="none", metadata={
        "help": "Class balancing: a class-balanced sampler, or class-weighted cross-entropy (n / (K n_k)).",
        "choices": ("none", "sampler", "loss")})
    augment: bool = field(default=True, metadata={"help": "Disable flips and colour jitter on training images.",
                                                  "negative_flag": "no_augment"})
    patience: Optional[int] = field(default=5, metadata={
        "help": "Epochs without a better validation balanced accuracy before stopping (0 or None: never stop early)."})
    min_epochs: int = field(default=0, metadata={
        "help": "Epochs always trained before early stopping may end the run (Lightning's min_epochs): a noisy "
                "validation curve at the start must not stop a run, or a seed control, after a few epochs."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Cross-entropy label smoothing."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, data order, sampler and augmentation."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per update."})
    mixed_precision: Literal["no", "fp16", "bf16"] = field(default="no",
                                                          metadata={"help": "accelerate mixed precision."})
    checkpoints_total_limit: Optional[int] = field(default=2, metadata={"help": "Checkpoints to keep."})
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "'latest' or a checkpoint-<step> folder."})
    allow_inexact_resume: bool = field(default=False, metadata={
        "help": "Resume past a damaged random-generator state with a warning (the run then differs from an "
                "uninterrupted one); without it such a resume stops."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    report_to: Optional[str] = field(default="none",
                                     metadata={"help": "accelerate tracker ('tensorboard' or 'none')."})

    def __post_init__(self):
        from ..classifier import check_backbone  # torch + torchvision: only when a config is built, not for --help

        check_backbone(self.backbone)
        if self.balance == "none":
            self.balance = None
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance must be None, 'sampler' or 'loss', got {self.balance!r}")
        if self.report_to == "none":
            self.report_to = None
        for name in ("num_epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patience == 0:  # 0 disables early stopping, as None does
            self.patience = None
        if self.patience is not None and self.patience < 0:
            raise ValueError(f"patience must be >= 0 (0 or None: never stop early), got {self.patience}")
        if not 0 <= self.min_epochs <= self.num_epochs:
            raise ValueError(f"min_epochs must be between 0 and num_epochs ({self.num_epochs}), got {self.min_epochs}")
        if self.resolution is not None and self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.resolution}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        from diffusers.optimization import SchedulerType

        schedulers = [kind.value for kind in SchedulerType]
        if self.lr_scheduler not in schedulers:
            raise ValueError(f"lr_scheduler {self.lr_scheduler!r} is not one of {schedulers}")
