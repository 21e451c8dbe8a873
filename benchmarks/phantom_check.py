"""Measures the phantom: skin ITA per Fitzpatrick type, generation speed, and class separability at 32 px.

1. ITA: median ITA of the non-lesion pixels of `--per-type` images per type (all classes mixed),
   next to the Chardon / Del Bino band the type maps to (`dermdiff.skin_tone`).
2. Speed: images per second of `generate_phantom_sample` at 64 px, and the wall time of `write_phantom`
   for `--n` images at 64 px (PNG images, masks and maps included), on one core.
3. Separability (with `--classifier`): a three-layer CNN trained for a few epochs on 32 px phantom images
   of one seed and tested on another; the phantom should be learnable but not trivial.

    python benchmarks/phantom_check.py [--per-type 100] [--n 2000] [--classifier]
"""

import argparse
import os
import tempfile
import time

import numpy as np


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-type", dest="per_type", type=int, default=100, help="images per skin type for ITA")
    parser.add_argument("--n", type=int, default=2000, help="images written for the write_phantom timing")
    parser.add_argument("--classifier", action="store_true", help="also train and test a small CNN at 32 px")
    parser.add_argument("--epochs", type=int, default=8, help="classifier epochs")
    return parser.parse_args()


def ita_table(per_type: int) -> None:
    from dermdiff.data.phantom import PHANTOM_CONDITIONS, generate_phantom_sample
    from dermdiff.skin_tone import image_ita, ita_to_skin_type, skin_type_ita_range

    print(f"{'type':>4} {'median ITA':>10} {'min':>7} {'max':>7} {'in band':>8}   band")
    for skin_type in range(1, 7):
        itas = []
        for index in range(per_type):
            condition = PHANTOM_CONDITIONS[index % len(PHANTOM_CONDITIONS)]
            sample = generate_phantom_sample(condition, skin_type, size=64, seed=100, index=index)
            itas.append(image_ita(sample.image, lesion_mask=sample.mask))
        in_band = np.mean([ita_to_skin_type(ita) == skin_type for ita in itas])
        low, high = skin_type_ita_range(skin_type)
        print(f"{skin_type:>4} {np.median(itas):>10.1f} {min(itas):>7.1f} {max(itas):>7.1f} {in_band:>8.0%}   "
              f"({low:g}, {high:g}]")


def speed(n: int) -> None:
    from dermdiff.data.phantom import PHANTOM_CONDITIONS, generate_phantom_sample, write_phantom

    # Wall time depends on how busy the machine is; CPU time of this process is printed beside it.
    count = 500
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(count):
        generate_phantom_sample(PHANTOM_CONDITIONS[index % 5], 1 + index % 6, size=64, seed=0, index=index)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"generate_phantom_sample at 64 px: {count / elapsed:.0f} images/s wall, {count / cpu:.0f} images/s CPU")
    with tempfile.TemporaryDirectory() as folder:
        start, cpu = time.perf_counter(), time.process_time()
        write_phantom(os.path.join(folder, "p"), n=n, size=64, seed=0)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"write_phantom n={n} at 64 px (PNG image + mask + map): {elapsed:.1f} s wall, {cpu:.1f} s CPU")


def separability(epochs: int) -> None:
    import torch
    from torch import nn

    from dermdiff.data.phantom import PHANTOM_CONDITIONS, draw_record, plan_phantom

    torch.manual_seed(0)

    def tensors(n, seed):
        records = plan_phantom(n, seed)
        images = np.stack([np.asarray(draw_record(r, 32, seed).image) for r in records])
        labels = [PHANTOM_CONDITIONS.index(r.condition) for r in records]
        return torch.tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1, torch.tensor(labels)

    train_x, train_y = tensors(3000, 0)
    test_x, test_y = tensors(1000, 1)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5),
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for epoch in range(epochs):
        order = torch.randperm(len(train_x))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            loss = nn.functional.cross_entropy(net(train_x[batch]), train_y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            accuracy = (net(test_x).argmax(1) == test_y).float().mean().item()
        print(f"epoch {epoch + 1}: test accuracy {accuracy:.3f} (chance 0.200)")


def main(args):
    ita_table(args.per_type)
    speed(args.n)
    if args.classifier:
        separability(args.epochs)


if __name__ == "__main__":
    main(parse_args())
