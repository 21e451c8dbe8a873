"""DermDiffPipeline on a tiny SemanticUNet2DModel: conformance, guidance, schedulers, variation, transfer, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image
from pipeline_conformance import ALWAYS_LEFT_OUT, PipelineConformanceMixin

from dermdiff import DermDiffPipeline, SemanticMap, SemanticUNet2DModel
from dermdiff.cli import main
from dermdiff.conditions import get_registry
from dermdiff.pipelines import size_sweep, skin_type_sweep
from dermdiff.pipelines.scheduler_names import SCHEDULERS, scheduler_from_name

SIZE = 16




def tiny_unet(**overrides) -> SemanticUNet2DModel:
    torch.manual_seed(0)
    config = dict(
        sample_size=SIZE,
        **get_registry("phantom").model_kwargs(),
        block_out_channels=(8, 16),
        norm_num_groups=4,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )
    config.update(overrides)
    return SemanticUNet2DModel(**config)


def tiny_pipeline(**unet_overrides) -> DermDiffPipeline:
    pipe = DermDiffPipeline(unet=tiny_unet(**unet_overrides), scheduler=DDPMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def phantom_map(condition="melanoma", skin_type=4, box=(3, 4, 11, 12)) -> SemanticMap:
    return SemanticMap.from_annotations(condition, skin_type, boxes=[box], size=SIZE, registry="phantom")


def generator(seed=0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


class TestDermDiffConformance(PipelineConformanceMixin):
    """Runs every CPU check of diffusers' PipelineTesterMixin; left out: accelerator, VAE and text-encoder only."""

    pipeline_class = DermDiffPipeline
    params = ("semantic_map", "condition", "skin_type", "boxes", "mask", "image", "strength", "guidance_scale",
              "callback_on_step_end", "callback_on_step_end_tensor_inputs")
    batch_params = ("semantic_map",)
    required_optional_params = ("num_inference_steps", "num_images_per_prompt", "generator", "latents",
                                "output_type", "return_dict")
    image_params = ("image",)
    left_out = dict(ALWAYS_LEFT_OUT)

    def get_dummy_components(self) -> dict:
        unet = tiny_unet()
        torch.manual_seed(0)
        return {"unet": unet, "scheduler": DDPMScheduler(num_train_timesteps=100), "vae": None}

    def get_dummy_inputs(self, seed: int = 0) -> dict:
        skin = 1 + seed % 6
        return {
            "semantic_map": phantom_map(skin_type=skin, box=(2 + seed, 3, 10 + seed, 12)),
            "num_inference_steps": 2,
            "generator": generator(seed),
            "output_type": "np",
        }

    def get_image_inputs(self, seed: int = 0) -> dict:
        return {**self.get_dummy_inputs(seed), "image": photo(seed), "strength": 0.5, "num_inference_steps": 4}


# -- shapes, values, determinism -----------------------------------------------------------------------------------
def test_shapes_and_expected_slice():
    pipe = tiny_pipeline()
    images = pipe(condition="melanoma", skin_type=5, boxes=[(4, 4, 12, 12)], num_images_per_prompt=2,
                  num_inference_steps=2, generator=generator(0), output_type="np").images
    assert images.shape == (2, SIZE, SIZE, 3) and images.dtype == np.float32
    # regression values of this seed and config (torch 2.x CPU, global conditioning on); a change means the
    # sampling maths or the model changed
    expected = np.array([0.2174, 0.9931, 0.4159, 1.0000, 1.0000, 0.3917, 1.0000, 0.6234, 0.3117])
    np.testing.assert_allclose(images[0, -3:, -3:, -1].ravel(), expected, atol=1e-3)


def test_convenience_inputs_equal_explicit_map():
    pipe = tiny_pipeline()
    smap = phantom_map("psoriasis", 2, (4, 4, 12, 12))
    explicit = pipe(semantic_map=smap, num_inference_steps=2, generator=generator(3), output_type="np").images
    drawn = pipe(condition="psoriasis", skin_type="II", boxes=[(4, 4, 12, 12)], num_inference_steps=2,
                 generator=generator(3), output_type="np").images
    as_pil = pipe(semantic_map=smap.to_pil(), num_inference_steps=2, generator=generator(3), output_type="np").images
    as_channels = pipe(semantic_map=smap.to_channels()[None], num_inference_steps=2, generator=generator(3),
                       output_type="np").images
    np.testing.assert_array_equal(explicit, drawn)
    np.testing.assert_array_equal(explicit, as_pil)
    np.testing.assert_array_equal(explicit, as_channels)


