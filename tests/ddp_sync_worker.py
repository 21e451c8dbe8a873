"""Run under `accelerate launch` by test_train_diffusion: trains 4 steps, then each rank reports its replica.

Usage: ddp_sync_worker.py MODEL_CONFIG_JSON OUTPUT_DIR [RESUME]. Writes OUTPUT_DIR/rank-<i>.json with the world size,
the distributed type, a float64 checksum of the parameters before and after, and the images of its first batch.
"""

import json
import os
import sys

import torch
from diffusers import DDPMScheduler

from dermdiff.conditions import get_registry
from dermdiff.data.info import registry_of
from dermdiff.data.phantom import phantom_dataset
from dermdiff.loops import common
from dermdiff.loops.diffusion import DiffusionExamples, DiffusionTrainingConfig, train_diffusion
from dermdiff.models.semantic_unet import SemanticUNet2DModel


class RecordingDataset(torch.utils.data.Dataset):
    """Remembers which rows this process loaded, in order."""

    def __init__(self, dataset):
        self.dataset, self.seen = dataset, []

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.seen.append(int(index))
        return self.dataset[int(index)]


def checksum(model) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def main(model_config: str, output_dir: str, resume: str | None = None) -> None:
    rows = phantom_dataset(n=16, size=16, seed=0)
    registry = registry_of(rows)
    data = RecordingDataset(rows.with_transform(DiffusionExamples(registry, 16)))
    with open(model_config) as handle:
        unet = SemanticUNet2DModel(sample_size=16, **json.load(handle), **get_registry("phantom").model_kwargs())
    config = DiffusionTrainingConfig(
        output_dir=output_dir, train_batch_size=2, max_train_steps=4, lr_warmup_steps=1, use_ema=False,
        checkpointing_steps=2, validation_steps=0, report_to=None, seed=0, resume_from_checkpoint=resume,
    )
    accelerator = common.build_accelerator(output_dir, report_to=None, seed=0)
    initial = checksum(unet)
    run = train_diffusion(unet, DDPMScheduler(num_train_timesteps=100), data, config, accelerator=accelerator)
    report = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "steps": run.global_step,
        "initial_checksum": initial,
        "checksum": checksum(unet),
        "first_batch_ids": data.seen[:2],
    }
    with open(os.path.join(output_dir, f"rank-{accelerator.process_index}.json"), "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
