"""Calibration images for the int8 encoder (``SEGANY_PRECISION=int8``). Torch-free.

Post-training quantization measures the ranges of the encoder's activations on example
inputs, so the int8 encoder is only as good as its examples: a folder of photos like the ones
the server will see (``SEGANY_INT8_CALIBRATION``, or ``segany convert --int8-calibration``).
Its contents are part of the converted encoder's cache key: other photos, another encoder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

from .errors import ConfigError, DependencyMissing

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_IMAGES = 300  # NNCF's default subset size: more add conversion time, not accuracy
FEW_IMAGES = 16


def calibration_images(folder: Path) -> list[Path]:
    """The folder's JPEG, PNG and WebP files (sorted, at most MAX_IMAGES), or a ConfigError."""
    if not folder.is_dir():
        raise ConfigError(f"the int8 calibration folder {folder} does not exist; point SEGANY_INT8_CALIBRATION "
                          "(or --int8-calibration) at a folder of photos like the ones you will serve.")
    images = sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not images:
        raise ConfigError(f"the int8 calibration folder {folder} holds no .jpg, .png or .webp file; add {FEW_IMAGES} "
                          "or more photos like the ones you will serve.")
    if len(images) < FEW_IMAGES:
        logger.warning("calibrating int8 on %d images; %d-%d photos like the ones you serve give sturdier ranges",
                       len(images), FEW_IMAGES, MAX_IMAGES)
    return images[:MAX_IMAGES]


def calibration_digest(images: list[Path]) -> str:
    """Identifies a calibration set by its files' names and bytes."""
    digest = hashlib.sha256()
    for path in images:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def require_nncf() -> None:
    if importlib.util.find_spec("nncf") is None:
        raise DependencyMissing("SEGANY_PRECISION=int8 quantizes the encoder with NNCF, which is not installed: "
                                "pip install 'segment-anywhere[int8]' (or nncf), or set SEGANY_OPENVINO_DIR to an "
                                "encoder made by `segany convert --int8-calibration DIR` where it is.")
