"""Latents of a training set, encoded once by a VAE and cached on disk (latent DermDiff, issue 12).

A latent diffusion step should cost no encoder pass. `cached_latents` encodes every row once with a
`datasets` map and saves the result with `save_to_disk` under a key that hashes

- the data: every image's and map's bytes (a file's content when the row holds a path) and its label,
- the VAE: its config (including `scaling_factor`) and every encoder-side weight (the decoder makes no cached value),
- the resolution, the map shapes (`--map_shapes`), the orientations (below) and this module's `CACHE_VERSION`,

so a second run on the same data and VAE reuses the folder, and any change to either builds a new one
(a stale cache is never read). A build writes into `<key>.tmp-<pid>` and renames it to `<key>` only when
complete (`os.replace`), so a killed build leaves a temporary folder that is ignored and removed by the
next build, never a half-written cache.

Each cached row holds the posterior's mean and standard deviation (already normalised as the UNet sees
them: x `scaling_factor`, or per channel, `dermdiff.latent_maps.to_model_latents`), not one sampled latent, so every epoch draws a fresh z ~ q(z | x) as pixel training
draws fresh noise; the map on the latent grid (`dermdiff.latent_maps.map_to_latent_grid`); and the class
label. `sample_cached_latents` turns a batch of them into the `pixel_values` the diffusion loss expects.
`train_diffusion.py` reads the cache through `hold_in_memory` (the rows as tensors, when they fit), since
converting one row from Arrow costs about as much as 5% of a training step.

Flips and quarter turns (`--augment flip | dihedral`) stay exact: the encoder is not equivariant (a rotated
latent decodes to a different image than the rotated photo; `benchmarks/latent_equivariance.py` measures
how far), so the cache encodes every orientation the augmentation can draw (`AUGMENT_ORIENTATIONS`: 2 for
flip, 8 for dihedral; the latent columns become (V, C, h, w)) and the loop picks the drawn one, while the
latent-grid map is rotated (block reduction commutes with the square's symmetries, so that is exact). The
cost is V times the encoding time and disk space, once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import datasets
import torch

from .latent_maps import latent_normalisation, map_to_latent_grid, vae_factor
from .loops.pair_augment import (
    AUGMENT_ORIENTATIONS,
    BOX_MAP_KEY,
    apply_dihedral,
    dihedral,
    dihedral_indices,
    select_variants,
)
from .semantic_map import SemanticMap

CACHE_VERSION = 1
KEY_FILE = "latent_cache_key.json"
IMAGE_COLUMNS = ("image", "semantic_map")


# ----------------------------------------------------------------------------------------------------------------
# keys
# ----------------------------------------------------------------------------------------------------------------
def _image_bytes(value: dict) -> bytes:
    if value.get("bytes") is not None:
        return value["bytes"]
    with open(value["path"], "rb") as handle:
        return handle.read()


def data_hash(dataset: datasets.Dataset, batch_size: int = 256) -> str:
    """SHA-256 of the rows' image bytes, map bytes and labels, in order (file contents, not paths)."""
    raw = dataset.select_columns([*IMAGE_COLUMNS, "label"])
    for column in IMAGE_COLUMNS:
        raw = raw.cast_column(column, datasets.Image(decode=False))
    digest = hashlib.sha256()
    for rows in raw.iter(batch_size=batch_size):
        for image, smap, label in zip(rows["image"], rows["semantic_map"], rows["label"]):
            for part in (_image_bytes(image), _image_bytes(smap), str(label).encode()):
                digest.update(len(part).to_bytes(8, "little"))
                digest.update(part)
    return digest.hexdigest()


DECODER_PREFIXES = ("decoder.", "post_quant_conv.")


