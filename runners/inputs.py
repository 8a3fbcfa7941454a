"""Image bytes in, RGB array out: base64, format and size checks, EXIF orientation, modes.

Accepted: JPEG, PNG and WebP, in any of the modes Pillow opens them in (grayscale,
palette, RGBA, CMYK, 16-bit grayscale). Anything else, and anything truncated, empty or
bigger than the configured caps, is an :class:`InputError` naming the problem.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageTooLarge, InputError, InvalidImage
from .settings import Settings

ACCEPTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP"}
_IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_side: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "ImageLimits":
        return cls(settings.max_image_pixels, settings.max_image_side)


def image_id_of(data: bytes) -> str:
    """The id of an image: sha256 hex of its bytes as sent."""
    return hashlib.sha256(data).hexdigest()


def check_image_id(image_id: str) -> str:
    if not _IMAGE_ID.match(image_id):
        raise InputError(
            "image_id must be the 64 lowercase hex characters returned as image_id by an earlier response.",
            field="image_id",
        )
    return image_id


def decode_base64(text: str, *, field: str = "image") -> bytes:
    """Standard or URL-safe base64, with or without a ``data:image/...;base64,`` prefix."""
    body = _DATA_URL.sub("", text.strip(), count=1)
    try:  # the usual case: plain standard base64 (scanning an upload for whitespace took 10 ms)
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        body = _WHITESPACE.sub("", body)
    try:
        if "-" in body or "_" in body:
            return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(
            f"{field} is not valid base64; send the file's bytes base64-encoded, or upload it as multipart.",
            field=field,
        ) from None


def decode_image(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode ``data`` to an (H, W, 3) uint8 RGB array, upright per its EXIF orientation."""
    if not data:
        raise InvalidImage("the image is empty (0 bytes); send a JPEG, PNG or WebP file.", field="image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(limits) from None
    except UnidentifiedImageError:
        raise InvalidImage("the data is not an image Pillow can read; send a JPEG, PNG or WebP file.", field="image") from None
    if image.format not in ACCEPTED_FORMATS:
        raise InvalidImage(f"{image.format} images are not accepted; send JPEG, PNG or WebP.", field="image")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise _too_many_pixels(limits, width, height)
    if max(width, height) > limits.max_side:
        raise ImageTooLarge(
            f"the image is {width}x{height}; the largest side allowed is {limits.max_side} pixels "
            "(SEGANY_MAX_IMAGE_SIDE). Downscale it: SAM works at 1024 pixels on the long side.",
            field="image",
        )
    if width == 0 or height == 0:
        raise InvalidImage("the image has no pixels.", field="image")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"the image data is truncated or corrupt ({exc}); send the complete file.", field="image") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale (PNG): keep the high byte.
        gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGBA").convert("RGB") if image.mode in ("P", "PA") else image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def _too_many_pixels(limits: ImageLimits, width: int | None = None, height: int | None = None) -> ImageTooLarge:
    size = f"{width}x{height} = {width * height} pixels" if width and height else "too many pixels"
    return ImageTooLarge(
        f"the image has {size}; the cap is {limits.max_pixels} (SEGANY_MAX_IMAGE_PIXELS). "
        "Downscale it before sending: SAM works at 1024 pixels on the long side.",
        field="image",
    )
