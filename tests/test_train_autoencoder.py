"""training/train_autoencoder.py, dermdiff.latent_maps and dermdiff.latent_cache: tiny AutoencoderKLs at 16 px."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
from unittest import mock

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from dermdiff.latent_maps import map_to_latent_grid, mask_to_latent_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "training", "train_autoencoder.py")
TINY_AE = {"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
           "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 4}


def load_script():
    spec = importlib.util.spec_from_file_location("train_autoencoder_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = load_script()


@pytest.fixture
def model_config(tmp_path):
    path = tmp_path / "tiny_ae.json"
    path.write_text(json.dumps(TINY_AE))
    return str(path)


def run(output_dir, *extra) -> int:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    argv = ["--phantom", "--phantom_num_images", "8", "--resolution", "16", "--train_batch_size", "4",
            "--output_dir", str(output_dir), "--validation_steps", "0", "--report_to", "none", "--seed", "0",
            "--num_validation_images", "2", "--scaling_num_images", "8", *extra]
    return script.main(script.parse_args(argv))


def weights(folder) -> dict:
    return load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)


# ----------------------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------------------
def test_three_step_run_with_discriminator_and_ema_writes_a_scaled_autoencoder(tmp_path, model_config):
    out = tmp_path / "run"
    assert run(out, "--model_config", model_config, "--max_train_steps", "3", "--checkpointing_steps", "1",
               "--validation_steps", "2", "--crop_size", "8", "--discriminator_start", "1",
               "--discriminator_channels", "8", "16", "--use_ema") == 0
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "samples/reconstruction-0000002.png",
                 "samples/reconstruction-0000003.png", "checkpoint-3/vae", "checkpoint-3/vae_ema",
                 "checkpoint-3/discriminator", "checkpoint-3/optimizer_1.bin"):
        assert (out / name).exists(), name
    vae = AutoencoderKL.from_pretrained(out)
    assert vae.config.block_out_channels == [8, 16] and vae.config.latent_channels == 4
    # scaling_factor = 1 / std of the training latents, measured again here
    from dermdiff.data.info import registry_of
    from dermdiff.data.phantom import phantom_dataset
    from dermdiff.loops.autoencoder import latent_scaling_factor, stack_examples
    from dermdiff.loops.diffusion import DiffusionExamples

    rows = phantom_dataset(n=8, size=16, seed=0)
    images = stack_examples(rows.with_transform(DiffusionExamples(registry_of(rows), 16)), 8)
    torch.manual_seed(0)
    expected = latent_scaling_factor(vae, images)
    assert vae.config.scaling_factor != 0.18215 and abs(vae.config.scaling_factor - expected) / expected < 0.2
    # the final model is the EMA
    assert_same_weights(out, out / "checkpoint-3" / "vae_ema")
    # every checkpoint's models carry the factor their own weights give, not the starting model's 0.18215
    for folder in ("checkpoint-1/vae", "checkpoint-3/vae", "checkpoint-3/vae_ema"):
        saved = AutoencoderKL.from_pretrained(out / folder)
        assert saved.config.scaling_factor == pytest.approx(latent_scaling_factor(saved.eval(), images), rel=1e-4), folder
    first, last = (AutoencoderKL.from_pretrained(out / f).config.scaling_factor for f in ("checkpoint-1/vae", "checkpoint-3/vae"))
    assert first != last


def test_resume_matches_an_uninterrupted_run(tmp_path, model_config):
    """8 images / batch 4 = 2 updates per epoch; resuming at step 3 is mid-epoch, with the GAN on."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    steps = ("--model_config", model_config, "--max_train_steps", "4", "--checkpointing_steps", "3",
             "--discriminator_start", "2", "--discriminator_channels", "8", "16")
    run(full, *steps)
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    run(resumed, *steps, "--resume_from_checkpoint", "latest")
    assert_same_weights(full / "checkpoint-3" / "vae", resumed / "checkpoint-3" / "vae")
    assert_same_weights(full, resumed)
    # and resuming really continued: a fresh run of 1 step is different
    fresh = tmp_path / "fresh"
    run(fresh, "--model_config", model_config, "--max_train_steps", "1", "--checkpointing_steps", "0")
    assert any(not torch.equal(a, b) for a, b in zip(weights(full).values(), weights(fresh).values()))


