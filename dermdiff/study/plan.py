"""Who sees what, in which order: the per-rater plan of a study task.

Each rater gets their own seeded shuffle, cut into *units* — the things answered in one go:
- `select`    (DermGAN's Turing test): a page of `grid` images, "select the realistic ones";
- `condition` (DermGAN's relevance test): a page with a prompt condition X, at least two thirds images
  labelled X (real and synthetic interleaved), the rest distractors of other conditions, "which show X?";
- `timed`     (Furger's perceptual study): one image, shown for a few seconds, "real or synthetic?".
Every image appears at most once per rater and task, so an answer is keyed by (rater, task, image).
The plan is stored when a rater starts, so later changes to the folders never reshuffle a rater.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TASKS = ("select", "condition", "timed")


@dataclass(frozen=True)
class Unit:
    """One page (or one image) of a rater's plan; `prompt` is the condition asked about, if any."""

    prompt: str | None
    item_ids: tuple[str, ...]


def _interleave(first: list, second: list) -> list:
    merged = []
    for index in range(max(len(first), len(second))):
        merged.extend(part[index] for part in (first, second) if index < len(part))
    return merged


def _condition_units(order: list, grid: int, rng: random.Random) -> list[Unit]:
    labelled = [item for item in order if item[2] is not None]
    if not labelled:
        raise ValueError("the 'condition' task needs condition labels: add metadata.csv (file_name,label) to the folders")
    conditions = sorted({item[2] for item in labelled})
    rng.shuffle(conditions)
    by_condition = {
        condition: _interleave(
            [item for item in labelled if item[2] == condition and item[1] == "real"],
            [item for item in labelled if item[2] == condition and item[1] == "synthetic"],
        )
        for condition in conditions
    }
    num_targets = max(1, grid - grid // 3)
    used: set[str] = set()
    units = []
    progressed = True
    while progressed:
        progressed = False
        for condition in conditions:
            targets = [item for item in by_condition[condition] if item[0] not in used][:num_targets]
            if not targets:
                continue
            used.update(item[0] for item in targets)
            distractors = [item for item in labelled if item[0] not in used and item[2] != condition]
            distractors = distractors[: min(grid // 3, len(targets) // 2)]  # targets stay >= 2/3 of a page
            used.update(item[0] for item in distractors)
            page = [item[0] for item in targets + distractors]
            rng.shuffle(page)
            units.append(Unit(condition, tuple(page)))
            progressed = True
    return units


def plan_units(
    task: str,
    items: list[tuple[str, str, str | None]],
    rater: str,
    seed: int = 0,
    grid: int = 12,
    items_per_rater: int | None = None,
) -> list[Unit]:
    """Cut a rater's seeded shuffle of the items into the units of `task`.

    Args:
        task (`str`): one of `TASKS`.
        items (`list` of `(item_id, source, condition)`): every image of the study.
        rater (`str`): the rater's name; with `seed` and `task` it seeds the shuffle.
        seed (`int`, defaults to 0): study seed.
        grid (`int`, defaults to 12): images per page for the grid tasks (2..48).
        items_per_rater (`int`, *optional*): show each rater only this many images (a random subset).

    Example:
        >>> items = [("a1", "real", "mel"), ("b2", "synthetic", "mel")]
        >>> [unit.item_ids for unit in plan_units("timed", items, "ana", seed=0)]  # doctest: +SKIP
        [('b2',), ('a1',)]
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not 2 <= grid <= 48:
        raise ValueError(f"grid must be between 2 and 48 images per page, got {grid}")
    if items_per_rater is not None and items_per_rater < 1:
        raise ValueError(f"items_per_rater must be >= 1, got {items_per_rater}")
    # str seeds are hashed with SHA-512 by `random`, so the shuffle is the same in every process.
    rng = random.Random(f"{seed}:{task}:{rater}")
    order = sorted(items)
    rng.shuffle(order)
    if items_per_rater is not None:
        order = order[:items_per_rater]
    if task == "timed":
        return [Unit(None, (item[0],)) for item in order]
    if task == "select":
        return [Unit(None, tuple(item[0] for item in order[i : i + grid])) for i in range(0, len(order), grid)]
    return _condition_units(order, grid, rng)
