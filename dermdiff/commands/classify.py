"""`dermdiff classify`: score a saved classifier on any dataset, or write its predicted probabilities."""

from __future__ import annotations

NAME = "classify"
HELP = "Score a saved SkinClassifier on any dataset (metrics with CIs, per skin type) or write its predictions."
EXAMPLES = """\
  dermdiff classify --classifier runs/clf --data /data/ham10000 --out eval/ham --loader-kwargs '{"size": 64}'
  dermdiff classify --classifier runs/clf --data /data/dermamnist.npz --loader-kwargs '{"split": "test"}' --out eval/dm
  dermdiff classify --classifier runs/clf --data someone/skin-dataset --loader-kwargs '{"split": "test"}' \\
      --out eval/hub
  dermdiff classify --classifier runs/clf --data saved_split/ --out preds/ --predict-only

data: an image folder with metadata.csv, HAM10000/ISIC, a DermaMNIST .npz, PAD-UFES-20, a save_to_disk folder or
a Hub dataset id. Writes predictions.csv and (unless --predict-only) metrics.json, metrics.md,
metrics_confusion_matrix.png. The data's class names must be among the classifier's.
"""


def configure(parser) -> None:
    parser.add_argument("--classifier", required=True, help="SkinClassifier folder (save_pretrained)")
    parser.add_argument("--data", required=True, help="a folder, .npz, save_to_disk folder, Hub id or known name")
    parser.add_argument("--out", required=True, help="output folder for predictions.csv and metrics.*")
    parser.add_argument("--loader-kwargs", dest="loader_kwargs", default="{}",
                        help='JSON options for the data\'s loader, e.g. \'{"split": "test", "limit": 500}\'')
    parser.add_argument("--predict-only", dest="predict_only", action="store_true",
                        help="write predictions.csv only: no metrics, labels not compared")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=128)
    parser.add_argument("--num-workers", dest="num_workers", type=int, default=0, help="image-decoding workers")
    parser.add_argument("--n-boot", dest="n_boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--device", help="torch device (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import json

    from ..classify import classify

    try:
        loader_kwargs = json.loads(args.loader_kwargs)
    except json.JSONDecodeError as error:
        raise ValueError(f"--loader-kwargs is not valid JSON: {error}") from None
    if not isinstance(loader_kwargs, dict):
        raise ValueError(f"--loader-kwargs must be a JSON object, got {args.loader_kwargs!r}")
    if args.batch_size < 1 or args.n_boot < 0:
        raise ValueError(f"--batch-size must be >= 1 and --n-boot >= 0, got {args.batch_size} and {args.n_boot}")
    result = classify(
        args.classifier, args.data, args.out, loader_kwargs=loader_kwargs, predict_only=args.predict_only,
        batch_size=args.batch_size, n_boot=args.n_boot, seed=args.seed, device=args.device,
        num_workers=args.num_workers, progress=not args.quiet,
    )
    if "markdown" in result:
        print(result["markdown"])
    for name, path in result["paths"].items():
        print(f"{name}: {path}")
    return 0
