"""`LesionEditPipeline`: add a lesion to, or remove one from, a skin photo (Furger et al. 2020).

Two translation generators, one per direction (healthy -> lesion = "add", lesion -> healthy = "remove").
Targeted generators (`mask_channels=1`, trained with the relevancy loss) take a mask saying where to
edit; untargeted ones (the CycleGAN pair, `mask_channels=0`) take the photo alone.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput

from dermdiff.models.translation import TranslationGenerator
from dermdiff.pipelines.image_inputs import prepare_image
from dermdiff.pipelines.map_inputs import to_mask_array
from dermdiff.pipelines.outputs import check_generators, check_output_type, postprocess
from dermdiff.pipelines.portable import PortablePipelineMixin

DIRECTIONS = ("add", "remove")


class LesionEditPipeline(PortablePipelineMixin, DiffusionPipeline):
    r"""Edits photos with the translation generator of the chosen direction; output = photo + residual.

    Args:
        add_model ([`TranslationGenerator`], *optional*): healthy skin -> skin with a lesion (G_XY).
        remove_model ([`TranslationGenerator`], *optional*): skin with a lesion -> healthy skin (G_YX).

    At least one must be given. A targeted model needs `mask=` (1 / white = edit here); an untargeted
    CycleGAN model refuses one, since it cannot place its edit.

    Example:
        >>> pipe = LesionEditPipeline.from_pretrained("runs/eczema-targeted")
        >>> added = pipe(image=healthy_photo, mask=where, direction="add").images[0]
        >>> healed = pipe(image=sick_photo, mask=lesion_mask, direction="remove").images[0]
    """

    model_cpu_offload_seq = "add_model->remove_model"
    _optional_components = ["add_model", "remove_model"]

    def __init__(
        self, add_model: TranslationGenerator | None = None, remove_model: TranslationGenerator | None = None
    ):
        super().__init__()
        if add_model is None and remove_model is None:
            raise ValueError("give at least one of add_model and remove_model")
        self.register_modules(add_model=add_model, remove_model=remove_model)
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)

    def model_for(self, direction: str) -> TranslationGenerator:
        """The generator of `direction` ("add" or "remove")."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        model = self.add_model if direction == "add" else self.remove_model
        if model is None:
            raise ValueError(f"this pipeline has no {direction}_model; it can only {_other(direction)} lesions")
        return model

    def check_inputs(self, image, mask, model: TranslationGenerator, output_type: str) -> None:
        check_output_type(output_type)
        if image is None:
            raise ValueError("image= (the photo to edit) is required")
        if model.config.mask_channels and mask is None:
            raise ValueError("this model is targeted: pass mask= (where to add or remove the lesion)")
        if not model.config.mask_channels and mask is not None:
            raise ValueError("this model is untargeted (CycleGAN); it takes no mask")

    @staticmethod
    def prepare_mask(mask, batch: int, size: tuple[int, int]) -> torch.Tensor:
        """(B, 1, H, W) float mask from one or a list of PIL / numpy / torch masks (lesion = white / 1 / True)."""
        if isinstance(mask, torch.Tensor) and mask.ndim == 4:
            if mask.shape[1] != 1 or tuple(mask.shape[-2:]) != size:
                raise ValueError(f"mask tensor must be (B, 1, {size[0]}, {size[1]}), got {tuple(mask.shape)}")
            masks = (mask > 0.5).float()
        else:
            items = mask if isinstance(mask, list) else [mask]
            masks = torch.stack([torch.from_numpy(to_mask_array(m, size).astype(np.float32))[None] for m in items])
        if masks.shape[0] not in (1, batch):
            raise ValueError(f"got {masks.shape[0]} masks for {batch} images; pass 1 or {batch}")
        return masks.expand(batch, -1, -1, -1)

    @torch.no_grad()
    def __call__(
        self,
        image=None,
        mask=None,
        direction: str = "add",
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Edits `image` in `direction`.

        Args:
            image (PIL image, list, uint8 array, or float array / tensor in [0, 1]): the photo(s) to edit.
            mask (PIL image, array, tensor or list, *optional*): where to edit (targeted models only).
            direction (`str`, defaults to `"add"`): `"add"` or `"remove"` a lesion.
            generator (`torch.Generator` or a list of one per photo, *optional*): accepted for API symmetry (a
                list must still match the batch); the edit is deterministic.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`, in [0, 1]; or `"latent"`, the
                edited tensor before post-processing, in [-1, 1].
            return_dict (`bool`, defaults to `True`): return an `ImagePipelineOutput` or a tuple.
        """
        # 1. Check inputs
        model = self.model_for(direction)
        self.check_inputs(image, mask, model, output_type)
        device, dtype = self._execution_device, model.dtype

        # 2. Photo and mask as model tensors
        photo = prepare_image(self.image_processor, image).to(device=device, dtype=dtype)
        check_generators(generator, photo.shape[0])
        masks = None
        if mask is not None:
            masks = self.prepare_mask(mask, photo.shape[0], tuple(photo.shape[-2:])).to(device=device, dtype=dtype)

        # 3. Photo + generated residual, then post-process (clamped to the image range)
        edited = model(photo, mask=masks).sample.clamp(-1.0, 1.0)
        images = postprocess(self.image_processor, edited, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def _other(direction: str) -> str:
    return "remove" if direction == "add" else "add"
