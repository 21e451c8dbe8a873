"""Checks the ITA skin-tone measure against real photos with a Fitzpatrick label (PAD-UFES-20).

Prints, per Fitzpatrick type, the number of photos and the median (quartiles) ITA of the non-lesion skin
as `dermdiff.metrics.fidelity.ita_by_skin_type` measures it (lesion left out by colour segmentation), next
to the ITA band the type maps to (`dermdiff.skin_tone`). A working measure gives medians that fall as the
type rises; the bands themselves come from colorimetry studies, so agreement per type is not expected to
be exact (Fitzpatrick types describe sun reactivity, ITA only colour).

    python benchmarks/ita_pad_ufes20.py [--data /work/shared/data/pad_ufes20] [--json out.json]
"""

import argparse
import json
import os
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/pad_ufes20", help="PAD-UFES-20 folder (metadata.csv)")
    parser.add_argument("--limit", type=int, default=None, help="read only the first N rows")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    return parser.parse_args()


def main(args):
    from dermdiff.data import load_pad_ufes20
    from dermdiff.metrics.fidelity import ita_by_skin_type
    from dermdiff.skin_tone import skin_type_ita_range

    if not os.path.isdir(args.data):
        raise SystemExit(f"{args.data} not found")
    start = time.perf_counter()
    dataset = load_pad_ufes20(args.data, limit=args.limit)
    labelled = dataset.filter(lambda row: row["skin_type"] is not None)
    table = ita_by_skin_type(labelled["image"], labelled["skin_type"])
    elapsed = time.perf_counter() - start
    print(f"PAD-UFES-20: {len(labelled)} of {len(dataset)} photos have a Fitzpatrick label ({elapsed:.1f} s)")
    print(f"{'type':>4} {'n':>4} {'median ITA':>11} {'q25':>7} {'q75':>7}   ITA band of the type")
    for skin_type, row in table.items():
        low, high = skin_type_ita_range(int(skin_type))
        print(f"{skin_type:>4} {row['n']:>4} {row['median']:>11.1f} {row['q25']:>7.1f} {row['q75']:>7.1f}   "
              f"({low:g}, {high:g}]")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(table, handle, indent=2)


if __name__ == "__main__":
    main(parse_args())
