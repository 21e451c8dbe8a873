"""Models: `ModelMixin` + `ConfigMixin` classes, so `save_pretrained` / `from_pretrained` / `push_to_hub` work."""

from .semantic_unet import SemanticUNet2DModel

__all__ = ["SemanticUNet2DModel"]
