"""What every dermdiff pipeline's output and batch checks share: output types, post-processing, generator lists.

`output_type="latent"` returns the model's tensor before post-processing (B, C, H, W) in the model's range
([-1, 1] for the pixel-space models here), as diffusers' pipelines return their latents.
"""

from __future__ import annotations

import torch

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


def check_generators(generator, batch: int) -> None:
    """A list of generators needs one per image (diffusers' rule); one generator serves any batch."""
    if isinstance(generator, list) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for {batch} images; pass one generator or {batch}")


def postprocess(image_processor, images: torch.Tensor, output_type: str):
    """`image_processor.postprocess`, except that "latent" hands the model's tensor back unchanged."""
    if output_type == "latent":
        return images
    return image_processor.postprocess(images, output_type=output_type)
