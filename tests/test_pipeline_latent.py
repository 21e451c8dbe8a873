"""Latent DermDiffPipeline: a tiny AutoencoderKL (f = 2) + a tiny UNet on an 8 x 8 latent for 16 px images."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest
import test_pipeline_dermdiff as pixel
import torch
from diffusers import AutoencoderKL, DDPMScheduler
from PIL import Image

from dermdiff import DermDiffPipeline
from dermdiff.latent_maps import record_vae
from dermdiff.pipelines.scheduler_names import SCHEDULERS, scheduler_from_name

SIZE, LATENT = pixel.SIZE, pixel.SIZE // 2
TINY_AE = {"block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2,
           "up_block_types": ("UpDecoderBlock2D",) * 2, "norm_num_groups": 4, "latent_channels": 4}


def tiny_vae(**overrides) -> AutoencoderKL:
    torch.manual_seed(0)
    vae = AutoencoderKL(**{**TINY_AE, "sample_size": SIZE, **overrides})
    vae.register_to_config(scaling_factor=0.7)
    return vae


def latent_components() -> dict:
    vae = tiny_vae()
    unet = pixel.tiny_unet(sample_size=LATENT, in_channels=4, out_channels=4)
    record_vae(unet, vae)
    torch.manual_seed(0)
    return {"unet": unet, "scheduler": DDPMScheduler(num_train_timesteps=100), "vae": vae}


def latent_pipeline() -> DermDiffPipeline:
    pipe = DermDiffPipeline(**latent_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


class TestLatentDermDiffConformance(pixel.TestDermDiffConformance):
    """Every conformance check of the pixel pipeline, run again with a VAE (images 16 px, latents 8 x 8)."""

    def get_dummy_components(self) -> dict:
        return latent_components()

    def droppable_components(self) -> list[str]:
        return []  # a latent unet cannot run without its VAE


# -- sampling ------------------------------------------------------------------------------------------------------
def test_latent_sampling_decodes_to_images_and_latent_output_is_the_denoised_latent():
    pipe = latent_pipeline()
    args = dict(condition="melanoma", skin_type=5, boxes=[(2, 3, 10, 12)], num_inference_steps=2)
    images = pipe(**args, generator=pixel.generator(0), output_type="np").images
    assert images.shape == (1, SIZE, SIZE, 3) and 0 <= images.min() and images.max() <= 1
    latents = pipe(**args, generator=pixel.generator(0), output_type="latent").images
    assert latents.shape == (1, 4, LATENT, LATENT)
    with torch.no_grad():
        decoded = pipe.vae.decode(latents / 0.7).sample
    np.testing.assert_allclose(images, ((decoded / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_the_unet_sees_the_map_on_the_latent_grid_and_guidance_changes_the_output():
    pipe = latent_pipeline()
    seen = []
    forward = pipe.unet.forward

    def record(sample, timestep, semantic_map=None, class_labels=None, return_dict=True):
        seen.append(semantic_map.clone())
        return forward(sample, timestep, semantic_map=semantic_map, class_labels=class_labels, return_dict=return_dict)

    pipe.unet.forward = record
    args = dict(semantic_map=pixel.phantom_map(), num_inference_steps=2, output_type="np")
    plain = pipe(**args, guidance_scale=1.0, generator=pixel.generator(0)).images
    guided = pipe(**args, guidance_scale=3.0, generator=pixel.generator(0)).images
    assert seen[0].shape[-2:] == (LATENT, LATENT) and seen[-1].shape[0] == 2  # guided: null + map in one batch
    assert set(seen[0][:, 1:].unique().tolist()) == {0.0, 1.0}
    assert np.abs(plain - guided).max() > 1e-4


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_samples_latents(name):
    pipe = latent_pipeline()
    pipe.scheduler = scheduler_from_name(name, pipe.scheduler.config)
    images = pipe(condition="nevus", skin_type=2, num_inference_steps=3, generator=pixel.generator(1),
                  output_type="np").images
    assert images.shape == (1, SIZE, SIZE, 3) and np.isfinite(images).all()


# -- variation and lesion transfer ---------------------------------------------------------------------------------
def test_latent_variation_encodes_the_start_image_and_stays_closer_at_low_strength():
    """Compared in latent space: an untrained tiny VAE's reconstruction error would swamp pixel distances."""
    pipe = latent_pipeline()
    picture = pixel.photo()
    with torch.no_grad():
        start = pipe.encode_image(pipe.image_processor.preprocess(picture))
    distances = []
    for strength in (0.25, 1.0):
        out = pipe(image=picture, strength=strength, semantic_map=pixel.phantom_map(), num_inference_steps=8,
                   generator=pixel.generator(0), output_type="latent").images
        distances.append((out - start).abs().mean().item())
    assert distances[0] < 0.5 * distances[1]


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm", "euler"])
def test_latent_lesion_transfer_keeps_the_photo_exactly_outside_the_mask(name):
    pipe = latent_pipeline()
    pipe.scheduler = scheduler_from_name(name, pipe.scheduler.config)
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[5:11, 3:12] = True  # not aligned with the 2 x 2 latent cells
    picture = (pixel.photo() * 255).round().astype(np.uint8)
    out = pipe(image=Image.fromarray(picture), mask=mask, condition="psoriasis", skin_type=3, num_inference_steps=4,
               generator=pixel.generator(0), output_type="pil").images[0]
    out = np.asarray(out)
    assert np.array_equal(out[~mask], picture[~mask])  # bit for bit
    assert np.abs(out[mask].astype(int) - picture[mask]).mean() > 2  # the lesion region was regenerated


