"""The real photos in ../shared/images, as bytes and as RGB arrays decoded by Pillow."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "images"
PHOTOS = ("dog", "groceries", "truck")


@functools.cache
def photo_bytes(name: str) -> bytes:
    return (IMAGES / f"{name}.jpg").read_bytes()


def photo_rgb(name: str) -> np.ndarray:
    """Decoded the way a SAM user would: Pillow, EXIF-upright, RGB."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(photo_bytes(name))))
    return np.asarray(image.convert("RGB"))


@functools.cache
def small_photo_png(name: str, long_side: int = 400) -> bytes:
    """The photo downscaled to ``long_side`` pixels, as PNG (lossless: decodes exactly)."""
    image = Image.open(io.BytesIO(photo_bytes(name))).convert("RGB")
    image.thumbnail((long_side, long_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def small_photo_rgb(name: str, long_side: int = 400) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(small_photo_png(name, long_side))).convert("RGB"))