def test_lists_of_conditions_and_images_per_prompt():
    pipe = tiny_pipeline()
    images = pipe(condition=["nevus", "vascular"], skin_type=[1, 6], num_images_per_prompt=3, num_inference_steps=2,
                  generator=generator(0), output_type="pt").images
    assert tuple(images.shape) == (6, 3, SIZE, SIZE)
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_unconditional_without_any_map():
    pipe = tiny_pipeline()
    images = pipe(num_images_per_prompt=2, num_inference_steps=2, generator=generator(0), output_type="np").images
    assert images.shape == (2, SIZE, SIZE, 3)


# -- guidance --------------------------------------------------------------------------------------------------------
class CountingUNet:
    """Stands in for the unet's forward to count calls and record batch sizes (a plain object: an
    `nn.Module` assigned to `forward` would be registered as a submodule instead)."""

    def __init__(self, pipe):
        self.batches = []
        self.forward_of = pipe.unet.forward

    def __call__(self, sample, *args, **kwargs):
        self.batches.append(sample.shape[0])
        return self.forward_of(sample, *args, **kwargs)


def test_guidance_changes_output_in_one_batched_forward_per_step():
    pipe = tiny_pipeline()
    counter = CountingUNet(pipe)
    pipe.unet.forward = counter
    inputs = dict(condition="melanoma", skin_type=3, num_images_per_prompt=2, num_inference_steps=3, output_type="np")
    guided = pipe(**inputs, guidance_scale=3.0, generator=generator(0)).images
    assert counter.batches == [4, 4, 4]  # null + map halves together, one call per step
    counter.batches.clear()
    plain = pipe(**inputs, guidance_scale=1.0, generator=generator(0)).images
    assert counter.batches == [2, 2, 2]
    assert np.abs(guided - plain).max() > 1e-3


def test_guidance_combines_null_and_map_predictions():
    """eps = eps_null + w (eps_map - eps_null) with a stub unet whose outputs are known."""
    pipe = tiny_pipeline()
    seen = []

    def stub(sample, timestep, semantic_map=None, class_labels=None, return_dict=True):
        seen.append(semantic_map)
        half = sample.shape[0] // 2
        eps = torch.cat([torch.full_like(sample[:half], 0.1), torch.full_like(sample[half:], 0.3)])
        return type("Out", (), {"sample": eps})()

    pipe.unet.forward = stub
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    captured = {}

    def grab(pipe_, step, timestep, tensors):
        captured.setdefault("latents", tensors["latents"])
        return tensors

    pipe(condition="nevus", num_inference_steps=1, guidance_scale=2.5, generator=generator(0), output_type="pt",
         callback_on_step_end=grab)
    assert torch.count_nonzero(seen[0][:1]) == 0 and torch.count_nonzero(seen[0][1:]) > 0  # null half first
    # rebuild the DDIM step with eps = 0.1 + 2.5 * (0.3 - 0.1) = 0.6
    noise = torch.randn((1, 3, SIZE, SIZE), generator=generator(0))
    reference = DDIMScheduler.from_config(pipe.scheduler.config)
    reference.set_timesteps(1)
    expected = reference.step(torch.full_like(noise, 0.6), reference.timesteps[0], noise).prev_sample
    torch.testing.assert_close(captured["latents"], expected)


def test_guidance_needs_a_null_trained_model():
    pipe = tiny_pipeline()
    pipe.unet.register_to_config(condition_dropout=0.0)
    assert not pipe.trained_with_null_map
    for scale in (1.5, 2.0):
        with pytest.raises(ValueError, match="condition_dropout=0"):
            pipe(condition="nevus", guidance_scale=scale, num_inference_steps=1)
    # the default and any scale <= 1 (no guidance, as in diffusers) run the map prediction alone
    counter = CountingUNet(pipe)
    pipe.unet.forward = counter
    pipe(condition="nevus", num_inference_steps=2, output_type="np")
    pipe(condition="nevus", guidance_scale=0.5, num_inference_steps=1, output_type="np")
    assert counter.batches == [1, 1, 1]
    pipe.unet.register_to_config(condition_dropout=0.1)
    pipe(condition="nevus", guidance_scale=1.5, num_inference_steps=1, output_type="np")
    assert counter.batches[-1] == 2


