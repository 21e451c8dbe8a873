"""Feature-extraction throughput for FID: dermdiff's paths vs clean-fid's own folder path.

Same images (the first N of a real image folder, linked into a temporary folder), same extractor, same
batch size and workers. Three ways to get the features:

- clean-fid: `cleanfid.fid.get_folder_features(folder, extractor, mode="clean", custom_fn_resize=...)`;
- dermdiff folder: `FolderSource(folder)` through `dermdiff.metrics.fid.source_features` (no cache);
- dermdiff datasets: the same files as a `datasets.Dataset` split through `DatasetSource` (in-memory path).

The runs are interleaved (in rotating order) and repeated. Each run is timed twice: wall clock, and the CPU time of this
process (`time.process_time`, all work is in-process with `--num-workers 0`), which a busy shared machine
disturbs far less than the wall clock. Reported: the median and best images/s of each path and the
ratios dermdiff / clean-fid of both (the target is >= 0.9; on a loaded machine the best-of-N is the
steadier of the two).

The extractor defaults to a randomly initialised torchvision ResNet-18 at 224 px, since clean-fid's
Inception weights cannot be downloaded here; the extractor is the same on both sides, so the ratio
measures the pipelines around it.

    python benchmarks/feature_throughput.py [--images /work/shared/data/ham10000/images] [--num-images 256]
"""

import argparse
import glob
import os
import statistics
import tempfile
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="/work/shared/data/ham10000/images", help="folder of real images")
    parser.add_argument("--num-images", dest="num_images", type=int, default=256, help="images per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each path")
    parser.add_argument("--extractor", default="torchvision:resnet18:random", help="dermdiff extractor spec")
    parser.add_argument("--resolution", type=int, default=224, help="extractor input size")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=32)
    parser.add_argument("--num-workers", dest="num_workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.num_images < 2 or args.repeats < 1:
        parser.error("--num-images must be >= 2 and --repeats >= 1")
    return args


def main(args):
    import datasets
    import torch
    from cleanfid.fid import get_folder_features

    from dermdiff.metrics.features import describe_extractor, load_extractor
    from dermdiff.metrics.fid import source_features
    from dermdiff.metrics.sources import DatasetSource, FolderSource

    files = sorted(glob.glob(os.path.join(args.images, "*.jpg")) + glob.glob(os.path.join(args.images, "*.png"))
                   + glob.glob(os.path.join(args.images, "*.webp")))[: args.num_images]
    if len(files) < args.num_images:
        raise SystemExit(f"{args.images} has only {len(files)} images; need {args.num_images}")
    if args.threads:
        torch.set_num_threads(args.threads)
    extractor = load_extractor(args.extractor, resolution=args.resolution).to(args.device)
    folder = tempfile.mkdtemp(prefix="dermdiff_throughput_")
    for path in files:  # links, not copies: the same bytes are read by every path
        os.symlink(path, os.path.join(folder, os.path.basename(path)))
    dataset = datasets.Dataset.from_dict({"image": files}).cast_column("image", datasets.Image())

    def cleanfid_path():
        return get_folder_features(folder, extractor, num_workers=args.num_workers, batch_size=args.batch_size,
                                   device=torch.device(args.device), mode="clean",
                                   custom_fn_resize=extractor.resizer(), verbose=False)

    def folder_path():
        return source_features(FolderSource(folder), extractor, batch_size=args.batch_size,
                               num_workers=args.num_workers, device=args.device, verbose=False)[0].features

    def datasets_path():
        return source_features(DatasetSource(dataset, name="bench"), extractor, batch_size=args.batch_size,
                               num_workers=args.num_workers, device=args.device, verbose=False)[0].features

    paths = {"clean-fid folder": cleanfid_path, "dermdiff folder": folder_path, "dermdiff datasets": datasets_path}
    wall, cpu = {name: [] for name in paths}, {name: [] for name in paths}
    reference = None
    with torch.inference_mode():
        names = list(paths)
        for repeat in range(args.repeats):
            for name in names[repeat % 3:] + names[: repeat % 3]:  # rotate the order: no path always runs first
                run = paths[name]
                start, start_cpu = time.perf_counter(), time.process_time()
                features = run()
                wall[name].append(len(files) / (time.perf_counter() - start))
                cpu[name].append(len(files) / (time.process_time() - start_cpu))
                if reference is None:
                    reference = features
                elif abs(features - reference).max() > 1e-3 * (abs(reference).max() + 1e-12):
                    raise SystemExit(f"{name} gives different features from clean-fid's path")
    print(f"extractor: {describe_extractor(extractor)}")
    print(f"{len(files)} images from {args.images}, batch {args.batch_size}, workers {args.num_workers}, "
          f"{args.repeats} interleaved repeats, device {args.device}, torch threads {torch.get_num_threads()}")
    for clock, rates in (("wall clock", wall), ("process CPU time", cpu)):
        base, best = statistics.median(rates["clean-fid folder"]), max(rates["clean-fid folder"])
        print(f"-- {clock}: images/s, median and best over runs; ratios to clean-fid (median / best)")
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"{name:>18}: {median:7.1f} {max(values):7.1f}  ratio {median / base:.3f} / {max(values) / best:.3f}"
                  f"  runs {', '.join(f'{v:.1f}' for v in values)}")


if __name__ == "__main__":
    main(parse_args())
