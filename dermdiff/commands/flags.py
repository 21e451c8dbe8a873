"""Checks of flag values several commands share, each error naming the flag and what it allows."""

from __future__ import annotations

import math

from ..errors import UsageError


def parse_skin_types(text: str, flag: str = "--skin-types") -> list[int]:
    """Comma-separated Fitzpatrick types ("1,2,5" or "I,VI") as ints; one clear line otherwise."""
    from ..semantic_map import validate_skin_type

    parts = [part.strip() for part in text.split(",")]
    try:
        types = [validate_skin_type(part) for part in parts if part]
    except ValueError as error:
        raise UsageError(f"{flag} {text!r}: {error}") from None
    if not types or len(types) != len(parts):
        raise UsageError(f"{flag} takes comma-separated skin types 1..6 or I..VI, e.g. 1,2,5; got {text!r}")
    return types


def check_at_least(args, minimums: dict[str, float]) -> None:
    """Each `args.<name>` (unless `None`) is at least its minimum; the error names the flag `--name-with-dashes`."""
    for name, low in minimums.items():
        value = getattr(args, name)
        if value is not None and not value >= low:  # `not >=` also refuses NaN
            raise UsageError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def check_fraction(value: float, flag: str, low: float = 0.0, high: float = 1.0) -> float:
    """A finite number in [low, high]."""
    if not (math.isfinite(value) and low <= value <= high):
        raise UsageError(f"{flag} must be a number in [{low:g}, {high:g}], got {value}")
    return value


def check_device(device: str | None, flag: str = "--device") -> str | None:
    """A torch device string this machine has (cpu, cuda, cuda:N, mps); `None` passes (the default)."""
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UsageError(f"{flag} {device!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{flag} {device}: CUDA is not available on this machine; use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{flag} {device}: Apple MPS is not available on this machine; use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{flag} {device!r}: dermdiff runs on cpu, cuda, cuda:N or mps")
    return device
