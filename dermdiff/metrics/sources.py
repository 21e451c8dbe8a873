"""Where images for a metric come from: a folder, a `datasets` split, a list in memory, or a pipeline.

Every source turns into a `FeatureSet` (features plus the condition and skin type of each image) through
the same resizing as clean-fid's "clean" mode, so a number does not depend on where the images came from.
Folders go through clean-fid's own `get_files_features`; images held in memory (a `datasets` split, a
list, a pipeline's output) go through the same resizer and clean-fid's `get_batch_features`.

Example:
    >>> source = as_source("/data/phantom", split="test")                 # folder + metadata.csv
    >>> source = as_source(dataset_dict, split="validation")               # datasets split, column `image`
    >>> source = PipelineSource(pipe, num_images=256, maps=maps, seed=0)    # generated on the fly
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..pipelines.generation_settings import GenerationSettings
from .features import describe_extractor, images_to_batch

IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")
# sub-folders of a dataset folder that hold annotations, not photos
_NON_IMAGE_DIRS = {"maps", "masks", "mask"}


@dataclass
class FeatureSet:
    """Features of a set of images and, per image, its condition name ("" unknown) and skin type (0 unknown)."""

    features: np.ndarray
    labels: np.ndarray
    skin_types: np.ndarray
    extractor: dict = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def subset(self, keep: np.ndarray) -> "FeatureSet":
        return FeatureSet(self.features[keep], self.labels[keep], self.skin_types[keep], self.extractor, self.source)

    def save(self, path: str, meta: dict | None = None) -> None:
        import json

        tmp = path + ".tmp.npz"
        np.savez_compressed(
            tmp,
            features=self.features.astype(np.float32),
            labels=self.labels.astype(str),
            skin_types=self.skin_types.astype(np.int64),
            meta=np.array(json.dumps({"extractor": self.extractor, "source": self.source, **(meta or {})})),
        )
        os.replace(tmp, path)  # a crash mid-write never leaves a truncated cache file

    @classmethod
    def load(cls, path: str) -> "FeatureSet":
        import json

        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(data["features"].astype(np.float64), data["labels"], data["skin_types"], meta["extractor"],
                       meta["source"])


def _as_rgb_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be PIL or uint8 HxWx3 arrays, got dtype {array.dtype}")
    return array


class ResizeTo:
    """Resizes a uint8 HWC array to `resolution` x `resolution` (PIL bicubic, quantised like a saved image).

    Used as clean-fid's `custom_image_tranform` so real photos are compared with generated ones at the
    generation resolution; a class (not a closure) so DataLoader workers can pickle it.
    """

    def __init__(self, resolution: int | None):
        self.resolution = resolution

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if not self.resolution or array.shape[:2] == (self.resolution, self.resolution):
            return array
        image = Image.fromarray(array).resize((self.resolution, self.resolution), Image.BICUBIC)
        return np.asarray(image)


class _ArrayDataset(torch.utils.data.Dataset):
    """In-memory counterpart of clean-fid's ResizeDataset: same transform, same resizer, same output."""

    def __init__(self, get_image: Callable[[int], object], length: int, transform, fn_resize):
        self.get_image, self.length, self.transform, self.fn_resize = get_image, length, transform, fn_resize

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        resized = self.fn_resize(self.transform(_as_rgb_array(self.get_image(index))))
        return torch.from_numpy(np.ascontiguousarray(resized, dtype=np.float32)).permute(2, 0, 1)


def _resizer(extractor):
    """The extractor's clean-fid resizer, else clean-fid's own "clean" one (299 px)."""
    if hasattr(extractor, "resizer"):
        return extractor.resizer()
    from cleanfid.resize import build_resizer

    return build_resizer("clean")


def _array_features(get_image, length: int, options, num_workers: int, name: str) -> np.ndarray:
    """Features of images fetched by index, batched like clean-fid's folder path."""
    from cleanfid.fid import get_batch_features

    data = _ArrayDataset(get_image, length, ResizeTo(options.resolution), _resizer(options.extractor))
    loader = torch.utils.data.DataLoader(data, batch_size=options.batch_size, num_workers=num_workers)
    batches = tqdm(loader, desc=f"features {name}", disable=not options.verbose)
    chunks = [get_batch_features(batch, options.extractor, torch.device(options.device)) for batch in batches]
    if not chunks:
        raise ValueError(f"{name}: no images")
    return np.concatenate(chunks)