def test_pretrained_vae_from_a_model_folder_or_a_pipeline_folder(tmp_path):
    from dermdiff.loops.autoencoder import load_vae

    torch.manual_seed(0)
    AutoencoderKL(**TINY_AE, latent_channels=3).save_pretrained(tmp_path / "pipe" / "vae")
    assert load_vae(str(tmp_path / "pipe")).config.latent_channels == 3
    assert load_vae(str(tmp_path / "pipe" / "vae")).config.latent_channels == 3
    out = tmp_path / "run"
    assert run(out, "--pretrained_vae", str(tmp_path / "pipe"), "--max_train_steps", "1",
               "--checkpointing_steps", "0") == 0
    assert AutoencoderKL.from_pretrained(out).config.latent_channels == 3
    with pytest.raises(ValueError, match="no config.json in the folder or in its vae/ subfolder"):
        load_vae(str(tmp_path))


def test_decoder_only_fine_tune_keeps_the_encoder_and_its_scale_bitwise(tmp_path, model_config):
    """The latent space must not move: a diffusion model trained on the base autoencoder's latents still fits."""
    base = tmp_path / "base"
    run(base, "--model_config", model_config, "--max_train_steps", "2", "--checkpointing_steps", "0")
    out = tmp_path / "decoder"
    assert run(out, "--pretrained_vae", str(base), "--train_decoder_only", "--max_train_steps", "2",
               "--checkpointing_steps", "1", "--learning_rate", "1e-2", "--use_ema", "--discriminator_start", "1",
               "--discriminator_channels", "8", "16") == 0
    before, after = weights(base), weights(out)
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder and len(encoder) + len(decoder) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in encoder)
    assert all(torch.equal(before[k], weights(out / "checkpoint-1" / "vae")[k]) for k in encoder)
    assert sum(not torch.equal(before[k], after[k]) for k in decoder) > len(decoder) // 2
    scale = AutoencoderKL.from_pretrained(base).config.scaling_factor
    for folder in (out, out / "checkpoint-1" / "vae"):
        assert AutoencoderKL.from_pretrained(folder).config.scaling_factor == scale


def test_per_channel_latents_bring_each_channel_to_mean_0_std_1_and_the_cache_holds_them(tmp_path, model_config):
    from dermdiff.data.info import registry_of
    from dermdiff.data.phantom import phantom_dataset
    from dermdiff.latent_cache import cached_latents
    from dermdiff.latent_maps import to_model_latents
    from dermdiff.loops.autoencoder import measured_latent_normalisation, stack_examples
    from dermdiff.loops.diffusion import DiffusionExamples

    out = tmp_path / "run"
    assert run(out, "--model_config", model_config, "--max_train_steps", "2", "--checkpointing_steps", "1",
               "--per_channel_latents", "--use_ema") == 0
    rows = phantom_dataset(n=8, size=16, seed=0)
    examples = DiffusionExamples(registry_of(rows), 16)
    images = stack_examples(rows.with_transform(examples), 8)
    for folder in (out, out / "checkpoint-1" / "vae", out / "checkpoint-2" / "vae_ema"):
        vae = AutoencoderKL.from_pretrained(folder).eval()
        assert vae.config.scaling_factor == 1.0 and len(vae.config.latents_std) == 4, folder
        measured = measured_latent_normalisation(vae, images, per_channel=True)  # on its own weights
        assert measured["latents_mean"] == pytest.approx(vae.config.latents_mean, rel=1e-4, abs=1e-6), folder
        assert measured["latents_std"] == pytest.approx(vae.config.latents_std, rel=1e-4), folder
    with torch.no_grad():  # sampled training latents, normalised: each channel at mean 0, std 1
        z = to_model_latents(vae, vae.encode(images).latent_dist.sample(torch.Generator().manual_seed(0)))
    per_channel = z.transpose(0, 1).flatten(1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(4), rtol=0, atol=1e-4)
    torch.testing.assert_close(per_channel.std(1), torch.ones(4), rtol=0, atol=1e-4)
    # the cache stores the normalised posterior: mean shifted and scaled, std scaled
    cache = cached_latents(rows, vae, examples, str(tmp_path / "cache"), batch_size=4, verbose=False)
    example = examples.example(rows[2]["image"], rows[2]["semantic_map"], rows[2]["label"])
    with torch.no_grad():
        posterior = vae.encode(example["pixel_values"][None]).latent_dist
    torch.testing.assert_close(cache[2]["latent_mean"], to_model_latents(vae, posterior.mean)[0], rtol=0, atol=1e-5)
    std = torch.tensor(vae.config.latents_std).view(4, 1, 1)
    torch.testing.assert_close(cache[2]["latent_std"], posterior.std[0] / std, rtol=0, atol=1e-5)
    # without the flag a fine-tune goes back to one scaling_factor (per-channel entries would win otherwise)
    again = tmp_path / "again"
    run(again, "--pretrained_vae", str(out), "--max_train_steps", "1", "--checkpointing_steps", "0")
    config = AutoencoderKL.from_pretrained(again).config
    assert config.latents_mean is None and config.latents_std is None and config.scaling_factor != 1.0


