"""training/train_diffusion.py and dermdiff.loops: tiny runs on 8 phantom images at 16 px.

Fast tests run the script's `main` in this process (a tiny UNet from a JSON model config). The
SIGKILL and two-process tests start real `accelerate launch` / Python processes and are marked slow.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

from dermdiff.conditions import get_registry
from dermdiff.loops import checkpoint_files, common
from dermdiff.loops.diffusion import DiffusionTrainingConfig, drop_conditions, validation_maps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "training", "train_diffusion.py")
PHANTOM = get_registry("phantom").model_kwargs()  # the data of these tests
TINY_MODEL = {
    "block_out_channels": [8, 16],
    "norm_num_groups": 4,
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": 4,
}


def load_script():
    spec = importlib.util.spec_from_file_location("train_diffusion_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = load_script()




@pytest.fixture
def model_config(tmp_path):
    path = tmp_path / "tiny_unet.json"
    path.write_text(json.dumps(TINY_MODEL))
    return str(path)


def reset_accelerate():
    """Each in-process run builds a fresh Accelerator, as a new `accelerate launch` would."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def tiny_args(model_config, output_dir, *extra):
    return [
        "--phantom", "--phantom_num_images", "8", "--resolution", "16", "--train_batch_size", "4",
        "--model_config", model_config, "--output_dir", str(output_dir), "--lr_warmup_steps", "1",
        "--validation_steps", "0", "--report_to", "none", "--seed", "0", *extra,
    ]  # fmt: skip


def run(model_config, output_dir, *extra) -> int:
    reset_accelerate()
    return script.main(script.parse_args(tiny_args(model_config, output_dir, *extra)))


def weights(folder: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))


def assert_same_weights(folder_a: str, folder_b: str):
    a, b = weights(folder_a), weights(folder_b)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


# ----------------------------------------------------------------------------------------------------------------
# the script, end to end (in process)
# ----------------------------------------------------------------------------------------------------------------
def test_three_step_run_writes_a_loadable_ema_pipeline(tmp_path, model_config):
    from dermdiff import DermDiffPipeline

    out = tmp_path / "run"
    assert run(model_config, out, "--max_train_steps", "3", "--checkpointing_steps", "1", "--validation_steps", "3",
               "--ddpm_num_inference_steps", "2", "--report_to", "tensorboard") == 0
    for name in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "samples/validation-0000003.png"):
        assert (out / name).is_file(), name
    assert glob.glob(str(out / "logs" / "train_diffusion" / "events.out.tfevents.*"))
    for name in ("unet", "unet_ema", "optimizer.bin", "scheduler.bin", "rng_state_0.safetensors",
                 "dermdiff_checkpoint.json"):
        assert (out / "checkpoint-3" / name).exists(), name
    assert not glob.glob(str(out / "checkpoint-3" / "*.pkl"))  # random state is safetensors, never a pickle
    # the final model is the EMA, not the raw weights
    assert_same_weights(out / "unet", out / "checkpoint-3" / "unet_ema")
    raw, final = weights(out / "checkpoint-3" / "unet"), weights(out / "unet")
    assert any(not torch.equal(raw[key], final[key]) for key in raw)

    pipe = DermDiffPipeline.from_pretrained(str(out))
    assert pipe.unet.config.condition_dropout == 0.1
    assert pipe.unet.config.sample_size == 16
    images = pipe(condition="melanoma", skin_type=5, num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 16, 16, 3) and images.min() >= 0 and images.max() <= 1


