"""hub_strategy (dermdiff.hub_sync): checkpoints pushed in the background, retried, never lost; offline with the
upload call patched."""

from __future__ import annotations

import logging
import os
import threading
import time
from unittest import mock

import pytest
import torch

from dermdiff import hub_sync
from dermdiff.data.info import registry_of
from dermdiff.data.phantom import phantom_dataset
from dermdiff.data.transforms import model_transform
from dermdiff.loops.gan import GANTrainingConfig, train_gan
from dermdiff.loops.gan_tasks import dcgan_task
from dermdiff.models import DCGANGenerator, MultiScaleDiscriminator


class FakeHub:
    """Records each upload with the files it found; fails the first `failures` calls; optionally slow."""

    def __init__(self, failures: int = 0, delay: float = 0.0):
        self.calls, self.failures, self.delay = [], failures, delay
        self.lock = threading.Lock()

    def upload_folder(self, **kwargs):
        time.sleep(self.delay)
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("hub unreachable (token hf_secret123)")
            folder = kwargs["folder_path"]
            files = sorted(os.path.relpath(os.path.join(root, name), folder)
                           for root, _, names in os.walk(folder) for name in names)
            self.calls.append({**kwargs, "files": files})

    def patches(self):
        return (mock.patch.object(hub_sync, "upload_folder", self.upload_folder),
                mock.patch.object(hub_sync, "create_repo", lambda repo_id, **kw: mock.Mock(repo_id=repo_id)))


def fake_checkpoint(root, step: int) -> str:
    path = os.path.join(root, f"checkpoint-{step}")
    os.makedirs(os.path.join(path, "dcgan"))
    with open(os.path.join(path, "dcgan", "model.safetensors"), "wb") as handle:
        handle.write(os.urandom(64))
    with open(os.path.join(path, "dermdiff_checkpoint.json"), "w") as handle:
        handle.write("{}")
    return path


def tiny_run(tmp_path, on_checkpoint, steps=6, every=2, limit=1):
    dataset = phantom_dataset(n=16, size=16, seed=0)
    examples = dataset.with_transform(model_transform(16, registry_of(dataset)))
    torch.manual_seed(0)
    generator = DCGANGenerator(sample_size=16, num_upsamples=2, base_channels=8, dense_channels=4)
    discriminator = MultiScaleDiscriminator(sample_size=16, num_layers=2, base_channels=4)
    config = GANTrainingConfig(output_dir=str(tmp_path / "run"), train_batch_size=4, max_train_steps=steps,
                               checkpointing_steps=every, checkpoints_total_limit=limit, validation_steps=0,
                               monitor_steps=0, report_to=None)
    return train_gan(dcgan_task(generator, discriminator, num_validation_images=0), examples, config,
                     on_checkpoint=on_checkpoint)


def test_every_save_pushes_each_checkpoint_even_after_pruning(tmp_path):
    hub = FakeHub(delay=0.2)  # slower than training: pruned checkpoints must still arrive whole
    pusher = hub_sync.CheckpointPusher("me/run", "every_save", str(tmp_path / "run"), retry_wait=0)
    with hub.patches()[0], hub.patches()[1]:
        tiny_run(tmp_path, pusher.checkpoint_saved)
        assert pusher.finish() == []
    assert [call["path_in_repo"] for call in hub.calls] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert all("dermdiff_checkpoint.json" in call["files"] and any(f.startswith("dcgan/") for f in call["files"])
               for call in hub.calls)
    assert sorted(os.listdir(tmp_path / "run")).count("checkpoint-6") == 1  # total_limit 1 kept the last locally
    assert os.listdir(tmp_path / "run" / hub_sync.SNAPSHOT_DIR) == []  # snapshots removed once pushed


