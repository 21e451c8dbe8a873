"""`DermDiffPipeline`: sample skin images for a semantic map, vary an image, or grow a lesion into a photo.

In pixel space, or in the latent space of an optional `AutoencoderKL` (latent DermDiff, issue 12)."""

import inspect
import math
from typing import Callable

import numpy as np
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.models import AutoencoderKL
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor

from dermdiff.latent_maps import (
    check_unet_matches_vae,
    from_model_latents,
    map_to_latent_grid,
    mask_to_latent_grid,
    to_model_latents,
    unclip_for_latents,
    vae_factor,
)
from dermdiff.models.semantic_unet import SemanticUNet2DModel
from dermdiff.pipelines.image_inputs import prepare_image
from dermdiff.pipelines.map_inputs import map_channels, resolve_semantic_maps, to_mask_array
from dermdiff.pipelines.portable import PortablePipelineMixin
from dermdiff.semantic_map import dominant_condition_from_channels

logger = logging.get_logger(__name__)

DEFAULT_GUIDANCE_SCALE = 2.0
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
DEFAULT_VARIATION_STRENGTH = 0.8


class DermDiffPipeline(PortablePipelineMixin, DiffusionPipeline):
    r"""Semantic-map-conditioned pixel diffusion (Ghorbani et al. 2020; Silva & Georgieva 2024), a diffusers pipeline.

    Three uses, one denoising loop:

    - **sample**: `pipe(condition="melanoma", skin_type=5, boxes=[(8, 8, 24, 24)])` or
      `pipe(semantic_map=smap)`; no map at all samples unconditionally (the null map).
    - **variation (SDEdit)**: `image=` + `strength=` in (0, 1] noises the image to `strength` of the
      schedule and denoises it under its (or another) map — "more like this one" for the hard-case loop.
    - **lesion transfer** (Breslavets et al. 2023; Furger et al. 2020): `image=` a photo of healthy skin +
      `mask=` where the lesion goes + `condition=`. At every step the region outside the mask is replaced
      by the photo noised to the current level (blending known regions, as diffusers' inpainting
      pipelines do; no RePaint resampling), and the final image equals the photo outside the mask exactly
      (hard mask, no feathering).

    Classifier-free guidance runs the conditional and null-map predictions in one batched forward pass. As in
    diffusers' Stable Diffusion pipelines, it is on while `guidance_scale > 1` (`do_classifier_free_guidance`);
    at 1 or below the map prediction is used alone. Guidance needs a model trained with map dropout: a unet
    whose config records `condition_dropout == 0` raises; a config without that field is taken as trained
    with dropout.

    Step state for callbacks, as diffusers' pipelines keep it: `guidance_scale`, `do_classifier_free_guidance`,
    `num_timesteps` and `interrupt`. A `callback_on_step_end` may set `pipe._guidance_scale` (e.g. 1.0 after
    40% of the steps turns guidance off for the rest) or `pipe._interrupt = True` (the remaining steps are
    skipped and the current latents post-processed), and may replace the tensors it asked for
    (`"latents"`, `"semantic_map"`: the conditional map channels, `None` when sampling unconditionally).

    **Latent** (LDM; Rombach et al. 2022): with a `vae`, the unet denoises the VAE's latents (its `sample_size`
    is the latent side; images are f times larger). Everything above works the same at the image size: maps,
    masks and start images are given in pixels; maps reach the latent grid with exact codes
    (`dermdiff.latent_maps`), a start image is encoded (posterior mean x `scaling_factor`), the lesion-transfer
    blend uses the mask grown to whole latent cells, and after decoding the photo is pasted back outside the
    pixel mask, so the result equals the photo there exactly. `output_type="latent"` returns the denoised
    latents (scaled, before decoding). Without a `vae` the pipeline is the pixel model it always was, and
    folders saved before the `vae` component existed load unchanged.

    Any diffusers scheduler can be swapped in without retraining, e.g.
    `pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`; epsilon or v
    prediction follows `scheduler.config.prediction_type`.

    Loading: `DermDiffPipeline.from_pretrained(folder_or_hub_id)`. Through the generic loader, as
    diffusers documents for custom pipelines (the saved folder carries a three-line `dermdiff_pipeline.py`
    that imports this class; see `dermdiff.pipelines.portable`):
    `DiffusionPipeline.from_pretrained(folder, custom_pipeline="dermdiff_pipeline", trust_remote_code=True)`.

    Args:
        unet ([`SemanticUNet2DModel`]): the denoiser; its config holds the condition registry and size.
        scheduler ([`SchedulerMixin`]): any diffusers noise scheduler (DDPM, DDIM, DPM-Solver++, Euler, UniPC).
        vae ([`AutoencoderKL`], *optional*): the autoencoder of a latent unet (e.g. from
            `training/train_autoencoder.py`); its latent channels, factor and `scaling_factor` must be those
            the unet was trained on.

    Example:
        >>> pipe = DermDiffPipeline.from_pretrained("runs/phantom-32")
        >>> images = pipe(condition="melanoma", skin_type=5, num_images_per_prompt=4,
        ...               generator=torch.manual_seed(0)).images
        >>> healed = pipe(image=photo, mask=lesion_mask, condition="psoriasis", skin_type=3).images[0]
    """

    model_cpu_offload_seq = "unet->vae"
    _optional_components = ["vae"]
    _callback_tensor_inputs = ["latents", "semantic_map"]

    def __init__(self, unet: SemanticUNet2DModel, scheduler: SchedulerMixin, vae: AutoencoderKL | None = None):
        super().__init__()
        check_unet_matches_vae(unet.config, vae)
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae)
        self.vae_scale_factor = vae_factor(vae)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_resize=False)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' loader, after checking that a local folder holds every component its index lists."""
        check_saved_components(pretrained_model_name_or_path, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def latent_size(self) -> tuple[int, int]:
        """The side(s) the unet denoises (its `sample_size`)."""
        size = self.unet.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def sample_size(self) -> tuple[int, int]:
        """The image size (height, width): the unet's size times the VAE's factor (1 without a VAE)."""
        return tuple(side * self.vae_scale_factor for side in self.latent_size)

    # -- step state, as diffusers' Stable Diffusion pipelines expose it to callbacks --------------------------------
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Guidance is on while `guidance_scale > 1` and there is a map to guide towards."""
        return self._guidance_scale > 1 and self._conditional

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def trained_with_null_map(self) -> bool:
        """Whether the unet learned the null map (condition dropout > 0, or not recorded)."""
        dropout = getattr(self.unet.config, "condition_dropout", None)
        return dropout is None or dropout > 0

    def check_inputs(self, image, strength, guidance_scale, num_inference_steps, output_type, callback_inputs):
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if strength is not None:
            if image is None:
                raise ValueError("strength only applies with image= (image variation or lesion transfer)")
            if not 0 < strength <= 1:
                raise ValueError(f"strength must be in (0, 1], got {strength}")
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {guidance_scale}")
        if guidance_scale > 1 and not self.trained_with_null_map:
            raise ValueError(
                f"guidance_scale={guidance_scale} mixes in the null-map prediction, but this unet was trained with "
                f"condition_dropout=0 and never learned the null map; use guidance_scale=1"
            )
        unknown = [name for name in callback_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs {unknown} not in {self._callback_tensor_inputs}")

    def check_latents(self, latents, shape: tuple[int, ...]) -> None:
        """Given starting noise must match the batch the call generates, in a floating dtype."""
        if latents is None:
            return
        if not isinstance(latents, torch.Tensor) or not torch.is_floating_point(latents):
            kind = latents.dtype if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a floating-point torch.Tensor of shape {shape}, got {kind}")
        if tuple(latents.shape) != shape:
            raise ValueError(
                f"latents must be {shape} (batch = maps x num_images_per_prompt, channels, height, width), "
                f"got {tuple(latents.shape)}"
            )

    def prepare_start_image(self, image, prompts: int) -> torch.Tensor:
        """(P, 3, H, W) in [-1, 1] (see `image_inputs.prepare_image`), checked against the model size and batch."""
        image = prepare_image(self.image_processor, image)
        if tuple(image.shape[-2:]) != self.sample_size:
            raise ValueError(
                f"image is {tuple(image.shape[1:])} (C, H, W) but the model generates (3, {self.sample_size[0]}, "
                f"{self.sample_size[1]}); resize or crop it first"
            )
        if image.shape[0] not in (1, prompts):
            raise ValueError(f"got {image.shape[0]} images for {prompts} semantic maps; pass 1 or {prompts}")
        return image.expand(prompts, -1, -1, -1)

    def get_timesteps(self, num_inference_steps: int, strength: float) -> torch.Tensor:
        """The tail of the schedule that starts at noise level `strength` (as diffusers' img2img pipelines)."""
        init_steps = min(int(num_inference_steps * strength), num_inference_steps)
        if init_steps < 1:
            raise ValueError(
                f"strength={strength} with num_inference_steps={num_inference_steps} leaves no denoising step; "
                f"raise one of them so that strength * num_inference_steps >= 1"
            )
        t_start = num_inference_steps - init_steps
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * self.scheduler.order)
        return self.scheduler.timesteps[t_start * self.scheduler.order :]

    def prepare_class_labels(self, class_labels, channels, batch: int, device) -> torch.Tensor | None:
        """Image-level labels for a unet with a class embedding: given, or read off the maps (null if none)."""
        if not self.unet.config.use_class_embedding:
            if class_labels is not None:
                raise ValueError("class_labels given but this unet has no class embedding (use_class_embedding=False)")
            return None
        if class_labels is None:
            if channels is None:
                return torch.full((batch,), self.unet.null_class_label, dtype=torch.long, device=device)
            return dominant_condition_from_channels(channels, self.unet.healthy_class_label)
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=device).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(batch)
        if labels.numel() != batch or labels.min() < 0 or labels.max() > self.unet.null_class_label:
            raise ValueError(
                f"class_labels must be 1 or {batch} values in 0..{self.unet.null_class_label} "
                f"(conditions, {self.unet.healthy_class_label} = healthy, {self.unet.null_class_label} = null), "
                f"got {class_labels}"
            )
        return labels

    @torch.no_grad()
    def __call__(
        self,
        semantic_map=None,
        condition=None,
        skin_type=None,
        boxes=None,
        mask=None,
        num_images_per_prompt: int = 1,
        image=None,
        strength: float | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        class_labels=None,
    ) -> ImagePipelineOutput | tuple:
        r"""Generates images for semantic maps, optionally starting from `image` (variation / lesion transfer).

        Args:
            semantic_map (`SemanticMap`, PIL map, list of them, or `torch.Tensor` (B, C, H, W), *optional*):
                the maps, at the model's size and registry. Or give `condition` (+ `skin_type`, `boxes` /
                `mask`) instead; with neither, images are sampled unconditionally. See
                `dermdiff.pipelines.map_inputs` for every accepted form.
            condition (`str`, `int` or list, *optional*): condition name(s) or code(s) of the model's registry.
            skin_type (`int` or list, *optional*): Fitzpatrick type(s) 1..6 (or I..VI); `None` = unknown.
            boxes (`list[(x0, y0, x1, y1)]`, *optional*): lesion boxes; without boxes or mask a centred box.
            mask (PIL / array / tensor (H, W), *optional*): lesion shape; with `image`, also the region to
                regenerate (lesion transfer), everything outside it is kept.
            num_images_per_prompt (`int`, defaults to 1): images per map.
            image (PIL, numpy in [0, 1] or torch in [0, 1], *optional*): start image(s) at the model's size.
            strength (`float`, *optional*): noise level to start `image` from, in (0, 1]; defaults to 0.8 for a
                variation and 1.0 for lesion transfer.
            num_inference_steps (`int`, defaults to 50): denoising steps of the full schedule.
            guidance_scale (`float`, *optional*): classifier-free guidance weight w in
                eps = eps_null + w (eps_map - eps_null), applied while w > 1 (at w <= 1 the map prediction alone).
                Defaults to 2.0 for a model trained with map dropout, else 1.0.
            generator (`torch.Generator` or list, *optional*): makes sampling deterministic.
            latents (`torch.Tensor`, *optional*): starting Gaussian noise (B, C, H, W), B = maps x
                `num_images_per_prompt`, instead of drawing it from `generator`; with `image`, the noise that
                noises the start image.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` (B, H, W, 3) or `"pt"` (B, 3, H, W), in
                [0, 1]; or `"latent"`: the denoised tensor before post-processing (B, C, H, W), in the model's range.
            return_dict (`bool`, defaults to `True`): return an `ImagePipelineOutput` instead of a tuple.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*): called
                as `fn(pipe, step, timestep, callback_kwargs)` after each step; may return replacements for the
                tensors it asked for, and may change `pipe._guidance_scale` or set `pipe._interrupt`.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`): tensors passed to it,
                from `pipe._callback_tensor_inputs`.
            class_labels (`int`, list or tensor, *optional*): image-level labels for a unet with a class
                embedding; by default the condition covering most of each map (healthy if none).

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the images.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if guidance_scale is None:
            guidance_scale = DEFAULT_GUIDANCE_SCALE if self.trained_with_null_map else 1.0

        # 1. Check inputs
        self.check_inputs(
            image, strength, guidance_scale, num_inference_steps, output_type, callback_on_step_end_tensor_inputs
        )
        device, dtype = self._execution_device, self.unet.dtype
        registry = self.unet.registry
        size = self.sample_size

        # 2. Semantic maps -> channels, built once. With `image`, `mask` is the region to regenerate; it also
        #    shapes the lesion when the map is drawn from `condition` (without one, the region is regenerated
        #    as healthy skin of `skin_type`, or unconditionally).
        lesion_mask = mask if semantic_map is None and (image is None or condition is not None) else None
        maps = resolve_semantic_maps(
            semantic_map, condition, skin_type, boxes, lesion_mask, size=size, registry=registry
        )
        channels = None
        if maps is not None:
            channels = map_channels(maps, size=size, registry=registry, num_images_per_prompt=num_images_per_prompt,
                                    dtype=dtype, device=device)
        prompts = len(maps) if maps is not None else 1
        init_image = None
        if image is not None:
            init_image = self.prepare_start_image(image, prompts if maps is not None else _batch_of(image))
            prompts = init_image.shape[0]
        batch = prompts * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} images; pass one generator or {batch}")
        shape = (batch, self.unet.config.in_channels) + self.latent_size
        self.check_latents(latents, shape)
        labels = self.prepare_class_labels(class_labels, channels, batch, device)
        if channels is not None and self.vae is not None:
            channels = map_to_latent_grid(channels, self.vae_scale_factor)

        # 3. Step state read (and changed) by callbacks; guidance itself is decided per step
        self._guidance_scale = guidance_scale
        self._conditional = channels is not None
        self._interrupt = False

        # 4. Timesteps (the tail of the schedule for a start image)
        if self.vae is not None and unclip_for_latents(self.scheduler):
            logger.warning(f"{type(self.scheduler).__name__}: clip_sample turned off; clipping latents to [-1, 1] "
                           "at every step decodes to texture (see dermdiff.latent_maps.unclip_for_latents)")
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if init_image is not None:
            if strength is None:
                strength = 1.0 if mask is not None else DEFAULT_VARIATION_STRENGTH
            timesteps = self.get_timesteps(num_inference_steps, strength)
        self._num_timesteps = len(timesteps)

        # 5. Initial latents: noise, or the start image noised to the first timestep
        if latents is None:
            noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            noise = latents.to(device=device, dtype=dtype)
        keep = pixel_keep = None
        if init_image is None:
            latents = noise * self.scheduler.init_noise_sigma
        else:
            init_image = init_image.to(device=device, dtype=dtype).repeat_interleave(num_images_per_prompt, dim=0)
            init_latents = self.encode_image(init_image)
            latents = self.scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(batch))
            if mask is not None:
                regenerate = torch.from_numpy(to_mask_array(mask, size, what="mask")).to(device=device, dtype=dtype)
                pixel_keep = 1.0 - regenerate[None, None]
                keep = 1.0 - mask_to_latent_grid(regenerate[None, None], self.vae_scale_factor)

        # 6. Denoising loop
        extra_step_kwargs = {}
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            extra_step_kwargs["generator"] = generator
        last = len(timesteps) - 1
        for i, t in enumerate(self.progress_bar(timesteps)):
            if self.interrupt:
                continue
            prediction = self.predict_noise(latents, t, channels, labels)
            latents = self.scheduler.step(prediction, t, latents, **extra_step_kwargs).prev_sample

            if keep is not None:  # lesion transfer: the photo, noised to the next level, outside the mask
                known = init_latents
                if i < last:
                    known = self.scheduler.add_noise(init_latents, noise, timesteps[i + 1 : i + 2])
                latents = keep * known + (1.0 - keep) * latents

            if callback_on_step_end is not None:
                tensors = {"latents": latents, "semantic_map": channels}
                callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                latents = callback_outputs.pop("latents", latents)
                channels = callback_outputs.pop("semantic_map", channels)

        # 7. Post-process; "latent" returns the denoised tensor as it is. With a VAE: decode, then paste the
        #    photo back outside the pixel mask (exact there, whatever the decoder does at the border)
        if output_type == "latent":
            images = latents
        else:
            decoded = self.decode_latents(latents)
            if pixel_keep is not None and self.vae is not None:
                decoded = pixel_keep * init_image + (1.0 - pixel_keep) * decoded
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> what the unet denoises: the image itself, or the VAE's posterior mean, normalised
        (`dermdiff.latent_maps.to_model_latents`: x scaling_factor, or per channel)."""
        if self.vae is None:
            return image
        mean = self.vae.encode(image.to(self.vae.dtype)).latent_dist.mode()
        return to_model_latents(self.vae, mean).to(image.dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of `encode_image`: pixels in [-1, 1] (unclipped; post-processing clips)."""
        if self.vae is None:
            return latents
        scaled = from_model_latents(self.vae, latents).to(self.vae.dtype)
        return self.vae.decode(scaled).sample.to(latents.dtype)

    def predict_noise(self, latents, t, channels, labels) -> torch.Tensor:
        """The unet's prediction at `t`; under guidance the null map and label go in the first half of one
        batched forward pass and the halves are combined as eps_null + w (eps_map - eps_null)."""
        if not self.do_classifier_free_guidance:
            model_input = self.scheduler.scale_model_input(latents, t)
            return self.unet(model_input, t, semantic_map=channels, class_labels=labels).sample
        model_input = self.scheduler.scale_model_input(torch.cat([latents, latents]), t)
        model_map = torch.cat([torch.zeros_like(channels), channels])
        model_labels = None
        if labels is not None:
            model_labels = torch.cat([torch.full_like(labels, self.unet.null_class_label), labels])
        prediction = self.unet(model_input, t, semantic_map=model_map, class_labels=model_labels).sample
        null_prediction, map_prediction = prediction.chunk(2)
        return null_prediction + self._guidance_scale * (map_prediction - null_prediction)


def check_saved_components(path, kwargs: dict) -> None:
    """A local pipeline folder whose `model_index.json` lists a component must hold that component's folder."""
    import json
    import os

    index = os.path.join(os.fspath(path), "model_index.json")
    if not os.path.isfile(index):
        return
    with open(index, encoding="utf-8") as handle:
        components = json.load(handle)
    for name, value in components.items():
        listed = isinstance(value, (list, tuple)) and len(value) == 2 and value[1] is not None
        if listed and not name.startswith("_") and name not in kwargs and not os.path.isdir(os.path.join(path, name)):
            raise ValueError(
                f"{path}: model_index.json lists {name} ({value[1]}) but the folder {name}/ is missing; copy it "
                f"there or pass {name}= to from_pretrained"
            )


def _batch_of(image) -> int:
    if isinstance(image, list):
        return len(image)
    if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 4:
        return image.shape[0]
    return 1
