"""FID while training, for every trainer (diffusion and the three GANs), and model selection by best FID.

Furger et al. picked the DCGAN weights with the best FID seen during training rather than the last ones;
a GAN's last iterate is often not its best. Three pieces, each used by `train_diffusion` and `train_gan`:

- `PipelineFID`: the `evaluate(pipeline, step) -> {"fid", "fid_ci95", "kid"}` hook. It draws the images
  of any dermdiff pipeline kind the way `dermdiff evaluate --pipeline` does
  (`dermdiff.metrics.pipeline_samples.pipeline_source`: held-out maps, noise, or edited held-out photos) and
  compares them with held-out real images, whose features are extracted once.
- `FIDTracker`: calls the hook every `every` updates, logs what it returns to the trackers, and, with
  `keep_best`, keeps the pipeline with the lowest FID so far in `output_dir/best_fid/` (a `save_pretrained`
  folder, safetensors weights, plus `best_fid.json` saying the step and the scores). The best value
  travels in every checkpoint (`training_state.json`, plain JSON), so a resumed run, even on another
  machine, never replaces the best model with a worse one.
- the command-line flags (`--compute_fid_every`, `--fid_num_images`, `--fid_extractor`, `--save_best_fid`)
  and the held-out rows they need, declared once for every training script.

`best_fid/` is replaced atomically: the new folder is written to `best_fid.tmp`, the old one renamed to
`best_fid.old`, the new one renamed into place and the old one deleted; a kill in between leaves
`best_fid.old`, which the next run puts back.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from typing import Callable, Sequence

from accelerate.logging import get_logger

from ..pipelines.generation_settings import GenerationSettings

logger = get_logger(__name__)

BEST_FID_DIR = "best_fid"
BEST_FID_RECORD = "best_fid.json"
STATE_KEY = "best_fid"


# ----------------------------------------------------------------------------------------------------------------
# the evaluate hook
# ----------------------------------------------------------------------------------------------------------------
class PipelineFID:
    """`evaluate` hook: FID and KID of a pipeline's images against held-out real images.

    Args:
        reference: held-out real rows (a `datasets` split with dermdiff columns); the images compared with,
            and for map and edit pipelines also the maps / photos the pipeline is given.
        registry: the condition registry of `reference`.
        resolution (`int`): both sets are compared at this side.
        extractor (`str` or `nn.Module`, defaults to `"inception"`): a `dermdiff.metrics.load_extractor` spec.
        maps (`Sequence[SemanticMap]`, *optional*): the maps a map-conditioned pipeline samples (default: the
            reference rows' own maps, so both sets ask for the same conditions, places and skin types).
        num_images (`int`, *optional*): images to generate (default: as many as reference rows).
        settings (`GenerationSettings`, *optional*): how the pipeline is sampled (default
            `GenerationSettings.for_evaluation()`).
        seed (`int`, defaults to 0): image i is seeded `seed + i`; also seeds the FID subsampling.

    Example:
        >>> fid = PipelineFID(heldout_rows, registry, resolution=32, extractor="inception")
        >>> fid(pipeline, step=1000)
        {'fid': 41.2, 'fid_ci95': [39.8, 42.9], 'kid': 0.031}
    """

    def __init__(self, reference, registry, resolution: int, extractor="inception", maps: Sequence | None = None,
                 num_images: int | None = None, settings=None, seed: int = 0):
        from ..metrics.features import load_extractor

        self.num_images = int(num_images if num_images is not None else len(maps if maps is not None else reference))
        if self.num_images < 2:
            raise ValueError(f"FID needs at least 2 held-out images, got {self.num_images}")
        self.reference, self.registry, self.resolution = reference, registry, int(resolution)
        self.maps = list(maps) if maps is not None else None
        self.extractor = load_extractor(extractor)
        self.settings, self.seed = GenerationSettings.for_evaluation(settings), int(seed)
        self._reference_features = None

    def reference_features(self):
        """The held-out images' features, extracted on the first call only."""
        if self._reference_features is None:
            from ..metrics.fid import source_features
            from ..metrics.sources import as_source

            source = as_source(self.reference, registry=self.registry)
            self._reference_features, _ = source_features(source, self.extractor, self.resolution, verbose=False)
        return self._reference_features

    def __call__(self, pipeline, step: int) -> dict:
        from ..metrics.fid import compute_fid_kid
        from ..metrics.pipeline_samples import pipeline_source

        generated = pipeline_source(pipeline, self.reference, self.registry, self.num_images, maps=self.maps,
                                    settings=self.settings, seed=self.seed)
        result = compute_fid_kid(generated, self.reference_features(), self.extractor, resolution=self.resolution,
                                 registry=self.registry, cache_dir=None, per_group=False, verbose=False,
                                 seed=self.seed)
        return {"fid": result["fid"]["value"], "fid_ci95": result["fid"]["ci95"], "kid": result["kid"]["value"]}


# ----------------------------------------------------------------------------------------------------------------
# every N updates: evaluate, log, keep the best
# ----------------------------------------------------------------------------------------------------------------
def log_metrics(accelerator, metrics: dict, step: int) -> None:
    """The numbers of an evaluation to every tracker, and one log line."""
    accelerator.log(metrics, step=step)
    logger.info(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class BestFIDKeeper:
    """Keeps the pipeline with the lowest FID so far in `output_dir/best_fid/` (see the module docstring).

    Args:
        output_dir (`str`): the run folder.
    """

    def __init__(self, output_dir: str):
        self.folder = os.path.join(output_dir, BEST_FID_DIR)
        self.best: dict | None = None
        _recover(self.folder)

    def state(self) -> dict:
        """What a checkpoint stores (`{"best_fid": {"step", "fid", ...}}`, or nothing before any FID)."""
        return {STATE_KEY: dict(self.best)} if self.best else {}

    def load_state(self, state: dict) -> None:
        """Takes the best value of a resumed checkpoint; a `best_fid/` folder holding a better model measured
        after that checkpoint (a run stopped later, or extended past its end) is kept, not replaced by a worse one."""
        self.best = dict(state[STATE_KEY]) if state.get(STATE_KEY) else None
        on_disk = read_best_fid(os.path.dirname(self.folder))
        if on_disk and _finite(on_disk.get("fid")) and (self.best is None or on_disk["fid"] < self.best["fid"]):
            logger.info(f"{self.folder} holds step {on_disk['step']} (FID {on_disk['fid']:.4g}), better than the "
                        f"checkpoint's best; it stays until a lower FID replaces it")
            self.best = on_disk

    def consider(self, pipeline, metrics: dict, step: int) -> bool:
        """Saves `pipeline` as the new best when its FID is lower than every earlier one; returns whether it did."""
        value = metrics.get("fid")
        if not _finite(value):
            logger.warning(f"step {step}: FID {value!r} is not a number; best_fid/ left as it is")
            return False
        if self.best is not None and value >= self.best["fid"]:
            return False
        record = {"step": int(step), **{k: v for k, v in metrics.items() if _finite(v)}}
        staging = self.folder + ".tmp"
        if os.path.exists(staging):
            shutil.rmtree(staging)
        pipeline.save_pretrained(staging, safe_serialization=True)
        with open(os.path.join(staging, BEST_FID_RECORD), "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)
        old = self.folder + ".old"
        if os.path.exists(self.folder):
            if os.path.exists(old):
                shutil.rmtree(old)
            os.replace(self.folder, old)
        os.replace(staging, self.folder)
        shutil.rmtree(old, ignore_errors=True)
        self.best = record
        logger.info(f"step {step}: new best FID {value:.4g}, saved to {self.folder}")
        return True


def _recover(folder: str) -> None:
    """Puts back `best_fid.old` when a kill came between the two renames of `consider`."""
    if not os.path.exists(folder) and os.path.isdir(folder + ".old"):
        try:
            os.replace(folder + ".old", folder)
        except FileNotFoundError:  # another process of the run put it back first
            pass


def read_best_fid(output_dir: str) -> dict | None:
    """The `best_fid.json` record of a run folder (`{"step", "fid", ...}`), or None when there is none."""
    path = os.path.join(output_dir, BEST_FID_DIR, BEST_FID_RECORD)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


class FIDTracker:
    """Runs an `evaluate` hook every `every` updates and at the end, logs its numbers, keeps the best model.

    Args:
        evaluate (`Callable[[pipeline, int], dict]`): e.g. a `PipelineFID`; must return `"fid"` for `keep_best`.
        every (`int`): updates between evaluations (>= 1).
        output_dir (`str`, *optional*): the run folder; needed with `keep_best`.
        keep_best (`bool`, defaults to False): keep the lowest-FID pipeline in `output_dir/best_fid/`.
    """

    def __init__(self, evaluate: Callable, every: int, output_dir: str | None = None, keep_best: bool = False):
        if int(every) < 1:
            raise ValueError(f"compute_fid_every must be >= 1 to evaluate, got {every}")
        if keep_best and not output_dir:
            raise ValueError("save_best_fid needs an output_dir")
        self.evaluate, self.every = evaluate, int(every)
        self.keeper = BestFIDKeeper(output_dir) if keep_best else None
        self.metrics: dict = {}

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def __call__(self, accelerator, pipeline, step: int) -> dict:
        """Evaluates `pipeline` (main process only), logs the numbers and offers it to the best keeper."""
        self.metrics = dict(self.evaluate(pipeline, step))
        log_metrics(accelerator, self.metrics, step)
        if self.keeper is not None:
            self.keeper.consider(pipeline, self.metrics, step)
        return self.metrics

    def state(self) -> dict:
        return self.keeper.state() if self.keeper else {}

    def load_state(self, state: dict) -> None:
        if self.keeper is not None:
            self.keeper.load_state(state)

    @property
    def best(self) -> dict | None:
        return self.keeper.best if self.keeper else None


def fid_tracker(evaluate: Callable | None, every: int, output_dir: str, save_best_fid: bool = False):
    """The `FIDTracker` a training loop runs, or None when there is nothing to evaluate.

    Raises:
        `ValueError` (one line) for `save_best_fid` without an `evaluate` hook and `every` >= 1, or `every` < 0.
    """
    if every < 0:
        raise ValueError(f"compute_fid_every must be >= 0 (0 = never), got {every}")
    if save_best_fid and not (evaluate and every):
        raise ValueError("save_best_fid needs an evaluate hook and compute_fid_every >= 1")
    return FIDTracker(evaluate, every, output_dir, save_best_fid) if evaluate and every else None


# ----------------------------------------------------------------------------------------------------------------
# command line, shared by every training script
# ----------------------------------------------------------------------------------------------------------------
def add_fid_arguments(group) -> None:
    """`--compute_fid_every`, `--fid_num_images`, `--fid_extractor`, `--save_best_fid` on an argparse group."""
    group.add_argument("--compute_fid_every", type=int, default=0,
                       help="FID/KID of samples vs held-out real images every N updates, logged to the trackers "
                            "(0 = never). Held out: the data's validation split, or for --phantom a phantom drawn "
                            "from another seed.")
    group.add_argument("--fid_num_images", type=int, default=200, help="Held-out images (and samples) for FID/KID.")
    group.add_argument("--fid_extractor", default="inception",
                       help="dermdiff.metrics.load_extractor spec (inception, inception:DIR, "
                            "torchvision:ARCH:WEIGHTS, ...).")
    group.add_argument("--save_best_fid", action="store_true",
                       help="With --compute_fid_every: keep the model with the lowest FID so far in "
                            "OUTPUT_DIR/best_fid/ (best_fid.json says its step and FID); resume keeps the best.")


def check_fid_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One-line argparse errors (exit 2) for the FID flags."""
    if args.compute_fid_every < 0:
        parser.error(f"--compute_fid_every must be >= 0 (0 = never), got {args.compute_fid_every}")
    if args.fid_num_images < 2:
        parser.error(f"--fid_num_images must be >= 2, got {args.fid_num_images}")
    if args.save_best_fid and not args.compute_fid_every:
        parser.error("--save_best_fid needs --compute_fid_every N (N >= 1): the best model is chosen by its FID")


def fid_reference_rows(args: argparse.Namespace, heldout, name: str, **phantom_kwargs):
    """The held-out rows FID compares with (None without --compute_fid_every), at most --fid_num_images.

    `heldout` is what the data flags held out (`TrainingRows.heldout`); a phantom is drawn again from
    `--phantom_seed + 1`, so its images and maps were never trained on.
    """
    if not args.compute_fid_every:
        return None
    if args.phantom:
        from ..data.phantom import phantom_dataset

        heldout = phantom_dataset(n=args.fid_num_images, size=args.resolution, seed=args.phantom_seed + 1,
                                  **phantom_kwargs)
    if not heldout:
        raise ValueError(f"--compute_fid_every needs held-out rows (split validation or val) in {name}")
    return heldout.select(range(min(len(heldout), args.fid_num_images)))
