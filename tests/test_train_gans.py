"""training/train_dermgan.py, train_dcgan.py, train_lesion_edit.py: tiny phantom runs in process, resume, ablations."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from dermdiff.loops.gan import read_gap_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_CONFIGS = {
    "train_dermgan": {
        "generator": {"block_out_channels": [8, 16, 32]},
        "discriminator": {"block_out_channels": [8, 16]},
    },
    "train_dcgan": {"generator": {"base_channels": 8, "dense_channels": 8}, "discriminator": {"base_channels": 4}},
    "train_lesion_edit": {
        "generator": {"block_out_channels": [4, 8, 16], "num_residual_blocks": 1},
        "discriminator": {"base_channels": 4},
    },
}
# (script, extra flags, generator subfolders of the saved pipeline)
RUNS = {
    "dermgan": ("train_dermgan", [], ["dermgan"]),
    "dcgan": ("train_dcgan", [], ["dcgan"]),
    "targeted": (
        "train_lesion_edit",
        ["--mode", "targeted", "--phantom_healthy_fraction", "0.5"],
        ["add_model", "remove_model"],
    ),
    "cycle": (
        "train_lesion_edit",
        ["--mode", "cycle", "--phantom_healthy_fraction", "0.5"],
        ["add_model", "remove_model"],
    ),
}



def load_script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", os.path.join(ROOT, "training", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reset_accelerate():
    """Each in-process run builds a fresh Accelerator, as a new `accelerate launch` would."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def args_for(tmp_path, script, output_dir, *extra):
    config = tmp_path / f"{script}.json"
    config.write_text(json.dumps(MODEL_CONFIGS[script]))
    return [
        "--phantom", "--phantom_num_images", "12", "--resolution", "16", "--train_batch_size", "4",
        "--model_config", str(config), "--output_dir", str(output_dir), "--report_to", "none", "--seed", "0",
        "--validation_steps", "0", "--monitor_steps", "2", *extra,
    ]  # fmt: skip


def run(tmp_path, script, output_dir, *extra) -> int:
    reset_accelerate()
    module = load_script(script)
    return module.main(module.parse_args(args_for(tmp_path, script, output_dir, *extra)))


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_run_saves_pipeline_checkpoints_and_gap_log_then_resumes_exactly(tmp_path, kind):
    """12 images, 10 % held out, batch 4: 2 updates per epoch, so step 3 resumes mid-epoch.

    The resumed run must end with exactly the weights of the uninterrupted one (same data order,
    dropout masks and latents from the checkpointed random stream)."""
    script, extra, parts = RUNS[kind]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    steps = ("--max_train_steps", "4", "--checkpointing_steps", "3")
    assert run(tmp_path, script, full, *steps, "--validation_steps", "4", *extra) == 0
    for name in ("model_index.json", "samples/samples-0000004.png", "checkpoint-3/optimizer.bin",
                 "checkpoint-3/optimizer_1.bin", "checkpoint-3/rng_state_0.safetensors"):  # fmt: skip
        assert (full / name).is_file(), name
    for part in parts:
        assert (full / part / "diffusion_pytorch_model.safetensors").is_file()
        assert (full / "checkpoint-3" / part / "config.json").is_file()
    assert os.listdir(full / "discriminators")
    records = read_gap_log(full / "discriminator_gap.jsonl")
    assert sorted({r["step"] for r in records}) == [0, 2, 4]
    assert all(
        0.0 <= r["d_train"] <= 1.0 and r["gap"] == pytest.approx(r["d_train"] - r["d_heldout"]) for r in records
    )
    assert list(full.glob("discriminator_gap_*.png"))

    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    assert run(tmp_path, script, resumed, *steps, "--resume_from_checkpoint", "latest", *extra) == 0
    for part in parts:
        a, b = weights(full / part), weights(resumed / part)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=f"{part}/{key}")


def test_saved_pipelines_load_and_generate(tmp_path):
    from dermdiff import DermGANPipeline, LesionEditPipeline

    run(tmp_path, "train_dermgan", tmp_path / "dermgan", "--max_train_steps", "1", "--checkpointing_steps", "0")
    pipe = DermGANPipeline.from_pretrained(str(tmp_path / "dermgan"))
    assert pipe(condition="vascular", skin_type=6, output_type="np").images.shape == (1, 16, 16, 3)
    run(
        tmp_path,
        "train_lesion_edit",
        tmp_path / "edit",
        "--max_train_steps",
        "1",
        "--checkpointing_steps",
        "0",
        "--phantom_healthy_fraction",
        "0.5",
    )
    pipe = LesionEditPipeline.from_pretrained(str(tmp_path / "edit"))
    photo = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:10, 4:10] = 1
    assert pipe(image=photo, mask=mask, direction="remove", output_type="pt").images.shape == (1, 3, 16, 16)


def test_dermgan_ablation_switches():
    script = load_script("train_dermgan")
    base = ["--phantom", "--output_dir", "unused", "--resolution", "16"]
    args = script.parse_args(base)
    weights_ = script.loss_weights(args)
    assert (weights_.gan, weights_.l1, weights_.roi, weights_.feature_matching) == (1.0, 100.0, 100.0, 10.0)
    from dermdiff.conditions import get_registry

    generator, _ = script.build_models(args, get_registry("phantom"))
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in generator.modules())

    args = script.parse_args(base + ["--no_resize_conv", "--no_roi_loss", "--no_feature_matching"])
    weights_ = script.loss_weights(args)
    assert weights_.roi == 0.0 and weights_.feature_matching == 0.0 and weights_.l1 == 100.0
    generator, _ = script.build_models(args, get_registry("phantom"))
    assert generator.config.upsample == "transposed"
    assert any(isinstance(m, nn.ConvTranspose2d) for m in generator.modules())


@pytest.mark.parametrize(
    "script, flags, message",
    [
        ("train_dermgan", ["--resolution", "24"], "--resolution must be a power of two for the U-Net, got 24"),
        ("train_dermgan", ["--lambda_roi", "-1"], "--lambda_roi must be >= 0, got -1.0"),
        ("train_dcgan", ["--truncation", "0"], "--truncation must be > 0, got 0.0"),
        ("train_lesion_edit", ["--mode", "paired"], "argument --mode: invalid choice: 'paired'"),
        ("train_lesion_edit", ["--heldout_fraction", "1.5"], "--heldout_fraction must be in [0, 1), got 1.5"),
    ],
)
def test_bad_flags_exit_with_usage_error(script, flags, message, capsys):
    with pytest.raises(SystemExit) as error:
        load_script(script).parse_args(["--phantom", "--output_dir", "unused", *flags])
    assert error.value.code == 2 and message in capsys.readouterr().err


def test_lesion_edit_needs_healthy_images(tmp_path):
    with pytest.raises(ValueError, match="healthy"):
        run(tmp_path, "train_lesion_edit", tmp_path / "edit", "--max_train_steps", "1")


@pytest.mark.parametrize("kind", ["dermgan", "dcgan", "targeted"])
def test_same_seed_same_initial_weights_and_run(tmp_path, kind):
    """The seed fixes the initial weights too (a run killed before its first checkpoint restarts identically)."""
    script, extra, parts = RUNS[kind]
    for name in ("a", "b"):
        assert run(tmp_path, script, tmp_path / name, "--max_train_steps", "1", "--checkpointing_steps", "0",
                   "--monitor_steps", "0", *extra) == 0  # fmt: skip
    for part in parts:
        a, b = weights(tmp_path / "a" / part), weights(tmp_path / "b" / part)
        assert all(torch.equal(a[key], b[key]) for key in a), part
