"""Image decoding: formats, modes, EXIF orientation, caps and corrupt data."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from runners.errors import ImageTooLarge, InputError, InvalidImage
from runners.inputs import ImageLimits, check_image_id, decode_base64, decode_image, image_id_of
from tests.photos import PHOTOS, photo_bytes, photo_rgb

LIMITS = ImageLimits(max_pixels=20_000_000, max_side=8000)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("name", PHOTOS)
def test_jpeg_decodes_to_the_same_pixels_as_pillow(name):
    rgb = decode_image(photo_bytes(name), LIMITS)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    np.testing.assert_array_equal(rgb, photo_rgb(name))


def test_png_and_lossless_webp_are_exact():
    rgb = photo_rgb("dog")
    image = Image.fromarray(rgb)
    np.testing.assert_array_equal(decode_image(encode(image, "PNG"), LIMITS), rgb)
    np.testing.assert_array_equal(decode_image(encode(image, "WEBP", lossless=True), LIMITS), rgb)


def test_grayscale_rgba_palette_and_16_bit_become_rgb():
    rgb = photo_rgb("groceries")
    gray = Image.fromarray(rgb).convert("L")
    out = decode_image(encode(gray, "PNG"), LIMITS)
    assert out.shape == rgb.shape
    np.testing.assert_array_equal(out[:, :, 0], np.asarray(gray))
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])

    rgba = Image.fromarray(rgb).convert("RGBA")
    np.testing.assert_array_equal(decode_image(encode(rgba, "PNG"), LIMITS), rgb)

    palette = Image.fromarray(rgb).convert("P")
    np.testing.assert_array_equal(decode_image(encode(palette, "PNG"), LIMITS), np.asarray(palette.convert("RGB")))

    wide = (np.asarray(gray, dtype=np.uint16) << 8) | 0x7F  # 16-bit: the high byte is the 8-bit value
    out16 = decode_image(encode(Image.fromarray(wide), "PNG"), LIMITS)
    np.testing.assert_array_equal(out16[:, :, 1], np.asarray(gray))


def test_exif_orientation_is_applied():
    rgb = photo_rgb("dog")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the viewer must turn it 90 degrees clockwise
    data = encode(Image.fromarray(rgb), "JPEG", exif=exif, quality=95)
    out = decode_image(data, LIMITS)
    h, w = rgb.shape[:2]
    assert out.shape == (w, h, 3)
    plain = decode_image(encode(Image.fromarray(rgb), "JPEG", quality=95), LIMITS)
    np.testing.assert_array_equal(out, np.rot90(plain, k=-1))


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "empty"),
        (b"hello, this is not an image", "not an image"),
        (photo_bytes("dog")[: len(photo_bytes("dog")) // 2], "truncated"),
    ],
)
def test_bad_bytes_are_invalid_image(data, fragment):
    with pytest.raises(InvalidImage) as caught:
        decode_image(data, LIMITS)
    assert fragment in caught.value.message and caught.value.field == "image"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_refused_by_name(fmt):
    data = encode(Image.fromarray(photo_rgb("dog")), fmt)
    with pytest.raises(InvalidImage) as caught:
        decode_image(data, LIMITS)
    assert fmt in caught.value.message and "JPEG, PNG or WebP" in caught.value.message


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("L", (6000, 6000)), "PNG")  # 36 MP in ~40 kB
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(bomb, ImageLimits(max_pixels=10_000_000, max_side=100_000))
    assert "SEGANY_MAX_IMAGE_PIXELS" in caught.value.message and caught.value.status == 413


def test_side_cap():
    data = encode(Image.new("RGB", (3000, 10)), "PNG")
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(data, ImageLimits(max_pixels=10**9, max_side=2000))
    assert "SEGANY_MAX_IMAGE_SIDE" in caught.value.message


def test_base64_forms():
    data = photo_bytes("dog")
    text = base64.b64encode(data).decode()
    assert decode_base64(text) == data
    assert decode_base64("data:image/jpeg;base64," + text) == data
    assert decode_base64(base64.urlsafe_b64encode(data).decode().rstrip("=")) == data
    assert decode_base64(text[:50] + "\n" + text[50:]) == data
    with pytest.raises(InputError) as caught:
        decode_base64("not base64 at all!!")
    assert caught.value.field == "image" and "base64" in caught.value.message


def test_image_ids():
    data = photo_bytes("truck")
    image_id = image_id_of(data)
    assert check_image_id(image_id) == image_id and len(image_id) == 64
    assert image_id != image_id_of(photo_bytes("dog"))
    for bad in ("", "xyz", image_id.upper(), image_id[:-1]):
        with pytest.raises(InputError):
            check_image_id(bad)
