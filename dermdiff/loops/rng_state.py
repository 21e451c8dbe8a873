"""One process's random-generator state as a safetensors file, so that resuming a run unpickles nothing.

accelerate keeps these states in pickles: `random_states_<rank>.pkl` and, for objects registered with
`register_for_checkpointing`, `custom_checkpoint_<i>.pkl`, which it loads with `weights_only=False`, so a
tampered checkpoint runs code on resume. Every state is really an array of integers: Python's and
NumPy's Mersenne-Twister keys, torch's CPU (and CUDA) generator bytes and the trainer's own
`torch.Generator`s. They are stored here as tensors, the few scalars (Python's cached Gaussian, NumPy's
key position) as JSON in the safetensors metadata.

Loading checks every part before touching any generator and names the file in one line when something
is wrong: a damaged state would silently break exact resume.
"""

from __future__ import annotations

import json
import os
import random
from functools import partial
from typing import Mapping

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import DataError

FORMAT = "dermdiff-rng/1"
_MT_KEYS = 624  # Mersenne-Twister state words (Python keeps one more: the position)


def rng_file_name(process_index: int) -> str:
    """`rng_state_<rank>.safetensors`: each process writes and reads its own streams."""
    return f"rng_state_{int(process_index)}.safetensors"


def save_rng_state(folder: str, process_index: int, generators: Mapping[str, torch.Generator] | None = None) -> str:
    """Writes the global (Python, NumPy, torch, CUDA) and the given generators' states; returns the path.

    Args:
        folder (`str`): the checkpoint folder being written.
        process_index (`int`): this process's rank.
        generators (`Mapping[str, torch.Generator]`, *optional*): trainer-owned streams, by name.
    """
    version, python_keys, python_gauss = random.getstate()
    numpy_kind, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    tensors = {
        "python": torch.tensor(python_keys, dtype=torch.int64),
        "numpy": torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        for device, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{device}"] = state
    for name, generator in (generators or {}).items():
        tensors[f"generator.{name}"] = generator.get_state()
    scalars = {
        "python_version": version, "python_gauss": python_gauss, "numpy_kind": numpy_kind,
        "numpy_pos": int(numpy_pos), "numpy_has_gauss": int(numpy_has_gauss), "numpy_gauss": float(numpy_gauss),
    }  # fmt: skip
    path = os.path.join(folder, rng_file_name(process_index))
    save_file(tensors, path, metadata={"format": FORMAT, "scalars": json.dumps(scalars)})
    return path


def load_rng_state(folder: str, process_index: int, generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restores what `save_rng_state` wrote, all or nothing.

    Raises:
        `FileNotFoundError` when this rank has no state file; `DataError` (a `ValueError`) naming the file
        and the part when it cannot be read or does not fit (then no generator has been changed).
    """
    path = os.path.join(folder, rng_file_name(process_index))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no random-generator state for process {process_index}")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        scalars = json.loads(metadata.get("scalars", "null"))
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable random-generator state ({_first_line(error)})") from None
    if metadata.get("format") != FORMAT or not isinstance(scalars, dict):
        raise DataError(f"{path}: not a dermdiff random-generator state (format {metadata.get('format')!r})")
    setters = _setters(path, tensors, scalars, generators or {})
    before = _snapshot(generators or {})
    try:
        for setter in setters:
            setter()
    except (ValueError, TypeError, RuntimeError, OverflowError) as error:
        _restore(before, generators or {})
        raise DataError(f"{path}: damaged random-generator state ({_first_line(error)})") from None


def _setters(path: str, tensors: dict, scalars: dict, generators: Mapping[str, torch.Generator]) -> list:
    """Checks every part and returns the calls that apply them (nothing is applied here)."""

    def part(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        value = tensors.get(key)
        if value is None:
            raise DataError(f"{path}: damaged random-generator state (no {key!r} part)")
        if value.dtype != dtype or value.dim() != 1 or value.numel() != numel:
            raise DataError(
                f"{path}: damaged random-generator state ({key!r} is {value.dtype} of shape {tuple(value.shape)}, "
                f"expected {dtype} of shape ({numel},))"
            )
        return value

    python = part("python", torch.int64, _MT_KEYS + 1).tolist()
    numpy_keys = part("numpy", torch.int64, _MT_KEYS).numpy()
    if min(python + numpy_keys.tolist()) < 0 or max(python[:-1] + numpy_keys.tolist()) >= 2**32:
        raise DataError(f"{path}: damaged random-generator state (Mersenne-Twister words outside 0..2**32-1)")
    cpu = part("torch", torch.uint8, torch.get_rng_state().numel())
    try:
        python_state = (int(scalars["python_version"]), tuple(python), scalars["python_gauss"])
        numpy_state = (str(scalars["numpy_kind"]), numpy_keys.astype(np.uint32), int(scalars["numpy_pos"]),
                       int(scalars["numpy_has_gauss"]), float(scalars["numpy_gauss"]))  # fmt: skip
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: damaged random-generator state (scalar {_first_line(error)})") from None
    setters = [partial(random.setstate, python_state), partial(np.random.set_state, numpy_state),
               partial(torch.set_rng_state, cpu)]  # fmt: skip
    for name, generator in generators.items():
        state = part(f"generator.{name}", torch.uint8, generator.get_state().numel())
        setters.append(partial(generator.set_state, state))
    if torch.cuda.is_available():
        saved = [tensors[f"cuda.{d}"] for d in range(torch.cuda.device_count()) if f"cuda.{d}" in tensors]
        if saved:
            setters.append(partial(torch.cuda.set_rng_state_all, saved))
    return setters


def _snapshot(generators: Mapping[str, torch.Generator]) -> tuple:
    own = {name: generator.get_state() for name, generator in generators.items()}
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), own


def _restore(before: tuple, generators: Mapping[str, torch.Generator]) -> None:
    python, numpy_state, cpu, own = before
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(cpu)
    for name, generator in generators.items():
        generator.set_state(own[name])


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
