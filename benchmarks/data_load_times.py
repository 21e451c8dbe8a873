"""Prints how long each real dataset takes to load with one `dermdiff.data.load_any` call.

    python benchmarks/data_load_times.py [DATA_ROOT]     (default: $DERMDIFF_DATA or ../shared/data)

Each set is loaded in full (every image decoded once to prove it readable, every semantic map
encoded), then split with `make_splits`; the numbers depend on the machine's load.
"""

from __future__ import annotations

import os
import sys
import time

from dermdiff.data import load_any, make_splits, registry_of


def main(root: str) -> None:
    cases = [("ham10000", {}), ("ham10000", {"size": 64}), ("dermamnist", {"split": "all"}), ("pad_ufes20", {})]
    print(f"{'set':<12} {'options':<16} {'rows':>6} {'load s':>8} {'ms/row':>7} {'split s':>8}  registry")
    for name, options in cases:
        path = os.path.join(root, name)
        if not os.path.exists(path):
            print(f"{name:<12} missing at {path}")
            continue
        start = time.perf_counter()
        dataset = load_any(path, **options)
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        make_splits(dataset, use_split_column=False)
        split = time.perf_counter() - start
        print(
            f"{name:<12} {str(options or ''):<16} {len(dataset):>6} {loaded:>8.2f} {1000 * loaded / len(dataset):>7.2f} "
            f"{split:>8.2f}  {registry_of(dataset).registry_name}"
        )


if __name__ == "__main__":
    default = os.environ.get("DERMDIFF_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    main(sys.argv[1] if len(sys.argv) > 1 else default)
