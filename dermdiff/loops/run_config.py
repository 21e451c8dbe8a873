"""The settings every training loop shares (run folder, length, optimiser basics, checkpoints, logging),
declared once and inherited by `DiffusionTrainingConfig`, `AutoencoderTrainingConfig` and `GANTrainingConfig`.

A loop whose default differs (the autoencoder's batch of 8, the GANs' learning rate of 5e-5) redeclares
only the default with `dermdiff.config_args.with_default`, keeping the one help text. The command-line
flags are generated from these fields (`dermdiff.config_args.add_config_arguments`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .data_flags import DATA_GROUP

OPTIMISATION = "optimisation"
RUNS = "checkpoints, validation, logging, Hub"


@dataclass
class TrainingRunConfig:
    """Settings shared by the training loops; each field's help is its documentation."""

    output_dir: str = field(metadata={"help": "Run folder: checkpoints, logs, samples and the final model.",
                                      "group": OPTIMISATION})
    seed: int = field(default=0, metadata={"help": "Seed of the initial weights, the noise and the data order.",
                                           "group": OPTIMISATION})
    train_batch_size: int = field(default=16, metadata={"help": "Images per process per update.",
                                                        "group": OPTIMISATION})
    num_epochs: int = field(default=100, metadata={"help": "Epochs (ignored when --max_train_steps is set).",
                                                   "group": OPTIMISATION})
    max_train_steps: int | None = field(default=None, metadata={"help": "Optimiser updates in total.",
                                                                "group": OPTIMISATION})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate.", "group": OPTIMISATION})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1.", "group": OPTIMISATION})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2.", "group": OPTIMISATION})
    mixed_precision: Literal["no", "fp16", "bf16"] = field(default="no", metadata={"help": "Mixed precision.",
                                                                                  "group": OPTIMISATION})
    checkpointing_steps: int = field(default=500, metadata={"help": "Save the training state every N updates.",
                                                            "group": RUNS})
    checkpoints_total_limit: int | None = field(
        default=None, metadata={"help": "Keep at most this many checkpoints (default: all).", "group": RUNS})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder.",
                                                                       "group": RUNS})
    allow_inexact_resume: bool = field(
        default=False,
        metadata={"help": "Resume past a damaged random-generator state with a warning (the run then differs "
                          "from an uninterrupted one); without it such a resume stops.", "group": RUNS})
    logging_dir: str = field(default="logs", metadata={"help": "Tracker folder inside --output_dir.", "group": RUNS})
    report_to: str | None = field(default="tensorboard",
                                  metadata={"help": "'tensorboard', 'wandb', 'all' or 'none'.", "group": RUNS})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loading worker processes.",
                                                             "group": DATA_GROUP})
    extra_tracker_config: dict = field(default_factory=dict,
                                       metadata={"help": "More run settings for the tracker (set by the face)."})

    def __post_init__(self):
        for name in ("train_batch_size", "num_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_train_steps is not None and self.max_train_steps < 1:
            raise ValueError(f"max_train_steps must be >= 1 or None, got {self.max_train_steps}")
        if not self.learning_rate > 0:  # also NaN
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.checkpointing_steps < 0:
            raise ValueError(f"checkpointing_steps must be >= 0 (0 = never), got {self.checkpointing_steps}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"checkpoints_total_limit must be >= 1 (or left out: keep all), "
                             f"got {self.checkpoints_total_limit}")
