"""`DCGANPipeline`: unconditional images from Furger et al.'s generator, with the truncation trick (seed 003)."""

from __future__ import annotations

import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from dermdiff.models.dcgan import DCGANGenerator, truncate_latents
from dermdiff.pipelines.pipeline_dermgan import check_output_type
from dermdiff.pipelines.portable import PortablePipelineMixin


class DCGANPipeline(PortablePipelineMixin, DiffusionPipeline):
    r"""Samples z ~ N(0, I) (100-d), optionally truncated, and maps it through a [`DCGANGenerator`].

    `truncation` is seed 003's truncation threshold: every component of z with |z| > truncation is
    re-sampled until it falls inside (0.1 suited the hands of its Table 3; `None` = no truncation).

    Args:
        dcgan ([`DCGANGenerator`]): the generator.

    Example:
        >>> pipe = DCGANPipeline.from_pretrained("runs/dcgan-lesions")
        >>> images = pipe(num_images=8, truncation=0.5, generator=torch.manual_seed(0)).images
    """

    model_cpu_offload_seq = "dcgan"

    def __init__(self, dcgan: DCGANGenerator):
        super().__init__()
        self.register_modules(dcgan=dcgan)
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)

    def check_inputs(self, num_images: int, truncation, latents, output_type: str) -> None:
        check_output_type(output_type)
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if truncation is not None and not truncation > 0:
            raise ValueError(f"truncation must be a positive threshold or None, got {truncation}")
        dim = self.dcgan.config.latent_dim
        if latents is not None and (latents.ndim != 2 or latents.shape[1] != dim):
            raise ValueError(f"latents must be (B, {dim}), got {tuple(latents.shape)}")

    @torch.no_grad()
    def __call__(
        self,
        num_images: int = 1,
        truncation: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generates `num_images` images (or one per row of `latents`).

        Args:
            num_images (`int`, defaults to 1): images to generate.
            truncation (`float`, *optional*): truncation threshold on |z|; `None` for none.
            generator (`torch.Generator` or list, *optional*): source of z and its re-samples.
            latents (`torch.Tensor`, *optional*): (B, latent_dim) z to use instead of sampling (truncated too).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`, in [0, 1].
            return_dict (`bool`, defaults to `True`): return an `ImagePipelineOutput` or a tuple.
        """
        # 1. Check inputs
        self.check_inputs(num_images, truncation, latents, output_type)
        device = self._execution_device

        # 2. Latents z, truncated component-wise (per image with a list of generators)
        if latents is None:
            latents = randn_tensor((num_images, self.dcgan.config.latent_dim), generator=generator, device=device)
        if truncation is not None:
            if isinstance(generator, list):
                latents = torch.cat(
                    [truncate_latents(latents[i : i + 1], truncation, g) for i, g in enumerate(generator)]
                )
            else:
                latents = truncate_latents(latents, truncation, generator)

        # 3. Generate and post-process
        images = self.dcgan(latents.to(device=device, dtype=self.dcgan.dtype)).sample
        images = self.image_processor.postprocess(images, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
