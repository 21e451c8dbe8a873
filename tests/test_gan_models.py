"""The ported GAN models on tiny configs: shapes, layer choices, truncation, residual edits, save/load."""

import json

import pytest
import torch
from torch import nn

from dermdiff.conditions import get_registry
from dermdiff.models import (
    DCGAN_PRESETS,
    DCGANGenerator,
    DermGANGenerator,
    MultiScaleDiscriminator,
    PatchGANDiscriminator,
    TranslationGenerator,
    truncate_latents,
)
from dermdiff.semantic_map import SemanticMap

TINY_DERMGAN = {"sample_size": 16, "block_out_channels": (8, 16, 32), **get_registry("phantom").model_kwargs()}


def tiny_maps(batch=2, size=16):
    maps = [
        SemanticMap.from_annotations("nevus", 2, boxes=[(2, 2, 9, 9)], size=size, registry="phantom"),
        SemanticMap.from_annotations("melanoma", 5, boxes=[(6, 4, 14, 12)], size=size, registry="phantom"),
    ]
    return SemanticMap.stack_channels(maps[:batch])


def public_config(model):
    """Config as JSON sees it (tuples -> lists), without private keys such as `_name_or_path`."""
    return json.loads(json.dumps({k: v for k, v in model.config.items() if not k.startswith("_")}))


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


# ------------------------------------------------------------------------------------------------ DermGAN
@pytest.mark.parametrize("upsample", ["resize_conv", "transposed"])
def test_dermgan_generator_shape_and_range(upsample):
    torch.manual_seed(0)
    gen = DermGANGenerator(upsample=upsample, **TINY_DERMGAN).eval()
    image = gen(tiny_maps()).sample
    assert image.shape == (2, 3, 16, 16)
    assert image.abs().max() <= 1.0


def test_dermgan_uses_no_transposed_convolutions_unless_asked():
    assert count(DermGANGenerator(**TINY_DERMGAN), nn.ConvTranspose2d) == 0
    assert count(DermGANGenerator(**TINY_DERMGAN), nn.Upsample) == 3
    assert count(DermGANGenerator(upsample="transposed", **TINY_DERMGAN), nn.ConvTranspose2d) == 3
    assert count(DermGANGenerator(), nn.ConvTranspose2d) == 0  # the paper-sized default too


def test_dermgan_dropout_follows_the_generator():
    torch.manual_seed(0)
    gen = DermGANGenerator(num_dropout_blocks=2, noise_channels=2, **TINY_DERMGAN).eval()
    maps = tiny_maps()
    a = gen(maps, generator=torch.Generator().manual_seed(1), stochastic=True).sample
    b = gen(maps, generator=torch.Generator().manual_seed(1), stochastic=True).sample
    c = gen(maps, generator=torch.Generator().manual_seed(2), stochastic=True).sample
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"upsample": "deconv"}, "upsample must be one of .*got 'deconv'"),
        ({"norm": "group"}, "norm must be one of .*got 'group'"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"block_out_channels": ()}, "block_out_channels must be a non-empty sequence"),
        ({"sample_size": 20}, r"sample_size=20 must be divisible by 2 \*\* 3"),
        ({"conditions": ()}, "conditions must name at least one condition"),
        ({"num_dropout_blocks": 9}, r"num_dropout_blocks must be in \[0, 3\], got 9"),
    ],
)
def test_dermgan_rejects_bad_config(kwargs, message):
    config = dict(TINY_DERMGAN, **kwargs)
    with pytest.raises(ValueError, match=message):
        DermGANGenerator(**config)


def test_dermgan_rejects_wrong_map_channels():
    gen = DermGANGenerator(**TINY_DERMGAN)
    with pytest.raises(ValueError, match="6"):
        gen(torch.zeros(1, 4, 16, 16))


def test_patchgan_returns_second_to_last_features():
    disc = PatchGANDiscriminator(block_out_channels=(8, 16), **get_registry("phantom").model_kwargs())
    out = disc(torch.zeros(2, 3, 16, 16), tiny_maps(), return_features=True)
    assert out.sample.shape == (2, 1, 6, 6)
    assert out.features.shape == (2, 16, 7, 7)
    assert disc(torch.zeros(2, 3, 16, 16), tiny_maps()).features is None
    # a map of another resolution is resized with nearest
    assert disc(torch.zeros(2, 3, 16, 16), tiny_maps(size=32)).sample.shape == (2, 1, 6, 6)


# -------------------------------------------------------------------------------------------------- DCGAN
def test_dcgan_shapes_follow_aspect_ratio():
    gen = DCGANGenerator(sample_size=(8, 16), num_upsamples=2, base_channels=16, dense_channels=8).eval()
    assert gen.initial_size == (2, 4)
    assert gen(torch.randn(3, 100)).sample.shape == (3, 3, 8, 16)
    assert count(gen, nn.ConvTranspose2d) == 2
    widths = [m.out_channels for m in gen.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert widths == [16, 8]


def test_dcgan_presets_match_table_1():
    for name, (height, width), dense in [("hands", (480, 640), (15, 20)), ("patches", (128, 128), (8, 8))]:
        preset = DCGAN_PRESETS[name]
        factor = 2 ** preset["num_upsamples"]
        assert preset["sample_size"] == (height, width)
        assert (height // factor, width // factor) == dense


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_size": 10}, r"sample_size \(10, 10\) must be a positive multiple of 2 \*\* num_upsamples"),
        ({"num_upsamples": 0}, "num_upsamples must be >= 1, got 0"),
        ({"base_channels": 5}, r"base_channels=5 must be divisible by 2 \*\* \(num_upsamples - 1\)"),
        ({"sample_size": (8, 8, 8)}, r"sample_size must be an int or \(height, width\), got \(8, 8, 8\)"),
    ],
)
def test_dcgan_rejects_bad_config(kwargs, message):
    config = dict({"sample_size": 16, "num_upsamples": 2, "base_channels": 8}, **kwargs)
    with pytest.raises(ValueError, match=message):
        DCGANGenerator(**config)


