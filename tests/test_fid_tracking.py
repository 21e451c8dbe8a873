"""FID during GAN training (--compute_fid_every) and model selection by best FID (--save_best_fid).

The loop tests use a tiny DCGAN and a scripted `evaluate` hook (known FIDs per step), so which model is
"best" is decided by the test, not by chance; the script tests compute real FIDs with the offline
random-weight extractor (`torchvision:resnet18:random`), never downloaded Inception weights.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from dermdiff.data.info import registry_of
from dermdiff.data.phantom import phantom_dataset
from dermdiff.data.transforms import model_transform
from dermdiff.loops import common
from dermdiff.loops.fid_tracking import BEST_FID_DIR, PipelineFID, fid_tracker, read_best_fid
from dermdiff.loops.gan import GANTrainingConfig, train_gan
from dermdiff.loops.gan_tasks import dcgan_task
from dermdiff.models import DCGANGenerator, MultiScaleDiscriminator
from dermdiff.pipelines.generation_settings import GenerationSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = "diffusion_pytorch_model.safetensors"


def reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


class ScriptedFID:
    """An evaluate hook returning a fixed FID per step; records the steps and whether G was in eval mode."""

    def __init__(self, fids: dict[int, float]):
        self.fids, self.calls = fids, []

    def __call__(self, pipeline, step):
        self.calls.append((step, pipeline.dcgan.training))
        return {"fid": self.fids[step], "kid": self.fids[step] / 100}


def dcgan_run(output_dir, evaluate, steps=5, resume=None, save_best=True, report_to=None):
    reset_accelerate()
    dataset = phantom_dataset(n=8, size=16, seed=0)
    examples = dataset.with_transform(model_transform(16, registry_of(dataset)))
    torch.manual_seed(0)
    generator = DCGANGenerator(sample_size=16, num_upsamples=1, base_channels=8, dense_channels=4)
    discriminator = MultiScaleDiscriminator(sample_size=16, num_layers=1, base_channels=4)
    config = GANTrainingConfig(output_dir=str(output_dir), train_batch_size=4, max_train_steps=steps,
                               checkpointing_steps=2, validation_steps=0, monitor_steps=0, report_to=report_to,
                               resume_from_checkpoint=resume)
    task = dcgan_task(generator, discriminator, num_validation_images=0)
    return train_gan(task, examples, config, evaluate=evaluate, evaluate_every=2, save_best_fid=save_best)


def test_fid_every_n_is_logged_and_the_best_model_is_kept(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    hook = ScriptedFID({2: 5.0, 4: 3.0, 5: 4.0})  # best at step 4; the last step (5) is evaluated at the end
    run = dcgan_run(out, hook, report_to="tensorboard")
    assert hook.calls == [(2, False), (4, False), (5, False)]  # every 2 updates + the end, generator in eval mode
    events = EventAccumulator(str(out / "logs" / "train_dcgan")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("fid")] == [(2, 5.0), (4, 3.0), (5, 4.0)]
    assert run.metrics == {"fid": 4.0, "kid": 0.04} and run.best_fid == {"step": 4, "fid": 3.0, "kid": 0.03}
    assert read_best_fid(str(out)) == run.best_fid
    # the kept weights are the step-4 model (checkpoint-4), not the final one
    best, at_4 = load_file(out / BEST_FID_DIR / "dcgan" / WEIGHTS), load_file(out / "checkpoint-4" / "dcgan" / WEIGHTS)
    final = load_file(out / "dcgan" / WEIGHTS)
    assert all(torch.equal(best[k], at_4[k]) for k in best) and not all(torch.equal(best[k], final[k]) for k in best)
    # every checkpoint carries the best so far, as JSON
    assert common.read_training_state(str(out / "checkpoint-2"))["best_fid"] == {"step": 2, "fid": 5.0, "kid": 0.05}
    assert common.read_training_state(str(out / "checkpoint-4"))["best_fid"]["step"] == 4
    assert not [name for name in os.listdir(out) if name.startswith(BEST_FID_DIR + ".")]  # no .tmp / .old left
    from dermdiff import DCGANPipeline

    images = DCGANPipeline.from_pretrained(str(out / BEST_FID_DIR))(batch_size=2, output_type="np").images
    assert images.shape == (2, 16, 16, 3)


def test_resume_keeps_the_best_fid_of_the_checkpoint(tmp_path):
    dcgan_run(tmp_path / "first", ScriptedFID({2: 5.0, 4: 3.0, 5: 4.0}))
    # 1. only checkpoint-2 travels (e.g. from the Hub): its best (5.0 at step 2) must not be beaten by 6.0 / 5.5
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copytree(tmp_path / "first" / "checkpoint-2", moved / "checkpoint-2")
    hook = ScriptedFID({4: 6.0, 5: 5.5})
    run = dcgan_run(moved, hook, resume="latest")
    assert [step for step, _ in hook.calls] == [4, 5]
    assert run.best_fid == {"step": 2, "fid": 5.0, "kid": 0.05} and not (moved / BEST_FID_DIR).exists()
    assert common.read_training_state(str(moved / "checkpoint-4"))["best_fid"]["step"] == 2
    # 2. resumed in place from checkpoint-2: best_fid/ (step 4, FID 3.0, measured after it) is not replaced by 3.5
    shutil.rmtree(tmp_path / "first" / "checkpoint-4")
    run = dcgan_run(tmp_path / "first", ScriptedFID({4: 3.5, 5: 3.2}), resume="latest")
    assert run.best_fid["step"] == 4 and read_best_fid(str(tmp_path / "first"))["fid"] == 3.0
    # 3. a lower FID after the resume does replace it
    shutil.rmtree(tmp_path / "first" / "checkpoint-4")
    run = dcgan_run(tmp_path / "first", ScriptedFID({4: 3.5, 5: 1.0}), resume="latest")
    assert read_best_fid(str(tmp_path / "first")) == run.best_fid == {"step": 5, "fid": 1.0, "kid": 0.01}


def test_a_kill_between_the_two_renames_leaves_the_old_best_in_place(tmp_path):
    out = tmp_path / "run"
    dcgan_run(out, ScriptedFID({2: 5.0, 4: 3.0, 5: 4.0}))
    os.replace(out / BEST_FID_DIR, out / f"{BEST_FID_DIR}.old")  # killed after renaming the old best away
    run = dcgan_run(out, ScriptedFID({2: 9.0, 4: 9.0, 5: 9.0}), save_best=True, resume="latest")
    assert read_best_fid(str(out))["step"] == 4 and run.best_fid["fid"] == 3.0


def test_pipeline_fid_of_a_real_gan_is_computed_once_per_evaluation(tmp_path):
    """PipelineFID on an unconditional DCGAN: a finite FID, reference features extracted only once."""
    from test_metrics_eval import TinyFeatures

    reference = phantom_dataset(n=6, size=16, seed=1)
    extractor = TinyFeatures(16)
    fid = PipelineFID(reference, registry_of(reference), 16, extractor=extractor,
                      settings=GenerationSettings(batch_size=4))
    torch.manual_seed(0)
    from dermdiff import DCGANPipeline

    pipe = DCGANPipeline(dcgan=DCGANGenerator(sample_size=16, num_upsamples=1, base_channels=8, dense_channels=4))
    first, second = fid(pipe, 1), fid(pipe, 2)
    assert first == second and first["fid"] > 0 and set(first) == {"fid", "fid_ci95", "kid"}
    assert extractor.images_seen == 6 + 2 * 6  # 6 reference images once, 6 samples per evaluation


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_fid", os.path.join(ROOT, "training", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = {
    "train_dermgan": {"generator": {"block_out_channels": [8, 16, 32]},
                      "discriminator": {"block_out_channels": [8, 16]}},
    "train_dcgan": {"generator": {"base_channels": 8, "dense_channels": 8}, "discriminator": {"base_channels": 4}},
    "train_lesion_edit": {"generator": {"block_out_channels": [4, 8, 16], "num_residual_blocks": 1},
                          "discriminator": {"base_channels": 4}},
}


@pytest.mark.parametrize("script, extra", [
    ("train_dermgan", []),  # map pipeline: samples the held-out maps
    pytest.param("train_dcgan", [], marks=pytest.mark.slow),  # noise: covered fast by the loop tests above
    ("train_lesion_edit", ["--phantom_healthy_fraction", "0.5"]),  # edit: lesions added to held-out photos
])  # fmt: skip
def test_scripts_log_real_fid_and_keep_the_best(tmp_path, script, extra):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tmp_path / "model.json"
    config.write_text(json.dumps(TINY[script]))
    out = tmp_path / "run"
    module = load_script(script)
    argv = ["--phantom", "--phantom_num_images", "8", "--resolution", "16", "--train_batch_size", "4",
            "--model_config", str(config), "--output_dir", str(out), "--report_to", "tensorboard",
            "--validation_steps", "0", "--monitor_steps", "0", "--checkpointing_steps", "0", "--max_train_steps", "2",
            "--compute_fid_every", "1", "--save_best_fid", "--fid_num_images", "4",
            "--fid_extractor", "torchvision:resnet18:random", *extra]  # fmt: skip
    reset_accelerate()
    assert module.main(module.parse_args(argv)) == 0
    name = "train_lesion_edit_targeted" if script == "train_lesion_edit" else script
    events = EventAccumulator(str(out / "logs" / name)).Reload()
    fids = {e.step: e.value for e in events.Scalars("fid")}
    # finite, not necessarily > 0: 4 images in 512 dimensions, and an edit of a held-out photo stays close to it
    assert sorted(fids) == [1, 2] and all(math.isfinite(value) for value in fids.values())
    assert {"kid", "fid_ci95"} <= set(events.Tags()["scalars"])
    best = read_best_fid(str(out))
    assert best["fid"] == pytest.approx(min(fids.values()), rel=1e-5)
    assert fids[best["step"]] == pytest.approx(best["fid"], rel=1e-5)
    assert (out / BEST_FID_DIR / "model_index.json").is_file()


@pytest.mark.parametrize("script", ["train_dermgan", "train_dcgan", "train_lesion_edit", "train_diffusion"])
@pytest.mark.parametrize("flags, message", [
    (["--compute_fid_every", "-1"], "--compute_fid_every must be >= 0 (0 = never), got -1"),
    (["--save_best_fid"], "--save_best_fid needs --compute_fid_every N"),
    (["--compute_fid_every", "5", "--fid_num_images", "1"], "--fid_num_images must be >= 2, got 1"),
])  # fmt: skip
def test_bad_fid_flags_give_one_line(capsys, script, flags, message):
    with pytest.raises(SystemExit) as exited:
        load_script(script).parse_args(["--phantom", "--output_dir", "unused", *flags])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and "Traceback" not in err


def test_the_loop_refuses_save_best_fid_without_an_evaluation(tmp_path):
    with pytest.raises(ValueError, match="save_best_fid needs an evaluate hook and compute_fid_every >= 1"):
        fid_tracker(None, 0, str(tmp_path), save_best_fid=True)
    with pytest.raises(ValueError, match=r"compute_fid_every must be >= 0 \(0 = never\), got -2"):
        fid_tracker(ScriptedFID({}), -2, str(tmp_path))


def test_diffusion_keeps_the_ema_model_of_its_best_fid(tmp_path):
    """The same keeper in train_diffusion: best_fid/ holds the EMA weights of the lowest-FID step."""
    from diffusers import DDPMScheduler

    from dermdiff.loops.diffusion import DiffusionExamples, DiffusionTrainingConfig, train_diffusion
    from dermdiff.models.semantic_unet import SemanticUNet2DModel

    reset_accelerate()
    rows = phantom_dataset(n=8, size=16, seed=0)
    torch.manual_seed(0)
    unet = SemanticUNet2DModel(sample_size=16, block_out_channels=[8, 16], norm_num_groups=4, layers_per_block=1,
                               down_block_types=["DownBlock2D", "DownBlock2D"],
                               up_block_types=["UpBlock2D", "UpBlock2D"], **registry_of(rows).model_kwargs())
    scores = {1: 2.0, 2: 1.0, 3: 1.5}

    def evaluate(pipeline, step):
        return {"fid": scores[step]}

    config = DiffusionTrainingConfig(output_dir=str(tmp_path), train_batch_size=4, max_train_steps=3,
                                     lr_warmup_steps=1, checkpointing_steps=1, validation_steps=0, report_to=None)
    examples = rows.with_transform(DiffusionExamples(registry_of(rows), 16))
    train_diffusion(unet, DDPMScheduler(num_train_timesteps=100), examples, config, evaluate=evaluate,
                    evaluate_every=1, save_best_fid=True)
    assert read_best_fid(str(tmp_path)) == {"step": 2, "fid": 1.0}
    best = load_file(tmp_path / BEST_FID_DIR / "unet" / WEIGHTS)
    ema = load_file(tmp_path / "checkpoint-2" / "unet_ema" / WEIGHTS)
    assert all(torch.equal(best[key], ema[key]) for key in best)
    assert common.read_training_state(str(tmp_path / "checkpoint-3"))["best_fid"] == {"step": 2, "fid": 1.0}
