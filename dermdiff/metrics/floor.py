"""The real-vs-real floor: the Fréchet distance two samples of REAL images already have from each other.

Why: an FD/FID is never zero, even for a perfect generator. Two disjoint samples of the same real data differ
by chance, and the estimator is biased upwards at small n (roughly by the trace of the covariance over each
set's size), so a generated set's FD means little until it is set beside what real images of the same sizes
score. `dermdiff evaluate` therefore reports this floor next to every FD.

Two kinds, chosen by `evaluate` from what the data offers:

- `split-half`: the reference's features split at random into two disjoint halves.
- `train-vs-reference`: when the reference is one split of the data (`--reference-split validation`) and the
  data also has a `train` split, the training images against the reference: exactly the comparison a
  generator that reproduced its training data perfectly would get.

Because the estimate depends on the set sizes, a second floor is computed when the generated set is smaller
than the first sample above: the same kind, with a first sample of as many real images as there are generated
ones (`at_generated_size`). That is the number a perfect generator with this many samples would score.

The value is the mean FD over `trials` random draws (`fast_fid`, equal to clean-fid's `frechet_distance`) and
the interval ± 1.96 std over the draws, as for the generated FID (`fid.fid_with_ci`). When a draw cannot vary
(all training images against the reference) it is computed once.
"""

from __future__ import annotations

import numpy as np

from .fid import CI_Z, fast_fid

KINDS = ("split-half", "train-vs-reference")


def real_floor(reference: np.ndarray, size: int | None = None, other: np.ndarray | None = None, trials: int = 50,
               seed: int = 0) -> dict:
    """FD between two disjoint real samples (module docstring), mean ± 1.96 std over `trials` draws.

    Args:
        reference (`np.ndarray`): (N, D) features of the reference images.
        size (`int`, *optional*): images in the first sample; default (and at most) N // 2 for `split-half`, all
            of `other` for `train-vs-reference`.
        other (`np.ndarray`, *optional*): (M, D) features of other real images (the training split); without it
            the reference is split in two.
        trials (`int`, defaults to 50): random draws (>= 1; the interval needs >= 2).
        seed (`int`, defaults to 0): seed of the draws.

    Returns:
        `dict` with `kind`, `value`, `ci95` (None with one draw), `std`, `trials`, `sizes` (the two samples).

    Example:
        >>> real_floor(reference_features)["value"]                    # the split-half distance
        >>> real_floor(reference_features, size=len(generated))["value"]  # the floor at the generated set's size
    """
    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim != 2:
        raise ValueError(f"reference features must be (N, D), got shape {reference.shape}")
    if trials < 1:
        raise ValueError(f"the floor needs trials >= 1, got {trials}")
    if size is not None and size < 2:
        raise ValueError(f"the floor needs a first sample of >= 2 images, got size={size}")
    rng = np.random.default_rng(seed)
    if other is None:
        if len(reference) < 4:
            raise ValueError(f"a split-half floor needs >= 4 reference images, got {len(reference)}")
        first = len(reference) // 2 if size is None else min(int(size), len(reference) // 2)
        draws = (rng.permutation(len(reference)) for _ in range(trials))
        pairs = ((reference[order[:first]], reference[order[first:]]) for order in draws)
        kind, sizes = "split-half", [first, len(reference) - first]
    else:
        other = np.asarray(other, dtype=np.float64)
        if other.ndim != 2 or other.shape[1] != reference.shape[1] or len(other) < 2:
            raise ValueError(f"other features must be (M >= 2, {reference.shape[1]}), got shape {other.shape}")
        first = len(other) if size is None else min(int(size), len(other))
        trials = 1 if first == len(other) else trials  # every draw would be the whole set
        pairs = ((other[rng.choice(len(other), first, replace=False)], reference) for _ in range(trials))
        kind, sizes = "train-vs-reference", [first, len(reference)]
    values = [fast_fid(a, b) for a, b in pairs]
    std = float(np.std(values, ddof=1)) if trials > 1 else None
    return {"kind": kind, "value": float(np.mean(values)), "ci95": None if std is None else CI_Z * std, "std": std,
            "trials": int(trials), "sizes": sizes}


def evaluation_floors(reference: np.ndarray, generated_size: int, other: np.ndarray | None = None,
                      trials: int = 50, seed: int = 0) -> dict:
    """The floor beside a generated set's FD: `floor` (split-half or train-vs-reference) and, when the generated
    set is smaller than its first sample, `at_generated_size` (else None)."""
    floor = real_floor(reference, None, other, trials, seed)
    smaller = generated_size < floor["sizes"][0]
    return {**floor, "at_generated_size": real_floor(reference, generated_size, other, trials, seed) if smaller
            else None}


def floor_text(floor: dict | None, digits: int = 3) -> str:
    """One line for tables: `2.345 ± 0.321 (split-half, 500 vs 7509 real images)`, or why there is none."""
    if not floor:
        return "not computed"
    if "skipped" in floor:
        return f"not computed: {floor['skipped']}"
    value = f"{floor['value']:.{digits}f}"
    if floor.get("ci95") is not None:
        value += f" ± {floor['ci95']:.{digits}f}"
    first, second = floor["sizes"]
    return f"{value} ({floor['kind']}, {first} vs {second} real images)"
