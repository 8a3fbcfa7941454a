"""Every way of sending an image reaches the same embedding: JSON base64, data URL,
multipart upload, raw body, image_id, and image_url over http, s3:// and gs://."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.client import array, b64, error, ok
from tests.photos import photo_bytes

PROMPT = {"points": [[400, 260]], "labels": [1]}


@pytest.fixture(scope="module")
def expected(api):
    """The /embed and /segment answers for dog.jpg sent as base64 JSON."""
    data = photo_bytes("dog")
    return (
        ok(api.post("/embed", json={"image": b64(data)})),
        ok(api.post("/segment", json={"image": b64(data), **PROMPT})),
    )


def same_answer(body: dict, expected_segment: dict) -> None:
    assert body["image_id"] == expected_segment["image_id"]
    assert body["results"] == expected_segment["results"]


def test_embed_returns_the_embedding_and_sizes(expected):
    embed, segment = expected
    assert embed["image_id"] == segment["image_id"]
    assert embed["original_size"] == [534, 800] and embed["input_size"] == [684, 1024]
    assert embed["model"] == "tiny" and embed["embedding"]["shape"] == [1, 256, 64, 64]
    values = array(embed["embedding"])
    assert values.dtype == np.float32 and np.isfinite(values).all() and values.std() > 0


def test_embed_float16(api, expected):
    body = ok(api.post("/embed", json={"image": b64(photo_bytes("dog")), "dtype": "float16"}))
    assert body["embedding"]["dtype"] == "float16"
    np.testing.assert_allclose(array(body["embedding"]), array(expected[0]["embedding"]), rtol=1e-3, atol=1e-3)


def test_embed_as_npy(api, expected):
    """Accept: application/x-npy gives the same values as the JSON form, as a .npy file, with
    the JSON form's other fields in headers; errors stay JSON."""
    embed = expected[0]
    for dtype in ("float32", "float16"):
        response = api.post("/embed", json={"image": b64(photo_bytes("dog")), "dtype": dtype},
                            headers={"accept": "application/x-npy"})
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-npy"
        values = np.load(io.BytesIO(response.content), allow_pickle=False)
        assert values.dtype == np.dtype(dtype) and values.shape == (1, 256, 64, 64)
        np.testing.assert_array_equal(values, array(embed["embedding"]).astype(dtype))
        assert response.headers["x-segany-image-id"] == embed["image_id"]
        assert response.headers["x-segany-model"] == "tiny"
        assert response.headers["x-segany-original-size"] == "534,800"
        assert response.headers["x-segany-input-size"] == "684,1024"
    raw = api.post("/embed", content=photo_bytes("dog"), headers={"content-type": "image/jpeg", "accept": "application/x-npy"})
    np.testing.assert_array_equal(np.load(io.BytesIO(raw.content)), array(embed["embedding"]))
    assert len(raw.content) < 4 * 2**20 + 256  # the raw floats and a short header, where the JSON is 5.6 MB
    missing = error(api.post("/embed", json={"image_id": "0" * 64}, headers={"accept": "application/x-npy"}), 404, "image_not_found")
    assert "send the image again" in missing["message"]


def test_data_url(api, expected):
    body = ok(api.post("/segment", json={"image": "data:image/jpeg;base64," + b64(photo_bytes("dog")), **PROMPT}))
    same_answer(body, expected[1])


def test_multipart_upload_with_form_fields(api, expected):
    files = {"image": ("dog.jpg", photo_bytes("dog"), "image/jpeg")}
    data = {"points": "[[400, 260]]", "labels": "[1]", "output": "rle"}
    same_answer(ok(api.post("/segment", files=files, data=data)), expected[1])


def test_raw_image_body_with_query_parameters(api, expected):
    body = ok(api.post("/segment", params={"points": "[[400,260]]", "labels": "[1]"}, content=photo_bytes("dog"),
                       headers={"content-type": "image/jpeg"}))
    same_answer(body, expected[1])
    octet = ok(api.post("/embed", content=photo_bytes("dog"), headers={"content-type": "application/octet-stream"}))
    assert octet["image_id"] == expected[0]["image_id"]


def test_image_id(api, expected):
    same_answer(ok(api.post("/segment", json={"image_id": expected[1]["image_id"], **PROMPT})), expected[1])


def test_image_url_over_http(api, expected, local_http):
    url = local_http.add("/photos/dog.jpg", photo_bytes("dog"), headers={"content-type": "image/jpeg"})
    same_answer(ok(api.post("/segment", json={"image_url": url, **PROMPT})), expected[1])
    assert local_http.hits("/photos/dog.jpg") == 1


def test_image_url_s3(api, expected, moto_s3):
    uri = moto_s3.put("segany-images", "in/dog.jpg", photo_bytes("dog"))
    same_answer(ok(api.post("/segment", json={"image_url": uri, **PROMPT})), expected[1])


def test_image_url_gcs(api, expected, fake_gcs):
    fake_gcs.put("segany-images", "in/dog.jpg", photo_bytes("dog"))
    body = ok(api.post("/segment", json={"image_url": "gs://segany-images/in/dog.jpg", **PROMPT}))
    same_answer(body, expected[1])


def test_exif_rotated_photo_is_segmented_upright(api, reference_model):
    from segment_anything import SamPredictor

    from runners.outputs import decode_rle

    exif = Image.Exif()
    exif[0x0112] = 8  # the viewer turns it 90 degrees counter-clockwise
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo_bytes("dog"))).save(buffer, format="JPEG", exif=exif, quality=92)
    upright = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).transpose(Image.Transpose.ROTATE_90).convert("RGB"))
    body = ok(api.post("/segment", json={"image": b64(buffer.getvalue()), "points": [[260, 400]], "labels": [1]}))
    assert (body["height"], body["width"]) == upright.shape[:2] == (800, 534)
    predictor = SamPredictor(reference_model)
    predictor.set_image(upright)
    masks, _, _ = predictor.predict(point_coords=np.array([[260, 400]]), point_labels=np.array([1]))
    np.testing.assert_array_equal(decode_rle(body["results"][0]["masks"][0]["segmentation"]), masks[0])


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_rgba_and_16_bit_uploads(api, mode):
    rgb = Image.open(io.BytesIO(photo_bytes("groceries"))).convert("RGB")
    image = rgb.convert("RGBA") if mode == "RGBA" else rgb.convert("L")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image, dtype=np.uint16) << 8)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    body = ok(api.post("/segment", files={"image": ("x.png", buffer.getvalue(), "image/png")},
                       data={"points": "[[200, 300]]", "labels": "[1]"}))
    assert (body["height"], body["width"]) == (534, 800) and len(body["results"][0]["masks"]) == 3


def test_webp(api):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo_bytes("dog"))).save(buffer, format="WEBP", quality=80)
    body = ok(api.post("/embed", content=buffer.getvalue(), headers={"content-type": "image/webp"}))
    assert body["original_size"] == [534, 800]