def test_checkpoint_strategy_replaces_last_checkpoint(tmp_path):
    hub = FakeHub()
    pusher = hub_sync.CheckpointPusher("me/run", "checkpoint", str(tmp_path), retry_wait=0)
    with hub.patches()[0], hub.patches()[1]:
        for step in (2, 4):
            pusher.checkpoint_saved(fake_checkpoint(tmp_path, step))
        pusher.finish()
    assert [(c["path_in_repo"], c["delete_patterns"]) for c in hub.calls] == [("last-checkpoint", ["*"])] * 2
    assert hub.calls[-1]["files"] == ["checkpoint-4/dcgan/model.safetensors", "checkpoint-4/dermdiff_checkpoint.json"]


def test_push_returns_at_once_and_a_failed_push_is_retried_without_logging_the_token(tmp_path, caplog):
    hub = FakeHub(failures=2, delay=0.3)
    pusher = hub_sync.CheckpointPusher("me/run", "every_save", str(tmp_path), token="hf_secret123", retry_wait=0)
    with hub.patches()[0], hub.patches()[1], caplog.at_level(logging.WARNING, logger="dermdiff.hub_sync"):
        start = time.perf_counter()
        pusher.checkpoint_saved(fake_checkpoint(tmp_path, 2))
        assert time.perf_counter() - start < 0.25  # the upload takes 0.3 s per try in the background
        assert pusher.finish() == []
    assert [call["path_in_repo"] for call in hub.calls] == ["checkpoint-2"]
    assert caplog.text.count("failed (attempt") == 2 and "hf_secret123" not in caplog.text


def test_a_push_that_keeps_failing_keeps_its_snapshot(tmp_path, caplog):
    hub = FakeHub(failures=10)
    pusher = hub_sync.CheckpointPusher("me/run", "every_save", str(tmp_path), retries=2, retry_wait=0)
    original = fake_checkpoint(tmp_path, 8)
    with hub.patches()[0], hub.patches()[1], caplog.at_level(logging.ERROR, logger="dermdiff.hub_sync"):
        pusher.checkpoint_saved(original)
        import shutil

        shutil.rmtree(original)  # pruned locally meanwhile
        left = pusher.finish()
    assert left == [os.path.join(str(tmp_path), hub_sync.SNAPSHOT_DIR, "checkpoint-8")]
    assert os.path.isfile(os.path.join(left[0], "dcgan", "model.safetensors"))  # the work is still on disk
    assert "kept there" in caplog.text


def test_end_pushes_nothing_during_training_and_bad_strategies_are_refused(tmp_path):
    hub = FakeHub()
    with hub.patches()[0], hub.patches()[1]:
        pusher = hub_sync.CheckpointPusher("me/run", "end", str(tmp_path))
        pusher.checkpoint_saved(fake_checkpoint(tmp_path, 2))
        assert pusher.finish() == [] and hub.calls == []
    allowed = r"hub_strategy must be one of \('end', 'every_save', 'checkpoint'\), got 'all'"
    with pytest.raises(ValueError, match=allowed):
        hub_sync.CheckpointPusher("me/run", "all", str(tmp_path))
    with pytest.raises(ValueError, match="needs a repo id"):
        hub_sync.CheckpointPusher("", "every_save", str(tmp_path))


HUB_SCRIPT_ARGV = {"train_dcgan": ["--phantom"], "train_diffusion": ["--phantom"], "train_autoencoder": ["--phantom"],
                   "train_classifier": ["--train_data_dir", "x"]}


