"""`dermdiff demo`: the whole story on the built-in phantom, one function per step, top to bottom.

1. `write_data`: a phantom dataset, imbalanced on purpose (two rare conditions at 5%), plus healthy skin;
2. `train_generator`: a small `DermDiffPipeline` (EMA, checkpoints) trained in-process with accelerate;
3. `make_pictures`: the skin-type sweep, the size sweep and a lesion transfer onto healthy skin;
4. `hard_case_round`: baseline classifier, one round of the hard-case loop (mine, generate, retrain);
5. `evaluate_generator`: FID/KID with the baseline classifier's features ("domain FD"), conditioning
   fidelity, memorisation;
6. `write_report`: `report.html` gathering every picture and table, and a printed before/after summary.

Every step ends by writing `markers/<step>.json` (finish time, seconds, outputs). `run_demo(..., resume=True)`
skips the steps that have a marker, up to the first that must run (every later step then runs too, since its
inputs may have changed); the diffusion step also restarts from its newest checkpoint, so an interrupted demo
continues where it stopped. A rerun without `resume` refuses an existing folder unless
`overwrite` (which deletes only a folder that holds a demo's `demo.json`).

The data splits (`make_splits`, seeded) give the diffusion model and the classifiers the same training rows;
the test split is never trained on, mined on, or used to choose anything.

Example:
    >>> from dermdiff.demo import demo_config, run_demo
    >>> summary = run_demo(demo_config(quick=True), "outputs/demo-quick", overwrite=True)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Optional

import numpy as np

from .demo_report import RARE_CONDITIONS
from .pipelines.generation_settings import GenerationSettings

MARKER_DIR = "markers"
DEMO_FILE = "demo.json"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of every step; `demo_config()` gives the ~15-minute default, `demo_config(quick=True)` ~2 minutes.

    Args:
        seed (`int`, defaults to 0): the one seed (phantom, splits, training, sampling, bootstrap).
        num_images (`int`), size (`int`), rare_fraction (`float`), healthy_fraction (`float`): the phantom.
        block_out_channels (`tuple[int]`), attention (`bool`): the UNet (attention in its last block or none).
        train_steps, batch_size, learning_rate, checkpointing_steps, validation_steps: diffusion training.
        generation (`GenerationSettings`): how every step of the demo samples the diffusion model (20 DDIM steps,
            guidance 2.0; the hard-case round's SDEdit strength, map jitter and batch are the defaults).
        transfer_photos (`int`): held-out healthy photos the lesion transfer paints on.
        classifier_epochs (`int`), classifier_batch_size (`int`): the classifiers' training.
        classifier_backbone (`str`, defaults to `"resnet18"`), classifier_pretrained (`str`, *optional*): any
            backbone `SkinClassifier` builds (a torchvision name, a transformers Hub id or folder) and its
            initial weights (see `dermdiff.classifier`).
        per_case (`int`), max_cases (`int`): images per hard case, hard cases per round.
        eval_images (`int`), fid_trials (`int`), memorisation_images (`int`), n_boot (`int`): evaluation sizes.
    """

    seed: int = 0
    quick: bool = False
    num_images: int = 1500
    size: int = 32
    rare_fraction: float = 0.05
    healthy_fraction: float = 0.1
    block_out_channels: tuple = (32, 64, 64)
    attention: bool = True
    train_steps: int = 1500
    batch_size: int = 16
    learning_rate: float = 1e-3
    checkpointing_steps: int = 250
    validation_steps: int = 500
    generation: GenerationSettings = GenerationSettings(num_inference_steps=20, guidance_scale=2.0)
    transfer_photos: int = 4
    classifier_epochs: int = 10
    classifier_batch_size: int = 32
    classifier_backbone: str = "resnet18"
    classifier_pretrained: Optional[str] = None
    per_case: int = 3
    max_cases: int = 40
    eval_images: int = 150
    fid_trials: int = 20
    memorisation_images: int = 2000
    n_boot: int = 500


QUICK = dict(quick=True, num_images=160, size=16, block_out_channels=(8, 16), attention=False, train_steps=12,
             batch_size=16, checkpointing_steps=6, validation_steps=12, transfer_photos=2,
             generation=GenerationSettings(num_inference_steps=4, guidance_scale=2.0),
             classifier_epochs=1, per_case=1, max_cases=6, eval_images=12, fid_trials=3, memorisation_images=48,
             n_boot=50)


