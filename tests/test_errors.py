"""Every bad input gets a 4xx with {"error": {"code", "message"}} naming the problem, and
the server keeps serving (checked at the end, and after each case)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.client import b64, error, ok
from tests.photos import photo_bytes

DOG = b64(photo_bytes("dog"))
POINT = {"points": [[400, 260]], "labels": [1]}


def encoded(fmt: str, width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format=fmt)
    return buffer.getvalue()


def png(width: int, height: int) -> bytes:
    return encoded("PNG", width, height)


# (path, json body, status, code, words the message must contain, field)
JSON_CASES = {
    "not an image": ("/segment", {"image": b64(b"GIF89a? no, just text"), **POINT}, 400, "invalid_image", "not an image", "image"),
    "truncated jpeg": ("/embed", {"image": b64(photo_bytes("dog")[:40_000])}, 400, "invalid_image", "truncated", "image"),
    "zero bytes": ("/embed", {"image": ""}, 400, "invalid_image", "empty", "image"),
    "bmp": ("/embed", {"image": b64(encoded("BMP"))}, 400, "invalid_image", "BMP", "image"),
    "decompression bomb": ("/embed", {"image": b64(png(2500, 2500))}, 413, "image_too_large", "SEGANY_MAX_IMAGE_PIXELS", "image"),
    "too wide": ("/embed", {"image": b64(png(4500, 10))}, 413, "image_too_large", "SEGANY_MAX_IMAGE_SIDE", "image"),
    "bad base64": ("/embed", {"image": "%%% not base64 %%%"}, 400, "invalid_request", "base64", "image"),
    "point outside": ("/segment", {"image": DOG, "points": [[900, 10]], "labels": [1]}, 400, "invalid_prompt", "outside the 800x534 image", "points[0]"),
    "negative point": ("/segment", {"image": DOG, "points": [[10, 10], [5, -1]], "labels": [1, 0]}, 400, "invalid_prompt", "outside", "points[1]"),
    "box outside": ("/segment", {"image": DOG, "boxes": [[0, 0, 801, 100]]}, 400, "invalid_prompt", "outside", "boxes[0]"),
    "box inverted": ("/segment", {"image": DOG, "boxes": [[300, 10, 100, 50]]}, 400, "invalid_prompt", "x0 <= x1", "boxes[0]"),
    "box with 3 numbers": ("/segment", {"image": DOG, "boxes": [[1, 2, 3]]}, 400, "invalid_request", "boxes", "boxes.0.3"),
    "point with 3 numbers": ("/segment", {"image": DOG, "points": [[1, 2, 3]], "labels": [1]}, 400, "invalid_request", "points", "points.0"),
    "labels mismatch": ("/segment", {"image": DOG, "points": [[1, 2], [3, 4]], "labels": [1]}, 400, "invalid_request", "one label per point", None),
    "labels missing": ("/segment", {"image": DOG, "points": [[1, 2]]}, 400, "invalid_request", "labels", None),
    "label 2": ("/segment", {"image": DOG, "points": [[1, 2]], "labels": [2]}, 400, "invalid_request", "labels", "labels.0"),
    "no prompt": ("/segment", {"image": DOG}, 400, "invalid_request", "no prompt", None),
    "too many points": ("/segment", {"image": DOG, "points": [[1, 1]] * 17, "labels": [1] * 17}, 400, "invalid_prompt", "SEGANY_MAX_POINTS", "points"),
    "too many boxes": ("/segment", {"image": DOG, "boxes": [[1, 1, 5, 5]] * 9}, 400, "invalid_prompt", "SEGANY_MAX_BOXES", "boxes"),
    "unknown output": ("/segment", {"image": DOG, **POINT, "output": "jpeg"}, 400, "invalid_request", "rle", "output"),
    "mask_input shape": ("/segment", {"image": DOG, **POINT, "mask_input": [[0.0] * 4] * 4}, 400, "invalid_request", "256x256", None),
    "unknown image_id": ("/segment", {"image_id": "0" * 64, **POINT}, 404, "image_not_found", "send the image again", "image_id"),
    "malformed image_id": ("/segment", {"image_id": "abc", **POINT}, 400, "invalid_request", "64", "image_id"),
    "two image sources": ("/embed", {"image": DOG, "image_id": "0" * 64}, 400, "invalid_request", "exactly one", None),
    "no image source": ("/embed", {}, 400, "invalid_request", "exactly one", None),
    "unknown field": ("/segment", {"image": DOG, **POINT, "point": [[1, 2]]}, 400, "invalid_request", "point", "point"),
    "ftp url": ("/embed", {"image_url": "ftp://example.com/a.jpg"}, 403, "url_not_allowed", "SEGANY_URL_SCHEMES", "image_url"),
    "file url": ("/embed", {"image_url": "file:///etc/passwd"}, 403, "url_not_allowed", "scheme", "image_url"),
    "metadata service": ("/embed", {"image_url": "http://169.254.169.254/latest/meta-data/"}, 403, "url_not_allowed", "169.254.169.254", "image_url"),
    "private address": ("/embed", {"image_url": "http://10.20.30.40/x.jpg"}, 403, "url_not_allowed", "private", "image_url"),
    "localhost name": ("/embed", {"image_url": "http://localhost:1/x.jpg"}, 403, "url_not_allowed", "SEGANY_URL_ALLOW_HOSTS", "image_url"),
    "everything grid too big": ("/segment_everything", {"image": DOG, "points_per_side": 17}, 400, "invalid_prompt", "SEGANY_MAX_POINTS_PER_SIDE", "points_per_side"),
    "everything bad nms": ("/segment_everything", {"image": DOG, "box_nms_thresh": 3}, 400, "invalid_request", "box_nms_thresh", "box_nms_thresh"),
    "everything crop layer without points": ("/segment_everything", {"image": DOG, "points_per_side": 2, "crop_n_layers": 2,
                                             "crop_n_points_downscale_factor": 2}, 400, "invalid_request", "crop layer 2", None),
}


@pytest.mark.parametrize("case", JSON_CASES)
def test_bad_json_requests(api, case):
    path, body, status, code, words, field = JSON_CASES[case]
    err = error(api.post(path, json=body), status, code)
    assert words.lower() in err["message"].lower(), err
    if field is not None:
        assert err.get("field") == field, err


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(api, token):
    raw = '{"image": "%s", "points": [[%s, 10]], "labels": [1]}' % (DOG, token)
    err = error(api.post("/segment", content=raw, headers={"content-type": "application/json"}), 400, "invalid_request")
    assert err["field"].startswith("points")


def test_malformed_json(api):
    err = error(api.post("/segment", content=b'{"image": ', headers={"content-type": "application/json"}), 400)
    assert "json" in err["message"].lower()


@pytest.mark.parametrize("form", ["json", "raw", "multipart"])
def test_body_over_the_cap_is_413(api, form):
    big = b"\xff\xd8" + b"\0" * (3 * 2**20 + 10)
    if form == "json":
        response = api.post("/embed", json={"image": b64(big)})
    elif form == "raw":
        response = api.post("/embed", content=big, headers={"content-type": "image/jpeg"})
    else:
        response = api.post("/embed", files={"image": ("big.jpg", big, "image/jpeg")})
    assert "SEGANY_MAX_BODY_MB" in error(response, 413, "payload_too_large")["message"]


def test_body_over_the_cap_without_content_length_is_413(api):
    def chunks():
        for _ in range(40):
            yield b"\0" * 100_000

    response = api.post("/embed", content=chunks(), headers={"content-type": "image/png"})
    error(response, 413, "payload_too_large")


def test_unsupported_content_type(api):
    err = error(api.post("/segment", content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported_media_type")
    assert "multipart/form-data" in err["message"]


def test_two_files_in_one_upload(api):
    files = [("image", ("a.jpg", photo_bytes("dog"), "image/jpeg")), ("other", ("b.jpg", photo_bytes("dog"), "image/jpeg"))]
    error(api.post("/embed", files=files), 400, "invalid_request")


def test_url_larger_than_the_cap(api, local_http):
    url = local_http.add("/big.jpg", b"\0" * (3 * 2**20 + 1), headers={"content-type": "image/jpeg"})
    assert "SEGANY_MAX_BODY_MB" in error(api.post("/embed", json={"image_url": url}), 413, "payload_too_large")["message"]


def test_url_slower_than_the_timeout(api, local_http):
    url = local_http.add("/slow.jpg", photo_bytes("dog"), delay_s=5)
    err = error(api.post("/embed", json={"image_url": url}), 400, "url_fetch_failed")
    assert "SEGANY_URL_TIMEOUT_S" in err["message"]


def test_url_answering_404(api, local_http):
    url = local_http.add("/missing.jpg", b"nope", status=404)
    assert "404" in error(api.post("/embed", json={"image_url": url}), 400, "url_fetch_failed")["message"]


def test_redirect_to_the_metadata_service_is_refused(api, local_http):
    url = local_http.add("/jump", redirect_to="http://169.254.169.254/latest/meta-data/iam/")
    error(api.post("/embed", json={"image_url": url}), 403, "url_not_allowed")


def test_missing_s3_object(api, moto_s3):
    moto_s3.put("segany-images", "other.jpg", b"x")
    err = error(api.post("/embed", json={"image_url": "s3://segany-images/missing.jpg"}), 400, "url_fetch_failed")
    assert "missing.jpg" in err["message"]


def test_wrong_method_and_unknown_route_are_json(api):
    error(api.get("/segment"), 405)
    error(api.post("/nowhere", json={}), 404)


def test_server_still_serves_after_all_of_that(api):
    assert api.get("/readyz").status_code == 200
    body = ok(api.post("/segment", json={"image": DOG, **POINT}))
    assert len(body["results"][0]["masks"]) == 3
