"""The data-source flags every training script shares (diffusion, autoencoder, the three GANs), defined once,
and the one function that turns them into training rows.

`--train_data_dir` takes any layout `dermdiff.data.load_any` recognises (an image folder with `metadata.csv`,
HAM10000 / ISIC with masks, PAD-UFES-20, a DermaMNIST `.npz`, or a known name under `$DERMDIFF_DATA`), so a
HAM10000 user trains on the release as downloaded instead of exporting an image folder first.
`--train_split` picks one part of `dermdiff.data.make_splits` (lesion/patient-grouped; a dataset's own
`split` column wins), so a generator can be trained on exactly the classifier's training part and never
see its validation, mining or test images.

Example:
    >>> parser = argparse.ArgumentParser()
    >>> add_data_source_arguments(parser)
    >>> args = parser.parse_args(["--train_data_dir", "/data/ham10000", "--train_split", "train"])
    >>> rows = load_training_rows(args)
    >>> rows.train, rows.heldout, rows.registry.names, rows.name
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

SPLIT_NAMES = ("train", "validation", "mining", "test")
HELDOUT_SPLITS = ("validation", "val")
DATA_GROUP = "data (exactly one source)"


def add_data_source_arguments(parser: argparse.ArgumentParser, default_resolution: int = 32):
    """Adds `--train_data_dir | --dataset_name | --phantom` and their options; returns the group for extras."""
    data = parser.add_argument_group(DATA_GROUP)
    data.add_argument(
        "--train_data_dir", default=None,
        help="Training data in any layout dermdiff reads: an image folder with metadata.csv, HAM10000/ISIC "
             "(with masks), PAD-UFES-20, a DermaMNIST .npz, or a known name under $DERMDIFF_DATA.",
    )
    data.add_argument(
        "--train_split", default=None,
        help=f"Train on this part of dermdiff.data.make_splits ({', '.join(SPLIT_NAMES)}; a dataset's own "
             "split column wins) or 'all'. Default: rows whose split is 'train', all rows if there is no split.",
    )
    add_split_seed_argument(data)
    add_loader_kwargs_argument(data, "--train_data_dir")
    data.add_argument(
        "--dataset_name", default=None, help="Hub dataset with dermdiff columns (image, label, semantic_map)."
    )
    data.add_argument("--dataset_config_name", default=None, help="Config name of --dataset_name.")
    data.add_argument("--cache_dir", default=None, help="Where Hub datasets are cached.")
    add_phantom_arguments(data)
    add_estimate_skin_type_argument(data)
    data.add_argument(
        "--resolution", type=int, default=default_resolution, help="Image side in pixels (images are resized)."
    )
    return data


def add_phantom_arguments(group, num_images: int = 2000, switch: bool = True) -> None:
    """`--phantom` (unless `switch` is False: a face that is always on the phantom), `--phantom_num_images` (default
    `num_images`) and `--phantom_seed`: the built-in phantom (`dermdiff.data.phantom`) as the data source."""
    if switch:
        group.add_argument("--phantom", action="store_true", help="Use the built-in procedural phantom.")
    group.add_argument("--phantom_num_images", type=int, default=num_images, help="Phantom images to generate.")
    group.add_argument("--phantom_seed", type=int, default=0, help="Seed of the phantom images.")


def add_estimate_skin_type_argument(group) -> None:
    """`--estimate_skin_type`: fill unknown skin types from the images (`dermdiff.data.skin_types`)."""
    group.add_argument("--estimate_skin_type", action="store_true",
                       help="Where the data records no skin type (HAM10000, ISIC, DermaMNIST), estimate it from the "
                            "ITA of the skin around the lesion and write it into the maps (dermdiff.data.skin_types).")


def add_split_seed_argument(group) -> None:
    """`--split_seed`: the seed of `dermdiff.data.make_splits`."""
    group.add_argument("--split_seed", type=int, default=0,
                       help="Seed of dermdiff.data.make_splits (which lesions go to which split).")


def add_loader_kwargs_argument(group, source_flag: str) -> None:
    """`--loader_kwargs`: JSON options of the loader of `source_flag` (decode with `parse_json_object`)."""
    group.add_argument(
        "--loader_kwargs", default=None,
        help=f'JSON options for the {source_flag} loader (dermdiff.data.load_any), e.g. \'{{"limit": 500}}\'.',
    )


def add_stratify_argument(group) -> None:
    """`--stratify_by`: columns whose mix every split `dermdiff.data.make_splits` computes should share."""
    group.add_argument(
        "--stratify_by", default="",
        help="Comma-separated columns (e.g. dx_type for HAM10000, skin_type) whose mix every computed split should "
             "share besides label and lesion size; the composition is written to splits.md / splits.json.",
    )


def parse_json_object(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str) -> None:
    """Decodes the JSON-object flag `--name` in place (None stays None); a bad value is a usage error naming it."""
    value = getattr(args, name)
    if value is None:
        return
    try:
        value = json.loads(value)
    except json.JSONDecodeError as error:
        parser.error(f"--{name} is not JSON ({error.msg} at character {error.pos})")
    if not isinstance(value, dict):
        parser.error(f"--{name} must be a JSON object, got {value!r}")
    setattr(args, name, value)


def check_data_source_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The cross-flag checks of the data flags (argparse errors, exit 2); parses `--loader_kwargs` in place."""
    if sum([bool(args.train_data_dir), bool(args.dataset_name), bool(args.phantom)]) != 1:
        parser.error("give exactly one of --train_data_dir, --dataset_name, --phantom")
    if args.loader_kwargs is not None and not args.train_data_dir:
        parser.error("--loader_kwargs applies to --train_data_dir only")
    parse_json_object(parser, args, "loader_kwargs")


