"""`DCGANPipeline`: unconditional images from Furger et al.'s generator, with the truncation trick (2020)."""

from __future__ import annotations

import warnings

import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from dermdiff.models.dcgan import DCGANGenerator, truncate_latents
from dermdiff.pipelines.outputs import check_generators, check_output_type, postprocess
from dermdiff.pipelines.portable import PortablePipelineMixin


class DCGANPipeline(PortablePipelineMixin, DiffusionPipeline):
    r"""Samples z ~ N(0, I) (100-d), optionally truncated, and maps it through a [`DCGANGenerator`].

    `truncation` is Furger et al.'s (2020) truncation threshold: every component of z with |z| > truncation is
    re-sampled until it falls inside (0.1 suited the hands of its Table 3; `None` = no truncation).

    Args:
        dcgan ([`DCGANGenerator`]): the generator.

    Example:
        >>> pipe = DCGANPipeline.from_pretrained("runs/dcgan-lesions")
        >>> images = pipe(batch_size=8, truncation=0.5, generator=torch.manual_seed(0)).images
    """

    model_cpu_offload_seq = "dcgan"

    def __init__(self, dcgan: DCGANGenerator):
        super().__init__()
        self.register_modules(dcgan=dcgan)
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)

    @property
    def sample_size(self) -> tuple[int, int]:
        size = self.dcgan.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def check_inputs(self, batch_size: int, truncation, generator, latents, output_type: str) -> None:
        check_output_type(output_type)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if truncation is not None and not truncation > 0:
            raise ValueError(f"truncation must be a positive threshold or None, got {truncation}")
        dim = self.dcgan.config.latent_dim
        if latents is not None:
            if not isinstance(latents, torch.Tensor) or not torch.is_floating_point(latents):
                kind = latents.dtype if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise ValueError(f"latents must be a floating-point torch.Tensor (B, {dim}), got {kind}")
            if latents.ndim != 2 or latents.shape[1] != dim:
                raise ValueError(f"latents must be (B, {dim}), got {tuple(latents.shape)}")
        check_generators(generator, batch_size if latents is None else latents.shape[0])

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        truncation: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        **kwargs,
    ) -> ImagePipelineOutput | tuple:
        """Generates `batch_size` images (or one per row of `latents`).

        Args:
            batch_size (`int`, defaults to 1): images to generate (diffusers' name for unconditional pipelines;
                `num_images=` still works for this release, with a deprecation warning).
            truncation (`float`, *optional*): truncation threshold on |z|; `None` for none.
            generator (`torch.Generator` or a list of one per image, *optional*): source of z and its
                re-samples; with a list, image i depends only on generator i.
            latents (`torch.Tensor`, *optional*): (B, latent_dim) z to use instead of sampling (truncated too).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`, in [0, 1]; or `"latent"`, the
                generator's output before post-processing, in [-1, 1].
            return_dict (`bool`, defaults to `True`): return an `ImagePipelineOutput` or a tuple.
        """
        if "num_images" in kwargs:
            warnings.warn(
                "DCGANPipeline(num_images=) is deprecated and will be removed in dermdiff 0.3; use batch_size= "
                "(diffusers' name for unconditional pipelines)",
                FutureWarning,
                stacklevel=2,
            )
            batch_size = kwargs.pop("num_images")
        if kwargs:
            raise TypeError(f"DCGANPipeline.__call__ got unexpected keyword arguments {sorted(kwargs)}")

        # 1. Check inputs
        self.check_inputs(batch_size, truncation, generator, latents, output_type)
        device = self._execution_device

        # 2. Latents z (per image with a list of generators), truncated component-wise
        if latents is None:
            latents = randn_tensor((batch_size, self.dcgan.config.latent_dim), generator=generator, device=device)
        if truncation is not None:
            if isinstance(generator, list):
                latents = torch.cat(
                    [truncate_latents(latents[i : i + 1], truncation, g) for i, g in enumerate(generator)]
                )
            else:
                latents = truncate_latents(latents, truncation, generator)

        # 3. Generate and post-process
        images = self.dcgan(latents.to(device=device, dtype=self.dcgan.dtype)).sample
        images = postprocess(self.image_processor, images, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
