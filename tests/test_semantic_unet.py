"""SemanticUNet2DModel: map channels in, global skin-type/condition embedding, errors, save/load."""

import pytest
import torch

from dermdiff import SemanticMap, SemanticUNet2DModel
from dermdiff.conditions import BUILTIN_CONDITIONS, DEFAULT_REGISTRY, get_registry

TINY = dict(sample_size=16, block_out_channels=(8, 16), norm_num_groups=4, **get_registry("phantom").model_kwargs(),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def tiny(**overrides):
    torch.manual_seed(0)
    return SemanticUNet2DModel(**{**TINY, **overrides})


def maps(*skin_types):
    smap = SemanticMap.from_annotations("nevus", 3, boxes=[(4, 4, 12, 12)], size=16, registry="phantom")
    return SemanticMap.stack_channels([smap.with_skin_type(t) for t in skin_types])


@pytest.mark.parametrize("global_conditioning", [True, False])
@pytest.mark.parametrize("use_class_embedding", [True, False])
def test_forward_shapes_for_every_conditioning_mode(global_conditioning, use_class_embedding):
    model = tiny(global_conditioning=global_conditioning, use_class_embedding=use_class_embedding)
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([3, 5]), maps(1, 6)).sample
    assert out.shape == (2, 3, 16, 16)
    assert model(torch.randn(2, 3, 16, 16), 7, None).sample.shape == (2, 3, 16, 16)  # null map


def test_global_embedding_reads_skin_type_and_conditions_off_the_map():
    model = tiny()
    with torch.no_grad():
        model.presence_embedding.weight.zero_()
        model.presence_embedding.bias.zero_()
        embedding = model.global_embedding(maps(1, 6, 1), None)
        null = model.global_embedding(SemanticMap.null_channels(16, "phantom", batch_size=1), None)
    assert torch.equal(embedding[0], model.skin_embedding.weight[1])
    assert torch.equal(embedding[1], model.skin_embedding.weight[6])
    assert torch.equal(embedding[0], embedding[2])
    assert torch.equal(null[0], model.skin_embedding.weight[0])  # null map = unknown skin, no condition
    sample = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        light, dark = model(sample, 500, maps(1)).sample, model(sample, 500, maps(6)).sample
    assert not torch.allclose(light, dark)


def test_nearest_resize_of_a_larger_map_and_bad_maps():
    model = tiny()
    big = SemanticMap.from_annotations("nevus", 2, boxes=[(8, 8, 24, 24)], size=32, registry="phantom")
    out = model(torch.randn(1, 3, 16, 16), 10, big.to_channels()[None]).sample
    assert out.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"semantic_map must be \(B, 6, H, W\)"):
        model(torch.randn(1, 3, 16, 16), 10, torch.zeros(1, 8, 16, 16))
    with pytest.raises(ValueError, match="batch 2 does not match sample batch 1"):
        model(torch.randn(1, 3, 16, 16), 10, maps(1, 2))
    with pytest.raises(ValueError, match="divisible by norm_num_groups=4"):
        tiny(block_out_channels=(6, 16))


def test_save_and_load_round_trip(tmp_path):
    model = tiny(use_class_embedding=True)
    model.save_pretrained(tmp_path)
    loaded = SemanticUNet2DModel.from_pretrained(tmp_path)
    assert loaded.registry == model.registry and loaded.config.global_conditioning
    sample, channels = torch.randn(2, 3, 16, 16), maps(2, 4)
    with torch.no_grad():
        assert torch.equal(model(sample, 9, channels).sample, loaded(sample, 9, channels).sample)


def test_one_default_registry_and_saved_registries_reload(tmp_path):
    """Maps and models left without a registry agree (DEFAULT_REGISTRY); a saved model keeps its own."""
    plain = {key: value for key, value in TINY.items() if key not in ("conditions", "registry_name")}
    default = SemanticUNet2DModel(**plain)
    smap = SemanticMap.from_annotations("mel", 2, boxes=[(4, 4, 12, 12)], size=16)
    assert DEFAULT_REGISTRY == "ham10000"
    assert default.registry == smap.registry == get_registry("ham10000")
    assert default.registry.registry_name == smap.registry.registry_name == "ham10000"
    assert list(default.config.conditions) == list(BUILTIN_CONDITIONS["ham10000"])
    with torch.no_grad():  # a default map fits a default model: 1 + 7 map channels
        assert default(torch.randn(1, 3, 16, 16), 3, smap.to_channels()[None]).sample.shape == (1, 3, 16, 16)
    phantom = tiny()
    phantom.save_pretrained(tmp_path)
    reloaded = SemanticUNet2DModel.from_pretrained(tmp_path)
    assert reloaded.registry == get_registry("phantom") and reloaded.registry.registry_name == "phantom"