def _feature_set(features, labels, skin_types, options, source: str) -> FeatureSet:
    return FeatureSet(np.asarray(features, dtype=np.float64), np.array(labels, dtype=str),
                      np.array(skin_types, dtype=np.int64), describe_extractor(options.extractor), source)


def _normalise_label(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def _normalise_skin_type(value) -> int:
    from ..semantic_map import validate_skin_type

    if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
        return 0
    return validate_skin_type(value)


@dataclass
class ExtractOptions:
    extractor: torch.nn.Module
    resolution: int | None = None
    batch_size: int = 32
    num_workers: int = 0
    device: "torch.device | str" = "cpu"
    verbose: bool = True


class FolderSource:
    """An image folder; labels and skin types come from its `metadata.csv` when it has one.

    With a `metadata.csv` (dermdiff / Hugging Face imagefolder convention: `file_name`, `label`, optional
    `skin_type`, optional `split`) exactly its listed files are used (only rows of `split` when given);
    without one, every image under the folder except the `maps/` and `masks/` sub-folders.
    """

    cacheable = True

    def __init__(self, path: str, split: str | None = None):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"image folder {path} does not exist")
        self.path, self.split = os.path.abspath(path), split
        self.files, self.labels, self.skin_types = self._list()
        if not self.files:
            raise ValueError(f"no images in {path}" + (f" for split {split!r}" if split else ""))

    def _list(self):
        metadata = os.path.join(self.path, "metadata.csv")
        if os.path.isfile(metadata):
            files, labels, skin_types = [], [], []
            with open(metadata, newline="") as handle:
                for row in csv.DictReader(handle):
                    if self.split and row.get("split") not in (None, "", self.split):
                        continue
                    name = row.get("file_name") or row.get("file")
                    if not name:
                        raise ValueError(f"{metadata} needs a file_name column")
                    files.append(os.path.join(self.path, name))
                    labels.append(_normalise_label(row.get("label_name") or row.get("label")))
                    skin_types.append(_normalise_skin_type(row.get("skin_type")))
            return files, labels, skin_types
        if self.split:
            raise ValueError(f"split {self.split!r} asked for, but {self.path} has no metadata.csv (split column)")
        files = sorted(
            path
            for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS)
            for path in glob.glob(os.path.join(self.path, "**", f"*.{ext}"), recursive=True)
            if not _NON_IMAGE_DIRS & set(os.path.relpath(path, self.path).split(os.sep)[:-1])
        )
        return files, [""] * len(files), [0] * len(files)

    def __len__(self) -> int:
        return len(self.files)

    def identity(self) -> dict:
        digest = hashlib.sha1()
        for path in self.files:
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, self.path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return {"kind": "folder", "dataset": self.path, "split": self.split or "all", "files": digest.hexdigest()}

    def features(self, options: ExtractOptions) -> FeatureSet:
        from cleanfid.fid import get_files_features

        features = get_files_features(
            self.files, model=options.extractor, num_workers=options.num_workers, batch_size=options.batch_size,
            device=torch.device(options.device), mode="clean", custom_fn_resize=_resizer(options.extractor),
            custom_image_tranform=ResizeTo(options.resolution), description=f"features {os.path.basename(self.path)}",
            verbose=options.verbose,
        )
        return _feature_set(features, self.labels, self.skin_types, options, self.path)


