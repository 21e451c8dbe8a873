"""What every dermdiff pipeline must do like a diffusers pipeline; mixed into each pipeline's test class.

diffusers keeps its `PipelineTesterMixin` outside the wheel, so this is our own small version (STYLE.md 9):
call signature, output types, dict vs tuple, batch vs single, save/load round trip (safetensors, identical
outputs) and `to(dtype)`.

A test class sets `pipeline_class`, `batch_params` (the inputs that become lists in a batched call, e.g.
`("semantic_map",)`) and implements:

- `get_dummy_components()` -> dict of tiny components (seed before each one);
- `get_dummy_inputs(seed=0)` -> keyword arguments of one single-image call with a CPU `torch.Generator`
  and `output_type="np"`.

Example:
    class TestMyPipeline(PipelineConformanceMixin):
        pipeline_class = MyPipeline
        batch_params = ("semantic_map",)
        def get_dummy_components(self): ...
        def get_dummy_inputs(self, seed=0): ...
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

REQUIRED_CALL_PARAMS = ("generator", "output_type", "return_dict")


class PipelineConformanceMixin:
    pipeline_class = None
    batch_params: tuple[str, ...] = ()
    required_call_params: tuple[str, ...] = REQUIRED_CALL_PARAMS
    # largest allowed difference between two runs that should agree (batched vs single convs differ in float)
    tolerance = 1e-4

    def get_dummy_components(self) -> dict:
        raise NotImplementedError

    def get_dummy_inputs(self, seed: int = 0) -> dict:
        raise NotImplementedError

    def get_pipeline(self):
        pipe = self.pipeline_class(**self.get_dummy_components())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # -- call signature and outputs ------------------------------------------------------------------------------
    def test_call_signature(self):
        parameters = inspect.signature(self.pipeline_class.__call__).parameters
        missing = [name for name in (*self.required_call_params, *self.batch_params) if name not in parameters]
        assert not missing, f"__call__ lacks {missing}"
        assert parameters["output_type"].default == "pil"
        assert parameters["return_dict"].default is True

    def test_runs_without_autograd(self):
        pipe = self.get_pipeline()
        images = pipe(**{**self.get_dummy_inputs(), "output_type": "pt"}).images
        assert not images.requires_grad, "__call__ should run under torch.no_grad()"

    def test_output_types(self):
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

    def test_dict_vs_tuple(self):
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

    # -- batching ------------------------------------------------------------------------------------------------
    def test_batch_vs_single(self):
        """A batch with one generator per item gives each item exactly as a single call does."""
        assert self.batch_params, "set batch_params to the inputs that become lists in a batched call"
        pipe = self.get_pipeline()
        singles = [self.get_dummy_inputs(seed=seed) for seed in (0, 1, 2)]
        batched = dict(singles[0])
        for name in self.batch_params:
            batched[name] = [single[name] for single in singles]
        batched["generator"] = [single["generator"] for single in self.fresh(singles)]
        images = pipe(**batched).images
        assert images.shape[0] == len(singles)
        for index, single in enumerate(self.fresh(singles)):
            alone = pipe(**single).images
            np.testing.assert_allclose(images[index], alone[0], atol=self.tolerance)

    def fresh(self, singles: list[dict]) -> list[dict]:
        """The same inputs with new generators in their initial state (a generator is consumed by a call)."""
        return [{**single, "generator": torch.Generator("cpu").manual_seed(single["generator"].initial_seed())}
                for single in singles]

    # -- persistence and dtype -----------------------------------------------------------------------------------
    def test_save_load_round_trip(self, tmp_path):
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

    def test_to_dtype(self):
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
