"""Resume never runs code from a checkpoint, stops on a damaged random state, and falls back past damage.

A marker payload (a pickle whose `__reduce__` opens a file for writing) is planted in every file of a real
tiny diffusion checkpoint, and as extra files accelerate or diffusers would pick up. The manifest is then
forged to match, so each loader itself (not the size check) has to refuse it. Every resume must stop with
one line naming the file, and the marker must never appear.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from test_train_diffusion import model_config, run  # noqa: F401  (fixture)

from dermdiff.loops import checkpoint_files, common, rng_state


class Marker:
    """Unpickling this creates `path`: proof that a loader ran code from the file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def payload(marker: str, torch_format: bool) -> bytes:
    if not torch_format:
        return pickle.dumps(Marker(marker))
    buffer = io.BytesIO()
    torch.save({"state": Marker(marker)}, buffer)
    return buffer.getvalue()


def forge_manifest(folder) -> None:
    """What an attacker who can write the checkpoint can also do: make the sizes match again."""
    step = json.loads((folder / checkpoint_files.MANIFEST).read_text())["global_step"]
    checkpoint_files.write_manifest(str(folder), step)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    config = folder / "tiny.json"
    from test_train_diffusion import TINY_MODEL

    config.write_text(json.dumps(TINY_MODEL))
    run(str(config), folder / "run", "--max_train_steps", "2", "--checkpointing_steps", "1")
    return folder


def resume_from(trained, tmp_path, checkpoint: str, *extra):
    """A copy of the trained run and the call that resumes it (from `checkpoint`, or "latest")."""
    out = tmp_path / "run"
    shutil.copytree(trained / "run", out)
    where = "latest" if checkpoint == "latest" else str(out / checkpoint)
    flags = ("--max_train_steps", "2", "--checkpointing_steps", "1", "--resume_from_checkpoint", where, *extra)
    return out, functools.partial(run, str(trained / "tiny.json"), out, *flags)


def test_the_marker_payload_runs_when_unpickled_unsafely(tmp_path):
    """Guards every test below: the payload really creates the marker when loaded the unsafe way."""
    marker = tmp_path / "ran"
    pickle.loads(payload(str(marker), torch_format=False))
    assert marker.exists()
    marker.unlink()
    torch.load(io.BytesIO(payload(str(marker), torch_format=True)), weights_only=False)
    assert marker.exists()


def test_checkpoints_hold_no_pickle_but_the_optimizer_and_scheduler(trained):
    folder = trained / "run" / "checkpoint-2"
    files = json.loads((folder / checkpoint_files.MANIFEST).read_text())["files"]
    assert sorted(name for name in files if not name.endswith((".json", ".safetensors"))) == [
        "optimizer.bin", "scheduler.bin"]  # fmt: skip
    assert "rng_state_0.safetensors" in files and checkpoint_files.verify_checkpoint(str(folder)) == []


CHECKPOINT_FILES = [
    "optimizer.bin", "scheduler.bin", "rng_state_0.safetensors", "dermdiff_checkpoint.json",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    "unet_ema/config.json", "unet_ema/diffusion_pytorch_model.safetensors",
]  # fmt: skip
# extra files accelerate or diffusers would load if a run had them: refused even with a forged manifest
NEVER_WRITTEN = ["custom_checkpoint_0.pkl", "random_states_0.pkl", "unet/diffusion_pytorch_model.bin",
                 "model.safetensors"]  # fmt: skip
# an extra file that fits another run's layout: refused by the manifest, and never read by this run
UNLISTED = ["optimizer_1.bin"]


@pytest.mark.parametrize("name", CHECKPOINT_FILES + NEVER_WRITTEN + UNLISTED)
def test_a_payload_in_any_checkpoint_file_is_refused_in_one_line_and_never_runs(trained, tmp_path, name):
    marker = tmp_path / "payload-ran"
    out, resume = resume_from(trained, tmp_path, "checkpoint-2")
    target = out / "checkpoint-2" / name
    target.write_bytes(payload(str(marker), torch_format=name.endswith((".bin", ".pkl"))))
    if name in CHECKPOINT_FILES + NEVER_WRITTEN and name != checkpoint_files.MANIFEST:
        forge_manifest(out / "checkpoint-2")
    with pytest.raises(ValueError) as error:
        resume()
    message = str(error.value)
    assert "\n" not in message and name in message and "checkpoint-2" in message, message
    assert not marker.exists()
    if name in UNLISTED:  # with the manifest forged too, this run never opens the file
        forge_manifest(out / "checkpoint-2")
        assert resume() == 0 and not marker.exists()