# -- step state for callbacks ----------------------------------------------------------------------------------------
def test_step_state_is_readable_from_a_callback():
    pipe = tiny_pipeline()
    seen = []

    def record(pipe_, step, timestep, tensors):
        seen.append((pipe_.guidance_scale, pipe_.do_classifier_free_guidance, pipe_.num_timesteps, pipe_.interrupt))
        return tensors

    pipe(condition="nevus", guidance_scale=3.0, num_inference_steps=3, callback_on_step_end=record, output_type="np")
    assert seen == [(3.0, True, 3, False)] * 3
    seen.clear()
    pipe(image=photo(), strength=0.5, num_inference_steps=4, callback_on_step_end=record, output_type="np")
    assert seen == [(2.0, False, 2, False)] * 2  # no map: nothing to guide towards; the tail of the schedule


def test_callback_turns_guidance_off_after_40_percent_of_the_steps():
    pipe = tiny_pipeline()
    counter = CountingUNet(pipe)
    pipe.unet.forward = counter

    def cutoff(pipe_, step, timestep, tensors):
        if step == int(pipe_.num_timesteps * 0.4):
            pipe_._guidance_scale = 1.0
        return tensors

    pipe(condition="nevus", guidance_scale=4.0, num_inference_steps=5, callback_on_step_end=cutoff, output_type="np")
    assert counter.batches == [2, 2, 2, 1, 1]


def test_interrupt_stops_the_remaining_steps():
    pipe = tiny_pipeline()
    counter = CountingUNet(pipe)
    pipe.unet.forward = counter
    captured = {}

    def stop(pipe_, step, timestep, tensors):
        captured["latents"] = tensors["latents"].clone()
        if step == 1:
            pipe_._interrupt = True
        return tensors

    out = pipe(condition="nevus", num_inference_steps=6, callback_on_step_end=stop, output_type="latent",
               guidance_scale=1.0).images
    assert counter.batches == [1, 1]
    torch.testing.assert_close(out, captured["latents"])


def test_callback_can_replace_the_map_channels():
    pipe = tiny_pipeline()
    maps = []

    def clear_map(pipe_, step, tensors_step, tensors):
        maps.append(tensors["semantic_map"].clone())
        return {"semantic_map": torch.zeros_like(tensors["semantic_map"])}

    pipe(condition="nevus", num_inference_steps=2, guidance_scale=1.0, callback_on_step_end=clear_map,
         callback_on_step_end_tensor_inputs=["semantic_map"], output_type="np")
    assert maps[0].abs().sum() > 0 and maps[1].abs().sum() == 0


def test_given_latents_equal_the_generator_draw_and_latent_output_is_the_denoised_tensor():
    pipe = tiny_pipeline()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # no noise drawn inside the steps
    noise = torch.randn((2, 3, SIZE, SIZE), generator=generator(5))
    drawn = pipe(condition="nevus", num_images_per_prompt=2, num_inference_steps=2, generator=generator(5),
                 output_type="latent").images
    given = pipe(condition="nevus", num_images_per_prompt=2, num_inference_steps=2, latents=noise,
                 output_type="latent").images
    torch.testing.assert_close(drawn, given)
    as_pt = pipe(condition="nevus", num_images_per_prompt=2, num_inference_steps=2, latents=noise,
                 output_type="pt").images
    torch.testing.assert_close(as_pt, (given / 2 + 0.5).clamp(0, 1))


def test_class_embedding_labels_follow_the_map():
    pipe = tiny_pipeline(use_class_embedding=True)
    labels = []
    forward = pipe.unet.forward

    def record(sample, timestep, semantic_map=None, class_labels=None, return_dict=True):
        labels.append(class_labels.tolist())
        return forward(sample, timestep, semantic_map=semantic_map, class_labels=class_labels)

    pipe.unet.forward = record
    pipe(condition="vascular", skin_type=2, num_inference_steps=1, guidance_scale=2.0, output_type="np")
    registry = pipe.unet.registry
    assert labels[-1] == [pipe.unet.null_class_label, registry.index("vascular")]
    pipe(skin_type=2, num_inference_steps=1, guidance_scale=1.0, output_type="np")  # healthy skin
    assert labels[-1] == [pipe.unet.healthy_class_label]
    pipe(num_inference_steps=1, output_type="np")  # unconditional
    assert labels[-1] == [pipe.unet.null_class_label]
    pipe(condition="nevus", class_labels=2, num_inference_steps=1, guidance_scale=1.0, output_type="np")
    assert labels[-1] == [2]


