"""The GAN losses of the ported models, each written once and shared by every training loop.

DermGAN (Ghorbani et al. 2020, "G" below) and Furger et al. 2020 ("F" below) combine a handful of terms:

| function                 | paper term                                                       | used by       |
|--------------------------|------------------------------------------------------------------|---------------|
| `gan_loss`               | min-max GAN loss (G), L_ADV / L_G / L_D, eq. 1 (F)               | all GANs      |
| `reconstruction_loss`    | l1 reconstruction loss of the whole image (G)                    | DermGAN       |
| `roi_l1_loss`            | condition-specific (ROI) l1 reconstruction loss (G)              | DermGAN       |
| `feature_matching_loss`  | feature matching loss, second-to-last D layer (G; Salimans 2016) | DermGAN       |
| `relevancy_loss`         | L_REL, eq. 2 (F; Andermatt 2018), weight lambda_REL = 10         | targeted edit |
| `cycle_consistency_loss` | L_CYC, eq. 3 (F; Zhu 2017), weight lambda_CYC = 10               | CycleGAN edit |

Every function returns a scalar tensor (mean over the batch) so the loops can weight and add them.
Masks are `(B, 1, H, W)` or `(B, H, W)` tensors with 1 inside the region (lesion / ROI) and 0 outside;
soft masks in [0, 1] are allowed.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

GAN_LOSS_MODES = ("vanilla", "lsgan", "hinge")
CYCLE_DISTANCES = ("mse", "l1")


def gan_loss(
    prediction: torch.Tensor, target_is_real: bool, mode: str = "vanilla", for_discriminator: bool = True
) -> torch.Tensor:
    """Adversarial loss on raw discriminator outputs (logits), for either side of the game.

    Args:
        prediction (`torch.Tensor`): discriminator logits of any shape (a PatchGAN map or one per image).
        target_is_real (`bool`): whether the discriminator should call these samples real. The generator
            side always asks for `True` (its fakes should pass as real).
        mode (`str`, defaults to `"vanilla"`): `"vanilla"` (binary cross-entropy; the generator side is
            the non-saturating log D(G(z)) of Furger et al. 2020, eq. 1), `"lsgan"` (least squares to 1 / 0) or
            `"hinge"` (D: relu(1 -+ D); G: -D).
        for_discriminator (`bool`, defaults to `True`): only changes the hinge mode, whose generator loss
            is not the discriminator loss with a flipped target.

    Example:
        >>> d_loss = gan_loss(D(real), True) + gan_loss(D(fake.detach()), False)
        >>> g_loss = gan_loss(D(fake), True, for_discriminator=False)
    """
    if mode not in GAN_LOSS_MODES:
        raise ValueError(f"GAN loss mode must be one of {GAN_LOSS_MODES}, got {mode!r}")
    if mode == "vanilla":
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        return F.binary_cross_entropy_with_logits(prediction, target)
    if mode == "lsgan":
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        return F.mse_loss(prediction, target)
    if not for_discriminator:
        if not target_is_real:
            raise ValueError("the hinge generator loss only exists for target_is_real=True")
        return -prediction.mean()
    return F.relu(1.0 - prediction).mean() if target_is_real else F.relu(1.0 + prediction).mean()


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """l1 distance between the synthetic and the real image, averaged over every pixel (pix2pix / DermGAN)."""
    return F.l1_loss(fake, real)


def _as_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) float mask on `like`'s device, checked against `like`'s batch and size."""
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    if mask.shape[0] != like.shape[0] or mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match images {tuple(like.shape)}")
    return mask.to(dtype=like.dtype, device=like.device)


def roi_l1_loss(fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DermGAN's condition-specific reconstruction: l1 distance inside the ROI, normalised by ROI area.

    Each image's loss is the mean absolute difference over its ROI pixels (and channels), so a small
    lesion weighs as much as a large one; the batch loss averages the images whose ROI is not empty.
    With no ROI anywhere in the batch the loss is an exact zero that still carries a gradient graph.

    Args:
        fake (`torch.Tensor`): generated images, (B, C, H, W).
        real (`torch.Tensor`): real images, (B, C, H, W).
        mask (`torch.Tensor`): ROI mask, (B, 1, H, W) or (B, H, W), 1 inside the condition's region.
    """
    mask = _as_mask(mask, fake)
    channels = fake.shape[1]
    per_image_sum = ((fake - real).abs() * mask).flatten(1).sum(1)
    per_image_area = mask.flatten(1).sum(1) * channels
    has_roi = per_image_area > 0
    per_image = per_image_sum / per_image_area.clamp_min(torch.finfo(per_image_sum.dtype).tiny)
    count = has_roi.sum()
    return (per_image * has_roi).sum() / count.clamp_min(1)


def feature_matching_loss(
    real_features: torch.Tensor | Sequence[torch.Tensor], fake_features: torch.Tensor | Sequence[torch.Tensor]
) -> torch.Tensor:
    """l2 (mean squared) distance between discriminator activations of fake and real images.

    The real activations are detached: the loss trains the generator to match the statistics the
    discriminator sees in real data, not the discriminator to move them. Several layers may be passed
    as sequences (their losses are averaged); DermGAN uses the second-to-last layer only.
    """
    if isinstance(real_features, torch.Tensor):
        real_features, fake_features = [real_features], [fake_features]
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError(
            f"need the same non-zero number of real and fake feature maps, got {len(real_features)} and "
            f"{len(fake_features)}"
        )
    losses = [F.mse_loss(fake, real.detach()) for real, fake in zip(real_features, fake_features)]
    return torch.stack(losses).mean()


def relevancy_loss(output: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Furger et al. 2020, eq. 2: MSE((1 - y) * x, (1 - y) * G(x, y)), penalising changes outside the mask y.

    Changes inside the mask (where a lesion is added or removed) cost nothing. The mean runs over every
    pixel, as in the equation, so the loss does not grow when the mask shrinks. The loop weights it by
    lambda_REL (10 in the paper).

    Args:
        output (`torch.Tensor`): the edited image G(x, y), (B, C, H, W).
        image (`torch.Tensor`): the input photo x, (B, C, H, W).
        mask (`torch.Tensor`): segmentation y, (B, 1, H, W) or (B, H, W), 1 where editing is allowed.
    """
    keep = 1.0 - _as_mask(mask, output)
    return F.mse_loss(keep * output, keep * image)


def cycle_consistency_loss(
    reconstruction: torch.Tensor, original: torch.Tensor, distance: str = "mse"
) -> torch.Tensor:
    """Furger et al. 2020, eq. 3: distance between x and G_YX(G_XY(x)); weighted by lambda_CYC (10) in the loop.

    Args:
        reconstruction (`torch.Tensor`): the input translated there and back.
        original (`torch.Tensor`): the input.
        distance (`str`, defaults to `"mse"`): `"mse"` as Furger et al. 2020 write eq. 3, or `"l1"` as in the
            original CycleGAN paper.
    """
    if distance not in CYCLE_DISTANCES:
        raise ValueError(f"cycle distance must be one of {CYCLE_DISTANCES}, got {distance!r}")
    if distance == "mse":
        return F.mse_loss(reconstruction, original)
    return F.l1_loss(reconstruction, original)