def test_latest_falls_back_past_a_damaged_checkpoint_with_a_warning(trained, tmp_path, caplog):
    out, resume = resume_from(trained, tmp_path, "latest")
    unet = out / "checkpoint-2" / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:100])  # truncated
    (out / "checkpoint-1" / "optimizer.bin").unlink()
    (out / "checkpoint-1" / "optimizer.bin").write_bytes(b"")  # damaged too: no good one left
    with pytest.raises(ValueError, match=r"no checkpoint in .* can be resumed from \(2 found"):
        resume()
    shutil.rmtree(out)
    out, resume = resume_from(trained, tmp_path, "latest")
    unet.write_bytes(unet.read_bytes()[:100])
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert resume() == 0
    skipped = [r.getMessage() for r in caplog.records if "skipping damaged checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and "checkpoint-2" in skipped[0] and "diffusion_pytorch_model.safetensors" in skipped[0]
    assert any("resuming from" in r.getMessage() and r.getMessage().endswith("checkpoint-1") for r in caplog.records)
    # the resumed run saved step 2 again, whole
    assert checkpoint_files.verify_checkpoint(str(out / "checkpoint-2")) == []


@pytest.mark.parametrize("damage", ["truncated", "wrong_length", "missing"])
def test_a_damaged_random_state_stops_the_resume_unless_inexact_is_allowed(trained, tmp_path, caplog, damage):
    out, resume = resume_from(trained, tmp_path, "checkpoint-2")
    path = out / "checkpoint-2" / "rng_state_0.safetensors"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:50])
    elif damage == "missing":
        path.unlink()
    else:  # a readable file whose torch state has the wrong size
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(path), framework="pt") as handle:
            metadata, tensors = handle.metadata(), {key: handle.get_tensor(key) for key in handle.keys()}
        tensors["torch"] = tensors["torch"][:-1].clone()
        save_file(tensors, str(path), metadata=metadata)
    forge_manifest(out / "checkpoint-2")
    with pytest.raises(ValueError, match="rng_state_0.safetensors.*--allow_inexact_resume") as error:
        resume()
    assert "\n" not in str(error.value)
    caplog.set_level(logging.WARNING)
    shutil.move(out, tmp_path / "damaged")
    out, resume = resume_from(trained, tmp_path, "checkpoint-2", "--allow_inexact_resume")
    shutil.rmtree(out / "checkpoint-2")
    shutil.copytree(tmp_path / "damaged" / "checkpoint-2", out / "checkpoint-2")
    assert resume() == 0
    assert any("rng_state_0.safetensors" in r.getMessage() and "will not repeat" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_rng_state_round_trip_restores_every_stream_exactly(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(3)
    torch.randn(3, generator=generator)
    rng_state.save_rng_state(str(tmp_path), 0, {"training": generator})
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    for _ in range(5):
        random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=generator)
    rng_state.load_rng_state(str(tmp_path), 0, {"training": generator})
    got = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    assert got == expected


def test_a_rank_added_on_resume_starts_a_fresh_stream_with_a_warning(tmp_path, caplog):
    rng_state.save_rng_state(str(tmp_path), 0, {"training": torch.Generator().manual_seed(0)})
    generator = common.CheckpointedGenerator(0, process_index=1)
    before = generator.generator.get_state()
    caplog.set_level(logging.WARNING)
    common._restore_random_state(str(tmp_path), 1, generator, allow_inexact=False)
    assert torch.equal(generator.generator.get_state(), before)
    assert any("no saved random state for process 1" in r.getMessage() for r in caplog.records)


def test_a_training_script_reports_a_refused_checkpoint_in_one_line_with_status_1(trained, tmp_path, capsys):
    from test_train_diffusion import script, tiny_args

    from dermdiff.errors import run_script

    marker = tmp_path / "payload-ran"
    out, _ = resume_from(trained, tmp_path, "checkpoint-2")
    (out / "checkpoint-2" / "optimizer.bin").write_bytes(payload(str(marker), torch_format=True))
    forge_manifest(out / "checkpoint-2")
    argv = tiny_args(str(trained / "tiny.json"), out, "--max_train_steps", "2", "--resume_from_checkpoint", "latest")
    assert run_script(script.parse_args, script.main, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optimizer.bin holds more than tensors" in err[0] and "Traceback" not in err[0], err
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------
# SIGKILL at several moments (mid-save included), each run resumed with `latest`: the end equals a run never killed
# ----------------------------------------------------------------------------------------------------------------
def _kill_when(process, folder, names, deadline_s=300) -> str | None:
    """Kills `process` as soon as one of `names` exists in `folder`; returns which (None: it ended first)."""
    deadline = time.time() + deadline_s
    while time.time() < deadline and process.poll() is None:
        for name in names:
            if (folder / name).exists():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return name
        time.sleep(0.005)
    return None


@pytest.mark.slow
def test_a_gan_killed_three_times_resumes_to_the_uninterrupted_weights(tmp_path):
    from test_train_gans import args_for
    from test_train_gans import run as run_gan

    steps = ("--max_train_steps", "12", "--checkpointing_steps", "2", "--checkpoints_total_limit", "2")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert run_gan(tmp_path, "train_dermgan", reference, *steps) == 0
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "train_dermgan.py")
    command = [sys.executable, script, *args_for(tmp_path, "train_dermgan", killed, *steps),
               "--resume_from_checkpoint", "latest"]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    for targets in (["checkpoint-2.tmp", "checkpoint-2"], ["checkpoint-6"], ["checkpoint-8.tmp", "checkpoint-8"]):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert _kill_when(process, killed, targets) is not None, f"the run ended before {targets}"
        assert not (killed / "model_index.json").exists()
        for path in common.list_checkpoints(str(killed)):  # whatever the kill hit, complete checkpoints verify
            assert checkpoint_files.verify_checkpoint(path) == [], path
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for part in ("dermgan", "checkpoint-12/dermgan", "checkpoint-12/discriminator"):
        a = load_file(str(reference / part / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(killed / part / "diffusion_pytorch_model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=f"{part}/{key}")
