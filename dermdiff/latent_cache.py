"""Latents of a training set, encoded once by a VAE and cached on disk (latent DermDiff, issue 12).

A latent diffusion step should cost no encoder pass. `cached_latents` encodes every row once with a
`datasets` map and saves the result with `save_to_disk` under a key that hashes

- the data: every image's and map's bytes (a file's content when the row holds a path) and its label,
- the VAE: its config (including `scaling_factor`) and every weight,
- the resolution, the map shapes (`--map_shapes`) and this module's `CACHE_VERSION`,

so a second run on the same data and VAE reuses the folder, and any change to either builds a new one
(a stale cache is never read). A build writes into `<key>.tmp-<pid>` and renames it to `<key>` only when
complete (`os.replace`), so a killed build leaves a temporary folder that is ignored and removed by the
next build, never a half-written cache.

Each cached row holds the posterior's mean and standard deviation (already multiplied by the VAE's
`scaling_factor`), not one sampled latent, so every epoch draws a fresh z ~ q(z | x) as pixel training
draws fresh noise; the map on the latent grid (`dermdiff.latent_maps.map_to_latent_grid`); and the class
label. `sample_cached_latents` turns a batch of them into the `pixel_values` the diffusion loss expects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import datasets
import torch

from .latent_maps import map_to_latent_grid, vae_factor

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


def vae_hash(vae) -> str:
    """SHA-256 of the VAE's class, config and weights (any change to any of them changes it)."""
    digest = hashlib.sha256(type(vae).__name__.encode())
    digest.update(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(dataset, vae, resolution: int, map_shapes=("mask",)) -> dict:
    """What a cache folder is valid for; its hash names the folder."""
    key = {"version": CACHE_VERSION, "resolution": int(resolution), "map_shapes": list(map_shapes),
           "data": data_hash(dataset), "vae": vae_hash(vae)}
    key["id"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return key


# ----------------------------------------------------------------------------------------------------------------
# building and reading
# ----------------------------------------------------------------------------------------------------------------
class _Encoder:
    """`datasets.map` function: pixel examples -> scaled posterior mean / std, latent-grid map, label."""

    def __init__(self, vae, examples, batch_size: int):
        self.vae, self.examples, self.batch_size = vae, examples, batch_size
        self.scale = float(vae.config.scaling_factor)
        self.factor = vae_factor(vae)

    @torch.no_grad()
    def __call__(self, rows: dict) -> dict:
        fields = zip(rows["image"], rows["semantic_map"], rows["label"])
        examples = [self.examples.example(*row) for row in fields]
        pixels = torch.stack([e["pixel_values"] for e in examples])
        posterior = self.vae.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist
        out = {
            "latent_mean": (posterior.mean.float() * self.scale).cpu().numpy(),
            "latent_std": (posterior.std.float() * self.scale).cpu().numpy(),
            "class_labels": [e["class_labels"] for e in examples],
        }
        for key in map_columns(self.examples):  # the box-drawn map too when training mixes map shapes
            out[key] = map_to_latent_grid(torch.stack([e[key] for e in examples]), self.factor).numpy()
        return out


def map_columns(examples) -> list[str]:
    """The map columns the examples carry: `semantic_map`, plus the box-drawn one with two map shapes."""
    from .loops.pair_augment import BOX_MAP_KEY

    return ["semantic_map"] + ([BOX_MAP_KEY] if len(examples.map_shapes) == 2 else [])


def cache_features(vae, examples) -> datasets.Features:
    """Fixed-shape columns (so rows come back as tensors without per-row shape bookkeeping)."""
    side = examples.resolution // vae_factor(vae)
    latent = (vae.config.latent_channels, side, side)
    map_shape = (1 + len(examples.registry), side, side)
    maps = {key: datasets.Array3D(map_shape, "float32") for key in map_columns(examples)}
    return datasets.Features({
        "latent_mean": datasets.Array3D(latent, "float32"),
        "latent_std": datasets.Array3D(latent, "float32"),
        **maps,
        "class_labels": datasets.Value("int64"),
    })


def cached_latents(dataset, vae, examples, cache_dir: str, batch_size: int = 16, verbose: bool = True):
    """The latent cache of `dataset` under `vae` (built if missing); a `datasets.Dataset` in torch format.

    Args:
        dataset (`datasets.Dataset`): dermdiff rows (`image`, `semantic_map`, `label`).
        vae (`AutoencoderKL`): the encoder; its `scaling_factor` is applied to the cached mean and std.
        examples (`DiffusionExamples`): rows -> pixel examples at the VAE's input resolution.
        cache_dir (`str`): parent folder; the cache is `cache_dir/latents-<key id>`.
        batch_size (`int`, defaults to 16): images per encoder pass.

    Example:
        >>> cache = cached_latents(rows, vae, DiffusionExamples(registry, 128), "outputs/latent-cache")
        >>> cache[0]["latent_mean"].shape
        torch.Size([4, 32, 32])
    """
    key = cache_key(dataset, vae, examples.resolution, examples.map_shapes)
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
        _Encoder(vae, examples, batch_size),
        batched=True,
        batch_size=batch_size,
        remove_columns=dataset.column_names,
        features=cache_features(vae, examples),
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


def read_key(folder: str) -> dict | None:
    path = os.path.join(folder, KEY_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def sample_cached_latents(batch: dict, generator: torch.Generator) -> dict:
    """A batch of cached rows -> diffusion examples: `pixel_values` = z ~ N(mean, std^2) (already scaled)."""
    mean, std = batch["latent_mean"], batch["latent_std"]
    noise = torch.randn(mean.shape, generator=generator).to(mean.device, mean.dtype)
    out = {key: value for key, value in batch.items() if key not in ("latent_mean", "latent_std")}
    out["pixel_values"] = mean + std * noise
    for key in ("semantic_map", "semantic_map_box"):
        if key in batch:
            out[key] = batch[key].float()
    return out
