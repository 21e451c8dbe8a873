"""FID and KID through clean-fid, with confidence intervals, per-class / per-skin-type scores and cached references.

Any two of: an image folder, a `datasets` split, a list of images, a pipeline generating on the fly (see
`sources.py`), or precomputed `FeatureSet`s. The feature extractor is any module from `features.py`
(clean-fid's Inception, a local torchvision backbone, or a dermdiff classifier for "domain FD"); its
description is stored in every result.

- Reference statistics (all features, so KID and per-group FIDs can be recomputed) are computed once per
  (dataset, split, resolution, extractor) and cached as `.npz` under `cache_dir`, in the spirit of
  clean-fid's `make_custom_stats`; a second evaluation skips the reference pass.
- Confidence intervals follow DermGAN (Ghorbani et al. 2020, Table 1: "FID (± 1.96 STD)", 50 trials): the FID is
  recomputed on `trials` random subsamples (half of each set, without replacement by default) and the
  interval is ± 1.96 standard deviations of those values. KID reports the mean over subsets, as clean-fid
  does, ± 1.96 std over the same subsets.
- The headline FID is clean-fid's `frechet_distance`; the many subsample and per-group FIDs use an
  algebraically identical form (eigenvalues of symmetric matrices, or the nuclear norm of the n1 x n2
  cross-product when there are fewer images than feature dimensions), which is exact for rank-deficient
  covariances and far faster than `scipy.linalg.sqrtm`; the tests check both agree.

In training (`train_diffusion.py --compute_fid_every N`), with EMA weights swapped into the pipeline:

    >>> result = compute_fid_kid(
    ...     PipelineSource(pipe, num_images=64, maps=validation_maps,
    ...                    settings=GenerationSettings(num_inference_steps=25)),
    ...     validation_dataset, extractor=extractor, resolution=args.resolution,
    ...     cache_dir=os.path.join(args.output_dir, "fid_stats"), trials=0, per_group=False, verbose=False)
    >>> accelerator.log({"fid": result["fid"]["value"], "kid": result["kid"]["value"]}, step=global_step)

(`trials=0` skips the FID interval; the reference pass runs once and is cached for later evaluations.)

Example:
    >>> from dermdiff.metrics import compute_fid_kid, PipelineSource, load_extractor
    >>> result = compute_fid_kid(PipelineSource(pipe, num_images=500, maps=val_maps), "/data/ham/val",
    ...                          extractor=load_extractor("classifier:/models/clf"), resolution=64)
    >>> result["fid"]["value"], result["fid"]["ci95"], result["extractor"]["name"]
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import torch

from .features import describe_extractor, load_extractor
from .sources import ExtractOptions, FeatureSet, as_source

DEFAULT_TRIALS = 50  # DermGAN (Ghorbani et al. 2020) Table 1
CI_Z = 1.96


# ----------------------------------------------------------------------------------------------------------------
# distances
# ----------------------------------------------------------------------------------------------------------------
def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets with clean-fid's `frechet_distance` (the reference implementation)."""
    from cleanfid.fid import frechet_distance

    _check_pair(features1, features2)
    mu1, sigma1 = features1.mean(axis=0), np.cov(features1, rowvar=False)
    mu2, sigma2 = features2.mean(axis=0), np.cov(features2, rowvar=False)
    return float(frechet_distance(mu1, sigma1, mu2, sigma2))