def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path, model_config):
    """8 images / batch 4 = 2 updates per epoch; step 3 is mid-epoch, so the data position matters."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    steps = ("--max_train_steps", "6", "--checkpointing_steps", "3")
    run(model_config, full, *steps)
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    run(model_config, resumed, *steps, "--resume_from_checkpoint", "latest")
    for part in ("unet", "unet_ema"):
        assert_same_weights(full / "checkpoint-6" / part, resumed / "checkpoint-6" / part)
    assert_same_weights(full / "unet", resumed / "unet")
    opt_full = torch.load(full / "checkpoint-6" / "optimizer.bin", weights_only=True)
    opt_resumed = torch.load(resumed / "checkpoint-6" / "optimizer.bin", weights_only=True)
    assert opt_full["state"][0]["step"] == opt_resumed["state"][0]["step"] == 6
    torch.testing.assert_close(opt_full["state"][0]["exp_avg"], opt_resumed["state"][0]["exp_avg"], rtol=0, atol=1e-7)


def test_resume_without_the_data_position_would_differ(tmp_path, model_config):
    """Guards the test above: restarting the epoch at batch 0 instead of skipping changes the result."""
    full, wrong = tmp_path / "full", tmp_path / "wrong"
    steps = ("--max_train_steps", "4", "--checkpointing_steps", "3")
    run(model_config, full, *steps)
    wrong.mkdir()
    shutil.copytree(full / "checkpoint-3", wrong / "checkpoint-3")
    original = common.epoch_batches

    def restart_the_epoch(accelerator, loader, epoch, skip=0):
        return original(accelerator, loader, epoch, 0)

    with mock.patch.object(common, "epoch_batches", restart_the_epoch):
        run(model_config, wrong, *steps, "--resume_from_checkpoint", "latest")
    a, b = weights(full / "unet"), weights(wrong / "unet")
    assert any(not torch.equal(a[key], b[key]) for key in a)


def test_same_seed_same_run(tmp_path, model_config):
    """The seed fixes the initial weights too, so a resumed process rebuilds the same run."""
    for name in ("a", "b"):
        run(model_config, tmp_path / name, "--max_train_steps", "1", "--checkpointing_steps", "0")
    assert_same_weights(tmp_path / "a" / "unet", tmp_path / "b" / "unet")


def test_checkpoints_total_limit_keeps_the_newest(tmp_path, model_config):
    out = tmp_path / "run"
    run(model_config, out, "--max_train_steps", "4", "--checkpointing_steps", "1", "--checkpoints_total_limit", "2",
        "--no-use_ema")
    kept = sorted(os.path.basename(p) for p in glob.glob(str(out / "checkpoint-*")))
    assert kept == ["checkpoint-3", "checkpoint-4"]
    assert not (out / "checkpoint-4" / "unet_ema").exists()


def test_resume_latest_on_a_fresh_folder_starts_from_zero(tmp_path, model_config):
    out = tmp_path / "run"
    run(model_config, out, "--max_train_steps", "1", "--checkpointing_steps", "1",
        "--resume_from_checkpoint", "latest")
    assert (out / "checkpoint-1").is_dir() and (out / "model_index.json").is_file()


def test_v_prediction_and_class_embedding_train(tmp_path, model_config):
    out = tmp_path / "run"
    run(model_config, out, "--max_train_steps", "2", "--checkpointing_steps", "0", "--prediction_type", "v_prediction",
        "--use_class_embedding", "--random_flip", "--gradient_accumulation_steps", "2")
    config = json.loads((out / "unet" / "config.json").read_text())
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["use_class_embedding"] is True and scheduler["prediction_type"] == "v_prediction"


def test_evaluate_hook_sees_the_ema_pipeline_every_n_steps_and_at_the_end(tmp_path, model_config):
    from diffusers import DDPMScheduler
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dermdiff.data.info import registry_of
    from dermdiff.data.phantom import phantom_dataset
    from dermdiff.loops.diffusion import DiffusionExamples, train_diffusion
    from dermdiff.models.semantic_unet import SemanticUNet2DModel

    reset_accelerate()
    rows = phantom_dataset(n=8, size=16, seed=0)
    unet = SemanticUNet2DModel(sample_size=16, **TINY_MODEL, **PHANTOM)
    seen = []

    def evaluate(pipeline, step):
        ema = [p.detach().clone() for p in pipeline.unet.parameters()]
        seen.append((step, pipeline.unet.training, ema))
        return {"score": float(step)}

    config = DiffusionTrainingConfig(output_dir=str(tmp_path), train_batch_size=4, max_train_steps=3,
                                     lr_warmup_steps=1, checkpointing_steps=3, validation_steps=0,
                                     report_to="tensorboard")
    run_result = train_diffusion(unet, DDPMScheduler(num_train_timesteps=100),
                                 rows.with_transform(DiffusionExamples(registry_of(rows), 16)), config,
                                 evaluate=evaluate, evaluate_every=2)
    assert [step for step, _, _ in seen] == [2, 3] and run_result.metrics == {"score": 3.0}
    assert not any(training for _, training, _ in seen)  # evaluated in eval mode
    ema = weights(tmp_path / "checkpoint-3" / "unet_ema")
    names = [name for name, _ in SemanticUNet2DModel(sample_size=16, **TINY_MODEL, **PHANTOM).named_parameters()]
    for name, value in zip(names, seen[-1][2]):  # the final evaluation saw the EMA weights
        torch.testing.assert_close(value, ema[name], rtol=0, atol=1e-7)
    events = EventAccumulator(str(tmp_path / "logs" / "train_diffusion")).Reload()
    assert [event.step for event in events.Scalars("score")] == [2, 3]


@pytest.mark.slow
def test_compute_fid_every_logs_fid_and_kid_from_the_script(tmp_path, model_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run(model_config, out, "--max_train_steps", "2", "--checkpointing_steps", "0", "--report_to", "tensorboard",
        "--compute_fid_every", "2", "--fid_num_images", "4", "--fid_extractor", "torchvision:resnet18:random",
        "--ddpm_num_inference_steps", "2")
    events = EventAccumulator(str(out / "logs" / "train_diffusion")).Reload()
    for tag in ("fid", "fid_ci95", "kid", "loss"):
        assert tag in events.Tags()["scalars"], tag
    assert [event.step for event in events.Scalars("fid")] == [2]
    assert all(event.value >= 0 for event in events.Scalars("fid"))


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give exactly one of --train_data_dir, --dataset_name, --phantom"),
        (["--phantom", "--train_data_dir", "x"], "give exactly one of --train_data_dir, --dataset_name, --phantom"),
        (["--phantom", "--condition_dropout", "1.5"], "--condition_dropout must be in [0, 1], got 1.5"),
        (["--phantom", "--resolution", "4"], "--resolution must be >= 8, got 4"),
        (["--phantom", "--model_config", "/no/such.json"], "--model_config '/no/such.json' does not exist"),
    ],
)
def test_bad_flags_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        script.parse_args(argv)
    assert error.value.code == 2 and message in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Hub push, offline
# ----------------------------------------------------------------------------------------------------------------
def test_push_to_hub_sends_the_pipeline_and_card_but_never_the_token(tmp_path, model_config, caplog, capsys):
    from huggingface_hub.utils import filter_repo_objects

    token = "hf_SECRETtoken1234567890"
    out = tmp_path / "run"
    calls = {}

    def fake_create_repo(repo_id, **kwargs):
        calls["create_repo"] = dict(repo_id=repo_id, **kwargs)
        return mock.Mock(repo_id=repo_id)

    def fake_upload_folder(**kwargs):
        calls["upload_folder"] = kwargs
        root = kwargs["folder_path"]
        everything = glob.glob(os.path.join(root, "**"), recursive=True)
        files = [os.path.relpath(p, root) for p in everything if os.path.isfile(p)]
        calls["sent"] = sorted(filter_repo_objects(files, ignore_patterns=kwargs["ignore_patterns"]))

    caplog.set_level(logging.DEBUG)
    with mock.patch("dermdiff.hub.create_repo", fake_create_repo), \
            mock.patch("dermdiff.hub.upload_folder", fake_upload_folder):
        run(model_config, out, "--max_train_steps", "2", "--checkpointing_steps", "1", "--report_to", "tensorboard",
            "--push_to_hub", "--hub_model_id", "someone/dermdiff-tiny", "--hub_token", token, "--estimate_skin_type")

    assert calls["create_repo"]["repo_id"] == "someone/dermdiff-tiny" and calls["create_repo"]["token"] == token
    assert calls["upload_folder"]["token"] == token and calls["upload_folder"]["folder_path"] == str(out)
    sent = calls["sent"]
    for name in ("README.md", "model_index.json", "unet/diffusion_pytorch_model.safetensors", "unet/config.json",
                 "scheduler/scheduler_config.json"):
        assert name in sent, name
    assert not [name for name in sent if name.startswith(("checkpoint-", "logs")) or ".tmp" in name]
    card = (out / "README.md").read_text()
    facts = ("phantom", "16 px", "training steps: 2", "Not a diagnostic device", "Limitations", "licence: generated",
             "unknown ones estimated from the images' ITA")
    for fact in facts:
        assert fact in card, fact
    # the token appears in no log record, no printed line and no file of the run (trackers, card, configs)
    assert token not in caplog.text
    captured = capsys.readouterr()
    assert token not in captured.out + captured.err
    for path in glob.glob(str(out / "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                assert token.encode() not in handle.read(), path


# ----------------------------------------------------------------------------------------------------------------
# the shared plumbing
# ----------------------------------------------------------------------------------------------------------------
def test_list_checkpoints_orders_by_step_and_ignores_tmp_and_strays(tmp_path):
    for name in ("checkpoint-10", "checkpoint-9", "checkpoint-11.tmp", "checkpoint-x", "other"):
        (tmp_path / name).mkdir()
        checkpoint_files.write_manifest(str(tmp_path / name), 0)
    (tmp_path / "checkpoint-12").write_text("a file, not a folder")
    assert [os.path.basename(p) for p in common.list_checkpoints(str(tmp_path))] == ["checkpoint-9", "checkpoint-10"]
    assert common.resolve_checkpoint(str(tmp_path), "latest").endswith("checkpoint-10")
    assert common.resolve_checkpoint(str(tmp_path / "empty"), "latest") is None
    with pytest.raises(ValueError, match="neither 'latest' nor a folder"):
        common.resolve_checkpoint(str(tmp_path), str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        common.checkpoint_step(str(tmp_path / "other"))
    (tmp_path / "checkpoint-3.deleting").mkdir()  # a kill in the middle of an earlier deletion
    assert [os.path.basename(p) for p in common.prune_checkpoints(str(tmp_path), 1)] == ["checkpoint-9"]
    assert not (tmp_path / "checkpoint-3.deleting").exists() and not (tmp_path / "checkpoint-9.deleting").exists()
    with pytest.raises(ValueError, match="checkpoints_total_limit"):
        common.prune_checkpoints(str(tmp_path), 0)


def test_a_save_that_dies_midway_leaves_no_checkpoint(tmp_path):
    """The state is written to checkpoint-N.tmp; a crash before the rename leaves the old checkpoints intact."""
    reset_accelerate()
    accelerator = common.build_accelerator(str(tmp_path), report_to=None, seed=0)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    common.save_checkpoint(accelerator, str(tmp_path), 1)

    def dies_after_the_weights(output_dir, **kwargs):
        os.makedirs(output_dir, exist_ok=True)
        open(os.path.join(output_dir, "model.safetensors"), "wb").close()
        raise KeyboardInterrupt("killed while saving")

    with mock.patch.object(accelerator, "save_state", dies_after_the_weights), pytest.raises(KeyboardInterrupt):
        common.save_checkpoint(accelerator, str(tmp_path), 2)
    assert (tmp_path / "checkpoint-2.tmp").is_dir() and not (tmp_path / "checkpoint-2").exists()
    assert common.resolve_checkpoint(str(tmp_path), "latest").endswith("checkpoint-1")
    common.save_checkpoint(accelerator, str(tmp_path), 2)  # a later save replaces the leftover
    assert (tmp_path / "checkpoint-2").is_dir() and not (tmp_path / "checkpoint-2.tmp").exists()


def test_tracker_config_drops_secrets_and_stringifies():
    config = common.tracker_config({"hub_token": "x", "lr": 1e-4, "skin": (1, 3), "limit": None})
    assert config == {"lr": 1e-4, "skin": "(1, 3)", "limit": "None"}


def test_drop_conditions_replaces_map_and_class_together():
    maps = torch.ones(6, 3, 4, 4)
    labels = torch.arange(6)
    generator = torch.Generator().manual_seed(0)
    dropped, dropped_labels = drop_conditions(maps, labels, 1.0, null_class=9, generator=generator)
    assert dropped.abs().sum() == 0 and dropped_labels.tolist() == [9] * 6
    kept, kept_labels = drop_conditions(maps, labels, 0.0, null_class=9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kept, maps) and torch.equal(kept_labels, labels)
    half, half_labels = drop_conditions(
        torch.ones(4000, 1, 1, 1), torch.zeros(4000, dtype=torch.long), 0.1, 9, torch.Generator().manual_seed(0)
    )
    fraction = (half.flatten() == 0).float().mean().item()
    assert 0.08 < fraction < 0.12
    assert torch.equal(half.flatten() == 0, half_labels == 9)


def test_validation_maps_cover_conditions_by_skin_types():
    from dermdiff.conditions import get_registry

    maps = validation_maps(get_registry("phantom"), 16, (1, 6))
    assert len(maps) == 10
    assert [m.condition for m in maps[:4]] == ["nevus", "nevus", "melanoma", "melanoma"]
    assert [m.skin_type for m in maps[:4]] == [1, 6, 1, 6]
    assert maps[0].boxes == [(4, 4, 12, 12)]


def test_grid_skin_types_are_those_the_training_data_has(caplog):
    from dermdiff.conditions import get_registry
    from dermdiff.loops.diffusion import grid_skin_types

    assert grid_skin_types((1, 3, 6), [1, 2, 3, 4, 5, 6, None]) == (1, 3, 6)
    assert grid_skin_types((1, 3, 6), None) == (1, 3, 6)  # no skin_type column: nothing to check against
    assert grid_skin_types((1, 3, 6), [None] * 5) == (None,)  # HAM10000: no Fitzpatrick labels at all
    assert grid_skin_types((1, 3, 6), [2, 2, 4, 5, None]) == (2, 4, 5)  # none requested present: lightest, middle, darkest
    assert grid_skin_types((1, 3, 6), [5]) == (5,)
    assert grid_skin_types((None, 6), [None, 6]) == (None, 6)
    with caplog.at_level("WARNING"):
        assert grid_skin_types((1, 3, 6), [1, 2, 3]) == (1, 3)
    assert "validation_skin_types [6] do not occur in the training data" in caplog.text
    assert [m.skin_type for m in validation_maps(get_registry("phantom"), 16, (None,))] == [None] * 5


def test_grid_of_data_without_skin_types_has_one_unknown_column(tmp_path, model_config):
    """A dataset with no Fitzpatrick labels (HAM10000, DermaMNIST) gets a grid of unknown skin, not of I / III / VI."""
    from PIL import Image

    from dermdiff.data import phantom_dataset, registry_of, save_image_folder
    from dermdiff.semantic_map import SemanticMap

    rows = phantom_dataset(n=8, size=16, seed=0)
    registry = registry_of(rows)
    unknown = lambda row: {"skin_type": None,  # noqa: E731  (the map's R channel says it too: loaders read it)
                           "semantic_map": SemanticMap.decode(row["semantic_map"], registry).with_skin_type(None).to_pil()}
    rows = rows.map(unknown)
    data = save_image_folder(rows, str(tmp_path / "no-skin-types"))
    out = tmp_path / "run"
    reset_accelerate()
    argv = tiny_args(model_config, out, "--max_train_steps", "1", "--validation_steps", "1",
                     "--ddpm_num_inference_steps", "1")
    argv[:3] = ["--train_data_dir", data]  # instead of --phantom --phantom_num_images 8
    assert script.main(script.parse_args(argv)) == 0
    with Image.open(out / "samples" / "validation-0000001.png") as grid:
        assert grid.size[0] == 16  # one column (rows: the 5 phantom conditions)


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="condition_dropout"):
        DiffusionTrainingConfig(output_dir=str(tmp_path), condition_dropout=-0.1)
    with pytest.raises(ValueError, match="train_batch_size"):
        DiffusionTrainingConfig(output_dir=str(tmp_path), train_batch_size=0)
    with pytest.raises(ValueError, match="skin type 7 is outside the Fitzpatrick scale"):
        DiffusionTrainingConfig(output_dir=str(tmp_path), validation_skin_types=(7,))


# ----------------------------------------------------------------------------------------------------------------
# real processes (slow)
# ----------------------------------------------------------------------------------------------------------------
def accelerate_cmd(*launch_args):
    return [sys.executable, "-m", "accelerate.commands.launch", *launch_args]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_latest_matches_an_uninterrupted_run(tmp_path, model_config):
    steps = ("--max_train_steps", "12", "--checkpointing_steps", "2", "--checkpoints_total_limit", "3")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run(model_config, reference, *steps)

    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    command = [sys.executable, SCRIPT, *tiny_args(model_config, killed, *steps)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "checkpoint-6").is_dir():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = common.list_checkpoints(str(killed))
    assert done and not (killed / "model_index.json").exists(), "the run must be killed before it finished"
    last = common.checkpoint_step(done[-1])
    assert 6 <= last < 12
    for path in done:  # every complete checkpoint is loadable
        assert (weights(os.path.join(path, "unet")).keys() == weights(os.path.join(path, "unet_ema")).keys())

    result = subprocess.run(command + ["--resume_from_checkpoint", "latest"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"starting at step {last}" in result.stderr
    for part in ("unet", "unet_ema"):
        assert_same_weights(reference / "checkpoint-12" / part, killed / "checkpoint-12" / part)
    assert_same_weights(reference / "unet", killed / "unet")
    assert not glob.glob(str(killed / "*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2])
def test_two_cpu_processes_really_run_and_stay_in_sync(tmp_path, model_config, processes):
    """`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu` starts real gloo ranks (`--cpu` would start one)."""
    worker = os.path.join(ROOT, "tests", "ddp_sync_worker.py")
    out = tmp_path / "ddp"
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    command = accelerate_cmd("--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no",
                             worker, model_config, str(out))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(open(path).read()) for path in sorted(glob.glob(str(out / "rank-*.json")))]
    assert [r["rank"] for r in reports] == list(range(processes))
    assert all(r["world_size"] == processes and r["distributed_type"] == "MULTI_CPU" for r in reports)
    assert all(r["steps"] == 4 for r in reports)
    assert len({r["checksum"] for r in reports}) == 1, reports
    assert reports[0]["checksum"] != reports[0]["initial_checksum"]
    # each rank saw different images (the data is sharded, not duplicated)
    assert reports[0]["first_batch_ids"] != reports[1]["first_batch_ids"]
    assert (out / "model_index.json").is_file()

    # kill-free resume with 2 ranks: each rank continues its own noise stream, so the result is exact
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(out / "checkpoint-2", resumed / "checkpoint-2")
    result = subprocess.run(command[:-1] + [str(resumed), "latest"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting at step 2" in result.stderr
    assert_same_weights(out / "checkpoint-4" / "unet", resumed / "checkpoint-4" / "unet")


# ----------------------------------------------------------------------------------------------------------------
# fine-tuning a trained pipeline (--pretrained_model_name_or_path)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def trained_pipeline(tmp_path, model_config):
    out = tmp_path / "base"
    assert run(model_config, out, "--max_train_steps", "2", "--prediction_type", "epsilon") == 0
    return out


def finetune(output_dir, pretrained, *extra) -> int:
    reset_accelerate()
    argv = [arg for arg in tiny_args("unused.json", output_dir) if arg not in ("--model_config", "unused.json")]
    return script.main(script.parse_args([*argv, "--pretrained_model_name_or_path", str(pretrained), *extra]))


def test_finetune_starts_from_the_pretrained_weights_and_keeps_its_noise_schedule(tmp_path, trained_pipeline):
    from dermdiff import DermDiffPipeline

    frozen, tuned = tmp_path / "frozen", tmp_path / "tuned"
    # a learning rate of 1e-12 moves an Adam step by ~1e-12: the result is the starting point, not a new model
    assert finetune(frozen, trained_pipeline, "--max_train_steps", "1", "--learning_rate", "1e-12") == 0
    assert_same_weights(frozen / "unet", trained_pipeline / "unet")
    assert finetune(tuned, trained_pipeline, "--max_train_steps", "2") == 0
    start, after = weights(trained_pipeline / "unet"), weights(tuned / "unet")
    assert any(not torch.equal(start[key], after[key]) for key in start)
    pipe = DermDiffPipeline.from_pretrained(str(tuned))
    assert pipe.scheduler.config.prediction_type == "epsilon"  # the base model's, not the flag's default
    assert list(pipe.unet.config.block_out_channels) == TINY_MODEL["block_out_channels"]


@pytest.mark.parametrize("extra, message", [
    (["--prediction_type", "v_prediction"], "--prediction_type v_prediction differs from the pretrained model's "
                                            "prediction_type 'epsilon'"),
    (["--resolution", "32"], "--resolution 32: the pretrained model"),
])
def test_finetune_refuses_a_changed_schedule_or_size(tmp_path, trained_pipeline, extra, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        finetune(tmp_path / "out", trained_pipeline, "--max_train_steps", "1", *extra)


def test_finetune_refuses_data_with_other_conditions(tmp_path):
    from diffusers import DDPMScheduler

    from dermdiff import DermDiffPipeline
    from dermdiff.models.semantic_unet import SemanticUNet2DModel

    unet = SemanticUNet2DModel(**TINY_MODEL, sample_size=16, **get_registry("ham10000").model_kwargs())
    DermDiffPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(str(tmp_path / "ham"))
    with pytest.raises(ValueError, match="the model's conditions \\['akiec', .*\\] are not the data's \\['nevus'"):
        finetune(tmp_path / "out", tmp_path / "ham", "--max_train_steps", "1")


def test_finetune_flag_excludes_a_new_architecture(model_config, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--phantom", "--pretrained_model_name_or_path", "x", "--model_config", model_config])
    assert "drop --model_config and --use_class_embedding" in capsys.readouterr().err


def test_finetune_refusal_from_the_command_line_is_one_line_without_a_traceback(tmp_path, capsys):
    from diffusers import DDPMScheduler

    from dermdiff import DermDiffPipeline
    from dermdiff.errors import run_script
    from dermdiff.models.semantic_unet import SemanticUNet2DModel

    unet = SemanticUNet2DModel(**TINY_MODEL, sample_size=16, **get_registry("ham10000").model_kwargs())
    DermDiffPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(str(tmp_path / "ham"))
    reset_accelerate()
    argv = [arg for arg in tiny_args("unused.json", tmp_path / "out") if arg not in ("--model_config", "unused.json")]
    status = run_script(script.parse_args, script.main,
                        [*argv, "--pretrained_model_name_or_path", str(tmp_path / "ham"), "--max_train_steps", "1"])
    err = capsys.readouterr().err
    assert status != 0 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "the model's conditions" in line]
    assert len(lines) == 1 and "are not the data's ['nevus'" in lines[0]
