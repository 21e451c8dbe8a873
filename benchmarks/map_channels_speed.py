"""Training data loading: rows/s of the row -> tensor transform before and after the map fast path.

Training needs only a map's channels, but it used to decode every RGB map into a `SemanticMap` (one
connected-component labelling per condition, one mask per region) every epoch and then draw the
channels back from the regions. `SemanticMap.channels_from_rgb` reads the channels straight off the
codes with the same checks. This prints, for phantom rows at each resolution:

- map only: `decode(map).resize(size).to_channels()` (before) vs `channels_from_rgb(map, size=size)` (after),
  checked equal on every row;
- one data epoch as training reads it (`datasets` decodes the PNGs, the transform builds the tensors):
  `DiffusionExamples` now against the same transform with the slow map path, and `model_transform`.

Run: `python benchmarks/map_channels_speed.py [--rows 256] [--repeats 5] [--sizes 32,64]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dermdiff.data import phantom_dataset, registry_of
from dermdiff.data.transforms import model_transform, pixel_values
from dermdiff.loops.diffusion import DiffusionExamples
from dermdiff.semantic_map import SemanticMap


def paired_rates(before, after, items, repeats: int) -> tuple[float, float]:
    """Median rows/s of `before` and of `after` over `items`; the two alternate, as the CPU is shared."""
    rates = {before: [], after: []}
    for _ in range(repeats):
        for function in (before, after):
            start = time.perf_counter()
            for item in items:
                function(item)
            rates[function].append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates[before]), statistics.median(rates[after])


def main(args) -> None:
    rows = phantom_dataset(n=args.rows, size=args.data_size, seed=0)
    registry = registry_of(rows)
    maps = [item.copy() for item in rows["semantic_map"]]  # decoded once: time the map step alone
    for size in args.sizes:

        def slow_map(item):
            return SemanticMap.decode(item, registry).resize(size).to_channels()

        def fast_map(item):
            return SemanticMap.channels_from_rgb(item, registry, size=size)

        for item in maps:  # equal on every row (and warms both paths up)
            assert torch.equal(slow_map(item), fast_map(item))
        examples = DiffusionExamples(registry, size)

        def before(batch):  # DiffusionExamples as it was: same pixels, map decoded into regions first
            return [(pixel_values(image, size), slow_map(smap)) for image, smap in zip(batch["image"], batch["semantic_map"])]

        def epoch(transform):
            """A function that passes over the dataset in batches of 16 (PNG decoding by `datasets` included)."""

            def run(_):
                view = rows.with_transform(transform)
                for index in range(0, len(view), 16):
                    view[index : index + 16]

            return run

        map_before, map_after = paired_rates(slow_map, fast_map, maps, args.repeats)
        epochs = paired_rates(epoch(before), epoch(examples), [None], args.repeats)
        epoch_before, epoch_after = (len(rows) * rate for rate in epochs)
        epoch_gan = len(rows) * paired_rates(epoch(model_transform(size, registry)), epoch(examples), [None], 1)[0]
        print(f"{len(maps)} phantom rows of {args.data_size} px -> {size} px (median of {args.repeats} passes):")
        print(f"  map -> channels:      {map_before:7.0f} rows/s before, {map_after:7.0f} after "
              f"({map_after / map_before:.1f}x)")
        print(f"  diffusion data epoch: {epoch_before:7.0f} rows/s before, {epoch_after:7.0f} after "
              f"({epoch_after / epoch_before:.1f}x; PNG decoding included)")
        print(f"  GAN data epoch (model_transform): {epoch_gan:7.0f} rows/s")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="phantom rows to transform")
    parser.add_argument("--data_size", type=int, default=64, help="side of the phantom images and maps")
    parser.add_argument("--sizes", default="32,64", help="comma list of model resolutions")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes; the median is printed")
    args = parser.parse_args(argv)
    args.sizes = [int(value) for value in args.sizes.split(",")]
    return args


if __name__ == "__main__":
    main(parse_args())