# -- schedulers --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_scheduler_swap(name, prediction_type):
    pipe = tiny_pipeline()
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type=prediction_type)
    pipe.scheduler = scheduler_from_name(name, pipe.scheduler.config)
    assert isinstance(pipe.scheduler, SCHEDULERS[name])
    assert pipe.scheduler.config.prediction_type == prediction_type
    first = pipe(condition="melanoma", num_inference_steps=2, generator=generator(0), output_type="np").images
    again = pipe(condition="melanoma", num_inference_steps=2, generator=generator(0), output_type="np").images
    assert first.shape == (1, SIZE, SIZE, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)


def test_scheduler_name_errors():
    with pytest.raises(ValueError, match="unknown scheduler"):
        scheduler_from_name("heun", DDPMScheduler().config)


# -- variation and lesion transfer ---------------------------------------------------------------------------------
def photo(seed=0) -> np.ndarray:
    """A smooth skin-coloured picture in [0, 1], (H, W, 3)."""
    rng = np.random.default_rng(seed)
    base = np.array([0.8, 0.6, 0.5], dtype=np.float32)
    return np.clip(base + 0.05 * rng.standard_normal((SIZE, SIZE, 3)).astype(np.float32), 0, 1)


@pytest.mark.parametrize("scheduler", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler,
                                       EulerDiscreteScheduler, UniPCMultistepScheduler])
def test_lesion_transfer_keeps_the_photo_outside_the_mask(scheduler):
    pipe = tiny_pipeline()
    pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[5:11, 4:12] = True
    picture = photo()
    out = pipe(image=picture, mask=mask, condition="psoriasis", skin_type=3, num_inference_steps=4,
               generator=generator(0), output_type="np").images[0]
    np.testing.assert_allclose(out[~mask], picture[~mask], atol=1e-6)
    assert np.abs(out[mask] - picture[mask]).mean() > 0.02  # the lesion region was regenerated


def test_lesion_transfer_with_pil_inputs_and_a_given_map():
    pipe = tiny_pipeline()
    picture = Image.fromarray((photo(1) * 255).round().astype(np.uint8))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (4, 4, 10, 10))
    smap = SemanticMap.from_annotations("nevus", 2, mask=np.asarray(mask) > 0, registry="phantom")
    out = pipe(image=picture, mask=mask, semantic_map=smap, num_inference_steps=3, generator=generator(0),
               output_type="pil").images[0]
    keep = np.asarray(mask) == 0
    np.testing.assert_array_equal(np.asarray(out)[keep], np.asarray(picture)[keep])


def test_lesion_removal_regenerates_the_mask_as_healthy_skin():
    pipe = tiny_pipeline()
    seen = []
    forward = pipe.unet.forward

    def record(sample, timestep, semantic_map=None, class_labels=None, return_dict=True):
        seen.append(semantic_map)
        return forward(sample, timestep, semantic_map=semantic_map, class_labels=class_labels)

    pipe.unet.forward = record
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[2:6, 2:6] = True
    picture = (photo(3) * 255).astype(np.uint8)
    out = pipe(image=picture, mask=mask, skin_type=4, num_inference_steps=2, guidance_scale=1.0,
               generator=generator(0), output_type="np").images[0]
    np.testing.assert_allclose(out[~mask], picture[~mask] / 255.0, atol=1e-6)
    healthy = SemanticMap.from_annotations(None, 4, size=SIZE, registry="phantom").to_channels()
    torch.testing.assert_close(seen[0][0], healthy)


def test_variation_stays_closer_to_the_image_at_low_strength():
    pipe = tiny_pipeline()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    picture = photo(2)
    smap = phantom_map("nevus", 3)
    distances = []
    for strength in (0.1, 0.5, 1.0):
        out = pipe(image=picture, strength=strength, semantic_map=smap, num_inference_steps=10,
                   generator=generator(0), output_type="np").images[0]
        distances.append(float(np.abs(out - picture).mean()))
    assert distances[0] < distances[1] < distances[2], distances
    assert distances[0] < 0.05