@dataclass
class TrainingRows:
    """What the data flags load: rows to train on, held-out rows (validation part, if any), registry, name."""

    train: object
    heldout: object | None
    registry: object
    name: str


def load_training_rows(args: argparse.Namespace, **phantom_kwargs) -> TrainingRows:
    """Loads `--train_data_dir` (any layout), `--dataset_name` or `--phantom` and keeps the `--train_split` part.

    Args:
        args: parsed flags of `add_data_source_arguments` (after `check_data_source_args`).
        **phantom_kwargs: extra `phantom_dataset` options (e.g. `healthy_fraction`).
    """
    from ..data.info import registry_of

    hub_heldout = None
    if args.phantom:
        from ..data.phantom import phantom_dataset

        rows = phantom_dataset(n=args.phantom_num_images, size=args.resolution, seed=args.phantom_seed,
                               **phantom_kwargs)
        name = "phantom"
    elif args.train_data_dir:
        options = getattr(args, "loader_kwargs", None) or {}
        rows = load_data_dir(args.train_data_dir, args.resolution,
                             json.loads(options) if isinstance(options, str) else options)
        name = os.path.basename(os.path.normpath(args.train_data_dir))
    else:
        import datasets

        hub = datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir)
        rows, name = hub["train"], args.dataset_name
        hub_heldout = next((hub[s] for s in HELDOUT_SPLITS if s in hub), None)
    if getattr(args, "estimate_skin_type", False):
        from ..data.skin_types import estimate_skin_types

        rows = estimate_skin_types(rows)
        hub_heldout = None if hub_heldout is None else estimate_skin_types(hub_heldout)
    train, heldout = select_split(rows, getattr(args, "train_split", None), getattr(args, "split_seed", 0), name)
    return TrainingRows(train, heldout if heldout is not None else hub_heldout, registry_of(train), name)


def load_data_dir(path: str, resolution: int, loader_kwargs: dict):
    """`load_any(path)`, resized to `resolution` where the loader can; a DermaMNIST npz loads all its splits
    (its split column then decides)."""
    from ..data.dispatch import detect_layout, is_hub_id, load_any, loader_options, resolve_path
    from ..data.phantom import phantom_dataset

    resolved = None if is_hub_id(path) else resolve_path(path)
    layout = "hub" if is_hub_id(path) else "phantom" if resolved is None else detect_layout(resolved)[0]
    options = dict(loader_kwargs)
    if "size" in loader_options(layout, phantom_dataset if layout == "phantom" else None):
        options.setdefault("size", resolution)
    if layout == "dermamnist":
        options.setdefault("split", "all")
    return load_any(path, **options)


def select_split(rows, split: str | None, seed: int = 0, name: str = "the data"):
    """(training rows, held-out rows or None) for `--train_split`.

    - `None`: rows whose `split` is `train` (or empty) when there is a split column, else all rows; the
      held-out rows are those in `validation` / `val`;
    - `"all"`: every row, nothing held out;
    - a split name: that part of `make_splits(rows, seed=seed)`; the validation part is held out.
    """
    from ..data import make_splits

    if split == "all":
        return rows, None
    if split is None:
        if "split" not in rows.column_names:
            return rows, None
        values = rows["split"]
        train = [i for i, value in enumerate(values) if (value or "train") == "train"]
        heldout = [i for i, value in enumerate(values) if value in HELDOUT_SPLITS]
        return rows.select(train), (rows.select(heldout) if heldout else None)
    parts = make_splits(rows, seed=seed)
    if split not in parts:
        raise ValueError(f"--train_split {split!r} is not a split of {name}; its splits: {list(parts) + ['all']}")
    heldout = next((parts[h] for h in HELDOUT_SPLITS if h in parts and h != split and len(parts[h])), None)
    return parts[split], heldout