def test_truncation_resamples_exactly_the_components_beyond_the_threshold():
    latents = torch.randn(64, 100, generator=torch.Generator().manual_seed(0))
    threshold = 0.5
    truncated = truncate_latents(latents, threshold, generator=torch.Generator().manual_seed(1))
    outside = latents.abs() > threshold
    assert outside.any() and (~outside).any()
    assert torch.equal(truncated[~outside], latents[~outside])
    assert (truncated[outside] != latents[outside]).all()
    assert truncated.abs().max() <= threshold
    assert latents.abs().max() > threshold  # the input is left alone
    with pytest.raises(ValueError, match="truncation threshold must be > 0"):
        truncate_latents(latents, 0.0)


# ------------------------------------------------------------------------------------ multi-scale discriminator
def test_multiscale_discriminator_averages_its_scales():
    disc = MultiScaleDiscriminator(sample_size=16, num_layers=2, base_channels=8).eval()
    out = disc(torch.randn(4, 3, 16, 16))
    assert out.sample.shape == (4,)
    assert out.per_scale.shape == (4, 2)
    assert torch.allclose(out.sample, out.per_scale.mean(1))
    with pytest.raises(ValueError, match=r"sample must be \(B, 3, 16, 16\), got \(4, 3, 32, 32\)"):
        disc(torch.randn(4, 3, 32, 32))
    with pytest.raises(ValueError, match=r"sample_size \(12, 12\) must be divisible by"):
        MultiScaleDiscriminator(sample_size=12, num_layers=2)


# ------------------------------------------------------------------------------------ translation generator
TINY_TRANSLATION = {"block_out_channels": (8, 16, 32), "num_residual_blocks": 4}


def test_translation_generator_structure_and_shapes():
    gen = TranslationGenerator(mask_channels=1, **TINY_TRANSLATION).eval()
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in gen.modules()) == 2
    assert len(gen.mid_blocks) == 4
    assert count(gen, nn.ConvTranspose2d) == 2
    out = gen(torch.randn(2, 3, 16, 16), mask=torch.ones(2, 1, 16, 16))
    assert out.sample.shape == out.residual.shape == (2, 3, 16, 16)
    assert torch.allclose(out.sample, out.residual + out.sample - out.residual)


def test_translation_output_is_input_plus_residual_and_identity_when_zeroed():
    gen = TranslationGenerator(mask_channels=0, zero_init_residual=True, **TINY_TRANSLATION).eval()
    photo = torch.rand(2, 3, 16, 16) * 2 - 1
    out = gen(photo)
    assert torch.equal(out.residual, torch.zeros_like(photo))
    assert torch.equal(out.sample, photo)


def test_translation_mask_rules():
    targeted = TranslationGenerator(mask_channels=1, **TINY_TRANSLATION)
    untargeted = TranslationGenerator(**TINY_TRANSLATION)
    with pytest.raises(ValueError, match="mask"):
        targeted(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="mask"):
        untargeted(torch.zeros(1, 3, 16, 16), mask=torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="mask_channels must be 0 .untargeted. or 1 .targeted., got 2"):
        TranslationGenerator(mask_channels=2)
    with pytest.raises(ValueError, match=r"sample size \(10, 10\) must be divisible by"):
        untargeted(torch.zeros(1, 3, 10, 10))


# ---------------------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize(
    "cls, kwargs, inputs",
    [
        (DermGANGenerator, TINY_DERMGAN, lambda: (tiny_maps(),)),
        (PatchGANDiscriminator, {"block_out_channels": (8, 16), **get_registry("phantom").model_kwargs()},
         lambda: (torch.randn(2, 3, 16, 16), tiny_maps())),
        (
            DCGANGenerator,
            {"sample_size": (8, 16), "num_upsamples": 2, "base_channels": 8},
            lambda: (torch.randn(2, 100),),
        ),
        (
            MultiScaleDiscriminator,
            {"sample_size": 16, "num_layers": 2, "base_channels": 4},
            lambda: (torch.randn(2, 3, 16, 16),),
        ),
        (
            TranslationGenerator,
            dict(TINY_TRANSLATION, mask_channels=1),
            lambda: (torch.randn(2, 3, 16, 16), torch.ones(2, 1, 16, 16)),
        ),
    ],
)
def test_save_load_round_trip(tmp_path, cls, kwargs, inputs):
    torch.manual_seed(0)
    model = cls(**kwargs)
    # move the batch-norm running statistics away from their defaults so they are checked too
    model.train()
    with torch.no_grad():
        model(*inputs())
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = cls.from_pretrained(tmp_path).eval()
    assert public_config(loaded) == public_config(model)
    args = inputs()
    with torch.no_grad():
        assert torch.allclose(model(*args)[0], loaded(*args)[0], atol=1e-6)
