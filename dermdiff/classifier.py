"""`SkinClassifier`: a torchvision or transformers image classifier as a diffusers `ModelMixin`.

Why a wrapper: the hard-case loop, the augmentation experiment and the evaluation metrics all need one
object that (1) rebuilds from its config alone (`save_pretrained` / `from_pretrained`, safetensors),
with the label names travelling with the weights; (2) takes dermdiff images, float tensors in [-1, 1],
and normalises them for the backbone itself; (3) exposes the penultimate-layer embedding (`features`)
for the domain Frechet distance and memorisation checks.

Backbones: any torchvision classification model (`torchvision.models.list_models(module=torchvision.models)`)
or any `transformers` image classifier (`backbone="transformers"` with a config, or a Hub id / local
checkpoint folder given as the backbone itself: `resolve_backbone` turns it into `backbone="transformers",
pretrained=<id or folder>`).

Pretrained weights are optional and never fetched silently: `pretrained` is a local weights file (a
torchvision state dict as `.safetensors` or a `torch.save` file, read with `weights_only=True`), a
local transformers checkpoint folder, or a download request (`"imagenet"` or a weights name such as
`"IMAGENET1K_V2"` for torchvision, read from the torch hub cache `$TORCH_HOME/hub/checkpoints` when it is
there; a Hub id for transformers, read from the Hugging Face cache when it is there). A request that
is neither local nor downloadable here fails at once with one line that says where it looked.
"""

from __future__ import annotations

import contextvars
import difflib
import json
import os
import socket
from dataclasses import dataclass
from typing import Optional, Sequence, Union
from urllib.parse import urlparse

import torch
import torch.nn as nn
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput

