"""Composition of make_splits' train / validation / mining / test on a real data set (issue 13).

Prints, per split, the share of images of each label, of images from single- vs multi-image lesions
(or patients) and of each `--stratify_by` value, and the largest difference between two splits' shares.
Reads only the metadata the loader needs (images are not decoded).

    python benchmarks/split_composition.py --data /work/shared/data/ham10000 --stratify_by dx_type
    python benchmarks/split_composition.py --data /work/shared/data/pad_ufes20 --stratify_by skin_type
"""

from __future__ import annotations

import argparse
import time

from dermdiff.data import composition_markdown, load_any, make_splits, split_composition


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/shared/data/ham10000", help="Any layout load_any reads.")
    parser.add_argument("--stratify_by", nargs="*", default=["dx_type"], help="Extra columns to match.")
    parser.add_argument("--seed", type=int, default=0, help="Split seed.")
    args = parser.parse_args(argv)

    dataset = load_any(args.data)
    start = time.perf_counter()
    parts = make_splits(dataset, seed=args.seed, stratify_by=args.stratify_by, use_split_column=False)
    seconds = time.perf_counter() - start
    print(f"# {args.data}: {len(dataset)} images, split in {seconds:.1f} s (seed {args.seed})\n")
    print(composition_markdown(split_composition(parts, args.stratify_by)))


if __name__ == "__main__":
    main()
