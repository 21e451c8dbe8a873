"""Wall time of `dermdiff classify` on N HAM10000 images at 64 px, split into loading and prediction + metrics.

    OMP_NUM_THREADS=1 python benchmarks/classify_time.py --num_images 2000 --threads 1 --out /tmp/classify_time

The classifier is a ResNet-18 `SkinClassifier` at 64 px with the seven HAM10000 classes, randomly
initialised with seed 0 (its accuracy is meaningless; the cost of a forward pass does not depend on the
weights). Timed: `dermdiff classify --data <ham10000> --loader-kwargs '{"size": 64, "limit": N}'` run in
this process through `dermdiff.cli.main` (so the numbers are the command's), once with data loading and
once with the data already loaded (`classify` on the `Dataset`), with `--n-boot 1000`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from dermdiff.classifier import SkinClassifier
from dermdiff.classify import classify
from dermdiff.cli import main as cli_main
from dermdiff.data import load_any

HAM = "/work/shared/data/ham10000"
HAM_NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=HAM, help="HAM10000 folder")
    parser.add_argument("--num_images", type=int, default=2000, help="images scored")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", default="/tmp/classify_time", help="output folder")
    return parser.parse_args()


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    classifier_dir = os.path.join(args.out, "resnet18-64")
    SkinClassifier(backbone="resnet18", num_labels=7, label_names=HAM_NAMES, image_size=64).save_pretrained(
        classifier_dir
    )
    loader_kwargs = {"size": 64, "limit": args.num_images}
    started = time.perf_counter()
    code = cli_main(["classify", "--classifier", classifier_dir, "--data", args.data, "--out",
                     os.path.join(args.out, "eval"), "--loader-kwargs", json.dumps(loader_kwargs), "--quiet"])
    total = time.perf_counter() - started
    if code != 0:
        raise SystemExit(code)
    started = time.perf_counter()
    dataset = load_any(args.data, **loader_kwargs)
    loading = time.perf_counter() - started
    started = time.perf_counter()
    classify(classifier_dir, dataset, os.path.join(args.out, "eval-loaded"), progress=False)
    scoring = time.perf_counter() - started
    result = {"num_images": len(dataset), "threads": args.threads, "command_seconds": round(total, 1),
              "loading_seconds": round(loading, 1), "predict_and_metrics_seconds": round(scoring, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(parse_args())