def test_decoder_only_needs_a_pretrained_autoencoder(capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--phantom", "--train_decoder_only"])
    err = capsys.readouterr().err
    assert "--train_decoder_only fine-tunes the decoder of a trained autoencoder: give --pretrained_vae" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit):
        script.parse_args(["--phantom", "--train_decoder_only", "--pretrained_vae", "x", "--per_channel_latents"])
    err = capsys.readouterr().err
    assert "--train_decoder_only keeps the encoder's latents and their normalisation" in err
    assert "Traceback" not in err


def test_balanced_classes_draw_rare_classes_as_often_as_common_ones_and_resume_exactly(tmp_path, model_config):
    from dermdiff.loops.autoencoder import AutoencoderTrainingConfig, training_dataloader

    labels = [0] * 90 + [1] * 9 + [2]
    config = AutoencoderTrainingConfig(output_dir=str(tmp_path), train_batch_size=10, balance_classes=True, seed=3)
    loader = training_dataloader(list(range(100)), config, labels)
    drawn = []
    for epoch in range(30):
        loader.sampler.set_epoch(epoch)
        drawn += [labels[i] for batch in loader for i in batch.tolist()]
    counts = np.bincount(drawn, minlength=3) / len(drawn)
    np.testing.assert_allclose(counts, [1 / 3] * 3, atol=0.04)
    loader.sampler.set_epoch(7)
    first = [batch.tolist() for batch in loader]
    loader.sampler.set_epoch(7)
    assert [batch.tolist() for batch in loader] == first  # the draw of an epoch is its seed's: resumes repeat it
    with pytest.raises(ValueError, match=r"balance_classes needs one label per training example \(100\), got none"):
        training_dataloader(list(range(100)), config)
    # through the script: a balanced run trains and resumes like any other
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    steps = ("--model_config", model_config, "--max_train_steps", "3", "--checkpointing_steps", "1",
             "--balance_classes")
    assert run(full, *steps) == 0
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-1", resumed / "checkpoint-1")
    run(resumed, *steps, "--resume_from_checkpoint", "latest")
    assert_same_weights(full, resumed)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--phantom", "--crop_size", "64", "--resolution", "32"], "--crop_size must be between 8 and --resolution"),
        (["--phantom", "--model_config", "x.json", "--pretrained_vae", "y"], "not both"),
        (["--phantom", "--model_config", "missing.json"], "--model_config 'missing.json' does not exist"),
        (["--resolution", "32"], "give exactly one of --train_data_dir, --dataset_name, --phantom"),
        (["--phantom", "--gan_mode", "wgan"], "--gan_mode"),
    ],
)
def test_bad_flags_exit_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_model_config_and_crop_are_named(tmp_path, model_config):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"block_out_channels": [8, 16], "no_such_field": 1, "norm_num_groups": 4}))
    with pytest.raises(ValueError, match=r"not a valid AutoencoderKL config"):
        run(tmp_path / "a", "--model_config", str(bad), "--max_train_steps", "1")
    with pytest.raises(ValueError, match="crop_size 9 must be a multiple of the autoencoder's factor 2"):
        run(tmp_path / "b", "--model_config", model_config, "--crop_size", "9", "--max_train_steps", "1")


# ----------------------------------------------------------------------------------------------------------------
# maps and masks on the latent grid
# ----------------------------------------------------------------------------------------------------------------
def test_map_reduction_keeps_exact_codes():
    from dermdiff.semantic_map import SemanticMap

    smap = SemanticMap.from_annotations("melanoma", 5, boxes=[(3, 5, 13, 14)], size=16, registry="phantom")
    channels = smap.to_channels()[None]
    reduced = map_to_latent_grid(channels, 4)
    assert reduced.shape == (1, channels.shape[1], 4, 4)
    assert torch.equal(reduced[:, 0], torch.full((1, 4, 4), 5 / 6))  # skin type: the code exactly
    conditions = reduced[0, 1:]
    assert set(conditions.unique().tolist()) <= {0.0, 1.0} and conditions.sum(0).max() == 1  # one-hot or none
    # majority vote: block (row 1, col 1) = pixels 4..7 is fully inside the box; column 0 (pixels 0..3) has
    # 1 of 4 columns inside -> healthy; row 3 (pixels 12..15) has 2 of 4 rows inside -> tie goes to the lesion
    melanoma = conditions[smap.registry.index("melanoma")]
    assert melanoma[1, 1] == 1 and melanoma[1, 0] == 0 and melanoma[3, 1] == 1
    assert map_to_latent_grid(torch.zeros_like(channels), 4).abs().sum() == 0  # the null map stays null