# the torchvision backbones the project tests and benchmarks; any name of `torchvision_backbones()` works
TORCHVISION_BACKBONES = (
    "resnet18",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "densenet121",
)
TRANSFORMERS_BACKBONE = "transformers"
LIST_BACKBONES_HINT = (
    "list them with `python -c \"import torchvision; "
    "print(torchvision.models.list_models(module=torchvision.models))\"`"
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DOWNLOAD_NAMES = ("imagenet", "default", "imagenet1k_v1", "imagenet1k_v2")
_CONNECT_TIMEOUT_S = 3.0

# True while `from_pretrained` rebuilds the model: the saved weights replace any initial ones, so
# `__init__` must not load (or download) the `pretrained` weights recorded in the config.
_LOADING_SAVED = contextvars.ContextVar("dermdiff_classifier_loading_saved", default=False)


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights were asked for but are neither local nor downloadable here."""


@dataclass
class SkinClassifierOutput(BaseOutput):
    """
    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_labels)`): unnormalised class scores.
    """

    logits: torch.Tensor


class SkinClassifier(ModelMixin, ConfigMixin):
    r"""Skin-condition classifier on a torchvision or transformers backbone.

    The last linear layer of the backbone is replaced by one with `num_labels` outputs; its input is the
    embedding returned by [`features`].

    Args:
        backbone (`str`, defaults to `"resnet18"`): one of `TORCHVISION_BACKBONES`, or `"transformers"`
            for `AutoModelForImageClassification`.
        num_labels (`int`, defaults to 7): number of classes.
        label_names (`list[str]`, *optional*): class names in label order; default `class_0`, ...
        image_size (`int`, defaults to 224): the side the model is trained at (used by the training
            transforms and, for transformers, by size-dependent configs such as ViT's).
        pretrained (`str`, *optional*): initial weights: a local file (torchvision), a local checkpoint
            folder (transformers), `"imagenet"` (torchvision download) or a Hub id (transformers
            download). Recorded in the config for provenance; `from_pretrained` does not reload it.
        backbone_config (`dict` or `str`, *optional*): transformers only: a config dict (with
            `model_type`) or a `model_type` name such as `"vit"` or `"resnet"` for its default config.
            Filled in with the full config of a loaded checkpoint, so the model rebuilds without it.
        image_mean (`tuple[float]`, defaults to ImageNet's): per-channel mean after mapping to [0, 1].
        image_std (`tuple[float]`, defaults to ImageNet's): per-channel std after mapping to [0, 1].

    Example:
        >>> model = SkinClassifier(backbone="resnet18", num_labels=2, label_names=["nevus", "melanoma"], image_size=32)
        >>> logits = model(torch.zeros(1, 3, 32, 32)).logits
        >>> model.save_pretrained("out/classifier")
        >>> SkinClassifier.from_pretrained("out/classifier").config.label_names
        ['nevus', 'melanoma']
    """

    @register_to_config
    def __init__(
        self,
        backbone: str = "resnet18",
        num_labels: int = 7,
        label_names: Optional[Sequence[str]] = None,
        image_size: int = 224,
        pretrained: Optional[str] = None,
        backbone_config: Optional[Union[dict, str]] = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels}")
        if label_names is None:
            label_names = [f"class_{k}" for k in range(num_labels)]
            self.register_to_config(label_names=label_names)
        if len(label_names) != num_labels:
            raise ValueError(f"got {len(label_names)} label_names for num_labels={num_labels}: {list(label_names)}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError(f"image_mean/image_std need 3 values (std > 0), got {image_mean} / {image_std}")
        backbone, pretrained = resolve_backbone(backbone, pretrained)
        self.register_to_config(backbone=backbone, pretrained=pretrained)
        load = pretrained is not None and not _LOADING_SAVED.get()
        if backbone in torchvision_backbones():
            if backbone_config is not None:
                raise ValueError(f"backbone_config is for backbone='transformers', not {backbone!r}")
            self.model = _torchvision_model(backbone, num_labels, pretrained if load else None)
        elif backbone == TRANSFORMERS_BACKBONE:
            self.model = _transformers_model(
                backbone_config, num_labels, label_names, image_size, pretrained if load else None
            )
            # the full config, so that the model rebuilds later without the checkpoint folder or the Hub
            self.register_to_config(backbone_config=json.loads(self.model.config.to_json_string(use_diff=False)))
        else:
            check_backbone(backbone)
        self.head_name = _last_linear_name(self.model)
        self._captured = None
        self.model.get_submodule(self.head_name).register_forward_pre_hook(self._capture_features)

    def _capture_features(self, module, args):
        self._captured = args[0]

    def _normalise(self, sample: torch.Tensor) -> torch.Tensor:
        if sample.ndim != 4 or sample.shape[1] != 3:
            raise ValueError(f"sample must have shape (batch, 3, height, width), got {tuple(sample.shape)}")
        mean = torch.tensor(self.config.image_mean, device=sample.device, dtype=sample.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.config.image_std, device=sample.device, dtype=sample.dtype).view(1, 3, 1, 1)
        return ((sample + 1.0) / 2.0 - mean) / std

    def _logits(self, sample: torch.Tensor) -> torch.Tensor:
        pixels = self._normalise(sample)
        if self.config.backbone == TRANSFORMERS_BACKBONE:
            return self.model(pixel_values=pixels).logits
        return self.model(pixels)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        """Class logits for images `sample` (float tensor `(B, 3, H, W)` in [-1, 1])."""
        logits = self._logits(sample)
        self._captured = None
        if not return_dict:
            return (logits,)
        return SkinClassifierOutput(logits=logits)

    def features(self, sample: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer embeddings `(B, D)`: the input of the final linear layer.

        Gradients flow through it (wrap the call in `torch.no_grad()` for evaluation).
        """
        self._captured = None
        self._logits(sample)
        embedding, self._captured = self._captured, None
        return embedding.flatten(1)

    @torch.no_grad()
    def predict_proba(self, sample: torch.Tensor) -> torch.Tensor:
        """Softmax class probabilities `(B, num_labels)`, computed without gradients."""
        return torch.softmax(self._logits(sample).float(), dim=-1)

    @property
    def label_names(self) -> list:
        return list(self.config.label_names)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """diffusers' `from_pretrained`; the saved weights are loaded, the initial `pretrained` ones are not."""
        token = _LOADING_SAVED.set(True)
        try:
            return super().from_pretrained(*args, **kwargs)
        finally:
            _LOADING_SAVED.reset(token)


# ----------------------------------------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------------------------------------


def torchvision_backbones() -> list:
    """Every torchvision classification model name (detection, segmentation and video models excluded)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def resolve_backbone(backbone: str, pretrained: Optional[str] = None) -> tuple:
    """`(backbone, pretrained)` with a transformers Hub id or checkpoint folder given as the backbone.

    `backbone="google/vit-base-patch16-224"` (or a local folder) means `backbone="transformers",
    pretrained=<that>`: the checkpoint defines the architecture, so it is both. Torchvision names and
    `"transformers"` pass through unchanged; anything else is left for [`check_backbone`] to reject.
    """
    backbone = str(backbone)
    if backbone == TRANSFORMERS_BACKBONE or backbone in torchvision_backbones():
        return backbone, pretrained
    from .hub import looks_like_repo_id

    if os.path.isdir(backbone) or looks_like_repo_id(backbone):
        if pretrained is not None and os.fspath(pretrained) != backbone:
            raise ValueError(
                f"backbone {backbone!r} is a transformers checkpoint and names its own weights; "
                f"drop pretrained={pretrained!r} (or use backbone='transformers', pretrained=...)"
            )
        return TRANSFORMERS_BACKBONE, backbone
    return backbone, pretrained


def backbone_config_from_text(value: Optional[str]):
    """A command-line `--backbone_config`: a JSON file, inline JSON, or a transformers `model_type` name."""
    if value is None:
        return None
    if os.path.isfile(value):
        with open(value) as handle:
            return json.load(handle)
    if value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"backbone_config is not valid JSON: {error}") from None
    return value


def check_backbone(backbone: str) -> str:
    """`backbone` if [`SkinClassifier`] can build it, else a one-line `ValueError` saying what is allowed."""
    resolved, _ = resolve_backbone(backbone)
    if resolved == TRANSFORMERS_BACKBONE or resolved in torchvision_backbones():
        return backbone
    names = torchvision_backbones()
    close = difflib.get_close_matches(str(backbone), names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(
        f"unknown backbone {backbone!r}{hint}; allowed: one of the {len(names)} torchvision classification "
        f"models ({LIST_BACKBONES_HINT}), 'transformers' with a backbone_config, or a transformers image "
        "classifier's Hub id or local folder"
    )


def _last_linear_name(model: nn.Module) -> str:
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear classification layer to replace")
    return names[-1]


def _torchvision_model(name: str, num_labels: int, pretrained: Optional[str]) -> nn.Module:
    """A torchvision classifier with a new `num_labels` head; backbone weights from `pretrained`."""
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    head_name = _last_linear_name(model)
    head = model.get_submodule(head_name)
    if pretrained is not None:
        state = _torchvision_state_dict(name, pretrained)
        # the head is re-initialised for our classes; every other weight must match exactly
        body = {key: value for key, value in state.items() if not key.startswith(head_name + ".")}
        try:
            missing, unexpected = model.load_state_dict(body, strict=False)
        except RuntimeError as error:  # same keys, other shapes (e.g. resnet34 weights for a resnet18)
            shapes = [line.strip() for line in str(error).splitlines() if "size mismatch" in line][:2]
            raise ValueError(
                f"weights in {pretrained!r} do not fit torchvision {name}: {'; '.join(shapes) or error} "
                "(is it a state dict of this architecture?)"
            ) from None
        missing = [key for key in missing if not key.startswith(head_name + ".")]
        if missing or unexpected:
            raise ValueError(
                f"weights in {pretrained!r} do not fit torchvision {name}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]} (is it a state dict of this architecture?)"
            )
    model.set_submodule(head_name, nn.Linear(head.in_features, num_labels))
    return model


def _torchvision_state_dict(name: str, pretrained: str) -> dict:
    """Weights from a local file, or torchvision's own (`"imagenet"`, `"default"` or a weights name such as
    `"IMAGENET1K_V2"`) from the torch hub cache, downloaded only when the network answers."""
    if os.path.isfile(pretrained):
        return load_state_dict_file(pretrained)
    import torchvision

    weights_enum = torchvision.models.get_model_weights(name)
    choices = [member.name for member in weights_enum]
    wanted = pretrained.split(".")[-1].upper()  # "IMAGENET1K_V1" or "ResNet18_Weights.IMAGENET1K_V1"
    if wanted not in ("IMAGENET", "DEFAULT") + tuple(choices):
        raise FileNotFoundError(
            f"pretrained={pretrained!r} is not a file nor a weights name of torchvision {name}; give a local "
            f"weights file (.safetensors, .pt or .pth state dict), 'imagenet' or one of {choices}"
        )
    weights = weights_enum.DEFAULT if wanted in ("IMAGENET", "DEFAULT") else weights_enum[wanted]
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(weights.url).path))
    if os.path.isfile(cached):
        return load_state_dict_file(cached)
    reason = _offline_reason(weights.url)
    if reason is not None:
        raise WeightsUnavailableError(
            f"torchvision {name} weights {weights} not found: looked for {cached} (the torch hub cache; set "
            f"TORCH_HOME to move it) and cannot download {weights.url}: {reason}. Copy that file there, or save "
            f"`torchvision.models.{name}(weights='DEFAULT').state_dict()` on a machine with network and pass "
            f"pretrained='/path/to/{name}.pth'"
        )
    return weights.get_state_dict(progress=True)


def load_state_dict_file(path: str) -> dict:
    """A state dict from `.safetensors` or a `torch.save` file (read with `weights_only=True`)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} holds a {type(state).__name__}, not a state dict")
    return state


def _transformers_model(backbone_config, num_labels: int, label_names, image_size: int, pretrained: Optional[str]):
    from transformers import AutoConfig, AutoModelForImageClassification

    labels = {
        "num_labels": num_labels,
        "id2label": {k: name for k, name in enumerate(label_names)},
        "label2id": {name: k for k, name in enumerate(label_names)},
    }
    if pretrained is not None:
        return _transformers_pretrained(pretrained, labels)
    if backbone_config is None:
        raise ValueError(
            "backbone='transformers' needs backbone_config (a config dict or a model_type name) or pretrained"
        )
    if isinstance(backbone_config, str):
        backbone_config = {"model_type": backbone_config}
    if not isinstance(backbone_config, dict) or "model_type" not in backbone_config:
        raise ValueError(
            f"backbone_config must be a dict with 'model_type' or a model_type name, got {backbone_config!r}"
        )
    settings = {"image_size": image_size, **backbone_config, **labels}
    model_type = settings.pop("model_type")
    for key in ("architectures", "transformers_version", "_name_or_path"):
        settings.pop(key, None)
    try:
        config = AutoConfig.for_model(model_type, **settings)
    except ValueError as error:
        raise ValueError(f"backbone_config: unknown transformers model_type {model_type!r} ({error})") from error
    return AutoModelForImageClassification.from_config(config)


def _transformers_pretrained(pretrained: str, labels: dict):
    """A transformers checkpoint from a local folder or the Hub cache; downloads only with network.

    The classification head is replaced for our labels (`ignore_mismatched_sizes`); any other weight
    that is missing or has another shape means the weights do not fit the config, which is an error
    rather than a silently re-initialised layer.
    """
    from huggingface_hub import constants

    if os.path.isdir(pretrained):
        return _transformers_load(pretrained, labels, local_files_only=True)
    if os.path.exists(pretrained) or pretrained.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"pretrained={pretrained!r}: a transformers checkpoint must be a folder (config.json + weights)"
        )
    try:
        return _transformers_load(pretrained, labels, local_files_only=True)
    except OSError:
        pass  # not in the local Hub cache
    reason = _offline_reason(constants.ENDPOINT)
    if reason is not None:
        local_name = pretrained.split("/")[-1]
        raise WeightsUnavailableError(
            f"transformers checkpoint {pretrained!r} not found: looked for a folder {os.path.abspath(pretrained)} "
            f"and in the Hugging Face cache {constants.HF_HUB_CACHE} (set HF_HOME to move it), and cannot download "
            f"it: {reason}. On a machine with network run `hf download {pretrained} --local-dir {local_name}`, "
            f"copy the folder here and pass its path"
        )
    return _transformers_load(pretrained, labels, local_files_only=False)


def _transformers_load(pretrained: str, labels: dict, local_files_only: bool):
    from transformers import AutoModelForImageClassification

    try:
        model, info = AutoModelForImageClassification.from_pretrained(
            pretrained, local_files_only=local_files_only, ignore_mismatched_sizes=True, output_loading_info=True,
            **labels,
        )
    except ValueError as error:  # e.g. a text model's config: no image-classification class for it
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{pretrained!r} is not a transformers image classifier: {first}") from None
    except OSError as error:
        if local_files_only and not os.path.isdir(pretrained):
            raise  # not cached: the caller decides whether to download
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{pretrained!r} is not a loadable transformers checkpoint: {first}") from None
    head = _last_linear_name(model)
    bad = [key for key, *_ in info.get("mismatched_keys", []) if not key.startswith(head)]
    bad += [key for key in info.get("missing_keys", []) if not key.startswith(head)]
    if bad:
        raise ValueError(
            f"weights in {pretrained!r} do not fit its config ({type(model).__name__}): missing or other shape "
            f"{sorted(bad)[:5]}"
        )
    return model


def _offline_reason(url: str) -> Optional[str]:
    """Why `url` cannot be downloaded now (offline mode or no connection within a few seconds), or None."""
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DERMDIFF_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"offline mode ({variable}={os.environ[variable]})"
    parsed = urlparse(url)
    host = parsed.hostname
    if host is None:
        return f"bad URL {url!r}"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            return None
    except OSError as error:
        return f"no network connection to {host} ({error})"