class DatasetSource:
    """A `datasets.Dataset` (or one split of a `DatasetDict`) with an `image` column.

    Labels come from `label_name` (or `label` mapped through `registry`), skin types from `skin_type`.
    """

    cacheable = True

    def __init__(self, dataset, split: str | None = None, registry=None, name: str | None = None):
        if hasattr(dataset, "keys") and not hasattr(dataset, "column_names"):  # a DatasetDict
            if split is None or split not in dataset:
                raise ValueError(f"choose a split of the DatasetDict: {list(dataset.keys())}, got {split!r}")
            dataset = dataset[split]
        if "image" not in dataset.column_names:
            raise ValueError(f"the dataset needs an 'image' column; it has {dataset.column_names}")
        self.dataset, self.split = dataset, split or getattr(dataset, "split", None) or "all"
        self.name = name or _dataset_name(dataset)
        columns = dataset.column_names
        if "label_name" in columns:
            labels = [_normalise_label(v) for v in dataset["label_name"]]
        elif "label" in columns and registry is not None:
            from ..conditions import get_registry

            reg = get_registry(registry)
            labels = [reg.names[int(v)] if v is not None else "" for v in dataset["label"]]
        elif "label" in columns:
            labels = [_normalise_label(v) for v in dataset["label"]]
        else:
            labels = [""] * len(dataset)
        skin = dataset["skin_type"] if "skin_type" in columns else [None] * len(dataset)
        self.labels, self.skin_types = labels, [_normalise_skin_type(v) for v in skin]
        self._images = None

    def __len__(self) -> int:
        return len(self.dataset)

    def identity(self) -> dict:
        fingerprint = getattr(self.dataset, "_fingerprint", None)
        if fingerprint is None:
            raise ValueError("this dataset has no fingerprint; pass cache_dir=None to skip caching")
        return {"kind": "datasets", "dataset": self.name, "split": str(self.split), "files": fingerprint}

    def _image(self, index: int):
        if self._images is None:
            self._images = _raw_image_column(self.dataset)
        item = self._images[int(index)]
        if isinstance(item, dict):
            return Image.open(io.BytesIO(item["bytes"])) if item.get("bytes") else Image.open(item["path"])
        return item

    def features(self, options: ExtractOptions) -> FeatureSet:
        name = f"{self.name}/{self.split}"
        features = _array_features(self._image, len(self.dataset), options, options.num_workers, name)
        return _feature_set(features, self.labels, self.skin_types, options, name)


class ImageListSource:
    """Images already in memory (PIL or uint8 arrays), with optional per-image labels and skin types."""

    cacheable = False

    def __init__(self, images: Sequence, labels: Sequence | None = None, skin_types: Sequence | None = None,
                 name: str = "images"):
        if len(images) == 0:
            raise ValueError("no images given")
        self.images, self.name = list(images), name
        self.labels = [_normalise_label(v) for v in labels] if labels is not None else [""] * len(images)
        skin_types = skin_types if skin_types is not None else [None] * len(images)
        self.skin_types = [_normalise_skin_type(v) for v in skin_types]
        if len(self.labels) != len(images) or len(self.skin_types) != len(images):
            raise ValueError("labels and skin_types need one entry per image")

    def __len__(self) -> int:
        return len(self.images)

    def features(self, options: ExtractOptions) -> FeatureSet:
        # in-process (num_workers=0): the images already sit in this process's memory
        features = _array_features(self.images.__getitem__, len(self.images), options, 0, self.name)
        return _feature_set(features, self.labels, self.skin_types, options, self.name)