def test_map_reduction_is_a_per_cell_majority_vote_in_every_dtype():
    """Random multi-condition maps against the rule counted cell by cell: skin code kept, the condition with
    most pixels wins unless more pixels are uncovered (ties go to the condition, then to the lower index)."""
    rng = torch.Generator().manual_seed(0)
    for factor, num_conditions in ((2, 1), (4, 3), (4, 7), (8, 2)):
        labels = torch.randint(0, num_conditions + 1, (3, 2 * factor, 3 * factor), generator=rng)
        labels[0] *= torch.rand(labels[0].shape, generator=rng) < 0.4  # mostly healthy skin
        skin = torch.tensor([0, 2, 6])
        channels = torch.cat([(skin / 6)[:, None, None, None].expand(3, 1, *labels.shape[1:]),
                              torch.nn.functional.one_hot(labels, num_conditions + 1)[..., 1:].permute(0, 3, 1, 2)], 1)
        for dtype in (torch.float32, torch.float16, torch.float64):
            reduced = map_to_latent_grid(channels.to(dtype), factor)
            assert reduced.dtype == dtype and reduced.shape == (3, 1 + num_conditions, 2, 3)
            for b, row, col in itertools.product(range(3), range(2), range(3)):
                block = labels[b, row * factor : (row + 1) * factor, col * factor : (col + 1) * factor]
                counts = torch.bincount(block.flatten(), minlength=num_conditions + 1)
                best = int(counts[1:].argmax())
                expected = torch.zeros(num_conditions)
                if counts[1 + best] >= counts[0]:
                    expected[best] = 1
                cell = reduced[b, :, row, col].double()
                assert cell[0] == torch.tensor(skin[b] / 6, dtype=dtype).double()
                assert torch.equal(cell[1:], expected.double()), (factor, b, row, col, counts.tolist())


def test_mask_reduction_regenerates_any_touched_cell_and_sizes_are_checked():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 3, 3] = 1
    reduced = mask_to_latent_grid(mask, 4)
    assert reduced.tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]
    with pytest.raises(ValueError, match="semantic map is 10 x 10, not a multiple of the VAE's factor 4"):
        map_to_latent_grid(torch.zeros(1, 3, 10, 10), 4)


# ----------------------------------------------------------------------------------------------------------------
# the latent cache
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def cache_inputs():
    from dermdiff.data.info import registry_of
    from dermdiff.data.phantom import phantom_dataset
    from dermdiff.loops.diffusion import DiffusionExamples

    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_AE, sample_size=16)
    vae.register_to_config(scaling_factor=0.5)
    rows = phantom_dataset(n=5, size=16, seed=0)
    return rows, vae, DiffusionExamples(registry_of(rows), 16)


def test_vae_hash_follows_encoder_weights_and_config_not_where_the_vae_was_loaded_from(tmp_path, cache_inputs):
    from dermdiff.latent_cache import vae_hash

    _, vae, _ = cache_inputs
    vae.save_pretrained(tmp_path / "a")
    vae.save_pretrained(tmp_path / "pipe" / "vae")
    from_folder = AutoencoderKL.from_pretrained(tmp_path / "a")
    from_pipeline = AutoencoderKL.from_pretrained(tmp_path / "pipe", subfolder="vae")
    assert from_folder.config._name_or_path != from_pipeline.config._name_or_path
    assert vae_hash(from_folder) == vae_hash(from_pipeline) == vae_hash(vae)
    rescaled = AutoencoderKL.from_pretrained(tmp_path / "a", scaling_factor=0.25)
    assert vae_hash(rescaled) != vae_hash(vae)
    with torch.no_grad():  # the decoder makes no cached latent: a decoder-only fine-tune keeps the cache
        from_folder.decoder.conv_out.bias.add_(1e-3)
        from_folder.post_quant_conv.bias.add_(1e-3)
    assert vae_hash(from_folder) == vae_hash(vae)
    with torch.no_grad():
        from_folder.encoder.conv_in.bias.add_(1e-3)
    assert vae_hash(from_folder) != vae_hash(vae)
    with torch.no_grad():
        from_pipeline.quant_conv.bias.add_(1e-3)
    assert vae_hash(from_pipeline) != vae_hash(vae)


