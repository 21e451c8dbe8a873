"""Layer factories shared by the ported GANs (DermGAN, the Furger et al. generators and discriminators).

One home for the choices several models make the same way: which normalisation, and how a decoder
doubles resolution (transposed convolution, or Ghorbani et al.'s (2020) nearest-neighbour resize + convolution that
avoids the checkerboard pattern of Odena et al. 2016).
"""

from __future__ import annotations

from torch import nn

NORM_TYPES = ("batch", "instance", "none")
UPSAMPLE_TYPES = ("resize_conv", "transposed")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Returns `value` if it is one of `allowed`, else a ValueError naming both."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_widths(name: str, widths) -> tuple[int, ...]:
    """A non-empty tuple of positive ints (channel widths), else a ValueError."""
    widths = tuple(widths)
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {widths}")
    return widths


def norm_layer(norm: str, channels: int) -> nn.Module:
    """Normalisation after a convolution: batch norm, instance norm (affine) or none."""
    check_choice("norm", norm, NORM_TYPES)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def upsample_layer(in_channels: int, out_channels: int, upsample: str, bias: bool = True) -> nn.Module:
    """A x2 upsampling convolution.

    `"resize_conv"`: nearest-neighbour resize then a 3x3 convolution (Ghorbani et al. 2020, every output pixel sees
    the same number of kernel taps, so no checkerboard). `"transposed"`: a 4x4 stride-2 transposed
    convolution (pix2pix / DCGAN), kept for the ablation and for Furger et al.'s (2020) deconvolutions.
    """
    check_choice("upsample", upsample, UPSAMPLE_TYPES)
    if upsample == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=bias)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=bias),
    )