def fast_fid(features1, features2) -> float:
    """FID = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2), computed without `sqrtm`.

    With centred features A (n1 x D) and B (n2 x D), S1 = A'A / (n1-1) and S2 = B'B / (n2-1); the non-zero
    eigenvalues of S1 S2 are the squared singular values of M = A B' / sqrt((n1-1)(n2-1)), so
    tr sqrt(S1 S2) = sum sqrt(eig(M M')), an n x n symmetric eigenproblem when n < D. When min(n1, n2) > D,
    the D x D route is cheaper: tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)). numpy, not torch: these
    are many small products, where torch's thread pool costs more than the arithmetic.
    """
    x, y = np.asarray(features1, dtype=np.float64), np.asarray(features2, dtype=np.float64)
    _check_pair(x, y)
    n1, n2, dim = x.shape[0], y.shape[0], x.shape[1]
    a, b = x - x.mean(0), y - y.mean(0)
    diff = x.mean(0) - y.mean(0)
    trace1, trace2 = np.einsum("ij,ij->", a, a) / (n1 - 1), np.einsum("ij,ij->", b, b) / (n2 - 1)
    if min(n1, n2) <= dim:
        cross = a @ b.T
        gram = cross @ cross.T if n1 <= n2 else cross.T @ cross
        root_trace = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0, None)).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    else:
        sigma1, sigma2 = a.T @ a / (n1 - 1), b.T @ b / (n2 - 1)
        values, vectors = np.linalg.eigh(sigma1)
        root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        root_trace = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ sigma2 @ root1), 0, None)).sum()
    return float(diff @ diff + trace1 + trace2 - 2 * root_trace)


def _check_pair(features1, features2) -> None:
    if features1.ndim != 2 or features2.ndim != 2 or features1.shape[1] != features2.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {tuple(features1.shape)} and "
                         f"{tuple(features2.shape)}")
    if features1.shape[0] < 2 or features2.shape[0] < 2:
        raise ValueError(f"FID needs >= 2 images per set, got {features1.shape[0]} and {features2.shape[0]}")


def _subset_size(n: int, fraction: float) -> int:
    return max(2, min(n, int(round(n * fraction))))


def fid_with_ci(features1: np.ndarray, features2: np.ndarray, trials: int = DEFAULT_TRIALS,
                subset_fraction: float = 0.5, seed: int = 0, reference_value: bool = True) -> dict:
    """FID of the full sets ± 1.96 std over `trials` subsamples (`subset_fraction` of each set).

    Args:
        features1, features2 (`np.ndarray`): (N, D) features.
        trials (`int`, defaults to 50): number of subsamples (DermGAN used 50).
        subset_fraction (`float`, defaults to 0.5): share of each set drawn (without replacement) per trial.
        seed (`int`, defaults to 0): seed of the subsampling.
        reference_value (`bool`, defaults to `True`): compute the full-set value with clean-fid's
            `frechet_distance` (else with `fast_fid`).
    Returns:
        `dict` with `value`, `ci95` (half-width), `std`, `trial_mean`, `trials`, `subset_size` (two sizes).
    """
    if not 0 < subset_fraction <= 1:
        raise ValueError(f"subset_fraction must be in (0, 1], got {subset_fraction}")
    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    value = fid_from_features(features1, features2) if reference_value else fast_fid(features1, features2)
    rng = np.random.default_rng(seed)
    m1, m2 = _subset_size(len(features1), subset_fraction), _subset_size(len(features2), subset_fraction)
    values = [
        fast_fid(features1[rng.choice(len(features1), m1, replace=False)],
                 features2[rng.choice(len(features2), m2, replace=False)])
        for _ in range(trials)
    ]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return {"value": value, "ci95": CI_Z * std, "std": std, "trial_mean": float(np.mean(values)) if values else value,
            "trials": int(trials), "subset_size": [m1, m2]}


def kid_with_ci(features1: np.ndarray, features2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                seed: int = 0) -> dict:
    """KID (clean-fid's `kernel_distance`, cubic polynomial kernel, unbiased MMD^2) ± 1.96 std over subsets.

    clean-fid averages the MMD over `subsets` random subsets of `min(n1, n2, subset_size)` images; we draw the
    same subsets with our own seeded generator and keep each subset's value for the interval (clean-fid's
    global numpy random state is saved and restored, so calling this changes nothing outside).
    """
    from cleanfid.fid import kernel_distance

    _check_pair(features1, features2)
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(len(features1), len(features2), int(subset_size))
    rng, state, values = np.random.default_rng(seed), np.random.get_state(), []
    try:
        for _ in range(subsets):
            x = features1[rng.choice(len(features1), m, replace=False)]
            y = features2[rng.choice(len(features2), m, replace=False)]
            values.append(kernel_distance(x, y, num_subsets=1, max_subset_size=m))
    finally:
        np.random.set_state(state)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return {"value": float(np.mean(values)), "ci95": CI_Z * std, "std": std, "subsets": int(subsets), "subset_size": m}