def test_variation_runs_only_the_tail_of_the_schedule():
    pipe = tiny_pipeline()
    counter = CountingUNet(pipe)
    pipe.unet.forward = counter
    pipe(image=photo(), strength=0.3, condition="nevus", num_inference_steps=10, guidance_scale=1.0, output_type="np")
    assert len(counter.batches) == 3


def test_callback_can_replace_latents():
    pipe = tiny_pipeline()
    steps = []

    def zero_latents(pipe_, step, timestep, tensors):
        steps.append(step)
        return {"latents": torch.zeros_like(tensors["latents"])}

    out = pipe(condition="nevus", num_inference_steps=3, callback_on_step_end=zero_latents, output_type="np").images
    assert steps == [0, 1, 2]
    np.testing.assert_allclose(out, 0.5)


# -- errors ----------------------------------------------------------------------------------------------------------
BAD_INPUTS = {
    "strength zero": dict(image="photo", strength=0.0),
    "strength above one": dict(image="photo", strength=1.5),
    "strength without image": dict(strength=0.5),
    "strength too small for the steps": dict(image="photo", strength=0.05, num_inference_steps=4),
    "mask not matching the image": dict(image="photo", mask=np.ones((8, 8), bool), condition="nevus"),
    "image of the wrong size": dict(image=np.zeros((8, 8, 3), np.float32)),
    "map of the wrong size": dict(semantic_map=SemanticMap.from_annotations("nevus", 2, [(1, 1, 4, 4)], size=8,
                                                                            registry="phantom")),
    "map of another registry": dict(semantic_map=SemanticMap.from_annotations("mel", 2, [(1, 1, 4, 4)], size=SIZE)),
    "unknown condition": dict(condition="eczema"),
    "skin type outside I..VI": dict(condition="nevus", skin_type=7),
    "box outside the image": dict(condition="nevus", boxes=[(0, 0, 40, 40)]),
    "map and condition together": dict(semantic_map=phantom_map(), condition="nevus"),
    "channel tensor of the wrong width": dict(semantic_map=torch.zeros(1, 3, SIZE, SIZE)),
    "negative guidance": dict(condition="nevus", guidance_scale=-1.0),
    "unknown output type": dict(output_type="jpg"),
    "no images per prompt": dict(num_images_per_prompt=0, condition="nevus"),
    "zero steps": dict(num_inference_steps=0),
    "class labels without a class embedding": dict(condition="nevus", class_labels=1),
    "unknown callback tensor": dict(callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["noise"]),
    "boxes without a condition": dict(skin_type=3, boxes=[(1, 1, 4, 4)]),
    "generators not matching the batch": dict(condition="nevus", num_images_per_prompt=2,
                                              generator=[torch.Generator().manual_seed(0)] * 3),
}