def demo_config(quick: bool = False, **overrides) -> DemoConfig:
    """The default (or `quick`) demo settings with `overrides` replacing fields."""
    config = DemoConfig(**QUICK) if quick else DemoConfig()
    config = replace(config, **overrides)
    if config.num_images < 50 or config.train_steps < 1 or config.size < 16:
        raise ValueError(f"the demo needs num_images >= 50, train_steps >= 1 and size >= 16, got {config}")
    return config


# ----------------------------------------------------------------------------------------------------------------
# folders, markers and the splits every step shares
# ----------------------------------------------------------------------------------------------------------------
def paths(out: str) -> dict:
    """Where each step writes (relative names are what the report links to)."""
    return {name: os.path.join(out, name) for name in
            ("data", "diffusion", "pictures", "hardcase", "evaluation", MARKER_DIR)}


def marker_path(out: str, step: str) -> str:
    return os.path.join(out, MARKER_DIR, f"{step}.json")


def read_marker(out: str, step: str) -> Optional[dict]:
    """The step's completion record, or None if the step has not finished."""
    path = marker_path(out, step)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_marker(out: str, step: str, seconds: float, outputs: dict) -> dict:
    """Written last, atomically: a marker means every output it lists is complete."""
    from .metrics.report import to_jsonable

    record = {"step": step, "finished_at": time.time(), "seconds": round(seconds, 1), "outputs": to_jsonable(outputs)}
    os.makedirs(os.path.join(out, MARKER_DIR), exist_ok=True)
    path = marker_path(out, step)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    os.replace(path + ".tmp", path)
    return record


def prepare_folder(out: str, config: DemoConfig, resume: bool, overwrite: bool) -> None:
    """Creates `out` (or checks it can be resumed / replaced) and records the settings in `demo.json`."""
    if resume and overwrite:
        raise ValueError("give --resume (continue the demo in --out) or --overwrite (start it again), not both")
    settings_file = os.path.join(out, DEMO_FILE)
    is_demo = os.path.isfile(settings_file)
    if os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"--out {out} is a file, not a folder")
    occupied = os.path.isdir(out) and bool(os.listdir(out))
    if occupied and not is_demo and (resume or overwrite):
        raise FileExistsError(f"{out} is not empty and holds no {DEMO_FILE}: not a demo folder, so it is left alone")
    if occupied and resume:
        with open(settings_file, encoding="utf-8") as handle:
            before = json.load(handle)["config"]
        now = json.loads(json.dumps(asdict(config)))
        if before != now:
            changed = sorted(key for key in now if before.get(key) != now[key])
            raise ValueError(f"{out} was started with other settings ({', '.join(changed)} differ); "
                             f"rerun with the same flags, or use --overwrite to start again")
        return
    if occupied and not overwrite:
        raise FileExistsError(
            f"{out} already exists; add --resume to continue that demo or --overwrite to start again")
    if occupied:
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    with open(settings_file, "w", encoding="utf-8") as handle:
        json.dump({"config": asdict(config), "python": sys.version.split()[0]}, handle, indent=2)


def load_splits(out: str, config: DemoConfig):
    """The labelled phantom as train / validation / mining / test (the same seeded split in every step)."""
    from .data import load_dataset_dir, make_splits

    return make_splits(load_dataset_dir(paths(out)["data"]), seed=config.seed)


def load_healthy(out: str, config: DemoConfig):
    """(healthy photos for training, held-out healthy photos for the lesion transfer)."""
    from .data import load_dataset_dir

    healthy = load_dataset_dir(os.path.join(paths(out)["data"], "healthy"))
    keep = min(config.transfer_photos, len(healthy) - 1)
    return healthy.select(range(len(healthy) - keep)), healthy.select(range(len(healthy) - keep, len(healthy)))


def load_generator(out: str, config: DemoConfig):
    """The trained pipeline with a DDIM scheduler (the demo samples with few steps)."""
    from .pipelines.loading import load_pipeline

    return load_pipeline(paths(out)["diffusion"], kinds=("DermDiffPipeline",), scheduler="ddim", progress_bar=False)


