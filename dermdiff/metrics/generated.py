"""A folder of generated images with the maps they were asked for: what the evaluation reads.

Written by `generate_evaluation_set` from a pipeline, or by any other tool (a GAN script, another
repository) in the same layout, so `dermdiff evaluate --generated DIR` works without our pipeline:

    generated/
      images/00000.png      the samples
      maps/00000.png        the semantic map each was generated from (`SemanticMap.to_pil()`)
      metadata.csv          file_name,map_file,label,skin_type,sweep,sweep_id,sweep_value
      dataset_info.json     {"registry": {...}} so the maps decode with the right condition codes

`sweep` is empty for ordinary samples, `skin_type` or `size` for the images of a DermGAN-style sweep
(figures 5 and 6); `sweep_id` groups one sweep, `sweep_value` is the swept skin type or size factor.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..conditions import get_registry
from ..semantic_map import SemanticMap

COLUMNS = ("file_name", "map_file", "label", "skin_type", "sweep", "sweep_id", "sweep_value")
SIZE_FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0)


@dataclass
class GeneratedSet:
    """Generated images, their maps and sweep rows (in file order)."""

    images: list
    maps: list
    rows: list = field(default_factory=list)
    registry: object = None

    def samples(self) -> tuple[list, list]:
        """Images and maps of the ordinary samples (sweeps left out)."""
        keep = [i for i, row in enumerate(self.rows) if not row.get("sweep")]
        return [self.images[i] for i in keep], [self.maps[i] for i in keep]

    def sweeps(self, kind: str) -> list[dict]:
        """Each sweep of `kind` ("skin_type" or "size") as {"id", "values", "images", "maps"}, values ascending."""
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(self.rows):
            if row.get("sweep") == kind:
                groups.setdefault(row["sweep_id"], []).append(i)
        out = []
        for sweep_id, indices in sorted(groups.items()):
            indices.sort(key=lambda i: float(self.rows[i]["sweep_value"]))
            out.append({"id": sweep_id, "values": [float(self.rows[i]["sweep_value"]) for i in indices],
                        "images": [self.images[i] for i in indices], "maps": [self.maps[i] for i in indices]})
        return out


def write_generated_set(out_dir: str, images: list, maps: list, registry, sweeps: list[dict] | None = None) -> str:
    """Writes samples (and optional sweeps: dicts with kind, id, values, images, maps) in the layout above."""
    from ..data.folder_writer import image_stem, write_image_folder

    registry = get_registry(registry)
    entries = [(image, smap, "", "", "") for image, smap in zip(images, maps)]
    for sweep in sweeps or []:
        entries += [(image, smap, sweep["kind"], str(sweep["id"]), f"{value:g}")
                    for image, smap, value in zip(sweep["images"], sweep["maps"], sweep["values"])]

    def rows():
        for index, (image, smap, kind, sweep_id, value) in enumerate(entries):
            name = f"{image_stem(index, len(entries))}.png"
            files = {f"images/{name}": image.convert("RGB"), f"maps/{name}": smap.to_pil()}
            yield files, {"file_name": f"images/{name}", "map_file": f"maps/{name}", "label": smap.condition or "",
                          "skin_type": smap.skin_type, "sweep": kind, "sweep_id": sweep_id, "sweep_value": value}

    return write_image_folder(out_dir, rows(), COLUMNS, {"registry": registry.to_dict()})


def read_generated_set(path: str, registry=None) -> GeneratedSet:
    """Reads a folder written by `write_generated_set` (or by hand in that layout)."""
    metadata = os.path.join(path, "metadata.csv")
    if not os.path.isfile(metadata):
        raise FileNotFoundError(f"{metadata} not found; a generated set needs metadata.csv with {COLUMNS[:2]}")
    if registry is None:
        info = os.path.join(path, "dataset_info.json")
        if not os.path.isfile(info):
            raise ValueError(f"{path} has no dataset_info.json; pass the registry the maps were drawn with")
        with open(info) as handle:
            registry = json.load(handle)["registry"]
    registry = get_registry(registry)
    images, maps, rows = [], [], []
    with open(metadata, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            if not row.get("file_name") or not row.get("map_file"):
                raise ValueError(f"{metadata} line {line}: file_name and map_file are required")
            with Image.open(os.path.join(path, row["file_name"])) as image:
                images.append(image.convert("RGB"))
            with Image.open(os.path.join(path, row["map_file"])) as image:
                maps.append(SemanticMap.decode(image.convert("RGB"), registry=registry,
                                               source=f"{metadata} line {line}"))
            rows.append({key: row.get(key) or "" for key in COLUMNS})
    if not images:
        raise ValueError(f"{metadata} lists no images")
    return GeneratedSet(images, maps, rows, registry)


def is_generated_set(path: str) -> bool:
    """True for a folder in this module's layout (`dataset_info.json` + a `metadata.csv` with `map_file`).

    The phantom's folders qualify too (their maps are the ones each image was drawn from); anything else is
    read as real data by `real_image_set`.
    """
    import pandas as pd

    metadata = os.path.join(path, "metadata.csv")
    if not (os.path.isfile(metadata) and os.path.isfile(os.path.join(path, "dataset_info.json"))):
        return False
    return "map_file" in pd.read_csv(metadata, nrows=0).columns


def real_image_set(path: str, size: int | None = None, limit: int | None = None) -> GeneratedSet:
    """Real data (any layout `dermdiff.data.load_any` reads) in the place of generated images.

    Why: `dermdiff evaluate --generated REAL_FOLDER` scores real photos exactly as it would score samples, each
    with the semantic map of its own annotations, e.g. to see what another real data set (or a held-out part)
    scores against the reference.
    """
    from ..data import load_any, registry_of

    dataset = load_any(path, **({"size": size} if size else {}), **({"limit": limit} if limit else {}))
    registry = registry_of(dataset)
    images, maps = [], []
    for row in dataset.select_columns(["image", "semantic_map"]):
        images.append(row["image"].convert("RGB"))
        maps.append(SemanticMap.decode(row["semantic_map"], registry=registry, source=path))
    return GeneratedSet(images, maps, [{} for _ in images], registry)


def generate_evaluation_set(pipeline, maps: list, out_dir: str, registry, settings=None, seed: int = 0,
                            sweep_maps: list | None = None, size_factors=SIZE_FACTORS,
                            verbose: bool = True) -> GeneratedSet:
    """Samples one image per map (image i seeded `seed + i`) plus skin-type and size sweeps, and writes them.

    Args:
        pipeline: a map-conditioned pipeline (`DermDiffPipeline`, `DermGANPipeline`).
        maps (`list[SemanticMap]`): the maps to sample.
        out_dir (`str`): where to write (layout in the module docstring).
        settings (`GenerationSettings`, *optional*): steps, guidance scale and images per call
            (default `GenerationSettings.for_evaluation()`).
        sweep_maps (`list[SemanticMap]`, *optional*): maps to sweep over skin types I..VI and `size_factors`.
    """
    import torch
    from tqdm.auto import tqdm

    from .sources import PipelineSource

    source = PipelineSource(pipeline, num_images=max(2, len(maps)), maps=maps, settings=settings, seed=seed)
    images, batch_size = [], source.batch_size
    for start in tqdm(range(0, len(maps), batch_size), desc="generate", disable=not verbose):
        images += source.generate(start, min(start + batch_size, len(maps)))
    from ..pipelines import size_sweep, skin_type_sweep

    sweeps, common = [], source.settings.call_kwargs(pipeline)  # steps + guidance; GANs make an image in one pass
    for index, smap in enumerate(sweep_maps or []):
        # the pipelines' sweep helpers start every image of a sweep from the same noise: only the map changes
        swept = skin_type_sweep(pipeline, smap, generator=torch.Generator("cpu").manual_seed(seed + index), **common)
        sweeps.append({"kind": "skin_type", "id": index, "values": [1, 2, 3, 4, 5, 6],
                       "maps": smap.skin_type_sweep(), "images": swept})
        swept = size_sweep(pipeline, smap, factors=size_factors,
                           generator=torch.Generator("cpu").manual_seed(seed + index), **common)
        sweeps.append({"kind": "size", "id": index, "values": list(size_factors),
                       "maps": smap.size_sweep(size_factors), "images": swept})
    write_generated_set(out_dir, images, maps, registry, sweeps)
    return read_generated_set(out_dir, registry)


def lesion_maps(maps: list) -> list:
    """The maps that ask for a lesion (sweeps and placement need one)."""
    return [smap for smap in maps if smap.condition is not None and np.asarray(smap.lesion_mask).any()]