def load_script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_hub_flags", os.path.join("training", f"{name}.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("name", sorted(HUB_SCRIPT_ARGV))
def test_script_refuses_an_unknown_hub_strategy(capsys, name):
    with pytest.raises(SystemExit) as exited:
        load_script(name).parse_args(HUB_SCRIPT_ARGV[name] + ["--output_dir", "x", "--push_to_hub", "--hub_strategy",
                                                              "sometimes"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--hub_strategy" in err and "every_save" in err and "Traceback" not in err


@pytest.mark.parametrize("name", sorted(HUB_SCRIPT_ARGV))
def test_every_trainer_has_the_hub_settings_as_flags_with_their_defaults(name):
    """The Hub flags are generated from `HubSettings` in every trainer: same names, same defaults."""
    import dataclasses

    args = load_script(name).parse_args(HUB_SCRIPT_ARGV[name] + ["--output_dir", "runs/x"])
    expected = dataclasses.asdict(hub_sync.HubSettings())
    assert {key: getattr(args, key) for key in expected} == expected == {
        "push_to_hub": False, "hub_model_id": None, "hub_token": None, "hub_private_repo": False, "hub_strategy": "end"}
    assert hub_sync.hub_repo_id(args) == "x"
    with pytest.raises(ValueError, match=r"hub_strategy must be one of \('end', 'every_save', 'checkpoint'\), got 'x'"):
        hub_sync.HubSettings(hub_strategy="x")


# ----------------------------------------------------------------------------------------------------------------
# the same --hub_strategy in the diffusion, autoencoder and classifier scripts
# ----------------------------------------------------------------------------------------------------------------
TINY_UNET = {"block_out_channels": [8, 16], "norm_num_groups": 4, "layers_per_block": 1,
             "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}
TINY_AE = {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
           "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 4}
TINY_HF_RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}


def script_argv(tmp_path, script, out):
    import json

    phantom = ["--phantom", "--phantom_num_images", "8", "--resolution", "16", "--train_batch_size", "4",
               "--report_to", "none", "--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "1",
               "--validation_steps", "0"]  # fmt: skip
    if script == "train_diffusion":
        (tmp_path / "unet.json").write_text(json.dumps(TINY_UNET))
        return phantom + ["--model_config", str(tmp_path / "unet.json"), "--lr_warmup_steps", "1"]
    if script == "train_autoencoder":
        (tmp_path / "ae.json").write_text(json.dumps(TINY_AE))
        return phantom + ["--model_config", str(tmp_path / "ae.json"), "--num_validation_images", "2",
                          "--scaling_num_images", "8"]
    from dermdiff.data import write_phantom

    data = write_phantom(str(tmp_path / "phantom"), n=30, size=16, seed=0)
    return ["--train_data_dir", data, "--backbone", "transformers", "--backbone_config", json.dumps(TINY_HF_RESNET),
            "--resolution", "16", "--num_epochs", "2", "--train_batch_size", "8", "--n_boot", "5", "--report_to",
            "none", "--split_fractions", '{"train": 0.6, "validation": 0.2, "test": 0.2}', "--output_dir", str(out)]


@pytest.mark.parametrize("script, strategy", [("train_diffusion", "every_save"), ("train_autoencoder", "checkpoint"),
                                              ("train_classifier", "every_save")])
def test_every_trainer_pushes_its_checkpoints_under_hub_strategy(tmp_path, script, strategy):
    import importlib.util

    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    spec = importlib.util.spec_from_file_location(f"{script}_hub", os.path.join("training", f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "run"
    argv = script_argv(tmp_path, script, out) + ["--push_to_hub", "--hub_model_id", "me/run", "--hub_strategy",
                                                 strategy, "--hub_token", "hf_secret123"]
    hub, final = FakeHub(), []
    with hub.patches()[0], hub.patches()[1], \
            mock.patch("dermdiff.hub.create_repo", lambda repo_id, **kw: mock.Mock(repo_id=repo_id)), \
            mock.patch("dermdiff.hub.upload_folder", lambda **kw: final.append(kw)):  # fmt: skip
        module.main(module.parse_args(argv))
    written = sorted((name for name in os.listdir(out) if name.startswith("checkpoint-")), key=lambda n: int(n[11:]))
    assert len(written) == 2 and len(final) == 1  # two checkpoints during training, the final model at the end
    if strategy == "every_save":
        assert [call["path_in_repo"] for call in hub.calls] == written
    else:
        assert [call["path_in_repo"] for call in hub.calls] == ["last-checkpoint"] * 2
        assert {f.split("/")[0] for f in hub.calls[-1]["files"]} == {written[-1]}
    assert all("dermdiff_checkpoint.json" in {f.split("/")[-1] for f in call["files"]} for call in hub.calls)
    assert os.listdir(out / hub_sync.SNAPSHOT_DIR) == []