def fresh_folder(path: str) -> str:
    """An empty `path`: what an interrupted run of an unfinished step left there is partial, so it goes."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------------
# 1. data
# ----------------------------------------------------------------------------------------------------------------
def write_data(out: str, config: DemoConfig) -> dict:
    """A phantom with two rare conditions at `rare_fraction` and `healthy_fraction` healthy photos (in healthy/)."""
    from .data.phantom import phantom_grid, rare_class_weights, write_phantom

    folder = paths(out)["data"]
    write_phantom(folder, n=config.num_images, size=config.size, seed=config.seed,
                  class_weights=rare_class_weights(RARE_CONDITIONS, config.rare_fraction),
                  healthy_fraction=config.healthy_fraction, overwrite=True, progress=True)
    grid = os.path.join(folder, "examples.png")
    phantom_grid(size=config.size, seed=config.seed).save(grid)
    with open(os.path.join(folder, "dataset_info.json"), encoding="utf-8") as handle:
        counts = json.load(handle)["counts"]
    splits = load_splits(out, config)
    names = list(counts["conditions"])
    split_counts = {name: dict(zip(names, np.bincount(part["label"], minlength=len(names)).tolist()))
                    for name, part in splits.items()}
    return {"folder": folder, "counts": counts, "split_counts": split_counts, "examples": grid}


# ----------------------------------------------------------------------------------------------------------------
# 2. the diffusion model
# ----------------------------------------------------------------------------------------------------------------
def build_unet(config: DemoConfig, registry):
    """A small `SemanticUNet2DModel` for this registry (attention only in the lowest-resolution block)."""
    from .models.semantic_unet import SemanticUNet2DModel

    depth = len(config.block_out_channels)
    down = ["DownBlock2D"] * depth
    up = ["UpBlock2D"] * depth
    if config.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    groups = 8 if min(config.block_out_channels) >= 16 else 4
    return SemanticUNet2DModel(
        sample_size=config.size, conditions=list(registry.names), registry_name=registry.registry_name,
        block_out_channels=tuple(config.block_out_channels), down_block_types=tuple(down), up_block_types=tuple(up),
        norm_num_groups=groups, attention_head_dim=8,
    )


def train_generator(out: str, config: DemoConfig) -> dict:
    """Trains the diffusion model on the training split plus healthy skin; continues from the newest checkpoint."""
    import torch

    from .data import registry_of
    from .loops.common import checkpoint_step, resolve_checkpoint
    from .loops.diffusion import DiffusionExamples, DiffusionTrainingConfig, default_noise_scheduler, train_diffusion

    splits = load_splits(out, config)
    healthy, _ = load_healthy(out, config)
    registry = registry_of(splits["train"])
    examples = DiffusionExamples(registry, config.size)
    parts = [splits["train"].with_transform(examples), healthy.with_transform(examples)]
    dataset = torch.utils.data.ConcatDataset(parts)
    folder = paths(out)["diffusion"]
    resumed_from = resolve_checkpoint(folder, "latest")
    # a validation grid at the last step, whatever the step count
    every = config.validation_steps
    validation_every = every if config.train_steps % every == 0 else config.train_steps
    torch.manual_seed(config.seed)
    training = DiffusionTrainingConfig(
        output_dir=folder, train_batch_size=config.batch_size, max_train_steps=config.train_steps,
        learning_rate=config.learning_rate, lr_warmup_steps=min(100, config.train_steps // 10),
        checkpointing_steps=config.checkpointing_steps, checkpoints_total_limit=2, resume_from_checkpoint="latest",
        validation_steps=validation_every, validation_inference_steps=config.generation.num_inference_steps,
        validation_guidance_scale=config.generation.guidance_scale, validation_skin_types=(1, 3, 6), random_flip=True,
        report_to=None, seed=config.seed, use_ema=True,
    )
    run = train_diffusion(build_unet(config, registry), default_noise_scheduler(), dataset, training)
    samples = os.path.join(folder, "samples")
    grids = sorted(os.path.join(samples, name) for name in os.listdir(samples)) if os.path.isdir(samples) else []
    return {"folder": folder, "steps": run.global_step, "last_loss": run.last_loss, "training_images": len(dataset),
            "resumed_from_step": checkpoint_step(resumed_from) if resumed_from else None, "validation_grids": grids}


# ----------------------------------------------------------------------------------------------------------------
# 3. pictures: sweeps and lesion transfer
# ----------------------------------------------------------------------------------------------------------------
def make_pictures(out: str, config: DemoConfig) -> dict:
    """DermGAN's figures 5 and 6 (one map on six skin types; one lesion growing) and a lesion transfer grid."""
    from diffusers.utils import make_image_grid
    from PIL import Image
    from tqdm.auto import tqdm

    from .data.phantom import generate_phantom_sample
    from .pipelines.sweeps import size_sweep, skin_type_sweep
    from .semantic_map import SemanticMap

    pipe = load_generator(out, config)
    registry = pipe.unet.registry
    folder = fresh_folder(paths(out)["pictures"])
    size, third = config.size, config.size // 3
    sampling = config.generation.call_kwargs(pipe)
    smap = SemanticMap.from_annotations("melanoma", skin_type=3, boxes=[(third, third, size - third, size - third)],
                                        size=size, registry=registry)
    bar = tqdm(total=2 + len(registry), desc="sweeps + lesion transfer", unit="grid part")
    skin_path, size_path = os.path.join(folder, "skin_type_sweep.png"), os.path.join(folder, "size_sweep.png")
    skin_type_sweep(pipe, smap, save_to=skin_path, with_maps=True, generator=_generator(config.seed), **sampling)
    bar.update()
    size_sweep(pipe, smap, save_to=size_path, with_maps=True, generator=_generator(config.seed), **sampling)
    bar.update()

    # lesion transfer: held-out healthy photos, a phantom lesion's outline as the mask, every condition
    _, photos = load_healthy(out, config)
    mask = generate_phantom_sample("nevus", skin_type=3, size=size, seed=config.seed).mask_image()
    images, skin_types = [image.convert("RGB") for image in photos["image"]], list(photos["skin_type"])
    columns = {}
    for index, condition in enumerate(registry.names):
        columns[condition] = pipe(image=images, mask=mask, condition=[condition] * len(images), skin_type=skin_types,
                                  generator=_generator(config.seed + index), **sampling).images
        bar.update()
    bar.close()
    rows = []
    for row, photo in enumerate(images):
        rows += [photo, mask.convert("RGB").resize(photo.size, Image.NEAREST)]
        rows += [columns[condition][row] for condition in registry.names]
    transfer_path = os.path.join(folder, "lesion_transfer.png")
    make_image_grid(rows, rows=len(images), cols=2 + len(registry)).save(transfer_path)
    return {"skin_type_sweep": skin_path, "size_sweep": size_path, "lesion_transfer": transfer_path,
            "transfer_columns": ["healthy photo", "mask"] + list(registry.names), "sweep_map": smap.to_annotations()}


