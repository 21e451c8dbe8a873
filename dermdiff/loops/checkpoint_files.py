"""What a complete dermdiff checkpoint holds, and the check that a folder still holds it before resuming.

`save_checkpoint` ends by writing `dermdiff_checkpoint.json`: every file of the checkpoint with its byte
size. `verify_checkpoint` compares a folder against it: every file present at its size, every safetensors
header readable, every JSON file parseable, and no extra file of a kind accelerate or diffusers would
load (a pickle planted next to the real state is refused, not loaded). It reads headers only, so it is
fast even for large models; `--resume_from_checkpoint latest` uses it to fall back to the newest good
checkpoint.

The manifest is not a signature (whoever can write a checkpoint can rewrite it); it catches damage
(kills, full disks, half copies). Safety against tampered files comes from never unpickling: models and
random states are safetensors, and the optimizer/scheduler pickles accelerate writes are read with
`torch.load(weights_only=True)`, which refuses anything but tensors and plain values.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open

from .rng_state import rng_file_name

MANIFEST = "dermdiff_checkpoint.json"
FORMAT = "dermdiff-checkpoint/1"
# files accelerate, diffusers or torch would load if present: never accepted unless the save wrote them
_LOADABLE_SUFFIXES = (".safetensors", ".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".npy", ".npz")
_PICKLED_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class CheckpointProblem:
    """One reason a checkpoint cannot be resumed from: the file (relative to the folder) and what is wrong."""

    file: str
    reason: str

    @property
    def only_random_state(self) -> bool:
        """True for a damaged `rng_state_<rank>.safetensors` (resumable, inexactly, with `allow_inexact`)."""
        return self.file.startswith("rng_state_") and self.file.endswith(".safetensors")

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


def _relative_files(folder: str) -> list[str]:
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(found)


def write_manifest(folder: str, global_step: int) -> str:
    """Records every file of the finished save in `folder` with its size; returns the manifest path."""
    files = {rel: os.path.getsize(os.path.join(folder, rel)) for rel in _relative_files(folder) if rel != MANIFEST}
    path = os.path.join(folder, MANIFEST)
    with open(path, "w") as handle:
        json.dump({"format": FORMAT, "global_step": int(global_step), "files": files}, handle, indent=1)
    return path


def _read_manifest(folder: str) -> tuple[dict | None, CheckpointProblem | None]:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None, CheckpointProblem(
            MANIFEST, "missing (the save did not finish, or a dermdiff older than the safetensors random state "
            "wrote it; such checkpoints keep their random state in pickles, which are no longer loaded)"
        )  # fmt: skip
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as error:
        return None, CheckpointProblem(MANIFEST, f"not readable JSON ({str(error).splitlines()[0]})")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None, CheckpointProblem(MANIFEST, f"format is not {FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in files.values()
    ):
        return None, CheckpointProblem(MANIFEST, "'files' must map each file to its size in bytes")
    return files, None


def _check_file(folder: str, rel: str, size: int) -> CheckpointProblem | None:
    if os.path.isabs(rel) or ".." in rel.split("/"):
        return CheckpointProblem(rel, "the manifest names a file outside the checkpoint")
    path = os.path.join(folder, rel)
    if not os.path.isfile(path):
        return CheckpointProblem(rel, "missing")
    actual = os.path.getsize(path)
    if actual != size:
        return CheckpointProblem(rel, f"{actual} bytes, the save wrote {size} (truncated or replaced)")
    if rel.endswith(".safetensors"):
        try:
            with safe_open(path, framework="pt") as handle:
                list(handle.keys())
        except (SafetensorError, OSError) as error:
            return CheckpointProblem(rel, f"safetensors header unreadable ({str(error).splitlines()[0]})")
    elif rel.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as handle:
                json.load(handle)
        except (OSError, ValueError) as error:
            return CheckpointProblem(rel, f"not readable JSON ({str(error).splitlines()[0]})")
    return None


def verify_checkpoint(folder: str) -> list[CheckpointProblem]:
    """Every reason `folder` cannot be resumed from (empty when it is complete and readable).

    Args:
        folder (`str`): a `checkpoint-<step>` folder.

    Example:
        ```python
        >>> problems = verify_checkpoint("run/checkpoint-500")
        >>> print("; ".join(map(str, problems)) or "ok")
        ```
    """
    files, problem = _read_manifest(folder)
    if problem is not None:
        return [problem]
    problems = [found for rel, size in files.items() if (found := _check_file(folder, rel, size)) is not None]
    for rel in _relative_files(folder):
        if _never_written(rel):  # whatever the manifest says: a forged one must not let a pickle through
            problems.append(CheckpointProblem(rel, "dermdiff never writes this pickle; refusing to load it"))
        elif rel not in files and rel != MANIFEST and rel.lower().endswith(_LOADABLE_SUFFIXES):
            problems.append(CheckpointProblem(rel, "not written by the save; refusing to load it"))
    return problems


def _never_written(rel: str) -> bool:
    """Pickles no dermdiff save writes: any `.pkl` (accelerate's random and custom states are replaced by
    safetensors) and any pickled file inside a model folder (those are `save_pretrained` safetensors)."""
    name = rel.lower()
    return name.endswith((".pkl", ".pickle")) or ("/" in name and name.endswith(_PICKLED_SUFFIXES))


def saved_ranks(folder: str) -> int:
    """How many processes wrote random state into `folder` (to tell a rank added on resume from damage)."""
    rank = 0
    while os.path.isfile(os.path.join(folder, rng_file_name(rank))):
        rank += 1
    return rank


def refused_pickle(folder: str) -> tuple[str, str] | None:
    """The first pickled file in `folder` that `torch.load(weights_only=True)` refuses, with torch's reason.

    Called only after a load failed, to name the culprit in the error.
    """
    for rel in _relative_files(folder):
        if not rel.lower().endswith(_PICKLED_SUFFIXES):
            continue
        try:
            torch.load(os.path.join(folder, rel), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
            text = str(error).strip()
            return rel, text.splitlines()[0] if text else type(error).__name__
    return None
