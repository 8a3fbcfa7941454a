"""The labels ``segany build`` puts on an image: what it carries, for a deploy to check before it ships.

    io.segment-anywhere.device   cpu | cuda
    io.segment-anywhere.model    tiny | vit_b | vit_l | vit_h (absent: weights fetched at start)
    io.segment-anywhere.weights  none | checkpoint (cuda bake) | converted (cpu bake, OpenVINO)
    io.segment-anywhere.torch    1 | 0 (0: the torch-free image, serves only a converted model)
    io.segment-anywhere.version  the segment-anywhere package version

The image without weights gets device, weights=none and torch from its Dockerfile (LABEL lines
of deploy/image/Dockerfile.j2, from the build arguments) and the version as a build flag;
a bake (deploy/bake.py) inherits those and adds model and weights. ``deploy.registry.plan_push``
reads them back (``PushPlan.labels``).
"""

from __future__ import annotations

from importlib import metadata
from typing import Mapping

PREFIX = "io.segment-anywhere."
DEVICE = PREFIX + "device"
MODEL = PREFIX + "model"
WEIGHTS = PREFIX + "weights"
TORCH = PREFIX + "torch"
VERSION = PREFIX + "version"
LABELS = (DEVICE, MODEL, WEIGHTS, TORCH, VERSION)
WEIGHTS_VALUES = ("none", "checkpoint", "converted")


def package_version() -> str:
    try:
        return metadata.version("segment-anywhere")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def bake_labels(device: str, model: str) -> dict[str, str]:
    """What a bake adds over the image it is built on."""
    return {MODEL: model, WEIGHTS: "converted" if device == "cpu" else "checkpoint"}


def carried(labels: Mapping[str, str]) -> dict[str, str]:
    """Only our labels, from an image config's ``Labels`` (None or a dict)."""
    return {key: value for key, value in (labels or {}).items() if key in LABELS}


def baked_model(labels: Mapping[str, str]) -> str | None:
    """The model baked into the image, or None (weights fetched at start, or an image built without segany)."""
    if labels.get(WEIGHTS) in ("checkpoint", "converted"):
        return labels.get(MODEL) or None
    return None
