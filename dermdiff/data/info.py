"""Where a loaded dataset keeps its condition registry, and how to get it back.

A `label` integer only means something with the registry that numbered the conditions, and the
semantic maps' B codes are that registry's codes. So every loader stores the registry inside the
`datasets.Dataset` itself, in two places that survive `map`, `filter`, `select`, `train_test_split`,
`save_to_disk` / `load_from_disk` and `push_to_hub`:

1. `dataset.info.description` holds JSON: `{"dermdiff": {"registry": {"name": ..., "conditions": [...]},
   "layout": ..., "source": ...}}` (the registry as `ConditionRegistry.to_dict()`).
2. The `label` column is a `datasets.ClassLabel` whose names are the registry's names in order, so
   `label == registry.index(name)`.

`registry_of(dataset)` reads (1) and falls back to (2) (as a registry named "custom") when a tool
rewrote the description.

Example:
    >>> dataset = load_dataset_dir("my_folder")
    >>> registry = registry_of(dataset)
    >>> SemanticMap.decode(dataset[0]["semantic_map"], registry)
"""

from __future__ import annotations

import json

import datasets

from ..conditions import ConditionRegistry, get_registry

_KEY = "dermdiff"


def dataset_info(
    registry: ConditionRegistry, layout: str, source: str | None = None, features: datasets.Features | None = None
) -> datasets.DatasetInfo:
    """The `DatasetInfo` a loader attaches: the registry and where the data came from, as JSON."""
    payload = {_KEY: {"registry": registry.to_dict(), "layout": layout, "source": source}}
    return datasets.DatasetInfo(description=json.dumps(payload), features=features)


def dermdiff_metadata(dataset) -> dict:
    """The `{"registry", "layout", "source"}` dict stored by a dermdiff loader, or `{}`."""
    dataset = _first_split(dataset)
    try:
        payload = json.loads(dataset.info.description or "")
    except (TypeError, ValueError):
        return {}
    return payload.get(_KEY, {}) if isinstance(payload, dict) else {}


def registry_of(dataset) -> ConditionRegistry:
    """The condition registry of a dataset made by a dermdiff loader (a `Dataset` or `DatasetDict`).

    Raises:
        ValueError: the dataset carries neither a dermdiff description nor a `ClassLabel` `label` column.
    """
    stored = dermdiff_metadata(dataset).get("registry")
    if stored is not None:
        return get_registry(stored)
    label = (_first_split(dataset).features or {}).get("label")
    if isinstance(label, datasets.ClassLabel):
        return ConditionRegistry(label.names)
    raise ValueError(
        "this dataset carries no condition registry: expected JSON with a 'dermdiff' key in "
        "dataset.info.description or a ClassLabel 'label' column (load it with dermdiff.data loaders)"
    )


def _first_split(dataset):
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if not dataset:
            raise ValueError("the DatasetDict has no splits")
        return next(iter(dataset.values()))
    return dataset