# ----------------------------------------------------------------------------------------------------------------
# 4. classifier before and after one round of the hard-case loop
# ----------------------------------------------------------------------------------------------------------------
def hard_case_round(out: str, config: DemoConfig) -> dict:
    """Baseline classifier on real data, hard cases mined on the mining split, synthesis, retraining, test metrics."""
    from .hardcase.loop import HardCaseConfig, run_hardcase_loop
    from .metrics.classification import plot_confusion_matrix
    from .metrics.report import to_jsonable

    folder = fresh_folder(paths(out)["hardcase"])
    loop = HardCaseConfig(
        rounds=1, strategies=("map", "sdedit"), per_case=config.per_case, max_cases=config.max_cases,
        generation=config.generation, seed=config.seed,
        n_boot=config.n_boot,
        classifier={"backbone": config.classifier_backbone, "pretrained": config.classifier_pretrained,
                    "resolution": config.size, "num_epochs": config.classifier_epochs,
                    "batch_size": config.classifier_batch_size, "balance": "sampler", "patience": None,
                    "checkpoints_total_limit": 1, "learning_rate": 1e-3},
    )
    result = run_hardcase_loop(load_splits(out, config), load_generator(out, config), loop, folder)
    final = result["baseline_vs_final"]
    names = result["label_names"]
    confusion = {}
    for key, title in (("a", "baseline (real data only)"), ("b", "after one hard-case round")):
        path = os.path.join(folder, f"confusion_{'before' if key == 'a' else 'after'}.png")
        plot_confusion_matrix(np.array(final[key]["confusion_matrix"]), names, path=path, title=title)
        confusion["before" if key == "a" else "after"] = path
    kept = {key: value for key, value in result.items() if key != "models"}
    with open(os.path.join(folder, "result.json"), "w", encoding="utf-8") as handle:
        json.dump(to_jsonable(kept), handle, indent=2)
    rounds = result["rounds"]
    return {"folder": folder, "result": os.path.join(folder, "result.json"), "confusion": confusion,
            "baseline_classifier": os.path.join(folder, "classifiers", "round_0"),
            "hard_cases": len(rounds[-1].get("mined_ids", [])) if len(rounds) > 1 else 0,
            "synthetic": rounds[-1]["pool"]["synthetic"], "plot": result["paths"]["plot"],
            "stopped": result["stopped"]}


