"""DermGANPipeline, DCGANPipeline and LesionEditPipeline on tiny models: conformance, conveniences, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_conformance import ALWAYS_LEFT_OUT, PipelineConformanceMixin

from dermdiff import (
    DCGANGenerator,
    DCGANPipeline,
    DermGANGenerator,
    DermGANPipeline,
    LesionEditPipeline,
    SemanticMap,
    TranslationGenerator,
)
from dermdiff.conditions import get_registry

SIZE = 16

# what a one-pass GAN pipeline has none of (diffusers' own checks return early without these parameters)
NO_STEPS = {
    "test_attention_slicing_forward_pass": "no attention layers (diffusers sets test_attention_slicing = False)",
    "test_progress_bar": "one forward pass: no denoising steps to show progress over",
    "test_cfg": "no classifier-free guidance (no guidance_scale)",
    "test_callback_inputs": "no denoising steps, so no callback_on_step_end",
    "test_callback_cfg": "no denoising steps and no guidance to change",
    "test_karras_schedulers_shape": "no scheduler",
}


def generator(seed=0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def phantom_map(condition="melanoma", skin_type=4, box=(3, 4, 11, 12)) -> SemanticMap:
    return SemanticMap.from_annotations(condition, skin_type, boxes=[box], size=SIZE, registry="phantom")


def tiny_dermgan() -> DermGANGenerator:
    torch.manual_seed(0)
    phantom = get_registry("phantom").model_kwargs()
    return DermGANGenerator(sample_size=SIZE, block_out_channels=(8, 16, 32), **phantom).eval()


def tiny_dcgan() -> DCGANGenerator:
    torch.manual_seed(0)
    return DCGANGenerator(sample_size=(SIZE, 2 * SIZE), num_upsamples=2, base_channels=16, dense_channels=8).eval()


def tiny_editor(mask_channels=1, zero=False) -> TranslationGenerator:
    torch.manual_seed(0)
    return TranslationGenerator(
        mask_channels=mask_channels, block_out_channels=(4, 8, 16), num_residual_blocks=2, zero_init_residual=zero
    ).eval()


# ---------------------------------------------------------------------------------------------------------- DermGAN
class TestDermGANConformance(PipelineConformanceMixin):
    pipeline_class = DermGANPipeline
    params = ("semantic_map", "condition", "skin_type", "boxes", "mask", "stochastic")
    batch_params = ("semantic_map",)
    # no `latents`: the generator's only randomness is pix2pix's dropout, drawn from `generator`
    required_optional_params = ("num_images_per_prompt", "generator", "output_type", "return_dict")
    left_out = {
        **ALWAYS_LEFT_OUT,
        **NO_STEPS,
        "test_pt_np_pil_inputs_equivalent": "no image input (maps in, images out)",
    }

    def get_dummy_components(self) -> dict:
        return {"dermgan": tiny_dermgan()}

    def get_dummy_inputs(self, seed: int = 0) -> dict:
        return {
            "semantic_map": phantom_map(skin_type=1 + seed % 6, box=(2 + seed, 3, 10 + seed, 12)),
            "generator": generator(seed),
            "output_type": "np",
        }


def test_dermgan_conveniences_equal_explicit_map():
    pipe = DermGANPipeline(dermgan=tiny_dermgan())
    smap = phantom_map("psoriasis", 2, (4, 4, 12, 12))
    explicit = pipe(semantic_map=smap, generator=generator(3), output_type="np").images
    drawn = pipe(condition="psoriasis", skin_type=2, boxes=[(4, 4, 12, 12)], generator=generator(3), output_type="np")
    np.testing.assert_array_equal(explicit, drawn.images)
    channels = smap.to_channels()[None]
    as_channels = pipe(semantic_map=channels, generator=generator(3), output_type="np").images
    np.testing.assert_array_equal(explicit, as_channels)


def test_dermgan_num_images_per_prompt_and_dropout_variety():
    pipe = DermGANPipeline(dermgan=tiny_dermgan())
    images = pipe(
        condition="nevus", skin_type=3, num_images_per_prompt=3, generator=generator(0), output_type="np"
    ).images
    assert images.shape == (3, SIZE, SIZE, 3)
    assert np.abs(images[0] - images[1]).max() > 1e-3  # pix2pix dropout at inference gives variety
    fixed = pipe(condition="nevus", skin_type=3, num_images_per_prompt=2, stochastic=False, output_type="np").images
    np.testing.assert_array_equal(fixed[0], fixed[1])


def test_dermgan_errors():
    pipe = DermGANPipeline(dermgan=tiny_dermgan())
    with pytest.raises(ValueError, match="semantic map"):
        pipe()
    with pytest.raises(ValueError, match="output_type"):
        pipe(condition="nevus", output_type="jpg")
    with pytest.raises(ValueError, match="unknown condition 'not-a-condition'"):
        pipe(condition="not-a-condition")
    with pytest.raises(ValueError, match="generators"):
        pipe(condition="nevus", num_images_per_prompt=2, generator=[generator(0)] * 3)


# ------------------------------------------------------------------------------------------------------------ DCGAN
class TestDCGANConformance(PipelineConformanceMixin):
    pipeline_class = DCGANPipeline
    params = ("truncation",)
    batch_params = ()
    required_optional_params = ("batch_size", "generator", "latents", "output_type", "return_dict")
    left_out = {
        **ALWAYS_LEFT_OUT,
        **NO_STEPS,
        "test_num_images_per_prompt": "unconditional: no prompts to repeat; `batch_size` sets the count, as in "
        "diffusers' DDPMPipeline",
        "test_pt_np_pil_inputs_equivalent": "no image input (noise in, images out)",
    }

    def get_dummy_components(self) -> dict:
        return {"dcgan": tiny_dcgan()}

    def get_dummy_inputs(self, seed: int = 0) -> dict:
        return {"batch_size": 1, "truncation": 0.5, "generator": generator(seed), "output_type": "np"}


def test_dcgan_aspect_ratio_and_truncation_changes_only_outliers():
    pipe = DCGANPipeline(dcgan=tiny_dcgan())
    images = pipe(batch_size=2, generator=generator(0), output_type="pt").images
    assert images.shape == (2, 3, SIZE, 2 * SIZE)
    latents = torch.zeros(2, 100)
    latents[0, 0] = 3.0
    plain = pipe(latents=latents.clone(), output_type="pt").images
    truncated = pipe(latents=latents.clone(), truncation=0.5, generator=generator(0), output_type="pt").images
    torch.testing.assert_close(plain[1], truncated[1])  # the all-inside latent is untouched
    assert (plain[0] - truncated[0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="truncation"):
        pipe(truncation=0.0)
    with pytest.raises(ValueError, match="latents"):
        pipe(latents=torch.zeros(1, 7))
    with pytest.raises(ValueError, match=r"latents must be a floating-point torch.Tensor \(B, 100\), got torch.int64"):
        pipe(latents=torch.zeros(1, 100, dtype=torch.long))
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {bad}"):
            pipe(batch_size=bad)
    with pytest.raises(ValueError, match="got 3 generators for 2 images"):
        pipe(batch_size=2, generator=[generator(0)] * 3)


def test_dcgan_num_images_is_a_deprecated_alias_of_batch_size():
    pipe = DCGANPipeline(dcgan=tiny_dcgan())
    with pytest.warns(FutureWarning, match="num_images.*batch_size"):
        old = pipe(num_images=2, generator=generator(4), output_type="np").images
    new = pipe(batch_size=2, generator=generator(4), output_type="np").images
    np.testing.assert_array_equal(old, new)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['num_steps'\\]"):
        pipe(num_steps=3)


# ------------------------------------------------------------------------------------------------------ lesion edit
def photo(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def lesion_mask(seed: int) -> Image.Image:
    array = np.zeros((SIZE, SIZE), dtype=np.uint8)
    array[3 + seed : 9 + seed, 4:12] = 255
    return Image.fromarray(array)


class TestLesionEditConformance(PipelineConformanceMixin):
    pipeline_class = LesionEditPipeline
    params = ("image", "mask", "direction")
    batch_params = ("image", "mask")
    # no `latents`: the edit is a deterministic function of photo and mask (no noise to give)
    required_optional_params = ("generator", "output_type", "return_dict")
    image_params = ("image",)
    left_out = {
        **ALWAYS_LEFT_OUT,
        **NO_STEPS,
        "test_num_images_per_prompt": "one deterministic edit per photo: more images of one photo would be copies",
    }

    def droppable_components(self) -> list[str]:
        return ["remove_model"]  # the dummy call adds; at least one direction must stay

    def get_image_inputs(self, seed: int = 0) -> dict:
        return self.get_dummy_inputs(seed)

    def get_dummy_components(self) -> dict:
        return {"add_model": tiny_editor(), "remove_model": tiny_editor()}

    def get_dummy_inputs(self, seed: int = 0) -> dict:
        return {"image": photo(seed), "mask": lesion_mask(seed), "generator": generator(seed), "output_type": "np"}

    def test_deterministic_with_generator(self):
        """The edit is a deterministic function of photo and mask: the generator must not matter."""
        pipe = self.get_pipeline()
        first = pipe(**self.get_dummy_inputs(seed=0)).images
        other_generator = pipe(**{**self.get_dummy_inputs(seed=0), "generator": generator(5)}).images
        np.testing.assert_array_equal(first, other_generator)
        other_photo = pipe(**self.get_dummy_inputs(seed=1)).images
        assert np.abs(first - other_photo).max() > 1e-3


def test_edit_keeps_the_photo_for_an_identity_model():
    """A model trained to identity (residual 0) returns the photo: outside the mask within 1/255."""
    pipe = LesionEditPipeline(add_model=tiny_editor(zero=True))
    image = photo(0)
    edited = pipe(image=image, mask=lesion_mask(0), direction="add", output_type="np").images[0]
    original = np.asarray(image, dtype=np.float32) / 255.0
    outside = np.asarray(lesion_mask(0)) == 0
    assert np.abs(edited[outside] - original[outside]).max() <= 1.0 / 255.0 + 1e-6


def test_cycle_models_take_no_mask_and_directions_pick_models():
    add, remove = tiny_editor(0), tiny_editor(0)
    torch.nn.init.constant_(remove.conv_out.bias, 0.5)  # a visible difference between the directions
    pipe = LesionEditPipeline(add_model=add, remove_model=remove)
    added = pipe(image=photo(0), direction="add", output_type="np").images
    removed = pipe(image=photo(0), direction="remove", output_type="np").images
    assert np.abs(added - removed).max() > 0.1
    with pytest.raises(ValueError, match="untargeted"):
        pipe(image=photo(0), mask=lesion_mask(0))


def test_uint8_arrays_are_read_as_0_255():
    """np.asarray(photo) (uint8) gives the same edit as the PIL photo, not one of a photo scaled to [0, 255]."""
    pipe = LesionEditPipeline(add_model=tiny_editor())
    picture = photo(0)
    from_pil = pipe(image=picture, mask=lesion_mask(0), output_type="np").images
    from_uint8 = pipe(image=np.asarray(picture), mask=lesion_mask(0), output_type="np").images
    from_list = pipe(image=[np.asarray(picture)], mask=lesion_mask(0), output_type="np").images
    np.testing.assert_allclose(from_uint8, from_pil, atol=1e-6)
    np.testing.assert_allclose(from_list, from_pil, atol=1e-6)


def test_lesion_edit_errors():
    with pytest.raises(ValueError, match="at least one"):
        LesionEditPipeline()
    pipe = LesionEditPipeline(add_model=tiny_editor())
    with pytest.raises(ValueError, match="no remove_model"):
        pipe(image=photo(0), mask=lesion_mask(0), direction="remove")
    with pytest.raises(ValueError, match="direction"):
        pipe(image=photo(0), mask=lesion_mask(0), direction="grow")
    with pytest.raises(ValueError, match="targeted"):
        pipe(image=photo(0))
    with pytest.raises(ValueError, match="image"):
        pipe(mask=lesion_mask(0))
