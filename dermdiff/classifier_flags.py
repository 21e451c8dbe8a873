"""The backbone flags of every script that trains a classifier (`--backbone`, `--backbone_config`,
`--pretrained`), defined and checked once so they accept the same names and fail the same way."""

from __future__ import annotations

import argparse

from .classifier import LIST_BACKBONES_HINT, TRANSFORMERS_BACKBONE, backbone_config_from_text, check_backbone


def add_backbone_arguments(group) -> None:
    """Adds `--backbone`, `--backbone_config` and `--pretrained` to an argparse parser or group."""
    group.add_argument(
        "--backbone",
        default="resnet18",
        help="Any torchvision classification model name (" + LIST_BACKBONES_HINT.replace("%", "%%") + "), "
        "'transformers' with --backbone_config, or a transformers image classifier's Hub id or local folder.",
    )
    group.add_argument(
        "--backbone_config",
        default=None,
        help="transformers only: a JSON file, inline JSON, or a model_type name (e.g. vit).",
    )
    group.add_argument(
        "--pretrained",
        default=None,
        help="Initial weights: a local .safetensors/.pth file (torchvision), 'imagenet' or a weights name "
        "such as IMAGENET1K_V2 (read from the torch hub cache, $TORCH_HOME/hub/checkpoints, downloaded only "
        "with network), or a transformers checkpoint folder / Hub id.",
    )


def check_backbone_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks the backbone flags (one-line argparse errors) and decodes `--backbone_config` in place."""
    try:
        check_backbone(args.backbone)
    except ValueError as error:
        parser.error(f"--backbone: {error}")
    try:
        args.backbone_config = backbone_config_from_text(args.backbone_config)
    except ValueError as error:
        parser.error(f"--{error}")
    if args.backbone_config is not None and args.backbone != TRANSFORMERS_BACKBONE:
        parser.error("--backbone_config needs --backbone transformers")
