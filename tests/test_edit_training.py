"""Regression tests for the lesion-edit GAN training (Furger et al. 2020, 4.2-4.3) that made edits drift from the data.

Two causes, both measured with benchmarks/gan_phantom.py: the untrained translation generator added a
noise residual everywhere (now it starts as the identity), and each multi-scale discriminator saw real
and fake photos in separate batches, so its batch norm normalised batch-wide differences away (now one
batch holds both).
"""

import pytest
import torch
from accelerate import Accelerator

from dermdiff.loops.gan import GANStep, edit_step, real_and_fake_logits
from dermdiff.models import MultiScaleDiscriminator, TranslationGenerator

TINY_GEN = dict(block_out_channels=(4, 8, 16), num_residual_blocks=1)
TINY_DISC = dict(sample_size=16, num_layers=2, base_channels=4)


def test_translation_generator_starts_as_identity_and_can_leave_it():
    torch.manual_seed(0)
    gen = TranslationGenerator(mask_channels=1, **TINY_GEN)
    photo, mask = torch.rand(2, 3, 16, 16) * 2 - 1, (torch.rand(2, 1, 16, 16) > 0.7).float()
    out = gen(photo, mask=mask)
    assert torch.equal(out.sample, photo)
    # zero output weights must not block learning: one step on any loss moves the residual off zero
    optimizer = torch.optim.Adam(gen.parameters(), lr=1e-3)
    (out.sample - 1).pow(2).mean().backward()
    optimizer.step()
    assert gen(photo, mask=mask).residual.abs().max() > 0


def test_real_and_fake_logits_split_one_pass_in_order():
    """In eval mode (fixed batch-norm statistics) the shared pass equals two separate passes, halves in order."""
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(**TINY_DISC).eval()
    real, fake = torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        real_logits, fake_logits = real_and_fake_logits(disc, real, fake)
        torch.testing.assert_close(real_logits, disc(real).sample)
        torch.testing.assert_close(fake_logits, disc(fake).sample)
    assert real_logits.shape == (4,) and fake_logits.shape == (2,)


@pytest.mark.parametrize("mode", ["targeted", "cycle"])
def test_edit_step_feeds_each_discriminator_real_and_fake_together(mode):
    torch.manual_seed(0)
    channels = int(mode == "targeted")
    add, remove = (TranslationGenerator(mask_channels=channels, **TINY_GEN) for _ in range(2))
    d_lesion, d_healthy = MultiScaleDiscriminator(**TINY_DISC), MultiScaleDiscriminator(**TINY_DISC)
    seen = []
    for disc in (d_lesion, d_healthy):
        disc.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[0]))
    step = GANStep(
        Accelerator(cpu=True),
        {"add_model": add, "remove_model": remove},
        {"lesion_discriminator": d_lesion, "healthy_discriminator": d_healthy},
        torch.optim.Adam([*add.parameters(), *remove.parameters()], lr=1e-3),
        torch.optim.Adam([*d_lesion.parameters(), *d_healthy.parameters()], lr=1e-3),
        torch.Generator().manual_seed(0),
    )
    batch = {
        "healthy": torch.rand(3, 3, 16, 16) * 2 - 1,
        "lesion": torch.rand(3, 3, 16, 16) * 2 - 1,
        "lesion_mask": (torch.rand(3, 1, 16, 16) > 0.7).float(),
    }
    logs = edit_step(step, batch, mode)
    assert seen == [6, 6, 6, 6]  # D step and G step, both discriminators, 3 real + 3 fake each
    assert all(torch.isfinite(torch.tensor(value)) for value in logs.values())
    # the generators left the identity after one update
    mask = batch["lesion_mask"] if mode == "targeted" else None
    assert add(batch["healthy"], mask=mask).residual.abs().max() > 0