class PipelineSource:
    """Images generated on the fly by a pipeline, batched and seeded.

    Image `i` is generated from `maps[i % len(maps)]` (when maps are given) with its own generator seeded
    `seed + i`, so the set does not depend on the batch size. The pipeline is called as
    `pipeline(semantic_map=[maps...], num_inference_steps=..., generator=[...], output_type="pil", **call_kwargs)`
    and its `.images` (or first tuple element) are used; without maps `batch_size=` is passed instead.

    Args:
        pipeline (`Callable`): a diffusers-style pipeline (or any callable with that signature).
        num_images (`int`): how many images to generate.
        maps (`Sequence[SemanticMap]`, *optional*): the requested maps (labels/skin types come from them).
        settings (`GenerationSettings`, *optional*): steps, guidance scale (when set) and images per call; default
            `GenerationSettings.for_evaluation()`. Its scheduler is the caller's to set (`load_pipeline`).
        seed (`int`, defaults to 0): image `i` is seeded `seed + i`.
        keep_images (`bool`, defaults to `False`): keep the PIL images in `.images` after `features()`.
    """

    cacheable = False

    def __init__(self, pipeline: Callable, num_images: int, maps: Sequence | None = None,
                 settings: GenerationSettings | None = None, seed: int = 0, keep_images: bool = False, **call_kwargs):
        if int(num_images) < 2:
            raise ValueError(f"num_images must be >= 2 for FID/KID, got {num_images}")
        if maps is not None and len(maps) == 0:
            raise ValueError("maps is empty; pass None for an unconditional pipeline")
        old_keywords = sorted(set(call_kwargs) & {"num_inference_steps", "batch_size", "guidance_scale"})
        if old_keywords:  # they would reach the pipeline twice; say where they go now (README changelog, 0.2)
            raise TypeError(f"PipelineSource takes {', '.join(old_keywords)} inside settings=GenerationSettings(...)")
        self.pipeline, self.num_images, self.maps = pipeline, int(num_images), list(maps) if maps is not None else None
        self.settings, self.seed = GenerationSettings.for_evaluation(settings), int(seed)
        self.batch_size = self.settings.batch_size
        self.keep_images, self.call_kwargs, self.images = keep_images, call_kwargs, []

    def __len__(self) -> int:
        return self.num_images

    def requested_map(self, index: int):
        return self.maps[index % len(self.maps)] if self.maps is not None else None

    def generate(self, start: int, stop: int) -> list:
        """Images `start..stop-1` (PIL)."""
        generators = [torch.Generator("cpu").manual_seed(self.seed + i) for i in range(start, stop)]
        kwargs = dict(generator=generators, output_type="pil")
        kwargs.update(self.settings.call_kwargs(self.pipeline))  # steps + guidance, where the pipeline takes them
        if self.maps is not None:
            kwargs["semantic_map"] = [self.requested_map(i) for i in range(start, stop)]
        else:
            kwargs["batch_size"] = stop - start
        output = self.pipeline(**kwargs, **self.call_kwargs)
        images = output.images if hasattr(output, "images") else output[0]
        if len(images) != stop - start:
            raise ValueError(f"the pipeline returned {len(images)} images for a batch of {stop - start}")
        return list(images)

    def labels_and_skin_types(self):
        labels, skin_types = [], []
        for i in range(self.num_images):
            smap = self.requested_map(i)
            labels.append(_normalise_label(smap.condition) if smap is not None else "")
            skin_types.append(int(smap.skin_type or 0) if smap is not None else 0)
        return labels, skin_types

    def features(self, options: ExtractOptions) -> FeatureSet:
        fn_resize = _resizer(options.extractor)
        transform, device, chunks = ResizeTo(options.resolution), torch.device(options.device), []
        from cleanfid.fid import get_batch_features

        self.images = []
        starts = range(0, self.num_images, self.batch_size)
        for start in tqdm(starts, desc="generate + features", disable=not options.verbose):
            images = self.generate(start, min(start + self.batch_size, self.num_images))
            if self.keep_images:
                self.images.extend(images)
            batch = images_to_batch([fn_resize(transform(_as_rgb_array(image))) for image in images])
            chunks.append(get_batch_features(batch, options.extractor, device))
        labels, skin_types = self.labels_and_skin_types()
        return _feature_set(np.concatenate(chunks), labels, skin_types, options, "pipeline")


def _raw_image_column(dataset) -> list:
    """The `image` column as stored ({"path", "bytes"} per row), read once.

    Decoding rows through `dataset[i]` costs an Arrow round trip per image and decodes every image column
    of the row (a dermdiff row also holds its mask and map); opening the stored file or bytes directly is
    what clean-fid does with a folder, so both paths cost the same per image.
    """
    import datasets

    if not isinstance(dataset.features.get("image"), datasets.Image):
        return dataset["image"]  # not an Image feature (e.g. arrays): as it is
    column = dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
    return column.with_format("arrow")[:]["image"].to_pylist()  # respects a select()/filter() index mapping


def _dataset_name(dataset) -> str:
    """The folder a dermdiff loader read (stored in `info.description`), else the dataset's name."""
    import json

    info = getattr(dataset, "info", None)
    try:
        source = json.loads(info.description or "{}").get("dermdiff", {}).get("source")
    except (AttributeError, ValueError):
        source = None
    if source:
        return os.path.basename(os.path.normpath(source))
    return getattr(info, "dataset_name", None) or "dataset"


def as_source(obj, split: str | None = None, registry=None):
    """Wraps a folder path, a `datasets` Dataset/DatasetDict, a list of images or a source into a source."""
    if isinstance(obj, (FolderSource, DatasetSource, ImageListSource, PipelineSource)):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return FolderSource(os.fspath(obj), split=split)
    if hasattr(obj, "column_names") or (hasattr(obj, "keys") and hasattr(obj, "map")):
        return DatasetSource(obj, split=split, registry=registry)
    if isinstance(obj, (list, tuple)):
        return ImageListSource(obj)
    raise ValueError(
        f"cannot read images from {type(obj).__name__}; give a folder path, a datasets Dataset/DatasetDict, "
        "a list of PIL images, a PipelineSource or a FeatureSet"
    )

