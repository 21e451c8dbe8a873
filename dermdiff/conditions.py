"""Condition registries: which skin conditions a dataset has and the code each one is written as.

A semantic map stores a condition as a small integer code (1..255) in its B channel, so a map only
means something together with the registry that assigned the codes. Codes are positions in the
registry's list plus one: code 0 is "no condition" (healthy skin). The built-in registries follow
the label order of their datasets, so ``code - 1`` is the dataset's integer label:

- ``ham10000``: the seven HAM10000 / DermaMNIST classes in MedMNIST order.
- ``clinical``: common clinical (non-dermoscopic) conditions, as in DermGAN's teledermatology data.
- ``pad_ufes20``: the six PAD-UFES-20 diagnostic classes in that dataset's label order.
- ``phantom``: the five lesion classes of dermdiff's procedural phantom (`dermdiff.data.phantom`).

One default: wherever a registry may be left out (`SemanticMap`, `SemanticUNet2DModel`, the DermGAN
models), it is `DEFAULT_REGISTRY`, ``ham10000``. Anything built from data takes the data's registry
instead (`dermdiff.data.registry_of`), and a saved model records its registry in its config, so a
model saved with another registry (the phantom's, say) reloads with it.

Example:
    >>> registry = get_registry("ham10000")
    >>> registry.code("mel"), registry.name(5)
    (5, 'mel')
    >>> custom = ConditionRegistry(["wart", "molluscum"], name="my-clinic")
    >>> custom.register("impetigo")
    3
"""

from __future__ import annotations

import operator
import warnings
from typing import Iterable, Sequence

MAX_CONDITIONS = 255
DEFAULT_REGISTRY = "ham10000"  # the registry of a map or model built without one (see the module docstring)

BUILTIN_CONDITIONS: dict[str, tuple[str, ...]] = {
    "ham10000": ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"),
    "clinical": (
        "acne",
        "eczema",
        "psoriasis",
        "rosacea",
        "urticaria",
        "vitiligo",
        "tinea",
        "seborrheic_keratosis",
        "actinic_keratosis",
        "basal_cell_carcinoma",
        "squamous_cell_carcinoma",
        "melanoma",
        "melanocytic_nevus",
    ),
    "pad_ufes20": ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK"),
    "phantom": ("nevus", "melanoma", "psoriasis", "dermatofibroma", "vascular"),
}

# Longer names people type for the HAM10000 codes; looked up case-insensitively.
_ALIASES: dict[str, dict[str, str]] = {
    "ham10000": {
        "actinic_keratoses": "akiec",
        "basal_cell_carcinoma": "bcc",
        "benign_keratosis": "bkl",
        "dermatofibroma": "df",
        "melanoma": "mel",
        "melanocytic_nevi": "nv",
        "nevus": "nv",
        "vascular_lesions": "vasc",
    },
}


