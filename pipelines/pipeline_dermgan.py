"""`DermGANPipeline`: one forward pass of the DermGAN generator (Ghorbani et al. 2020) from semantic maps to images."""

from __future__ import annotations

import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput

from dermdiff.models.dermgan import DermGANGenerator
from dermdiff.pipelines.map_inputs import map_channels, resolve_semantic_maps
from dermdiff.pipelines.outputs import check_generators, check_output_type, postprocess
from dermdiff.pipelines.portable import PortablePipelineMixin


class DermGANPipeline(PortablePipelineMixin, DiffusionPipeline):
    r"""Generates skin images for semantic maps with a trained [`DermGANGenerator`].

    Takes the same map arguments as `DermDiffPipeline` (`semantic_map=`, or `condition=` + `skin_type=` +
    `boxes=` / `mask=`, and `num_images_per_prompt`; see `dermdiff.pipelines.map_inputs`). As in pix2pix,
    the generator's dropout stays on at inference (`stochastic=True`): it is the only source of
    variety between images of one map, drawn from `generator` so seeded calls repeat exactly.

    Args:
        dermgan ([`DermGANGenerator`]): the generator; its config holds the registry and the size.

    Example:
        >>> pipe = DermGANPipeline.from_pretrained("runs/dermgan-phantom")
        >>> images = pipe(condition="melanoma", skin_type=5, boxes=[(8, 8, 24, 24)], num_images_per_prompt=4).images
    """

    model_cpu_offload_seq = "dermgan"

    def __init__(self, dermgan: DermGANGenerator):
        super().__init__()
        self.register_modules(dermgan=dermgan)
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)

    @property
    def sample_size(self) -> tuple[int, int]:
        size = self.dermgan.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def check_inputs(self, num_images_per_prompt: int, output_type: str, generator) -> None:
        check_output_type(output_type)
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        if isinstance(generator, list) and not generator:
            raise ValueError("generator is an empty list")

    @torch.no_grad()
    def __call__(
        self,
        semantic_map=None,
        condition=None,
        skin_type=None,
        boxes=None,
        mask=None,
        num_images_per_prompt: int = 1,
        stochastic: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generates `len(maps) * num_images_per_prompt` images.

        Args:
            semantic_map, condition, skin_type, boxes, mask: the maps (see `map_inputs.resolve_semantic_maps`).
            num_images_per_prompt (`int`, defaults to 1): images per map.
            stochastic (`bool`, defaults to `True`): keep pix2pix's dropout on (False: one image per map).
            generator (`torch.Generator` or a list of one per image, *optional*): the dropout / noise source;
                with a list, image i depends only on generator i (so a batch equals its single calls).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` (B, H, W, 3) or `"pt"` (B, 3, H, W) in [0, 1];
                or `"latent"`, the generator's output before post-processing (B, 3, H, W) in [-1, 1].
            return_dict (`bool`, defaults to `True`): return an `ImagePipelineOutput` or a tuple.
        """
        # 1. Check inputs
        self.check_inputs(num_images_per_prompt, output_type, generator)
        registry, size = self.dermgan.registry, self.sample_size
        maps = resolve_semantic_maps(semantic_map, condition, skin_type, boxes, mask, size=size, registry=registry)
        if maps is None:
            raise ValueError("DermGAN needs a semantic map: pass semantic_map= or condition= / skin_type=")

        # 2. Map channels, repeated per prompt
        channels = map_channels(
            maps,
            size=size,
            registry=registry,
            num_images_per_prompt=num_images_per_prompt,
            dtype=self.dermgan.dtype,
            device=self._execution_device,
        )
        check_generators(generator, channels.shape[0])

        # 3. Generate (per image when each has its own generator)
        if isinstance(generator, list):
            images = torch.cat(
                [
                    self.dermgan(channels[i : i + 1], generator=g, stochastic=stochastic).sample
                    for i, g in enumerate(generator)
                ]
            )
        else:
            images = self.dermgan(channels, generator=generator, stochastic=stochastic).sample

        # 4. Post-process
        images = postprocess(self.image_processor, images, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