def test_cache_holds_scaled_posteriors_and_latent_grid_maps(tmp_path, cache_inputs):
    from dermdiff.latent_cache import cached_latents, sample_cached_latents

    rows, vae, examples = cache_inputs
    cache = cached_latents(rows, vae, examples, str(tmp_path), batch_size=2, verbose=False)
    assert len(cache) == 5
    example = examples.example(rows[3]["image"], rows[3]["semantic_map"], rows[3]["label"])
    with torch.no_grad():
        posterior = vae.encode(example["pixel_values"][None]).latent_dist
    torch.testing.assert_close(cache[3]["latent_mean"], posterior.mean[0] * 0.5, rtol=0, atol=1e-5)
    torch.testing.assert_close(cache[3]["latent_std"], posterior.std[0] * 0.5, rtol=0, atol=1e-5)
    assert torch.equal(cache[3]["semantic_map"], map_to_latent_grid(example["semantic_map"][None], 2)[0])
    assert cache[3]["class_labels"] == example["class_labels"]
    batch = sample_cached_latents(cache[:2], torch.Generator().manual_seed(0))
    assert batch["pixel_values"].shape == (2, 4, 8, 8) and "latent_mean" not in batch


def test_cache_held_in_memory_gives_the_same_rows(tmp_path, cache_inputs):
    """`hold_in_memory`: the same tensors per row and per slice; a cache over the limit stays on disk."""
    from dermdiff.latent_cache import RowsInMemory, cached_latents, hold_in_memory

    rows, vae, examples = cache_inputs
    cache = cached_latents(rows, vae, examples, str(tmp_path), batch_size=2, verbose=False)
    held = hold_in_memory(cache)
    assert isinstance(held, RowsInMemory) and len(held) == len(cache) and held.column_names == cache.column_names
    for index in (0, 4, slice(1, 3)):
        for name, value in cache[index].items():
            assert torch.equal(held[index][name], value), (index, name)
    assert hold_in_memory(cache, limit_bytes=1) is cache


def test_cache_is_reused_and_invalidated_by_data_or_vae_changes(tmp_path, cache_inputs):
    from dermdiff.latent_cache import _Encoder, cached_latents

    rows, vae, examples = cache_inputs
    first = cached_latents(rows, vae, examples, str(tmp_path), verbose=False)
    with mock.patch.object(_Encoder, "__call__", side_effect=AssertionError("re-encoded")):
        again = cached_latents(rows, vae, examples, str(tmp_path), verbose=False)
    assert torch.equal(first[:]["latent_mean"], again[:]["latent_mean"])
    assert len(os.listdir(tmp_path)) == 1
    # one changed image -> a new cache
    from dermdiff.data.phantom import phantom_dataset

    changed = phantom_dataset(n=5, size=16, seed=1)
    cached_latents(changed, vae, examples, str(tmp_path), verbose=False)
    assert len(os.listdir(tmp_path)) == 2
    # one changed weight -> a new cache, and so does a changed scaling factor
    with torch.no_grad():
        vae.encoder.conv_in.bias[0] += 1e-3
    cached_latents(rows, vae, examples, str(tmp_path), verbose=False)
    vae.register_to_config(scaling_factor=0.25)
    scaled = cached_latents(rows, vae, examples, str(tmp_path), verbose=False)
    assert len(os.listdir(tmp_path)) == 4
    assert not torch.allclose(scaled[:]["latent_mean"], first[:]["latent_mean"])


