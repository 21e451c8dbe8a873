"""Feature extractors for FID/KID, nearest-neighbour search and "domain FD", all behind one interface.

Every extractor is an `nn.Module` called like clean-fid's custom feature extractors: it takes a float
batch `(B, 3, R, R)` with values in [0, 255] (already resized to its `resolution` by clean-fid's "clean"
PIL-bicubic resizer) and returns `(B, D)` features. Each carries a `name` and a `describe()` dict that is
written next to every number it produces, because FIDs from different feature spaces (or from random
weights) are not comparable.

Extractors:
- `InceptionFeatures`: clean-fid's standard InceptionV3 (pool3, 2048-d, the torchscript file
  `inception-2015-12-05.pt`). Never downloaded here; see `find_inception_weights` for where it goes.
- `TorchvisionFeatures`: the penultimate layer of a torchvision backbone with weights from a local file
  (safetensors or a `torch.save`d state dict read with `weights_only=True`), or random weights only when
  asked for explicitly (`random_init=True`, labelled so in every report).
- `ClassifierFeatures`: "domain FD", the penultimate embedding (`.features(x)`) of a dermdiff
  `SkinClassifier` trained on real skin images.

Example:
    >>> extractor = load_extractor("torchvision:resnet18:random", resolution=64)
    >>> extractor.describe()["random_init"]
    True
"""

from __future__ import annotations

import hashlib
import os
import platform

import numpy as np
import torch
from torch import nn

INCEPTION_FILENAME = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_ENV = "DERMDIFF_INCEPTION_DIR"
# SHA-256 of the file at INCEPTION_URL that clean-fid downloads (95,607,719 bytes); k-diffusion pins the same
# digest for the same URL. Any other file under that name is refused rather than reported as this network.
INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureExtractor(nn.Module):
    """Base class: `forward(x)` maps `(B, 3, R, R)` floats in [0, 255] to `(B, D)` features.

    Subclasses set `name` (a short, stable string: it is part of the reference-statistics cache key) and
    `resolution` (the square side images are resized to before `forward`), and may add settings to
    `describe()`.
    """

    name: str = "feature-extractor"
    resolution: int = 299

    def describe(self) -> dict:
        return {"name": self.name, "resolution": int(self.resolution), "class": type(self).__name__}

    def resizer(self):
        """clean-fid's "clean" resizer (PIL bicubic on float channels, no quantisation) to `resolution`."""
        from cleanfid.resize import make_resizer

        return make_resizer("PIL", False, "bicubic", (int(self.resolution), int(self.resolution)))


def describe_extractor(extractor) -> dict:
    """The description of any extractor, including a plain module a user passes in."""
    if hasattr(extractor, "describe"):
        return dict(extractor.describe())
    return {
        "name": getattr(extractor, "name", type(extractor).__name__),
        "resolution": int(getattr(extractor, "resolution", 299)),
        "class": type(extractor).__name__,
    }


def extractor_resolution(extractor) -> int:
    return int(getattr(extractor, "resolution", 299))


def extractor_name(extractor) -> str:
    return describe_extractor(extractor)["name"]


# ----------------------------------------------------------------------------------------------------------------
# clean-fid's InceptionV3
# ----------------------------------------------------------------------------------------------------------------
def cleanfid_inception_dir() -> str:
    """The folder clean-fid itself reads the Inception file from.

    `cleanfid.features.feature_extractor("torchscript_inception")` builds `InceptionV3W(path, download=True)`
    with `path = "/tmp"` (`"./"` on Windows) and downloads `inception-2015-12-05.pt` there when missing.
    """
    return "./" if platform.system() == "Windows" else "/tmp"


def inception_search_dirs(weights_dir: str | None = None) -> list[str]:
    """Where `find_inception_weights` looks, in order."""
    dirs = []
    if weights_dir:
        dirs.append(weights_dir)
    if os.environ.get(INCEPTION_ENV):
        dirs.append(os.environ[INCEPTION_ENV])
    dirs.append(cleanfid_inception_dir())
    return dirs


