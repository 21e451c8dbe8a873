"""What every dermdiff pipeline must do like a diffusers pipeline; mixed into each pipeline's test class.

diffusers keeps its `PipelineTesterMixin` (`tests/pipelines/test_pipelines_common.py`, with
`PipelineLatentTesterMixin` and `PipelineKarrasSchedulerTesterMixin`) outside the wheel, so this is our own
version of those checks (STYLE.md 9), written for pytest and for our components. The methods carry
diffusers' test names, so a check can be looked up there. `DIFFUSERS_CHECKS` lists every check of those
mixins; a test class either runs a check or names it in `left_out` with the reason it does not apply
(`test_every_diffusers_check_runs_or_is_explained` enforces it, and a left-out check reports as skipped
with its reason, so `pytest -rs` prints the list). Checks that need an accelerator, a VAE or a text
encoder are left out for every pipeline (`ACCELERATOR_ONLY`, `VAE_ONLY`, `TEXT_ENCODER_ONLY`), and so is
DDUF loading, which diffusers itself dropped (`ALWAYS_LEFT_OUT` holds all four groups).

A test class sets `pipeline_class`, `params` (the named inputs `__call__` must have), `batch_params`
(the inputs that become lists in a batched call, e.g. `("semantic_map",)`), `required_optional_params`,
`image_params` (image inputs accepted as PIL / numpy / torch), `left_out`, and implements:

- `get_dummy_components()` -> dict of tiny components (seed before each one);
- `get_dummy_inputs(seed=0)` -> keyword arguments of one single-image call with a CPU `torch.Generator`
  and `output_type="np"` (with `batch_size=1` for an unconditional pipeline);
- `get_image_inputs(seed=0)` (only with `image_params`) -> inputs of a call that takes an image.

Example:
    class TestMyPipeline(PipelineConformanceMixin):
        pipeline_class = MyPipeline
        params = ("semantic_map",)
        batch_params = ("semantic_map",)
        left_out = {"test_cfg": "no classifier-free guidance", **ALWAYS_LEFT_OUT}
        def get_dummy_components(self): ...
        def get_dummy_inputs(self, seed=0): ...
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import re

import numpy as np
import pytest
import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers import KarrasDiffusionSchedulers
from PIL import Image

# every check of diffusers' PipelineTesterMixin, PipelineLatentTesterMixin and PipelineKarrasSchedulerTesterMixin
DIFFUSERS_CHECKS = (
    "test_save_load_local",
    "test_pipeline_call_signature",
    "test_inference_batch_consistent",
    "test_inference_batch_single_identical",
    "test_dict_tuple_outputs_equivalent",
    "test_components_function",
    "test_save_load_optional_components",
    "test_to_dtype",
    "test_attention_slicing_forward_pass",
    "test_progress_bar",
    "test_num_images_per_prompt",
    "test_cfg",
    "test_callback_inputs",
    "test_callback_cfg",
    "test_serialization_with_variants",
    "test_loading_with_variants",
    "test_loading_with_incorrect_variants_raises_error",
    "test_save_load_dduf",
    "test_layerwise_casting_inference",
    "test_torch_dtype_dict",
    "test_pt_np_pil_outputs_equivalent",
    "test_pt_np_pil_inputs_equivalent",
    "test_karras_schedulers_shape",
    # accelerator only
    "test_float16_inference",
    "test_half_precision_inference_no_nan",
    "test_save_load_float16",
    "test_to_device",
    "test_sequential_cpu_offload_forward_pass",
    "test_model_cpu_offload_forward_pass",
    "test_cpu_offload_forward_pass_twice",
    "test_sequential_offload_forward_pass_twice",
    "test_xformers_attention_forwardGenerator_pass",
    "test_group_offloading_inference",
    "test_pipeline_level_group_offloading_inference",
    "test_pipeline_with_accelerator_device_map",
    # VAE / text encoder only
    "test_latents_input",
    "test_StableDiffusionMixin_component",
    "test_encode_prompt_works_in_isolation",
)

ACCELERATOR_ONLY = {
    name: "needs a CUDA/XPU accelerator (half precision, device moves, offloading, xformers, device_map); "
    "diffusers skips it on CPU too, and this suite runs on CPU"
    for name in DIFFUSERS_CHECKS[DIFFUSERS_CHECKS.index("test_float16_inference") : DIFFUSERS_CHECKS.index(
        "test_latents_input")]
}
VAE_ONLY = {
    "test_latents_input": "VAE only: passes vae.encode(image) latents instead of the image; these pipelines work in "
    "pixel space (an optional VAE for DermDiffPipeline is being added separately)",
    "test_StableDiffusionMixin_component": "VAE and text encoder only: checks StableDiffusionMixin (vae slicing / "
    "tiling, FreeU, fused QKV) on a vae + unet pipeline",
}
TEXT_ENCODER_ONLY = {
    "test_encode_prompt_works_in_isolation": "text encoder only: these pipelines are conditioned on semantic maps, "
    "not prompts, and have no encode_prompt",
}
REMOVED_FROM_DIFFUSERS = {
    "test_save_load_dduf": "diffusers no longer loads DDUF files (the installed version raises 'Loading pipelines "
    "from DDUF files is no longer supported')",
}
ALWAYS_LEFT_OUT = {**ACCELERATOR_ONLY, **VAE_ONLY, **TEXT_ENCODER_ONLY, **REMOVED_FROM_DIFFUSERS}


def _max_difference(first, second) -> float:
    def as_array(value):
        if isinstance(value, torch.Tensor):
            return value.detach().float().cpu().numpy()
        if isinstance(value, list) and value and isinstance(value[0], Image.Image):
            return np.stack([np.asarray(item, dtype=np.float32) / 255 for item in value])
        return np.asarray(value, dtype=np.float32)

    return float(np.abs(as_array(first) - as_array(second)).max())


class PipelineConformanceMixin:
    pipeline_class = None
    params: tuple[str, ...] = ()
    batch_params: tuple[str, ...] = ()
    required_optional_params: tuple[str, ...] = ("generator", "latents", "output_type", "return_dict")
    image_params: tuple[str, ...] = ()
    callback_cfg_params: tuple[str, ...] = ()
    left_out: dict[str, str] = dict(ALWAYS_LEFT_OUT)
    # largest allowed difference between two runs that should agree (batched vs single convs differ in float)
    tolerance = 1e-4

    def get_dummy_components(self) -> dict:
        raise NotImplementedError

    def get_dummy_inputs(self, seed: int = 0) -> dict:
        raise NotImplementedError

    def get_image_inputs(self, seed: int = 0) -> dict:
        raise NotImplementedError

    def get_pipeline(self, progress_bar: bool = False):
        pipe = self.pipeline_class(**self.get_dummy_components())
        if not progress_bar:
            pipe.set_progress_bar_config(disable=True)
        return pipe

    def skip_if_left_out(self) -> None:
        """Skips the calling check with its reason when this pipeline's `left_out` names it."""
        name = inspect.stack()[1].function
        if name in self.left_out:
            pytest.skip(f"left out: {self.left_out[name]}")

    def fresh(self, singles: list[dict]) -> list[dict]:
        """The same inputs with new generators in their initial state (a generator is consumed by a call)."""
        return [{**single, "generator": torch.Generator("cpu").manual_seed(single["generator"].initial_seed())}
                for single in singles]

    def batched(self, singles: list[dict]) -> dict:
        """One call for the items of `singles`: batch_params as lists, one generator per item, `batch_size`."""
        batched = dict(singles[0])
        for name in self.batch_params:
            batched[name] = [single[name] for single in singles]
        if "batch_size" in batched:
            batched["batch_size"] = len(singles)
        batched["generator"] = [single["generator"] for single in self.fresh(singles)]
        return batched

    def test_every_diffusers_check_runs_or_is_explained(self):
        unknown = sorted(set(self.left_out) - set(DIFFUSERS_CHECKS))
        assert not unknown, f"left_out names checks diffusers does not have: {unknown}"
        assert all(reason.strip() for reason in self.left_out.values()), "every left-out check needs a reason"
        missing = [name for name in DIFFUSERS_CHECKS if name not in self.left_out and not hasattr(self, name)]
        assert not missing, f"neither run nor explained: {missing}"

    # -- call signature and outputs ------------------------------------------------------------------------------
    def test_pipeline_call_signature(self):
        self.skip_if_left_out()
        parameters = inspect.signature(self.pipeline_class.__call__).parameters
        missing = [name for name in (*self.params, *self.batch_params) if name not in parameters]
        assert not missing, f"__call__ lacks {missing}"
        optional = {name for name, value in parameters.items() if value.default is not inspect.Parameter.empty}
        missing_optional = [name for name in self.required_optional_params if name not in optional]
        assert not missing_optional, f"__call__ lacks the optional parameters {missing_optional}"
        assert parameters["output_type"].default == "pil"
        assert parameters["return_dict"].default is True

    def test_runs_without_autograd(self):
        pipe = self.get_pipeline()
        images = pipe(**{**self.get_dummy_inputs(), "output_type": "pt"}).images
        assert not images.requires_grad, "__call__ should run under torch.no_grad()"

    def test_pt_np_pil_outputs_equivalent(self):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        as_np = pipe(**self.get_dummy_inputs()).images
        assert isinstance(as_np, np.ndarray) and as_np.ndim == 4 and as_np.shape[-1] == 3
        assert as_np.min() >= 0.0 and as_np.max() <= 1.0
        as_pt = pipe(**{**self.get_dummy_inputs(), "output_type": "pt"}).images
        assert isinstance(as_pt, torch.Tensor) and tuple(as_pt.shape) == (as_np.shape[0], 3) + as_np.shape[1:3]
        np.testing.assert_allclose(as_pt.permute(0, 2, 3, 1).numpy(), as_np, atol=self.tolerance)
        as_pil = pipe(**{**self.get_dummy_inputs(), "output_type": "pil"}).images
        assert isinstance(as_pil, list) and all(isinstance(image, Image.Image) for image in as_pil)
        assert as_pil[0].size == (as_np.shape[2], as_np.shape[1])
        assert np.abs(np.asarray(as_pil[0], dtype=np.float32) - (as_np[0] * 255).round()).max() < 2.0

    def test_latent_output_is_the_tensor_before_post_processing(self):
        pipe = self.get_pipeline()
        latent = pipe(**{**self.get_dummy_inputs(), "output_type": "latent"}).images
        as_pt = pipe(**{**self.get_dummy_inputs(), "output_type": "pt"}).images
        assert isinstance(latent, torch.Tensor) and latent.ndim == 4
        if getattr(pipe, "vae", None) is None:  # pixel space: post-processing maps [-1, 1] to [0, 1]
            torch.testing.assert_close(as_pt, (latent / 2 + 0.5).clamp(0, 1), atol=self.tolerance, rtol=0)
        with pytest.raises(ValueError, match="output_type must be one of"):
            pipe(**{**self.get_dummy_inputs(), "output_type": "jpg"})

    def test_dict_tuple_outputs_equivalent(self):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        as_dict = pipe(**self.get_dummy_inputs())
        as_tuple = pipe(**self.get_dummy_inputs(), return_dict=False)
        assert isinstance(as_dict, ImagePipelineOutput) and isinstance(as_tuple, tuple)
        np.testing.assert_allclose(as_dict.images, as_tuple[0], atol=self.tolerance)

    def test_deterministic_with_generator(self):
        pipe = self.get_pipeline()
        first = pipe(**self.get_dummy_inputs(seed=0)).images
        again = pipe(**self.get_dummy_inputs(seed=0)).images
        other = pipe(**self.get_dummy_inputs(seed=1)).images
        np.testing.assert_array_equal(first, again)
        assert np.abs(first - other).max() > 1e-3, "another seed should give another image"

    def test_components_function(self):
        self.skip_if_left_out()
        components = self.get_dummy_components()
        pipe = self.pipeline_class(**components)
        assert set(pipe.components) == set(components)
        assert all(pipe.components[name] is value for name, value in components.items())

    def test_progress_bar(self):
        self.skip_if_left_out()
        pipe = self.get_pipeline(progress_bar=True)
        with io.StringIO() as stderr, contextlib.redirect_stderr(stderr):
            pipe(**self.get_dummy_inputs())
            text = stderr.getvalue()
        steps = re.search(r"/(\d+) ", text)
        assert steps is not None, f"no progress bar in {text!r}"
        assert f"{steps.group(1)}/{steps.group(1)}" in text, "the progress bar should end at the last step"
        pipe.set_progress_bar_config(disable=True)
        with io.StringIO() as stderr, contextlib.redirect_stderr(stderr):
            pipe(**self.get_dummy_inputs())
            assert stderr.getvalue() == "", "set_progress_bar_config(disable=True) should silence it"

    # -- batching ------------------------------------------------------------------------------------------------
    def test_inference_batch_consistent(self):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        for size in (2, 3):
            images = pipe(**self.batched([self.get_dummy_inputs(seed=0)] * size)).images
            assert len(images) == size

    def test_inference_batch_single_identical(self):
        """A batch with one generator per item gives each item exactly as a single call does (diffusers checks
        the first item; here every item)."""
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        singles = [self.get_dummy_inputs(seed=seed) for seed in (0, 1, 2)]
        images = pipe(**self.batched(singles)).images
        assert images.shape[0] == len(singles)
        for index, single in enumerate(self.fresh(singles)):
            alone = pipe(**single).images
            np.testing.assert_allclose(images[index], alone[0], atol=self.tolerance)

    def test_generator_list_must_match_the_batch(self):
        pipe = self.get_pipeline()
        inputs = self.get_dummy_inputs()
        with pytest.raises(ValueError, match="generators for 1 images"):
            pipe(**{**inputs, "generator": [torch.Generator().manual_seed(0)] * 3})

    def test_num_images_per_prompt(self):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        for batch in (1, 2):
            for per_prompt in (1, 2):
                inputs = self.get_dummy_inputs()
                for name in self.batch_params:
                    inputs[name] = [inputs[name]] * batch
                images = pipe(**inputs, num_images_per_prompt=per_prompt).images
                assert images.shape[0] == batch * per_prompt

    # -- guidance and callbacks ----------------------------------------------------------------------------------
    def test_cfg(self):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        plain = pipe(**{**self.get_dummy_inputs(), "guidance_scale": 1.0}).images
        guided = pipe(**{**self.get_dummy_inputs(), "guidance_scale": 7.5}).images
        assert guided.shape == plain.shape
        assert np.abs(guided - plain).max() > 1e-4, "guidance should change the images"

    def test_callback_inputs(self):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        assert hasattr(pipe, "_callback_tensor_inputs")
        inputs = {**self.get_dummy_inputs(), "output_type": "latent"}

        def subset(pipe_, step, timestep, kwargs):
            assert all(name in pipe_._callback_tensor_inputs for name in kwargs)
            return kwargs

        def everything(pipe_, step, timestep, kwargs):
            assert set(kwargs) == set(pipe_._callback_tensor_inputs)
            return kwargs

        pipe(**inputs, callback_on_step_end=subset, callback_on_step_end_tensor_inputs=["latents"])
        every_input = pipe._callback_tensor_inputs
        pipe(**inputs, callback_on_step_end=everything, callback_on_step_end_tensor_inputs=every_input)

        def zero_at_the_end(pipe_, step, timestep, kwargs):
            if step == pipe_.num_timesteps - 1:
                kwargs["latents"] = torch.zeros_like(kwargs["latents"])
            return kwargs

        out = pipe(**inputs, callback_on_step_end=zero_at_the_end,
                   callback_on_step_end_tensor_inputs=pipe._callback_tensor_inputs).images
        assert out.abs().sum() == 0

    def test_callback_cfg(self):
        self.skip_if_left_out()
        pipe = self.get_pipeline()

        def raise_guidance(pipe_, step, timestep, kwargs):
            pipe_._guidance_scale += 1.0
            return kwargs

        inputs = {**self.get_dummy_inputs(), "guidance_scale": 2.0}
        pipe(**inputs, callback_on_step_end=raise_guidance,
             callback_on_step_end_tensor_inputs=pipe._callback_tensor_inputs)
        assert pipe.guidance_scale == inputs["guidance_scale"] + pipe.num_timesteps

    def test_attention_slicing_forward_pass(self):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        reference = pipe(**self.get_dummy_inputs()).images
        pipe.enable_attention_slicing(slice_size=1)
        sliced = pipe(**self.get_dummy_inputs()).images
        assert np.abs(sliced - reference).max() < 1e-3

    def test_karras_schedulers_shape(self):
        self.skip_if_left_out()
        import diffusers

        pipe = self.get_pipeline()
        pipe.scheduler.register_to_config(skip_prk_steps=True)  # PNDM without its Runge-Kutta warm-up, as diffusers
        shapes, ran = set(), []
        for entry in KarrasDiffusionSchedulers:
            try:
                pipe.scheduler = getattr(diffusers, entry.name).from_config(pipe.scheduler.config)
            except ImportError:  # an optional dependency (DPMSolverSDEScheduler needs torchsde)
                continue
            ran.append(entry.name)
            steps = 5 if "KDPM2" in entry.name else 2
            images = pipe(**{**self.get_dummy_inputs(), "num_inference_steps": steps}).images
            assert np.isfinite(images).all(), entry.name
            shapes.add(images.shape)
        assert len(ran) >= len(KarrasDiffusionSchedulers) - 1, ran
        assert len(shapes) == 1, shapes

    # -- inputs ----------------------------------------------------------------------------------------------------
    def test_pt_np_pil_inputs_equivalent(self):
        """An image given as torch (B, 3, H, W), numpy (B, H, W, 3) floats in [0, 1] or PIL gives the same output."""
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        inputs = self.get_image_inputs()
        outputs = {}
        for kind in ("pt", "np", "pil"):
            converted = dict(self.fresh([inputs])[0])
            for name in self.image_params:
                converted[name] = _image_as(inputs[name], kind)
            outputs[kind] = pipe(**converted).images
        assert np.abs(outputs["pt"] - outputs["np"]).max() < 1e-4
        assert np.abs(outputs["pil"] - outputs["np"]).max() < 1e-2

    # -- persistence and dtype -----------------------------------------------------------------------------------
    def test_save_load_local(self, tmp_path):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        before = pipe(**self.get_dummy_inputs()).images
        pipe.save_pretrained(tmp_path)
        files = [os.path.join(root, name) for root, _, names in os.walk(tmp_path) for name in names]
        assert any(name.endswith(".safetensors") for name in files), files
        assert not any(name.endswith((".bin", ".pt", ".pth", ".ckpt")) for name in files), files
        loaded = self.pipeline_class.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded) is self.pipeline_class
        after = loaded(**self.get_dummy_inputs()).images
        np.testing.assert_allclose(before, after, atol=1e-6)

    def test_save_load_optional_components(self, tmp_path):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        dropped = self.droppable_components()
        for name in dropped:
            setattr(pipe, name, None)
        before = pipe(**self.get_dummy_inputs()).images
        pipe.save_pretrained(tmp_path)
        loaded = self.pipeline_class.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        assert all(getattr(loaded, name) is None for name in dropped), "a dropped optional component came back"
        np.testing.assert_allclose(before, loaded(**self.get_dummy_inputs()).images, atol=1e-6)

    def droppable_components(self) -> list[str]:
        """Optional components the dummy call runs without (all of `_optional_components` by default)."""
        return list(self.pipeline_class._optional_components)

    def test_serialization_with_variants(self, tmp_path):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        pipe.save_pretrained(tmp_path, variant="fp16")
        models = [name for name, value in pipe.components.items() if isinstance(value, torch.nn.Module)]
        for name in models:
            names = os.listdir(tmp_path / name)
            assert any(part.endswith(".fp16.safetensors") for part in names), (name, names)

    def test_loading_with_variants(self, tmp_path):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        pipe.save_pretrained(tmp_path, variant="fp16")
        loaded = self.pipeline_class.from_pretrained(tmp_path, variant="fp16")
        for name, value in pipe.components.items():
            if isinstance(value, torch.nn.Module):
                reloaded = getattr(loaded, name).state_dict()
                for key, first in value.state_dict().items():
                    second = reloaded[key]
                    assert torch.equal(first, second), f"{name}.{key} changed through a variant round trip"

    def test_loading_with_incorrect_variants_raises_error(self, tmp_path):
        self.skip_if_left_out()
        self.get_pipeline().save_pretrained(tmp_path)
        with pytest.raises(ValueError, match="variant"):
            self.pipeline_class.from_pretrained(tmp_path, variant="fp16")

    def test_torch_dtype_dict(self, tmp_path):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        pipe.save_pretrained(tmp_path)
        first = next(name for name, value in pipe.components.items() if isinstance(value, torch.nn.Module))
        dtypes = {first: torch.bfloat16, "default": torch.float16}
        loaded = self.pipeline_class.from_pretrained(tmp_path, torch_dtype=dtypes)
        for name, value in loaded.components.items():
            if isinstance(value, torch.nn.Module):
                assert value.dtype == dtypes.get(name, dtypes["default"]), (name, value.dtype)

    def test_to_dtype(self):
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        modules = [value for value in pipe.components.values() if isinstance(value, torch.nn.Module)]
        assert modules, "a pipeline without torch modules?"
        assert all(module.dtype == torch.float32 for module in modules)
        reference = pipe(**self.get_dummy_inputs()).images
        pipe.to(torch.float64)
        assert all(module.dtype == torch.float64 for module in modules)
        assert pipe.dtype == torch.float64
        converted = pipe(**self.get_dummy_inputs()).images
        assert converted.shape == reference.shape and np.isfinite(converted).all()
        pipe.to(torch.bfloat16)
        assert all(module.dtype == torch.bfloat16 for module in modules)
        low = pipe(**{**self.get_dummy_inputs(), "output_type": "pt"}).images
        assert torch.isfinite(low.float()).all()

    def test_layerwise_casting_inference(self):
        """float8 storage, bfloat16 compute on every model of the pipeline (diffusers: the denoiser)."""
        self.skip_if_left_out()
        pipe = self.get_pipeline()
        pipe.to(torch.bfloat16)
        models = [value for value in pipe.components.values() if hasattr(value, "enable_layerwise_casting")]
        assert models, "no ModelMixin component"
        for model in models:
            model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
            assert any(param.dtype == torch.float8_e4m3fn for param in model.parameters())
        images = pipe(**{**self.get_dummy_inputs(), "output_type": "pt"}).images
        assert not torch.isnan(images.float()).any()


def _image_as(image, kind: str):
    """`image` (PIL, numpy HWC / BHWC in [0, 1] or uint8, torch BCHW in [0, 1]) as torch, numpy floats or PIL."""
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"), dtype=np.float32)[None] / 255
    elif isinstance(image, torch.Tensor):
        array = (image[None] if image.ndim == 3 else image).permute(0, 2, 3, 1).float().numpy()
    else:
        array = np.asarray(image)
        array = array.astype(np.float32) / 255 if array.dtype == np.uint8 else array.astype(np.float32)
        array = array[None] if array.ndim == 3 else array
    if kind == "np":
        return array
    if kind == "pt":
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    return [Image.fromarray((item * 255).round().astype(np.uint8)) for item in array]