def vae_hash(vae) -> str:
    """SHA-256 of what the cached latents depend on: the VAE's class, config and encoder-side weights.

    The cache holds the encoder's scaled posteriors, which the decoder never touches: a decoder-only
    fine-tune (`train_autoencoder.py --train_decoder_only`) keeps the hash and reuses the cache, while any
    change to the encoder, `quant_conv` or the config (`scaling_factor` included) changes it. The config's
    private keys (`_name_or_path`, `_diffusers_version`, ...) say where the model was loaded from and by
    which library version, not what it computes: the same VAE read from its own folder or from a pipeline's
    `vae/` must find the same cache.
    """
    digest = hashlib.sha256(type(vae).__name__.encode())
    public = {key: value for key, value in vae.config.items() if not key.startswith("_")}
    digest.update(json.dumps(public, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        if name.startswith(DECODER_PREFIXES):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(dataset, vae, resolution: int, map_shapes=("mask",), orientations=(0,)) -> dict:
    """What a cache folder is valid for; its hash names the folder.

    `orientations` enters the key only when it is more than the identity, so caches built before
    augmentation existed keep their names.
    """
    key = {"version": CACHE_VERSION, "resolution": int(resolution), "map_shapes": list(map_shapes),
           "data": data_hash(dataset), "vae": vae_hash(vae)}
    if tuple(orientations) != (0,):
        key["orientations"] = [int(index) for index in orientations]
    key["id"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return key


# ----------------------------------------------------------------------------------------------------------------
# building and reading
# ----------------------------------------------------------------------------------------------------------------
class _Encoder:
    """`datasets.map` function: pixel examples -> scaled posterior mean / std, latent-grid map, label."""

    def __init__(self, vae, examples, batch_size: int, orientations=(0,)):
        self.vae, self.examples, self.batch_size = vae, examples, batch_size
        shift, scale = latent_normalisation(vae)
        self.shift = torch.tensor(shift).view(1, -1, 1, 1)
        self.scale = torch.tensor(scale).view(1, -1, 1, 1)
        self.factor = vae_factor(vae)
        self.orientations = tuple(orientations)

    def _encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist
        # the posterior of the normalised latent (z - shift) * scale: mean shifted and scaled, std scaled
        mean, std = posterior.mean.float().cpu(), posterior.std.float().cpu()
        return (mean - self.shift) * self.scale, std * self.scale

    @torch.no_grad()
    def __call__(self, rows: dict) -> dict:
        fields = zip(rows["image"], rows["semantic_map"], rows["label"])
        examples = [self.examples.example(*row) for row in fields]
        pixels = torch.stack([e["pixel_values"] for e in examples])
        if self.orientations == (0,):
            mean, std = self._encode(pixels)
        else:  # (B, V, C, h, w): the latent of each turned / mirrored image, in `orientations` order
            encoded = [self._encode(dihedral(pixels, index)) for index in self.orientations]
            mean, std = (torch.stack(parts, dim=1) for parts in zip(*encoded))
        out = {
            "latent_mean": mean.numpy(),
            "latent_std": std.numpy(),
            "class_labels": [e["class_labels"] for e in examples],
        }
        for key in map_columns(self.examples):  # the box-drawn map too when training mixes map shapes
            out[key] = map_to_latent_grid(torch.stack([e[key] for e in examples]), self.factor).numpy()
        return out


def map_columns(examples) -> list[str]:
    """The map columns the examples carry: `semantic_map`, plus the box-drawn one with two map shapes."""
    return ["semantic_map"] + ([BOX_MAP_KEY] if len(examples.map_shapes) == 2 else [])


def cache_features(vae, examples, orientations=(0,)) -> datasets.Features:
    """Fixed-shape columns (so rows come back as tensors without per-row shape bookkeeping)."""
    side = examples.resolution // vae_factor(vae)
    latent = (vae.config.latent_channels, side, side)
    array = datasets.Array3D
    if tuple(orientations) != (0,):
        latent, array = (len(orientations), *latent), datasets.Array4D
    map_shape = (SemanticMap.num_channels(examples.registry), side, side)
    maps = {key: datasets.Array3D(map_shape, "float32") for key in map_columns(examples)}
    return datasets.Features({
        "latent_mean": array(latent, "float32"),
        "latent_std": array(latent, "float32"),
        **maps,
        "class_labels": datasets.Value("int64"),
    })


def cached_latents(dataset, vae, examples, cache_dir: str, batch_size: int = 16, verbose: bool = True,
                   augment: str = "none"):
    """The latent cache of `dataset` under `vae` (built if missing); a `datasets.Dataset` in torch format.

    Args:
        dataset (`datasets.Dataset`): dermdiff rows (`image`, `semantic_map`, `label`).
        vae (`AutoencoderKL`): the encoder; its normalisation (`latent_normalisation`) is applied to the cached
            mean and std.
        examples (`DiffusionExamples`): rows -> pixel examples at the VAE's input resolution.
        cache_dir (`str`): parent folder; the cache is `cache_dir/latents-<key id>`.
        batch_size (`int`, defaults to 16): images per encoder pass.
        augment (`str`, defaults to `"none"`): the training augmentation (`"flip"`, `"dihedral"`); every
            orientation it can draw is encoded, so `sample_cached_latents` can pick the exact latent.

    Example:
        >>> cache = cached_latents(rows, vae, DiffusionExamples(registry, 128), "outputs/latent-cache")
        >>> cache[0]["latent_mean"].shape
        torch.Size([4, 32, 32])
    """
    if augment not in AUGMENT_ORIENTATIONS:
        raise ValueError(f"augment must be one of {list(AUGMENT_ORIENTATIONS)}, got {augment!r}")
    orientations = AUGMENT_ORIENTATIONS[augment]
    if len(orientations) > 1 and examples.resolution % vae_factor(vae):
        raise ValueError(f"resolution {examples.resolution} is not a multiple of the VAE's factor {vae_factor(vae)}")
    key = cache_key(dataset, vae, examples.resolution, examples.map_shapes, orientations)
    final = os.path.join(cache_dir, f"latents-{key['id']}")
    if os.path.isdir(final):
        stored = read_key(final)
        if stored != key:
            raise ValueError(f"latent cache {final} was built for {stored}, expected {key}; delete the folder")
        if verbose:
            print(f"latent cache: reusing {final}")
        return datasets.load_from_disk(final).with_format("torch")
    os.makedirs(cache_dir, exist_ok=True)
    for name in os.listdir(cache_dir):  # leftovers of killed builds of this key
        if name.startswith(f"latents-{key['id']}.tmp"):
            shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)
    staging, work = f"{final}.tmp-{os.getpid()}", f"{final}.tmp-{os.getpid()}-map"
    os.makedirs(work)
    vae.eval()
    encoded = dataset.map(
        _Encoder(vae, examples, batch_size, orientations),
        batched=True,
        batch_size=batch_size,
        remove_columns=dataset.column_names,
        features=cache_features(vae, examples, orientations),
        cache_file_name=os.path.join(work, "encoded.arrow"),
        new_fingerprint=key["id"],
        desc="encoding latents",
    )
    encoded.save_to_disk(staging)
    del encoded
    shutil.rmtree(work)
    with open(os.path.join(staging, KEY_FILE), "w", encoding="utf-8") as handle:
        json.dump(key, handle, indent=1)
    os.replace(staging, final)
    if verbose:
        print(f"latent cache: wrote {len(dataset)} rows to {final}")
    return datasets.load_from_disk(final).with_format("torch")


class RowsInMemory(torch.utils.data.Dataset):
    """The rows of a latent cache as tensors held in memory (`hold_in_memory`).

    Reading a row from the on-disk cache converts it from Arrow to torch, about 4 ms a row on one CPU
    thread: at batch 16 that is ~5% of a latent training step (`benchmarks/latent_performance.py`). Here a
    row (or a slice) is an index into tensors loaded once, the same values in the same order.
    """

    def __init__(self, columns: dict):
        lengths = {len(column) for column in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"columns of different lengths {sorted(lengths)}")
        self.columns, self.column_names = columns, list(columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index) -> dict:
        return {name: column[index] for name, column in self.columns.items()}


# a cache larger than this stays on disk and is read row by row (dihedral HAM10000 at 128 px: ~0.3 MB a row)
IN_MEMORY_LIMIT_BYTES = 4 * 2**30


def hold_in_memory(cache: datasets.Dataset, limit_bytes: int = IN_MEMORY_LIMIT_BYTES):
    """`cache` (from `cached_latents`) as `RowsInMemory` when its tensors fit in `limit_bytes`, else unchanged."""
    size = cache.data.nbytes
    if size > limit_bytes:
        return cache
    return RowsInMemory(cache.with_format("torch")[:])


def read_key(folder: str) -> dict | None:
    path = os.path.join(folder, KEY_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def cached_orientations(batch: dict) -> tuple[int, ...]:
    """The symmetries a batch of cached rows holds: (B, V, C, h, w) latents hold `AUGMENT_ORIENTATIONS`' V."""
    if batch["latent_mean"].dim() == 4:
        return (0,)
    count = batch["latent_mean"].shape[1]
    for orientations in AUGMENT_ORIENTATIONS.values():
        if len(orientations) == count:
            return orientations
    raise ValueError(f"latent cache rows hold {count} orientations; expected one of "
                     f"{sorted(len(o) for o in AUGMENT_ORIENTATIONS.values())}")


def sample_cached_latents(batch: dict, generator: torch.Generator, augment: str = "none") -> dict:
    """A batch of cached rows -> diffusion examples: `pixel_values` = z ~ N(mean, std^2) (already scaled).

    With `augment` ("flip" / "dihedral"), each example draws a symmetry, takes the cached latent of the
    image in that orientation (exact: encoded from the turned image) and turns its latent-grid maps the same
    way. A cache built without those orientations is refused in one line.
    """
    mean, std = batch["latent_mean"], batch["latent_std"]
    orientations = cached_orientations(batch)
    out = {key: value.float() if key in ("semantic_map", BOX_MAP_KEY) else value
           for key, value in batch.items() if key not in ("latent_mean", "latent_std")}
    if augment != "none" or len(orientations) > 1:
        if not set(AUGMENT_ORIENTATIONS.get(augment, ())) <= set(orientations):
            raise ValueError(f"the latent cache holds orientations {list(orientations)} but augment={augment!r} "
                             f"draws {list(AUGMENT_ORIENTATIONS.get(augment, ()))}; build the cache with "
                             f"cached_latents(..., augment={augment!r})")
        indices = dihedral_indices(mean.shape[0], generator, augment)
        mean, std = select_variants(mean, indices, orientations), select_variants(std, indices, orientations)
        out = apply_dihedral(out, indices, keys=[key for key in ("semantic_map", BOX_MAP_KEY) if key in out])
    noise = torch.randn(mean.shape, generator=generator).to(mean.device, mean.dtype)
    out["pixel_values"] = mean + std * noise
    return out
