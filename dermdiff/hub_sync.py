"""Checkpoints to the Hub while training runs, as transformers' `hub_strategy` does.

| strategy     | what is pushed                                                                          |
|--------------|-----------------------------------------------------------------------------------------|
| `end`        | nothing during training; the final model at the end (`dermdiff.hub.push_to_hub`)        |
| `every_save` | every checkpoint as it is written, to `checkpoint-<step>/` in the repo                   |
| `checkpoint` | only the latest checkpoint, to `last-checkpoint/checkpoint-<step>/` (older ones deleted |
|              | in the same commit), so a run resumes on another machine from the Hub:                  |
|              | `hf download REPO --include "last-checkpoint/*" --local-dir run` then                   |
|              | `--resume_from_checkpoint run/last-checkpoint/checkpoint-<step>`                        |

Pushes never block training: `CheckpointPusher.checkpoint_saved` hard-links the finished checkpoint into
`output_dir/.hub_push/` (instant, no copy; a checkpoint pruned by `checkpoints_total_limit` meanwhile keeps
its files there) and returns; one background thread uploads the snapshots in order. A failed upload is
logged (without the token) and retried with growing waits; a snapshot that still fails stays on disk and is
tried again by `finish()` at the end of the run, which reports what could not be pushed. Nothing is deleted
before the Hub has it.

The Hub flags of every training script (`--push_to_hub`, `--hub_model_id`, `--hub_token`, `--hub_private_repo`,
`--hub_strategy`) are generated from `HubSettings`'s fields (`add_hub_arguments`), declared once here.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field

from huggingface_hub import create_repo, upload_folder

from .config_args import add_config_arguments

logger = logging.getLogger(__name__)

HubStrategy = typing.Literal["end", "every_save", "checkpoint"]
HUB_STRATEGIES = typing.get_args(HubStrategy)
SNAPSHOT_DIR = ".hub_push"
LAST_CHECKPOINT = "last-checkpoint"


@dataclass(frozen=True)
class HubSettings:
    """How a training script uploads its run to the Hub; each field is a flag of every trainer (`add_hub_arguments`)."""

    push_to_hub: bool = field(default=False, metadata={"help": "Upload the final model with a model card."})
    hub_model_id: str | None = field(default=None,
                                     metadata={"help": "Hub repo id (defaults to the output folder name)."})
    hub_token: str | None = field(default=None,
                                  metadata={"help": "Hub token (never logged; default: cached login)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    hub_strategy: HubStrategy = field(default="end", metadata={
        "help": "With --push_to_hub: 'end' pushes the final model; 'every_save' also each checkpoint as it is "
                "written; 'checkpoint' also the latest checkpoint only (last-checkpoint/, to resume elsewhere). "
                "Pushes run in the background and are retried (dermdiff.hub_sync)."})

    def __post_init__(self):
        check_hub_strategy(self.hub_strategy)


def add_hub_arguments(parser, group: str) -> None:
    """The `HubSettings` flags, in the argparse group titled `group` (created or reused)."""
    add_config_arguments(parser, HubSettings, group=group)


def hub_repo_id(args) -> str:
    """The repo a run is pushed to: `--hub_model_id`, else the name of `--output_dir`."""
    return args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir))


def checkpoint_pusher(args) -> "CheckpointPusher | None":
    """The background pusher of `--push_to_hub --hub_strategy every_save|checkpoint` (None for `end` or no push).

    The repo is `--hub_model_id`, else the output folder's name, as for the final push. Hand its
    `checkpoint_saved` to the training loop's `on_checkpoint` and call `finish()` after training.
    """
    if not args.push_to_hub or args.hub_strategy == "end":
        return None
    return CheckpointPusher(hub_repo_id(args), args.hub_strategy, args.output_dir, token=args.hub_token,
                            private=args.hub_private_repo)


@contextmanager
def pushing_checkpoints(args):
    """The `on_checkpoint` callback of `--hub_strategy` for a training loop (None when nothing is pushed during
    training); after the block it waits for the queued pushes and retries failed ones (`CheckpointPusher.finish`).

    Example:
        >>> with pushing_checkpoints(args) as on_checkpoint:
        ...     run = train_gan(task, dataset, config, on_checkpoint=on_checkpoint)
    """
    pusher = checkpoint_pusher(args)
    yield pusher.checkpoint_saved if pusher is not None else None
    if pusher is not None:
        pusher.finish()


def check_hub_strategy(strategy: str) -> str:
    if strategy not in HUB_STRATEGIES:
        raise ValueError(f"hub_strategy must be one of {HUB_STRATEGIES}, got {strategy!r}")
    return strategy


class CheckpointPusher:
    """Uploads checkpoints in a background thread (see the module docstring).

    Args:
        repo_id (`str`): the Hub repo (created on the first push if missing).
        strategy (`str`): one of `HUB_STRATEGIES`; `end` makes this a no-op.
        output_dir (`str`): the run folder (snapshots go to `output_dir/.hub_push`).
        token (`str`, *optional*), private (`bool`): passed to `huggingface_hub` only.
        retries (`int`, defaults to 3), retry_wait (`float`, defaults to 10 s, doubled per retry).
    """

    def __init__(self, repo_id: str, strategy: str, output_dir: str, token: str | None = None,
                 private: bool = False, retries: int = 3, retry_wait: float = 10.0):
        self.strategy = check_hub_strategy(strategy)
        if self.strategy != "end" and not repo_id:
            raise ValueError(f"hub_strategy={strategy!r} needs a repo id (--hub_model_id)")
        self.repo_id, self.token, self.private = repo_id, token, private
        self.snapshots = os.path.join(output_dir, SNAPSHOT_DIR)
        self.retries, self.retry_wait = int(retries), float(retry_wait)
        self.pending: queue.Queue = queue.Queue()
        self.failed: list[str] = []
        self.pushed: list[str] = []
        self._repo_ready = False
        self._thread: threading.Thread | None = None

    # -- training side: never waits on the network ----------------------------------------------------------------
    def checkpoint_saved(self, path: str) -> None:
        """Queues the checkpoint at `path` (call after it is complete); returns at once."""
        if self.strategy == "end":
            return
        name = os.path.basename(os.path.normpath(path))
        snapshot = os.path.join(self.snapshots, name)
        if os.path.exists(snapshot):
            shutil.rmtree(snapshot)
        # "checkpoint" uploads the snapshot folder as last-checkpoint/, so the checkpoint sits one level down
        target = os.path.join(snapshot, name) if self.strategy == "checkpoint" else snapshot
        shutil.copytree(path, target, copy_function=_link_or_copy)
        self.pending.put(snapshot)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="hub-push", daemon=True)
            self._thread.start()

    def finish(self) -> list[str]:
        """Waits for queued pushes, tries failed ones once more, and returns the snapshots still not pushed."""
        if self._thread is not None:
            self.pending.put(None)
            self._thread.join()
            self._thread = None
        still = []
        for snapshot in self.failed:
            if not self._push_with_retries(snapshot, attempts=1):
                still.append(snapshot)
        self.failed = still
        for snapshot in still:
            logger.error(f"hub push of {snapshot} failed; it is kept there, push it with `hf upload`")
        return still

    # -- background thread ------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            snapshot = self.pending.get()
            if snapshot is None:
                return
            if not self._push_with_retries(snapshot, attempts=self.retries):
                self.failed.append(snapshot)

    def _push_with_retries(self, snapshot: str, attempts: int) -> bool:
        name = os.path.basename(snapshot)
        for attempt in range(1, attempts + 1):
            try:
                self._upload(snapshot)
            except Exception as error:  # any network / Hub error: log, wait, retry; the snapshot stays
                message = str(error).replace(self.token, "***") if self.token else str(error)
                logger.warning(f"hub push of {name} failed (attempt {attempt}/{attempts}): {message}")
                if attempt < attempts:
                    time.sleep(self.retry_wait * 2 ** (attempt - 1))
                continue
            shutil.rmtree(snapshot, ignore_errors=True)
            self.pushed.append(name)
            logger.info(f"pushed {name} to {self.repo_id}")
            return True
        return False

    def _upload(self, snapshot: str) -> None:
        if not self._repo_ready:
            self.repo_id = create_repo(self.repo_id, exist_ok=True, private=self.private, token=self.token).repo_id
            self._repo_ready = True
        name = os.path.basename(snapshot)
        if self.strategy == "checkpoint":  # delete patterns are relative to path_in_repo: the older checkpoint goes
            path_in_repo, delete = LAST_CHECKPOINT, ["*"]
        else:
            path_in_repo, delete = name, None
        upload_folder(repo_id=self.repo_id, folder_path=snapshot, path_in_repo=path_in_repo,
                      commit_message=f"Training in progress: {name}", token=self.token, delete_patterns=delete)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link (no bytes copied) where the filesystem allows, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