# what each bad input's ValueError says, naming the offending argument
BAD_INPUT_MESSAGES = {
    "strength zero": r"strength must be in \(0, 1\], got 0.0",
    "strength above one": r"strength must be in \(0, 1\], got 1.5",
    "strength without image": "strength only applies with image=",
    "strength too small for the steps": "strength=0.05 with num_inference_steps=4 leaves no denoising step",
    "mask not matching the image": r"mask is \(8, 8\) \(height, width\) but the image is \(16, 16\)",
    "image of the wrong size": r"image is \(3, 8, 8\) \(C, H, W\) but the model generates \(3, 16, 16\)",
    "map of the wrong size": r"semantic map 0 is \(8, 8\) \(height, width\) but the model generates \(16, 16\)",
    "map of another registry": "semantic map 0 uses registry 'ham10000' .* but the model was trained on 'phantom'",
    "unknown condition": "unknown condition 'eczema' in registry 'phantom'",
    "skin type outside I..VI": "skin type 7 is outside the Fitzpatrick scale",
    "box outside the image": r"box \(0, 0, 40, 40\) lies outside the 16x16 image",
    "map and condition together": "pass either semantic_map or condition, not both",
    "channel tensor of the wrong width": r"a channel semantic_map is \(B, 6, H, W\) .* got \(1, 3, 16, 16\)",
    "negative guidance": "guidance_scale must be a finite number >= 0",
    "unknown output type": "output_type must be one of .*got 'jpg'",
    "no images per prompt": "num_images_per_prompt must be >= 1, got 0",
    "zero steps": "num_inference_steps must be >= 1, got 0",
    "class labels without a class embedding": "class_labels given but this unet has no class embedding",
    "unknown callback tensor": r"callback_on_step_end_tensor_inputs \['noise'\] not in",
    "boxes without a condition": "boxes or a mask were given without a condition",
    "generators not matching the batch": "got 3 generators for 2 images",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_raise_value_error(case):
    pipe = tiny_pipeline()
    inputs = dict(BAD_INPUTS[case])
    if isinstance(inputs.get("image"), str):
        inputs["image"] = photo()
    inputs.setdefault("num_inference_steps", 2)
    with pytest.raises(ValueError, match=BAD_INPUT_MESSAGES[case]):
        pipe(**inputs)


@pytest.mark.parametrize(
    "latents, message",
    [
        (torch.zeros(1, 3, 8, 8), r"latents must be \(2, 3, 16, 16\) .*got \(1, 3, 8, 8\)"),
        (torch.zeros(2, 3, SIZE, SIZE, dtype=torch.long), "latents must be a floating-point torch.Tensor"),
        (np.zeros((2, 3, SIZE, SIZE), np.float32), "latents must be a floating-point torch.Tensor .* got ndarray"),
    ],
)
def test_bad_latents_name_the_expected_shape(latents, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline()(condition="nevus", num_images_per_prompt=2, num_inference_steps=1, latents=latents)


# -- sweeps ----------------------------------------------------------------------------------------------------------
def test_skin_type_and_size_sweeps_write_grids(tmp_path):
    pipe = tiny_pipeline()
    smap = phantom_map("melanoma", 2, (5, 5, 11, 11))
    images = skin_type_sweep(pipe, smap, save_to=str(tmp_path / "skin.png"), with_maps=True,
                             num_inference_steps=2, generator=generator(0))
    assert len(images) == 6
    with Image.open(tmp_path / "skin.png") as grid:
        assert grid.size == (6 * SIZE, 2 * SIZE)
    grown = size_sweep(pipe, smap, factors=(0.5, 1.0, 2.0), save_to=str(tmp_path / "size.png"),
                       num_inference_steps=2, generator=generator(0))
    assert len(grown) == 3
    with Image.open(tmp_path / "size.png") as grid:
        assert grid.size == (3 * SIZE, SIZE)
    with pytest.raises(ValueError, match="set by the sweep"):
        skin_type_sweep(pipe, smap, skin_type=3)


# -- saving, fresh-process loading, CLI ----------------------------------------------------------------------------
RELOAD_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from diffusers import DiffusionPipeline
import dermdiff
from dermdiff import DermDiffPipeline, SemanticMap
folder = sys.argv[1]
explicit = DermDiffPipeline.from_pretrained(folder)
generic = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
named = DiffusionPipeline.from_pretrained(folder, custom_pipeline="dermdiff_pipeline", trust_remote_code=True)
try:
    DiffusionPipeline.from_pretrained(folder)
    refusal = None
except ValueError as error:
    refusal = str(error)
smap = SemanticMap.from_annotations("melanoma", 4, boxes=[(3, 4, 11, 12)], size=16, registry="phantom")
out = {}
for name, pipe in (("explicit", explicit), ("generic", generic), ("named", named)):
    pipe.set_progress_bar_config(disable=True)
    images = pipe(semantic_map=smap, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    out[name] = {"class": type(pipe).__module__ + "." + type(pipe).__name__,
                 "same_class": type(pipe) is dermdiff.DermDiffPipeline, "slice": images[0, :3, :3, 0].ravel().tolist()}
out["refusal"] = refusal
print(json.dumps(out))
"""


def test_reload_in_a_fresh_process(tmp_path):
    pipe = tiny_pipeline()
    expected = pipe(semantic_map=phantom_map(), num_inference_steps=2, generator=generator(0), output_type="np").images
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == ["dermdiff_pipeline", "DermDiffPipeline"]
    assert index["unet"] == ["dermdiff.models.semantic_unet", "SemanticUNet2DModel"]
    assert (tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(tmp_path / "pipe")], capture_output=True,
                            text=True, env=env, cwd=str(tmp_path), timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # without trust_remote_code the generic loader names the loader file (whose docstring shows both ways)
    assert "dermdiff_pipeline.py" in out["refusal"] and "trust_remote_code=True" in out["refusal"]
    loader = (tmp_path / "pipe" / "dermdiff_pipeline.py").read_text()
    assert "DermDiffPipeline.from_pretrained(folder)" in loader and "trust_remote_code=True" in loader
    for name in ("explicit", "generic", "named"):
        assert out[name]["same_class"], out[name]["class"]
        np.testing.assert_allclose(out[name]["slice"], expected[0, :3, :3, 0].ravel(), atol=1e-6)


def test_cli_generate_on_a_saved_pipeline(tmp_path, capsys):
    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    out = tmp_path / "gen"
    status = main(["generate", "--pipeline", str(tmp_path / "pipe"), "--condition", "melanoma", "--skin-type", "5",
                   "--box", "2,3,10,12", "--num-images", "3", "--batch-size", "2", "--scheduler", "ddim",
                   "--steps", "2", "--seed", "7", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    rows = (out / "metadata.csv").read_text().strip().splitlines()
    assert rows[0] == "file_name,label,skin_type,boxes,mask_file,map_file,seed"
    assert rows[1] == 'images/000000.png,melanoma,5,"[[2, 3, 10, 12]]",,maps/000000.png,7'
    assert len(rows) == 4
    with Image.open(out / "maps" / "000002.png") as written:
        smap = SemanticMap.decode(written.convert("RGB"), registry="phantom")
    assert smap.condition == "melanoma" and smap.skin_type == 5 and smap.boxes == [(2, 3, 10, 12)]
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["registry"]["name"] == "phantom" and info["generation"]["seed"] == 7
    # image i comes from seed + i: image 2 regenerated alone matches
    pipe = DermDiffPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = scheduler_from_name("ddim", pipe.scheduler.config)
    alone = pipe(semantic_map=smap, num_inference_steps=2, generator=generator(9)).images[0]
    with Image.open(out / "images" / "000002.png") as written:
        difference = np.abs(np.asarray(written, dtype=int) - np.asarray(alone, dtype=int))
    assert difference.max() <= 1


def test_cli_generate_lesion_transfer_writes_a_loadable_dataset(tmp_path, capsys):
    from dermdiff.data import load_dataset_dir, registry_of

    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    Image.fromarray((photo(4) * 255).astype(np.uint8)).save(tmp_path / "healthy.png")
    spot = np.zeros((SIZE, SIZE), dtype=np.uint8)
    spot[4:10, 5:12] = 255
    Image.fromarray(spot).save(tmp_path / "spot.png")
    status = main(["generate", "--pipeline", str(tmp_path / "pipe"), "--image", str(tmp_path / "healthy.png"),
                   "--mask", str(tmp_path / "spot.png"), "--condition", "psoriasis", "--skin-type", "3",
                   "--num-images", "2", "--steps", "2", "--out", str(tmp_path / "gen")])
    assert status == 0, capsys.readouterr().err
    keep = spot == 0
    with Image.open(tmp_path / "gen" / "images" / "000001.png") as written:
        np.testing.assert_array_equal(np.asarray(written)[keep], (photo(4) * 255).astype(np.uint8)[keep])
    dataset = load_dataset_dir(str(tmp_path / "gen"))
    assert len(dataset) == 2 and registry_of(dataset).registry_name == "phantom"
    assert dataset[0]["label_name"] == "psoriasis" and dataset[0]["skin_type"] == 3
    assert np.array_equal(np.asarray(dataset[0]["mask"]) > 0, spot > 0)


def test_cli_generate_errors_are_one_line(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nsecond line of detail")

    monkeypatch.setattr(DermDiffPipeline, "from_pretrained", offline)
    capsys.readouterr()
    assert main(["generate", "--pipeline", "nobody/no-such-dermdiff-model", "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dermdiff generate: error: could not load pipeline"), lines
    assert "couldn't connect" in lines[0]
    assert main(["generate", "--pipeline", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "not a saved pipeline folder" in capsys.readouterr().err
    monkeypatch.undo()
    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    assert main(["generate", "--pipeline", str(tmp_path / "pipe"), "--condition", "eczema", "--out",
                 str(tmp_path / "gen")]) == 2
    assert "unknown condition 'eczema'" in capsys.readouterr().err