# ----------------------------------------------------------------------------------------------------------------
# 5. evaluation of the generator
# ----------------------------------------------------------------------------------------------------------------
def evaluate_generator(out: str, config: DemoConfig) -> dict:
    """`dermdiff.metrics.evaluate` with the baseline classifier as feature extractor and fidelity judge."""
    from .metrics.evaluation import evaluate

    classifier = read_marker(out, "classifiers")["outputs"]["baseline_classifier"]
    folder = fresh_folder(paths(out)["evaluation"])
    evaluate(  # writes metrics.json and report.html into `folder`
        data=paths(out)["data"], out=folder, pipeline=load_generator(out, config), num_images=config.eval_images,
        extractor=f"classifier:{classifier}", classifier=classifier, cache_dir=os.path.join(folder, "cache"),
        trials=config.fid_trials, generation=replace(config.generation, batch_size=32), seed=config.seed,
        min_group_size=max(5, config.eval_images // 20), ita_images_per_type=30, device="cpu",
        max_train_images=config.memorisation_images,
    )
    return {"folder": folder, "metrics": os.path.join(folder, "metrics.json"),
            "report": os.path.join(folder, "report.html")}


# ----------------------------------------------------------------------------------------------------------------
# 6. report and summary
# ----------------------------------------------------------------------------------------------------------------
def write_report(out: str, config: DemoConfig) -> dict:
    """`report.html` (every picture and table of the run) and the before/after summary rows."""
    from .demo_report import render_demo_report, summary_rows

    markers = {step: read_marker(out, step) for step, _, _ in STEPS if step != "report"}
    with open(markers["classifiers"]["outputs"]["result"], encoding="utf-8") as handle:
        hardcase = json.load(handle)
    with open(markers["evaluation"]["outputs"]["metrics"], encoding="utf-8") as handle:
        evaluation = json.load(handle)
    rows = summary_rows(hardcase, evaluation)
    path = render_demo_report(out, config, markers, hardcase, evaluation, rows)
    return {"report": path, "summary": rows}


# ----------------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------------
STEPS: tuple[tuple[str, str, Callable], ...] = (
    ("data", "write the imbalanced phantom dataset", write_data),
    ("diffusion", "train the diffusion model (EMA, checkpoints)", train_generator),
    ("pictures", "skin-type sweep, size sweep, lesion transfer", make_pictures),
    ("classifiers", "baseline classifier, one hard-case round, retrain", hard_case_round),
    ("evaluation", "FID/KID, conditioning fidelity, memorisation", evaluate_generator),
    ("report", "write report.html and the summary", write_report),
)
STEP_NAMES = tuple(name for name, _, _ in STEPS)


def run_demo(
    config: DemoConfig,
    out: str = "outputs/demo",
    resume: bool = False,
    overwrite: bool = False,
    stop_after: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs (or continues) the demo in `out`; returns `{step: marker}` for every finished step.

    Args:
        config (`DemoConfig`): sizes (`demo_config()` / `demo_config(quick=True)`).
        out (`str`, defaults to `"outputs/demo"`): the run folder.
        resume (`bool`, defaults to `False`): skip finished steps, continue training from its checkpoint.
        overwrite (`bool`, defaults to `False`): delete an earlier demo in `out` and start again.
        stop_after (`str`, *optional*): stop after this step (one of `STEP_NAMES`).
        log (`Callable[[str], None]`, defaults to `print`): where the step headers go.
    """
    if stop_after is not None and stop_after not in STEP_NAMES:
        raise ValueError(f"stop_after must be one of {', '.join(STEP_NAMES)}, got {stop_after!r}")
    prepare_folder(out, config, resume, overwrite)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # per-file checkpoint lines drown the progress bars
    done = {}
    started = time.perf_counter()
    redone = False  # once a step runs, every later step runs too: its inputs may have changed
    for number, (step, title, function) in enumerate(STEPS, start=1):
        marker = read_marker(out, step) if resume and not redone else None
        if marker is not None:
            log(f"[{number}/{len(STEPS)}] {title}: done earlier ({marker['seconds']:.0f} s), skipped")
        else:
            log(f"[{number}/{len(STEPS)}] {title}")
            step_start = time.perf_counter()
            redone = True
            outputs = function(out, config)
            marker = write_marker(out, step, time.perf_counter() - step_start, outputs)
            log(f"[{number}/{len(STEPS)}] {title}: {marker['seconds']:.0f} s")
        done[step] = marker
        if step == stop_after:
            log(f"stopped after step {step!r}; continue with --resume")
            break
    log(f"demo finished its steps in {time.perf_counter() - started:.0f} s; folder {out}")
    return done