def check_inception_file(path: str) -> None:
    """Refuses (one line) a file whose SHA-256 is not clean-fid's published Inception's."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != INCEPTION_SHA256:
        raise ValueError(
            f"{path} is not clean-fid's Inception (SHA-256 {digest.hexdigest()[:16]}..., expected "
            f"{INCEPTION_SHA256[:16]}...); replace it with the file from {INCEPTION_URL}, or point ${INCEPTION_ENV} "
            f"or --extractor inception:DIR at a folder holding the right one"
        )


def find_inception_weights(weights_dir: str | None = None) -> str:
    """The folder holding clean-fid's `inception-2015-12-05.pt`, or a FileNotFoundError that says where to put it.

    Looks in `weights_dir`, then `$DERMDIFF_INCEPTION_DIR`, then clean-fid's own fixed folder (`/tmp` on
    Linux and macOS, the working directory on Windows). On a machine without network, download the file
    elsewhere from `INCEPTION_URL` (about 92 MB) and copy it to one of those folders, e.g.
    `/tmp/inception-2015-12-05.pt` (where clean-fid's own `compute_fid` also finds it).
    """
    dirs = inception_search_dirs(weights_dir)
    for folder in dirs:
        if os.path.isfile(os.path.join(folder, INCEPTION_FILENAME)):
            return folder
    raise FileNotFoundError(
        f"clean-fid's Inception weights {INCEPTION_FILENAME} were not found in {dirs}. dermdiff never downloads "
        f"them. On a machine with network fetch {INCEPTION_URL} and copy the file to "
        f"{os.path.join(cleanfid_inception_dir(), INCEPTION_FILENAME)} (clean-fid's fixed location), or to a folder "
        f"named by ${INCEPTION_ENV} or by --extractor inception:DIR. Offline alternatives: "
        f"--extractor torchvision:ARCH:WEIGHTS "
        f"or --extractor classifier:DIR (domain FD)."
    )


class InceptionFeatures(FeatureExtractor):
    """clean-fid's InceptionV3 (torchscript, pool3 features, 2048-d) in "clean" mode.

    Args:
        weights_dir (`str`, *optional*): folder with `inception-2015-12-05.pt`; see `find_inception_weights`.
    """

    resolution = 299

    def __init__(self, weights_dir: str | None = None):
        super().__init__()
        from cleanfid.inception_torchscript import InceptionV3W

        folder = find_inception_weights(weights_dir)
        self.weights_path = os.path.join(folder, INCEPTION_FILENAME)
        check_inception_file(self.weights_path)  # the name alone does not make it clean-fid's network
        # download=False: build from the local file only
        self.model = InceptionV3W(folder, download=False, resize_inside=False).eval()
        self.name = "inception_v3-cleanfid-pool3"

    def describe(self) -> dict:
        return {**super().describe(), "dim": 2048, "weights": self.weights_path, "mode": "clean"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ----------------------------------------------------------------------------------------------------------------
# torchvision backbones
# ----------------------------------------------------------------------------------------------------------------
_HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


def _strip_head(model: nn.Module) -> nn.Module:
    """Replaces the final Linear layer of the classification head by Identity (penultimate features)."""
    for attribute in _HEAD_ATTRIBUTES:
        head = getattr(model, attribute, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(model, attribute, nn.Identity())
            return model
        if isinstance(head, nn.Sequential):
            for index in range(len(head) - 1, -1, -1):
                if isinstance(head[index], nn.Linear):
                    head[index] = nn.Identity()
                    return model
    raise ValueError(f"cannot find the classification head of {type(model).__name__} (looked at {_HEAD_ATTRIBUTES})")


def _file_digest(path: str, limit: int = 1 << 20) -> str:
    """A short content hash (first MiB + size) so cached statistics change when the weights change."""
    digest = hashlib.sha1(str(os.path.getsize(path)).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(limit))
    return digest.hexdigest()[:10]


class TorchvisionFeatures(FeatureExtractor):
    """Penultimate-layer features of a torchvision classification backbone.

    Args:
        arch (`str`): a name from `torchvision.models.list_models()`, e.g. `"resnet50"`.
        weights (`str`, *optional*): local weights file (`.safetensors` or a state dict for `torch.load`).
        random_init (`bool`, defaults to `False`): use random weights; must be asked for explicitly, and the
            name says so, because such FIDs only rank models against each other on one machine.
        resolution (`int`, defaults to 224): input side.
        seed (`int`, defaults to 0): seed of the random weights.
    """

    def __init__(self, arch: str, weights: str | None = None, random_init: bool = False, resolution: int = 224,
                 seed: int = 0):
        super().__init__()
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models)
        if arch not in available:
            raise ValueError(f"unknown torchvision classification model {arch!r}; choose one of {available}")
        if (weights is None) == (not random_init):
            raise ValueError("TorchvisionFeatures needs exactly one of weights=PATH or random_init=True")
        if int(resolution) < 16:
            raise ValueError(f"resolution must be >= 16, got {resolution}")
        self.arch, self.resolution, self.random_init = arch, int(resolution), bool(random_init)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = torchvision.models.get_model(arch, weights=None)
        if weights is not None:
            from ..classifier import load_state_dict_file

            if not os.path.isfile(weights):
                raise FileNotFoundError(f"weights file {weights} does not exist")
            missing, _ = model.load_state_dict(load_state_dict_file(weights), strict=False)
            if missing:
                raise ValueError(f"weights file {weights} lacks {len(missing)} tensors of {arch}, e.g. {missing[:3]}")
            self.weights_path, tag = weights, _file_digest(weights)
        else:
            self.weights_path, tag = None, f"RANDOM-INIT-seed{seed}"
        self.model = _strip_head(model).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.name = f"torchvision-{arch}-{tag}"
        if random_init:
            self._check_not_degenerate(seed)

    @torch.no_grad()
    def _check_not_degenerate(self, seed: int) -> None:
        """Random weights make some architectures (MobileNet, EfficientNet) output ~1e-10 for every input,
        which would report FID ~0 for anything; refuse them instead of printing meaningless numbers."""
        generator = torch.Generator().manual_seed(seed)
        probe = self(torch.rand(4, 3, self.resolution, self.resolution, generator=generator) * 255.0)
        if float(probe.std(0).max()) < 1e-6 * (1.0 + float(probe.abs().max())):
            raise ValueError(
                f"randomly initialised {self.arch} gives (almost) the same features for every image; use a "
                f"weights file, or a random architecture that keeps its signal (resnet18, resnet50, convnext_tiny)"
            )

    def describe(self) -> dict:
        return {**super().describe(), "arch": self.arch, "weights": self.weights_path, "random_init": self.random_init}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std).flatten(1)


# ----------------------------------------------------------------------------------------------------------------
# domain FD: a dermdiff SkinClassifier
# ----------------------------------------------------------------------------------------------------------------
class ClassifierFeatures(FeatureExtractor):
    """"Domain FD": penultimate embeddings of a dermdiff `SkinClassifier` trained on real skin images.

    Inputs in [0, 255] are mapped to the classifier's [-1, 1] convention.

    Args:
        classifier (`SkinClassifier` or `str`): a model or a `save_pretrained` folder.
        resolution (`int`, *optional*): input side; defaults to the classifier's `sample_size`/`image_size`
            config value, else 224.
    """

    def __init__(self, classifier, resolution: int | None = None):
        super().__init__()
        path = None
        if isinstance(classifier, (str, os.PathLike)):
            from ..classifier import SkinClassifier

            path = os.fspath(classifier)
            if not os.path.isdir(path):
                raise FileNotFoundError(f"classifier folder {path} does not exist")
            classifier = SkinClassifier.from_pretrained(path)
        if not hasattr(classifier, "features"):
            raise ValueError(f"{type(classifier).__name__} has no .features(x) method")
        self.classifier = classifier.eval()
        config = getattr(classifier, "config", {}) or {}
        if resolution is None:
            resolution = next((config.get(key) for key in ("sample_size", "image_size", "resolution")
                               if isinstance(config.get(key), int)), 224)
        self.resolution, self.path = int(resolution), path
        arch = config.get("backbone") or config.get("arch") or type(classifier).__name__
        tag = hashlib.sha1(repr(sorted(dict(config).items())).encode()).hexdigest()[:8]
        self.name = f"domain-{arch}-{os.path.basename(os.path.normpath(path)) if path else 'model'}-{tag}"

    def describe(self) -> dict:
        return {**super().describe(), "classifier": self.path, "kind": "domain FD (classifier penultimate layer)"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x / 127.5 - 1.0).flatten(1)


# ----------------------------------------------------------------------------------------------------------------
# the command-line spelling
# ----------------------------------------------------------------------------------------------------------------
EXTRACTOR_SPECS = (
    "inception[:DIR]",
    "torchvision:ARCH:WEIGHTS_FILE",
    "torchvision:ARCH:random",
    "classifier:DIR",
)


def load_extractor(spec: "str | nn.Module | None" = "inception", resolution: int | None = None) -> nn.Module:
    """Builds an extractor from a spec string (`EXTRACTOR_SPECS`) or returns a module unchanged.

    Args:
        spec: `"inception"` / `"inception:DIR"`, `"torchvision:resnet50:/w/resnet50.safetensors"`,
            `"torchvision:resnet18:random"` (explicit random weights), or `"classifier:/models/clf"`.
        resolution (`int`, *optional*): input side for torchvision/classifier extractors.
    """
    if spec is None:
        spec = "inception"
    if isinstance(spec, nn.Module):
        return spec.eval()
    kind, _, rest = str(spec).partition(":")
    if kind == "inception":
        return InceptionFeatures(rest or None)
    if kind == "torchvision":
        arch, _, weights = rest.partition(":")
        if not arch or not weights:
            raise ValueError(f"torchvision extractor spec is torchvision:ARCH:WEIGHTS_FILE or :random, got {spec!r}")
        kwargs = {"resolution": resolution} if resolution else {}
        if weights == "random":
            return TorchvisionFeatures(arch, random_init=True, **kwargs)
        return TorchvisionFeatures(arch, weights=weights, **kwargs)
    if kind == "classifier":
        if not rest:
            raise ValueError(f"classifier extractor spec is classifier:DIR, got {spec!r}")
        return ClassifierFeatures(rest, resolution=resolution)
    raise ValueError(f"unknown extractor {spec!r}; allowed: {', '.join(EXTRACTOR_SPECS)}")


def images_to_batch(arrays: "list[np.ndarray]") -> torch.Tensor:
    """Stacks resized float HWC arrays in [0, 255] into the `(B, 3, R, R)` batch extractors take."""
    return torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False)).permute(0, 3, 1, 2).contiguous()