def _normalise(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


class ConditionRegistry:
    """An ordered list of condition names; the code of a name is its position plus one.

    Args:
        names (`Sequence[str]`): condition names, unique (case-insensitively), at most 255.
        name (`str`, defaults to `"custom"`): what the registry is called in configs and reports.
        aliases (`dict[str, str]`, *optional*): extra spellings mapped onto names in `names`.
    """

    def __init__(self, names: Sequence[str], name: str = "custom", aliases: dict[str, str] | None = None):
        self.registry_name = str(name)
        self._names: list[str] = []
        self._lookup: dict[str, int] = {}
        for condition in names:
            self.register(condition)
        for alias, target in (aliases or {}).items():
            self._lookup.setdefault(_normalise(alias), self.code(target))

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def builtin(cls, name: str) -> "ConditionRegistry":
        """One of the built-in registries (a fresh copy, so registering into it changes nothing global)."""
        key = _normalise(name)
        if key not in BUILTIN_CONDITIONS:
            raise ValueError(f"unknown condition registry {name!r}; built-ins are {sorted(BUILTIN_CONDITIONS)}")
        return cls(BUILTIN_CONDITIONS[key], name=key, aliases=_ALIASES.get(key))

    def register(self, condition: str) -> int:
        """Adds a condition (no-op if present) and returns its code."""
        key = _normalise(condition)
        if not key:
            raise ValueError("a condition name must be a non-empty string")
        if key in self._lookup:
            return self._lookup[key]
        if len(self._names) >= MAX_CONDITIONS:
            raise ValueError(f"a registry holds at most {MAX_CONDITIONS} conditions (one byte in the map)")
        self._names.append(str(condition))
        self._lookup[key] = len(self._names)
        return len(self._names)

    # -- lookup ---------------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._names)

    @property
    def codes(self) -> list[int]:
        return list(range(1, len(self._names) + 1))

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self):
        return iter(self._names)

    def __contains__(self, condition) -> bool:
        try:
            self.code(condition)
        except ValueError:
            return False
        return True

    def code(self, condition: str | int) -> int:
        """The code (1..N) of a condition given by name (any case) or by code."""
        if not isinstance(condition, str):
            value = operator.index(condition)  # ints and numpy integers; anything else raises TypeError
            if 1 <= value <= len(self._names):
                return value
            raise ValueError(
                f"unknown condition code {value} in registry {self.registry_name!r}; allowed codes are "
                f"1..{len(self)} ({self._describe()})"
            )
        key = _normalise(condition)
        if key not in self._lookup:
            raise ValueError(
                f"unknown condition {condition!r} in registry {self.registry_name!r}; allowed: {self._describe()}"
            )
        return self._lookup[key]

    @property
    def name_(self) -> str:
        """Old spelling of `registry_name` (until 0.3): it sat too close to `name(code)`."""
        warnings.warn("ConditionRegistry.name_ is now registry_name", DeprecationWarning, stacklevel=2)
        return self.registry_name

    def name(self, code: int) -> str:
        """The canonical name of a code (the registry's own name is `registry_name`)."""
        return self._names[self.code(int(code)) - 1]

    def index(self, condition: str | int) -> int:
        """The 0-based position of a condition: its one-hot channel and its dataset label."""
        return self.code(condition) - 1

    def _describe(self) -> str:
        return ", ".join(f"{code}={name}" for code, name in zip(self.codes, self._names))

    # -- serialisation (pipeline / model configs) ----------------------------------------------------------------
    def model_kwargs(self) -> dict:
        """`conditions` and `registry_name` as every map-conditioned model takes them, e.g.
        `SemanticUNet2DModel(**get_registry("phantom").model_kwargs())` (a model left without them gets
        `DEFAULT_REGISTRY`)."""
        return {"conditions": self.names, "registry_name": self.registry_name}

    def to_dict(self) -> dict:
        return {"name": self.registry_name, "conditions": self.names}

    @classmethod
    def from_dict(cls, data: dict) -> "ConditionRegistry":
        if "conditions" not in data:
            raise ValueError(f"a registry dict needs a 'conditions' list, got keys {sorted(data)}")
        name = data.get("name", "custom")
        return cls(data["conditions"], name=name, aliases=_ALIASES.get(_normalise(name)))

    def __eq__(self, other) -> bool:
        return isinstance(other, ConditionRegistry) and self.names == other.names

    def __hash__(self) -> int:
        return hash(tuple(self._names))

    def __repr__(self) -> str:
        return f"ConditionRegistry(name={self.registry_name!r}, conditions={self.names})"


def get_registry(registry: "str | ConditionRegistry | dict | Iterable[str]") -> ConditionRegistry:
    """Accepts a registry, a built-in's name, a `to_dict()` dict or a list of names."""
    if isinstance(registry, ConditionRegistry):
        return registry
    if isinstance(registry, str):
        return ConditionRegistry.builtin(registry)
    if isinstance(registry, dict):
        return ConditionRegistry.from_dict(registry)
    return ConditionRegistry(list(registry))
