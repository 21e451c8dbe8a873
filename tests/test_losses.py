"""dermdiff.losses on hand-computed tensors."""

import math

import pytest
import torch

from dermdiff.losses import (
    cycle_consistency_loss,
    feature_matching_loss,
    gan_loss,
    reconstruction_loss,
    relevancy_loss,
    roi_l1_loss,
)


def test_gan_loss_vanilla_matches_log_sigmoid():
    logits = torch.tensor([0.0, 2.0])
    real = gan_loss(logits, True)
    fake = gan_loss(logits, False)
    assert real.item() == pytest.approx((math.log(2) + math.log(1 + math.exp(-2))) / 2, rel=1e-6)
    assert fake.item() == pytest.approx((math.log(2) + math.log(1 + math.exp(2))) / 2, rel=1e-6)


def test_gan_loss_lsgan_and_hinge():
    pred = torch.tensor([0.5, -1.0, 2.0])
    assert gan_loss(pred, True, "lsgan").item() == pytest.approx((0.25 + 4.0 + 1.0) / 3)
    assert gan_loss(pred, False, "lsgan").item() == pytest.approx((0.25 + 1.0 + 4.0) / 3)
    # D: relu(1 - D) on reals, relu(1 + D) on fakes; G: -D
    assert gan_loss(pred, True, "hinge").item() == pytest.approx((0.5 + 2.0 + 0.0) / 3)
    assert gan_loss(pred, False, "hinge").item() == pytest.approx((1.5 + 0.0 + 3.0) / 3)
    assert gan_loss(pred, True, "hinge", for_discriminator=False).item() == pytest.approx(-1.5 / 3)


def test_gan_loss_rejects_bad_mode():
    with pytest.raises(ValueError, match="wgan"):
        gan_loss(torch.zeros(2), True, "wgan")
    with pytest.raises(ValueError, match="hinge generator loss only exists for target_is_real=True"):
        gan_loss(torch.zeros(2), False, "hinge", for_discriminator=False)


def test_reconstruction_loss_is_mean_absolute_error():
    a = torch.zeros(1, 1, 2, 2)
    b = torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]]])
    assert reconstruction_loss(a, b).item() == pytest.approx(1.0)


def test_roi_l1_is_normalised_by_roi_area_per_image():
    real = torch.zeros(2, 1, 2, 2)
    fake = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])
    mask = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    # image 0: (1 + 3) / 2 = 2; image 1: 2 / 1 = 2; mean of the two = 2
    assert roi_l1_loss(fake, real, mask).item() == pytest.approx(2.0)
    # an image with an empty ROI is left out of the average
    mask[1] = 0
    assert roi_l1_loss(fake, real, mask).item() == pytest.approx(2.0)


def test_roi_l1_is_zero_and_finite_for_empty_roi():
    fake = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = roi_l1_loss(fake, torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(fake.grad, torch.zeros_like(fake))


def test_roi_l1_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="does not match"):
        roi_l1_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 8, 8))


def test_feature_matching_detaches_real_features():
    real = torch.tensor([1.0, 2.0], requires_grad=True)
    fake = torch.tensor([0.0, 4.0], requires_grad=True)
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx((1.0 + 4.0) / 2)
    loss.backward()
    assert real.grad is None
    assert torch.allclose(fake.grad, torch.tensor([-1.0, 2.0]))
    # several layers average
    two = feature_matching_loss([real, real], [fake, real.detach()])
    assert two.item() == pytest.approx(2.5 / 2)


def test_relevancy_loss_ignores_changes_inside_the_mask():
    image = torch.rand(2, 3, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 3:7] = 1
    edited = image + 5.0 * mask  # only masked pixels change
    assert relevancy_loss(edited, image, mask).item() == 0.0
    # a change of 1 on one unmasked pixel of one channel: 1 / (2 * 3 * 8 * 8)
    edited[0, 1, 0, 0] += 1.0
    assert relevancy_loss(edited, image, mask).item() == pytest.approx(1 / (2 * 3 * 64))


def test_cycle_loss_is_zero_for_identity_generators():
    x = torch.randn(2, 3, 8, 8)

    def identity(t):
        return t

    assert cycle_consistency_loss(identity(identity(x)), x).item() == 0.0
    assert cycle_consistency_loss(identity(identity(x)), x, distance="l1").item() == 0.0
    assert cycle_consistency_loss(x + 2, x).item() == pytest.approx(4.0)
    assert cycle_consistency_loss(x + 2, x, distance="l1").item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="l2"):
        cycle_consistency_loss(x, x, distance="l2")
