"""Models: `ModelMixin` + `ConfigMixin` classes, so `save_pretrained` / `from_pretrained` / `push_to_hub` work."""

from .dcgan import DCGAN_PRESETS, DCGANGenerator, truncate_latents
from .dermgan import DermGANGenerator, PatchGANDiscriminator
from .multiscale_discriminator import MultiScaleDiscriminator
from .semantic_unet import SemanticUNet2DModel
from .translation import TranslationGenerator

__all__ = [
    "SemanticUNet2DModel",
    "DermGANGenerator",
    "PatchGANDiscriminator",
    "DCGANGenerator",
    "DCGAN_PRESETS",
    "truncate_latents",
    "MultiScaleDiscriminator",
    "TranslationGenerator",
]