def fid_between_folders(folder1: str, folder2: str, extractor, batch_size: int = 32, num_workers: int = 0,
                        device: str = "cpu", verbose: bool = False) -> float:
    """clean-fid's own `compute_fid` between two folders with our extractor (a cross-check of our path)."""
    from cleanfid import fid as cleanfid

    return float(cleanfid.compute_fid(
        folder1, folder2, mode="clean", custom_feat_extractor=extractor, batch_size=batch_size,
        num_workers=num_workers, device=torch.device(device), verbose=verbose,
        custom_fn_resize=extractor.resizer() if hasattr(extractor, "resizer") else None, use_dataparallel=False,
    ))


# ----------------------------------------------------------------------------------------------------------------
# cached reference statistics
# ----------------------------------------------------------------------------------------------------------------
def default_cache_dir() -> str:
    """`$DERMDIFF_CACHE/fid_stats`, else `~/.cache/dermdiff/fid_stats`."""
    root = os.environ.get("DERMDIFF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dermdiff")
    return os.path.join(root, "fid_stats")


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-")[-limit:] or "x"


def reference_cache_path(source, extractor, resolution: int | None, cache_dir: str) -> str:
    """Cache file of a source's features: keyed by dataset, split, resolution and extractor name."""
    identity = source.identity()
    name = describe_extractor(extractor)["name"]
    resolution_tag = f"{resolution}px" if resolution else "native"
    key = json.dumps({**identity, "resolution": resolution_tag, "extractor": name}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    base = os.path.basename(os.path.normpath(identity["dataset"]))
    filename = f"{_slug(base)}_{_slug(identity['split'])}_{resolution_tag}_{_slug(name)}_{digest}.npz"
    return os.path.join(cache_dir, filename)


def source_features(source, extractor, resolution: int | None = None, cache_dir: str | None = None,
                    batch_size: int = 32, num_workers: int = 0, device=None, verbose: bool = True):
    """Features of a source, from the cache when it holds them. Returns `(FeatureSet, cache_info)`.

    `cache_info` is `{"path": ..., "hit": bool}` (or `None` when not cached: no `cache_dir`, or a source that
    cannot be keyed, like a pipeline).
    """
    if isinstance(source, FeatureSet):
        return source, None
    options = ExtractOptions(extractor, resolution, batch_size, num_workers, device or _default_device(), verbose)
    extractor.to(options.device)
    if cache_dir is None or not getattr(source, "cacheable", False):
        return source.features(options), None
    path = reference_cache_path(source, extractor, resolution, cache_dir)
    if os.path.isfile(path):
        return FeatureSet.load(path), {"path": path, "hit": True}
    features = source.features(options)
    os.makedirs(cache_dir, exist_ok=True)
    features.save(path, meta={"identity": source.identity(), "resolution": resolution})
    return features, {"path": path, "hit": False}


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------------------------------------------
# the public entry point
# ----------------------------------------------------------------------------------------------------------------
def _group_scores(generated: FeatureSet, reference: FeatureSet, attribute: str, min_group_size: int, trials: int,
                  subset_fraction: float, seed: int) -> dict:
    """FID ± CI per value of `labels` or `skin_types` present in both sets (unknown values skipped)."""
    scores = {}
    gen_values, ref_values = getattr(generated, attribute), getattr(reference, attribute)
    unknown = "" if attribute == "labels" else 0
    for value in sorted(set(gen_values.tolist()) - {unknown}):
        gen_keep, ref_keep = gen_values == value, ref_values == value
        counts = {"num_generated": int(gen_keep.sum()), "num_reference": int(ref_keep.sum())}
        if min(counts.values()) < min_group_size:
            scores[str(value)] = {**counts, "skipped": f"fewer than {min_group_size} images in a set"}
            continue
        fid = fid_with_ci(generated.features[gen_keep], reference.features[ref_keep], trials=trials,
                          subset_fraction=subset_fraction, seed=seed, reference_value=False)
        scores[str(value)] = {**counts, "fid": fid}
    return scores


def compute_fid_kid(
    generated,
    reference,
    extractor=None,
    *,
    resolution: int | None = None,
    generated_split: str | None = None,
    reference_split: str | None = None,
    registry=None,
    cache_dir: str | None = "default",
    trials: int = DEFAULT_TRIALS,
    subset_fraction: float = 0.5,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    per_group: bool = True,
    min_group_size: int = 10,
    batch_size: int = 32,
    num_workers: int = 0,
    device=None,
    seed: int = 0,
    verbose: bool = True,
) -> dict:
    """FID and KID (with 95% intervals, per class and per skin type) between two image sets.

    Args:
        generated: folder path, `datasets` Dataset/DatasetDict, list of PIL images, `PipelineSource`, or
            `FeatureSet`.
        reference: the same kinds; folders and `datasets` splits are cached (see `cache_dir`).
        extractor (`nn.Module` or `str`, *optional*): a `features.py` extractor or spec; default clean-fid's
            Inception (fails with instructions when its weights file is missing).
        resolution (`int`, *optional*): resize every image to this square size first (e.g. the generation
            resolution), so real photos and samples are compared at the same scale.
        generated_split / reference_split (`str`, *optional*): split of a folder's `metadata.csv` or DatasetDict.
        registry (*optional*): condition registry for datasets whose `label` column is an index.
        cache_dir (`str` or `None`, defaults to `"default"` = `default_cache_dir()`): where reference features
            are cached; `None` disables caching.
        trials (`int`, defaults to 50), subset_fraction (`float`, defaults to 0.5): FID confidence interval.
        kid_subsets (`int`, defaults to 100), kid_subset_size (`int`, defaults to 1000): KID subsets (clean-fid's).
        per_group (`bool`, defaults to `True`): also FID per condition and per Fitzpatrick type.
        min_group_size (`int`, defaults to 10): groups with fewer images in either set are skipped.
        batch_size, num_workers, device, seed, verbose: extraction and subsampling settings.

    Returns:
        A JSON-serialisable `dict`: `extractor`, `resolution`, `num_generated`, `num_reference`, `fid`, `kid`,
        `per_class`, `per_skin_type`, `reference_cache`.
    """
    extractor = load_extractor(extractor) if not isinstance(extractor, torch.nn.Module) else extractor.eval()
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    common = dict(resolution=resolution, batch_size=batch_size, num_workers=num_workers, device=device,
                  verbose=verbose)
    if not isinstance(reference, FeatureSet):
        reference = as_source(reference, split=reference_split, registry=registry)
    if not isinstance(generated, FeatureSet):
        generated = as_source(generated, split=generated_split, registry=registry)
    ref_set, cache_info = source_features(reference, extractor, cache_dir=cache_dir, **common)
    gen_set, _ = source_features(generated, extractor, cache_dir=None, **common)
    result = {
        "extractor": describe_extractor(extractor),
        "resolution": resolution or "native",
        "num_generated": len(gen_set),
        "num_reference": len(ref_set),
        "fid": fid_with_ci(gen_set.features, ref_set.features, trials=trials, subset_fraction=subset_fraction,
                           seed=seed),
        "kid": kid_with_ci(gen_set.features, ref_set.features, subsets=kid_subsets, subset_size=kid_subset_size,
                           seed=seed),
        "reference_cache": cache_info,
    }
    if per_group:
        group_args = (min_group_size, trials, subset_fraction, seed)
        result["per_class"] = _group_scores(gen_set, ref_set, "labels", *group_args)
        result["per_skin_type"] = _group_scores(gen_set, ref_set, "skin_types", *group_args)
    return result
