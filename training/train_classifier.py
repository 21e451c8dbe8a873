"""Train a skin-condition classifier; the command-line face of `dermdiff.loops.classifier`.

    accelerate launch training/train_classifier.py \
        --train_data_dir outputs/phantom --backbone resnet18 --resolution 32 \
        --num_epochs 20 --balance sampler --output_dir outputs/classifier \
        --resume_from_checkpoint latest

The data is any layout `dermdiff.data.load_any` recognises (an image folder with `metadata.csv`,
HAM10000, PAD-UFES-20, a DermaMNIST `.npz`, a `save_to_disk` folder, a Hub dataset id). Without
`--validation_data_dir` it is split with `dermdiff.data.make_splits` (an existing `split` column wins,
e.g. DermaMNIST with `--train_loader_kwargs '{"split": "all"}'`). Each source has its own loader options
(`--train_loader_kwargs`, `--validation_loader_kwargs`, `--test_loader_kwargs`). `--test_data_dir` adds
an external test set beside the internal test split:

    python training/train_classifier.py --train_data_dir /data/dermamnist.npz \
        --train_loader_kwargs '{"split": "all"}' --test_data_dir /data/ham10000 \
        --test_loader_kwargs '{"size": 28}' --backbone resnet18 --resolution 28 --output_dir outputs/clf

The backbone is any torchvision classification model (`--backbone convnext_tiny --pretrained imagenet`
reads the torch hub cache) or a transformers image classifier (`--backbone google/vit-base-patch16-224`
or a local checkpoint folder). The output folder gets the model (`save_pretrained`, label names in its
config), `history.json` (rewritten after every epoch), `class_counts.json` (the class counts of each split), and
`metrics*.json` / `.md` / `_confusion_matrix.png` with bootstrap confidence intervals for the
validation split (`metrics`), the internal test split (`metrics_test`) and the external test set
(`metrics_external_test`). `--push_to_hub` uploads it with a model card holding the test metrics and
the split composition.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dermdiff.classifier_flags import add_backbone_arguments, check_backbone_arguments
from dermdiff.classify import align_labels
from dermdiff.config_args import add_config_arguments, config_from_args
from dermdiff.data.splits import parse_stratify_by, save_composition
from dermdiff.errors import ArgumentParser, run_script
from dermdiff.hub_sync import add_hub_arguments, hub_repo_id, pushing_checkpoints
from dermdiff.loops.classifier import (
    ClassifierTrainingConfig,
    dataset_label_names,
    evaluate_classifier,
    split_class_counts,
    train_classifier,
)
from dermdiff.loops.data_flags import add_stratify_argument, parse_json_object
from dermdiff.metrics.classification import metrics_to_markdown, save_metrics

VALIDATION_NAMES = ("validation", "val", "valid")
# evaluated part -> stem of its metrics files
EVALUATED = {"validation": "metrics", "test": "metrics_test", "external_test": "metrics_external_test"}
# ClassifierTrainingConfig fields whose flags are declared elsewhere: the backbone (dermdiff.classifier_flags) and
# --resolution (in the data group)
CONFIG_FLAGS_ELSEWHERE = ("backbone", "backbone_config", "pretrained", "resolution")


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument(
        "--train_data_dir", required=True, help="Training data: a folder, a DermaMNIST .npz or a known name."
    )
    data.add_argument(
        "--validation_data_dir", default=None, help="Validation data; default: split off the training data."
    )
    data.add_argument(
        "--test_data_dir",
        default=None,
        help="External test data, evaluated once with the best model beside the internal test split.",
    )
    data.add_argument(
        "--train_loader_kwargs",
        "--loader_kwargs",
        dest="train_loader_kwargs",
        default="{}",
        help='JSON loader options of --train_data_dir, e.g. \'{"split": "all", "limit": 500}\' '
        "(--loader_kwargs is the old name).",
    )
    data.add_argument(
        "--validation_loader_kwargs",
        default=None,
        help="JSON loader options of --validation_data_dir (default: those of the training data).",
    )
    data.add_argument(
        "--test_loader_kwargs",
        default="{}",
        help='JSON loader options of --test_data_dir, e.g. \'{"split": "test"}\'.',
    )
    data.add_argument(
        "--split_fractions",
        default='{"train": 0.8, "validation": 0.1, "test": 0.1}',
        help="JSON split name -> fraction used when the data has no split column and no --validation_data_dir.",
    )
    add_stratify_argument(data)
    add_config_arguments(parser, ClassifierTrainingConfig, group="data", only=("resolution",))

    model = parser.add_argument_group("model")
    add_backbone_arguments(model)

    train = parser.add_argument_group("training")
    train.add_argument(
        "--output_dir", default="classifier-output", help="Model, metrics, checkpoints and logs go here."
    )
    # every other ClassifierTrainingConfig field is a flag (generated: type, default and help come from the field)
    add_config_arguments(parser, ClassifierTrainingConfig, group="training", exclude=CONFIG_FLAGS_ELSEWHERE)

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--n_boot", type=int, default=1000, help="Bootstrap replicates for the confidence intervals."
    )

    add_hub_arguments(parser, "hub")

    args = parser.parse_args(argv)
    for name in ("train_loader_kwargs", "validation_loader_kwargs", "test_loader_kwargs", "split_fractions"):
        parse_json_object(parser, args, name)
    if args.validation_loader_kwargs is None:
        args.validation_loader_kwargs = args.train_loader_kwargs
    check_backbone_arguments(parser, args)
    if args.n_boot < 0:
        parser.error(f"--n_boot must be >= 0, got {args.n_boot}")
    args.config = config_from_args(parser, ClassifierTrainingConfig, args)
    return args


def load_splits(args) -> dict:
    """`{"train", "validation", "test" (internal, optional), "external_test" (optional)}` datasets."""
    from dermdiff.data import load_any, make_splits

    dataset = load_any(args.train_data_dir, **args.train_loader_kwargs)
    if args.validation_data_dir is not None:
        parts = {"train": dataset, "validation": load_any(args.validation_data_dir, **args.validation_loader_kwargs)}
    else:
        splits = make_splits(
            dataset, fractions=args.split_fractions, seed=args.seed, stratify_by=parse_stratify_by(args.stratify_by)
        )
        validation = next((name for name in VALIDATION_NAMES if name in splits), None)
        if "train" not in splits or validation is None:
            raise ValueError(f"need 'train' and a validation split ({'/'.join(VALIDATION_NAMES)}); got {list(splits)}")
        parts = {"train": splits["train"], "validation": splits[validation]}
        if "test" in splits and len(splits["test"]) > 0:
            parts["test"] = splits["test"]
    if args.test_data_dir is not None:
        parts["external_test"] = load_any(args.test_data_dir, **args.test_loader_kwargs)
    return parts


def main(args: argparse.Namespace) -> dict:
    parts = load_splits(args)
    composition = save_composition(parts, args.output_dir, parse_stratify_by(args.stratify_by))
    print(composition)
    config = args.config
    names = dataset_label_names(parts["train"])
    if "external_test" in parts and names is not None:  # matched by name, before training: a class the
        where = f"--test_data_dir {args.test_data_dir}"  # model cannot learn is an error, not a zero
        parts["external_test"] = align_labels(parts["external_test"], names, where=where)
    with pushing_checkpoints(args) as on_checkpoint:
        model, history = train_classifier(parts["train"], parts["validation"], config, output_dir=args.output_dir,
                                          on_checkpoint=on_checkpoint)
    names = model.label_names
    class_counts = split_class_counts(parts, names)
    with open(os.path.join(args.output_dir, "class_counts.json"), "w") as handle:
        json.dump(class_counts, handle, indent=2)
    results = {"sizes": {name: len(part) for name, part in parts.items()}, "best_epoch": history["best_epoch"],
               "class_counts": class_counts, "composition_markdown": composition}
    for name, stem in EVALUATED.items():
        if name not in parts:
            continue
        result = evaluate_classifier(
            model, parts[name], batch_size=args.eval_batch_size, n_boot=args.n_boot, seed=args.seed
        )
        title = f"{args.backbone} on the {name.replace('_', ' ')} " + ("set" if name == "external_test" else "split")
        save_metrics(result, args.output_dir, stem=stem, title=title)
        results[name] = result
    if "test" not in parts and "external_test" not in parts:
        print("note: no test split; metrics.json reports the validation split used for early stopping (optimistic)")
    for name in EVALUATED:
        if name in results:
            print(f"\n## {name}\n\n{metrics_to_markdown(results[name])}")
    if args.push_to_hub:
        push(args, results, history)
    return results


def push(args, results: dict, history: dict) -> str:
    """Uploads the output folder with a model card: test metrics and split composition; the token goes nowhere else."""
    from dermdiff.classifier_card import classifier_card_info
    from dermdiff.hub import push_to_hub

    repo_id = hub_repo_id(args)
    info = classifier_card_info(
        results, history, dataset=args.train_data_dir, backbone=args.backbone, repo_id=repo_id,
        external_test=args.test_data_dir,
    )
    repo_id = push_to_hub(args.output_dir, repo_id, info, token=args.hub_token, private=args.hub_private_repo)
    print(f"pushed {args.output_dir} to https://huggingface.co/{repo_id}")
    return repo_id


if __name__ == "__main__":
    sys.exit(run_script(parse_args, main))