def test_a_killed_build_is_never_read_and_a_tampered_key_is_refused(tmp_path, cache_inputs):
    from dermdiff.latent_cache import KEY_FILE, _Encoder, cache_key, cached_latents

    rows, vae, examples = cache_inputs
    calls = {"n": 0}
    original = _Encoder.__call__

    def dies_on_the_second_batch(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return original(self, batch)

    with mock.patch.object(_Encoder, "__call__", dies_on_the_second_batch), pytest.raises(KeyboardInterrupt):
        cached_latents(rows, vae, examples, str(tmp_path), batch_size=2, verbose=False)
    key = cache_key(rows, vae, 16)
    assert not os.path.exists(tmp_path / f"latents-{key['id']}")  # only .tmp leftovers
    assert all(".tmp" in name for name in os.listdir(tmp_path))
    cache = cached_latents(rows, vae, examples, str(tmp_path), batch_size=2, verbose=False)
    assert len(cache) == 5 and os.listdir(tmp_path) == [f"latents-{key['id']}"]
    # a folder whose key file says otherwise (e.g. copied over by hand) is refused with one line
    path = tmp_path / f"latents-{key['id']}" / KEY_FILE
    path.write_text(json.dumps({**key, "vae": "0" * 64}))
    with pytest.raises(ValueError, match=r"latent cache .* was built for .* expected .*; delete the folder"):
        cached_latents(rows, vae, examples, str(tmp_path), verbose=False)


# ----------------------------------------------------------------------------------------------------------------
# train_diffusion.py --vae: the autoencoder's output drives a latent UNet on cached latents
# ----------------------------------------------------------------------------------------------------------------
TINY_UNET = {"block_out_channels": [8, 16], "norm_num_groups": 4, "layers_per_block": 1,
             "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
             "attention_head_dim": 4}


def diffusion_script():
    spec = importlib.util.spec_from_file_location("train_diffusion_script", os.path.join(ROOT, "training",
                                                                                         "train_diffusion.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def latent_training(tmp_path, model_config, num_images: int):
    """A 1-step tiny autoencoder in tmp_path/ae and train_diffusion.py's module + flags for a latent run on it."""
    ae = tmp_path / "ae"
    run(ae, "--model_config", model_config, "--max_train_steps", "1", "--checkpointing_steps", "0")
    unet_config = tmp_path / "unet.json"
    unet_config.write_text(json.dumps(TINY_UNET))
    argv = ["--phantom", "--phantom_num_images", str(num_images), "--resolution", "16", "--train_batch_size", "4",
            "--model_config", str(unet_config), "--vae", str(ae), "--latent_cache_dir", str(tmp_path / "cache"),
            "--max_train_steps", "2", "--checkpointing_steps", "0", "--report_to", "none"]
    return diffusion_script(), argv


def test_latent_diffusion_trains_on_a_reused_cache_and_saves_a_three_component_pipeline(tmp_path, model_config):
    from accelerate.state import AcceleratorState, GradientState

    from dermdiff import DermDiffPipeline

    train, argv = latent_training(tmp_path, model_config, 8)
    argv += ["--validation_steps", "2", "--ddpm_num_inference_steps", "2"]
    unet_config = tmp_path / "unet.json"
    for name in ("first", "second"):
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        assert train.main(train.parse_args([*argv, "--output_dir", str(tmp_path / name)])) == 0
    assert len(os.listdir(tmp_path / "cache")) == 1  # encoded once, reused by the second run
    pipe = DermDiffPipeline.from_pretrained(tmp_path / "second")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae is not None and pipe.unet.config.sample_size == 8 and pipe.unet.config.in_channels == 4
    assert pipe.unet.config.latent_scaling_factor == pytest.approx(pipe.vae.config.scaling_factor)
    assert (tmp_path / "second" / "samples" / "validation-0000002.png").is_file()
    images = pipe(condition="melanoma", skin_type=5, num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 16, 16, 3)
    # fine-tuning the latent pipeline takes its VAE along (no --vae) and reuses the cache that VAE built
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    finetune = [arg for arg in argv if arg not in ("--model_config", str(unet_config), "--vae", str(tmp_path / "ae"))]
    assert train.main(train.parse_args([*finetune, "--pretrained_model_name_or_path", str(tmp_path / "second"),
                                        "--output_dir", str(tmp_path / "tuned")])) == 0
    assert len(os.listdir(tmp_path / "cache")) == 1
    tuned = DermDiffPipeline.from_pretrained(tmp_path / "tuned")
    assert tuned.vae is not None and tuned.unet.config.in_channels == 4
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    # a UNet config that contradicts the VAE is named in one line
    unet_config.write_text(json.dumps({**TINY_UNET, "in_channels": 3}))
    with pytest.raises(ValueError, match="unet in_channels is 3 but the VAE's latent_channels is 4"):
        train.main(train.parse_args([*argv, "--output_dir", str(tmp_path / "bad")]))


# ----------------------------------------------------------------------------------------------------------------
# --augment with cached latents: every orientation is encoded, so the augmentation stays exact
# ----------------------------------------------------------------------------------------------------------------
def test_a_dihedral_cache_holds_the_latent_of_each_turned_image_and_keeps_map_and_latent_aligned(tmp_path, cache_inputs):
    from dermdiff.latent_cache import cache_key, cached_latents, sample_cached_latents
    from dermdiff.loops.pair_augment import dihedral, dihedral_indices, select_variants

    rows, vae, examples = cache_inputs
    cache = cached_latents(rows, vae, examples, str(tmp_path), batch_size=2, verbose=False, augment="dihedral")
    assert cache[0]["latent_mean"].shape == (8, 4, 8, 8)
    plain = cache_key(rows, vae, 16)
    assert "orientations" not in plain  # caches built before augmentation keep their names
    assert sorted(os.listdir(tmp_path)) == [f"latents-{cache_key(rows, vae, 16, ('mask',), range(8))['id']}"]
    full = [examples.example(rows[i]["image"], rows[i]["semantic_map"], rows[i]["label"]) for i in range(3)]
    with torch.no_grad():
        turned = vae.encode(dihedral(full[2]["pixel_values"][None], 5)).latent_dist
    torch.testing.assert_close(cache[2]["latent_mean"][5], turned.mean[0] * 0.5, rtol=0, atol=1e-5)
    torch.testing.assert_close(cache[2]["latent_std"][5], turned.std[0] * 0.5, rtol=0, atol=1e-5)
    # the encoder is not equivariant: the turned latent is not the latent of the turned image
    assert (dihedral(cache[2]["latent_mean"][0], 5) - cache[2]["latent_mean"][5]).abs().max() > 1e-3
    # a batch: one symmetry per example, its exact latent, and the map turned the same way on the latent grid
    batch = sample_cached_latents(cache[:3], torch.Generator().manual_seed(3), "dihedral")
    replay = torch.Generator().manual_seed(3)
    indices = dihedral_indices(3, replay, "dihedral")
    assert len(set(indices.tolist())) > 1
    mean = select_variants(cache[:3]["latent_mean"], indices)
    std = select_variants(cache[:3]["latent_std"], indices)
    torch.testing.assert_close(batch["pixel_values"], mean + std * torch.randn(mean.shape, generator=replay))
    for b, example in enumerate(full):
        expected = map_to_latent_grid(dihedral(example["semantic_map"][None], int(indices[b])), 2)[0]
        assert torch.equal(batch["semantic_map"][b], expected)


def test_a_cache_without_the_drawn_orientations_is_refused(tmp_path, cache_inputs):
    from dermdiff.latent_cache import cached_latents, sample_cached_latents

    rows, vae, examples = cache_inputs
    plain = cached_latents(rows, vae, examples, str(tmp_path), verbose=False)
    with pytest.raises(ValueError, match=r"latent cache holds orientations \[0\] but augment='dihedral' draws"):
        sample_cached_latents(plain[:2], torch.Generator(), "dihedral")
    flips = cached_latents(rows, vae, examples, str(tmp_path), verbose=False, augment="flip")
    assert flips[0]["latent_mean"].shape == (2, 4, 8, 8) and len(os.listdir(tmp_path)) == 2
    assert sample_cached_latents(flips[:2], torch.Generator(), "flip")["pixel_values"].shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match=r"holds orientations \[0, 4\] but augment='dihedral'"):
        sample_cached_latents(flips[:2], torch.Generator(), "dihedral")
    with pytest.raises(ValueError, match="augment must be one of"):
        cached_latents(rows, vae, examples, str(tmp_path), verbose=False, augment="rotate")


def test_latent_training_with_dihedral_augmentation_and_random_flip_refused(tmp_path, model_config, capsys):
    from accelerate.state import AcceleratorState, GradientState

    from dermdiff.latent_cache import read_key

    train, argv = latent_training(tmp_path, model_config, 4)
    argv += ["--validation_steps", "0", "--output_dir", str(tmp_path / "out")]
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    assert train.main(train.parse_args([*argv, "--augment", "dihedral"])) == 0
    (cache,) = os.listdir(tmp_path / "cache")
    assert read_key(str(tmp_path / "cache" / cache))["orientations"] == list(range(8))
    with pytest.raises(SystemExit):
        train.parse_args([*argv, "--random_flip"])
    assert "--random_flip would flip cached latents, which is not exact; use --augment flip" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# benchmarks/autoencoder_quality.py reconstruct: the test folder rebuilt through the autoencoder
# ----------------------------------------------------------------------------------------------------------------
def test_reconstructed_folder_keeps_labels_maps_and_ids_and_holds_the_reconstructions(tmp_path):
    from dermdiff.data import save_image_folder
    from dermdiff.data.folder import load_dataset_dir
    from dermdiff.data.phantom import phantom_dataset
    from dermdiff.loops.autoencoder import reconstruct, to_pil

    spec = importlib.util.spec_from_file_location("autoencoder_quality",
                                                  os.path.join(ROOT, "benchmarks", "autoencoder_quality.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    save_image_folder(phantom_dataset(n=5, size=16, seed=0), str(tmp_path / "test"))
    torch.manual_seed(0)
    AutoencoderKL(**TINY_AE, sample_size=16).save_pretrained(tmp_path / "ae")
    assert bench.main(["reconstruct", "--vae", str(tmp_path / "ae"), "--test_dir", str(tmp_path / "test"),
                       "--resolution", "16", "--batch_size", "2", "--out", str(tmp_path / "rebuilt")]) == 0
    assert torch.is_grad_enabled()  # the tests after this one train models in the same process
    original, rebuilt = load_dataset_dir(str(tmp_path / "test")), load_dataset_dir(str(tmp_path / "rebuilt"))
    for column in ("label", "image_id", "skin_type", "boxes"):
        assert rebuilt[column] == original[column], column
    assert [np.asarray(m).tolist() for m in rebuilt["semantic_map"]] == \
        [np.asarray(m).tolist() for m in original["semantic_map"]]
    vae = AutoencoderKL.from_pretrained(tmp_path / "ae").eval()
    with torch.no_grad():
        expected = to_pil(reconstruct(vae, bench.folder_images(str(tmp_path / "test"), 16, 5)))
    for image, want, before in zip(rebuilt["image"], expected, original["image"]):
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(want))
        assert not np.array_equal(np.asarray(image.convert("RGB")), np.asarray(before.convert("RGB")))
    # --clamp_latents K: the normalised latent clamped to [-K, K] before decoding
    vae.register_to_config(scaling_factor=1e3)  # every normalised value far beyond 1
    vae.save_pretrained(tmp_path / "ae-wide")
    assert bench.main(["reconstruct", "--vae", str(tmp_path / "ae-wide"), "--test_dir", str(tmp_path / "test"),
                       "--resolution", "16", "--clamp_latents", "1", "--out", str(tmp_path / "clamped")]) == 0
    images = bench.folder_images(str(tmp_path / "test"), 16, 5)
    with torch.no_grad():
        signs = torch.sign(vae.encode(images).latent_dist.mode()) / 1e3  # clamped to +-1 / scale
        expected = to_pil(vae.decode(signs).sample.clamp(-1, 1))
    for image, want in zip(load_dataset_dir(str(tmp_path / "clamped"))["image"], expected):
        assert np.abs(np.asarray(image.convert("RGB")).astype(int) - np.asarray(want).astype(int)).max() <= 1


def test_reconstruct_refuses_a_batch_size_below_one_in_one_line(capsys):
    spec = importlib.util.spec_from_file_location("autoencoder_quality",
                                                  os.path.join(ROOT, "benchmarks", "autoencoder_quality.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit) as error:
        bench.parse_args(["reconstruct", "--vae", "v", "--test_dir", "t", "--out", "o", "--batch_size", "0"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("error: --batch_size must be >= 1, got 0")
    with pytest.raises(SystemExit):
        bench.parse_args(["reconstruct", "--vae", "v", "--test_dir", "t", "--out", "o", "--clamp_latents", "0"])
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith("error: --clamp_latents must be > 0, got 0.0")
    assert "Traceback" not in err


def test_latent_channel_statistics_are_those_of_the_scaled_posterior_means_and_measure_reports_them(tmp_path,
                                                                                                   model_config):
    from dermdiff.loops.autoencoder import latent_channel_statistics

    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_AE, sample_size=16).eval()
    vae.register_to_config(scaling_factor=3.0)
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    stats = latent_channel_statistics(vae, images, batch_size=2)
    with torch.no_grad():
        z = vae.encode(images).latent_dist.mean * 3.0
    per_channel = z.transpose(0, 1).flatten(1)
    assert len(stats["std"]) == 4
    torch.testing.assert_close(torch.tensor(stats["std"]), per_channel.std(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(stats["max_abs"]), per_channel.abs().amax(1), rtol=1e-5, atol=1e-6)
    assert stats["beyond_4"] == (per_channel.abs() > 4).float().mean(1).tolist()
    vae.register_to_config(scaling_factor=1e4)  # every value now lies far beyond 4
    assert all(share > 0.9 for share in latent_channel_statistics(vae, images)["beyond_4"])
    # and `measure` reports them per checkpoint
    from dermdiff.data import save_image_folder
    from dermdiff.data.phantom import phantom_dataset

    spec = importlib.util.spec_from_file_location("autoencoder_quality",
                                                  os.path.join(ROOT, "benchmarks", "autoencoder_quality.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    save_image_folder(phantom_dataset(n=4, size=16, seed=1), str(tmp_path / "test"))
    run(tmp_path / "ae", "--model_config", model_config, "--max_train_steps", "2", "--checkpointing_steps", "1")
    markdown = tmp_path / "quality.md"
    assert bench.main(["measure", "--run", str(tmp_path / "ae"), "--test_dir", str(tmp_path / "test"), "--resolution",
                       "16", "--num_images", "4", "--extractor", "none", "--markdown", str(markdown)]) == 0
    assert torch.is_grad_enabled()
    rows = [line for line in markdown.read_text().splitlines() if line.startswith(("| checkpoint-", "| final"))]
    assert len(rows) == 3 and all(row.count(" / ") == 3 * 3 for row in rows)  # 4 channels x 3 latent columns