# -- save / load ---------------------------------------------------------------------------------------------------
def test_save_load_round_trip_of_three_components_gives_the_same_images(tmp_path):
    pipe = latent_pipeline()
    inputs = dict(semantic_map=pixel.phantom_map(), num_inference_steps=2, output_type="np")
    before = pipe(**inputs, generator=pixel.generator(3)).images
    pipe.save_pretrained(tmp_path / "latent")
    index = json.loads((tmp_path / "latent" / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"] and (tmp_path / "latent" / "vae" / "config.json").is_file()
    loaded = DermDiffPipeline.from_pretrained(tmp_path / "latent")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.vae.config.scaling_factor == 0.7 and loaded.sample_size == (SIZE, SIZE)
    np.testing.assert_allclose(before, loaded(**inputs, generator=pixel.generator(3)).images, atol=1e-6)


def test_pixel_pipelines_save_without_a_vae_and_folders_from_before_the_vae_still_load(tmp_path):
    pipe = pixel.tiny_pipeline()
    inputs = dict(semantic_map=pixel.phantom_map(), num_inference_steps=2, output_type="np")
    before = pipe(**inputs, generator=pixel.generator(3)).images
    pipe.save_pretrained(tmp_path / "pixel")
    index_path = tmp_path / "pixel" / "model_index.json"
    index = json.loads(index_path.read_text())
    assert index.get("vae", [None, None]) == [None, None] and not (tmp_path / "pixel" / "vae").exists()
    index.pop("vae", None)  # as written before the component existed
    index_path.write_text(json.dumps(index))
    loaded = DermDiffPipeline.from_pretrained(tmp_path / "pixel")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.vae is None
    np.testing.assert_allclose(before, loaded(**inputs, generator=pixel.generator(3)).images, atol=1e-6)


# -- bad input: one line naming the component and the expected value -----------------------------------------------
def test_a_folder_missing_its_vae_is_named(tmp_path):
    latent_pipeline().save_pretrained(tmp_path / "p")
    shutil.rmtree(tmp_path / "p" / "vae")
    missing = r"model_index.json lists vae \(AutoencoderKL\) but the folder vae/ is missing"
    with pytest.raises(ValueError, match=missing):
        DermDiffPipeline.from_pretrained(tmp_path / "p")


def test_vae_and_unet_mismatches_are_named():
    components = latent_components()
    with pytest.raises(ValueError, match="unet in_channels is 4 but the VAE's latent_channels is 3"):
        DermDiffPipeline(components["unet"], components["scheduler"], tiny_vae(latent_channels=3))
    other_scale = tiny_vae()
    other_scale.register_to_config(scaling_factor=0.18215)
    with pytest.raises(ValueError, match="vae scaling_factor is 0.18215 but the unet was trained on latents scaled"):
        DermDiffPipeline(components["unet"], components["scheduler"], other_scale)
    with pytest.raises(ValueError, match="vae downsamples by 4 but the unet was trained on latents of a factor-2 VAE"):
        DermDiffPipeline(components["unet"], components["scheduler"],
                         tiny_vae(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                                  up_block_types=("UpDecoderBlock2D",) * 3))
    with pytest.raises(ValueError, match=r"vae is missing: this unet denoises latents of an AutoencoderKL \(factor 2"):
        DermDiffPipeline(components["unet"], components["scheduler"])
    with pytest.raises(ValueError, match="unet in_channels is 3 but the VAE's latent_channels is 4"):
        DermDiffPipeline(pixel.tiny_unet(), DDPMScheduler(), tiny_vae())


@pytest.mark.parametrize(
    "inputs, message",
    [
        (dict(semantic_map=torch.zeros(1, 6, LATENT, LATENT)),
         r"channel semantic_map is \(8, 8\) but the model generates \(16, 16\)"),
        (dict(condition="melanoma", image=np.zeros((LATENT, LATENT, 3), dtype=np.float32)),
         r"generates \(3, 16, 16\)"),
        (dict(condition="melanoma", image=np.zeros((SIZE, SIZE, 3), dtype=np.float32),
              mask=np.ones((LATENT, LATENT), dtype=bool)),
         r"mask is \(8, 8\) \(height, width\) but the image is \(16, 16\)"),
        (dict(condition="melanoma", latents=torch.zeros(1, 4, SIZE, SIZE)), r"latents must be \(1, 4, 8, 8\)"),
    ],
)
def test_inputs_at_the_wrong_size_name_the_expected_size(inputs, message):
    with pytest.raises(ValueError, match=message):
        latent_pipeline()(**inputs, num_inference_steps=2)


# -- the CLI takes latent pipelines without new flags --------------------------------------------------------------
def test_cli_generate_on_a_saved_latent_pipeline(tmp_path, capsys):
    from dermdiff.cli import main

    latent_pipeline().save_pretrained(tmp_path / "pipe")
    out = tmp_path / "gen"
    status = main(["generate", "--pipeline", str(tmp_path / "pipe"), "--condition", "melanoma", "--skin-type", "5",
                   "--box", "2,3,10,12", "--num-images", "2", "--scheduler", "ddim", "--steps", "2", "--seed", "7",
                   "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    with Image.open(out / "images" / "000001.png") as image:
        assert image.size == (SIZE, SIZE)
    assert len(os.listdir(out / "images")) == 2


# -- clip_sample: right for pixels, wrong for latents ----------------------------------------------------------------
def test_a_clipping_scheduler_is_unclipped_for_latents_and_left_alone_for_pixels(caplog):
    from unittest import mock

    from diffusers import DDIMScheduler

    from dermdiff.latent_maps import unclip_for_latents

    args = dict(condition="melanoma", skin_type=5, num_inference_steps=4, output_type="latent")
    pipe = latent_pipeline()
    pipe.vae.register_to_config(scaling_factor=5.0)  # large latents, so a clip at [-1, 1] would bite
    pipe.unet.register_to_config(latent_scaling_factor=5.0)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=True)
    with mock.patch.object(sys.modules[type(pipe).__module__], "unclip_for_latents", return_value=False):
        clipped = pipe(**args, generator=pixel.generator(0)).images  # what the pipeline drew before the fix
    with caplog.at_level("WARNING"):
        latents = pipe(**args, generator=pixel.generator(0)).images
    assert pipe.scheduler.config.clip_sample is False
    assert "clip_sample turned off" in caplog.text
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    unclipped = pipe(**args, generator=pixel.generator(0)).images
    torch.testing.assert_close(latents, unclipped)
    assert (latents - clipped).abs().max() > 1e-3
    # pixels live in [-1, 1]: a pixel pipeline keeps its scheduler's clipping
    pixel_pipe = DermDiffPipeline(unet=pixel.tiny_unet(), scheduler=DDIMScheduler(clip_sample=True))
    pixel_pipe.set_progress_bar_config(disable=True)
    pixel_pipe(condition="melanoma", skin_type=5, num_inference_steps=2, generator=pixel.generator(0))
    assert pixel_pipe.scheduler.config.clip_sample is True
    from diffusers import DPMSolverMultistepScheduler

    assert unclip_for_latents(DPMSolverMultistepScheduler()) is False  # nothing to turn off


# -- per-channel latent normalisation (latents_mean / latents_std, shift_factor) ----------------------------------
def test_latent_normalisation_reads_the_three_diffusers_conventions_and_inverts_exactly():
    from dermdiff.latent_maps import from_model_latents, latent_normalisation, to_model_latents

    assert latent_normalisation(tiny_vae()) == ([0.0] * 4, [0.7] * 4)
    sd3 = tiny_vae(shift_factor=0.25)
    assert latent_normalisation(sd3) == ([0.25] * 4, [0.7] * 4)
    per_channel = tiny_vae(latents_mean=[0.5, -1.0, 0.0, 2.0], latents_std=[2.0, 0.5, 1.0, 4.0])
    per_channel.register_to_config(scaling_factor=1.0)
    shift, scale = latent_normalisation(per_channel)
    assert shift == [0.5, -1.0, 0.0, 2.0] and scale == [0.5, 2.0, 1.0, 0.25]
    z = torch.randn(2, 4, 3, 3)
    model = to_model_latents(per_channel, z)
    torch.testing.assert_close(model[:, 1], (z[:, 1] + 1.0) * 2.0)
    torch.testing.assert_close(from_model_latents(per_channel, model), z, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="vae latents_mean / latents_std have 2 / 2 values but latent_channels is 4"):
        latent_normalisation(tiny_vae(latents_mean=[0.0, 0.0], latents_std=[1.0, 1.0]))


def test_a_per_channel_vae_is_encoded_and_decoded_per_channel_and_a_unet_of_other_latents_is_refused():
    stats = dict(latents_mean=[0.5, -1.0, 0.0, 2.0], latents_std=[2.0, 0.5, 1.0, 4.0])
    vae = tiny_vae(**stats)
    vae.register_to_config(scaling_factor=1.0)
    unet = pixel.tiny_unet(sample_size=LATENT, in_channels=4, out_channels=4)
    record_vae(unet, vae)
    assert unet.config.latent_shift == stats["latents_mean"] and unet.config.latent_scale == [0.5, 2.0, 1.0, 0.25]
    pipe = DermDiffPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100), vae=vae)
    image = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(image).latent_dist.mode()
        encoded = pipe.encode_image(image)
        torch.testing.assert_close(encoded, (mean - torch.tensor(stats["latents_mean"]).view(1, 4, 1, 1))
                                   / torch.tensor(stats["latents_std"]).view(1, 4, 1, 1))
        torch.testing.assert_close(pipe.decode_latents(encoded), vae.decode(mean).sample, rtol=0, atol=1e-5)
    # a UNet trained on one-scale latents cannot take a per-channel VAE of the same scaling_factor, and back
    old = latent_components()
    vae_one_scale = tiny_vae(**stats)  # scaling_factor 0.7, as the old unet's, but per-channel statistics
    with pytest.raises(ValueError, match=r"vae per-channel latent shift is \[0.5, -1.0, 0.0, 2.0\] but the unet was "
                                         r"trained on \[0.0, 0.0, 0.0, 0.0\]"):
        DermDiffPipeline(old["unet"], old["scheduler"], vae_one_scale)
    one_scale_of_1 = tiny_vae()
    one_scale_of_1.register_to_config(scaling_factor=1.0)  # the per-channel unet's scaling_factor, no statistics
    with pytest.raises(ValueError, match="vae per-channel latent shift is"):
        DermDiffPipeline(unet, DDPMScheduler(num_train_timesteps=100), one_scale_of_1)
