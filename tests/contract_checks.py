"""Container-contract checks against a running server, shared by the entrypoint tests (a
process started as the image's entrypoint starts it) and the OCI tests (the image itself).

Each check takes the server's base URL and raises AssertionError on a broken contract.
The model is the tiny one; images are the photos in ../shared/images.
"""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
from PIL import Image

from tests.client import b64, error, ok
from tests.photos import photo_bytes, small_photo_png

POINT = {"points": [[400, 260]], "labels": [1]}
OPEN_THRESHOLDS = "pred_iou_thresh=0;stability_score_thresh=0;box_nms_thresh=1;points_per_side=4"


def wait_for_ping(url: str, timeout_s: float = 300) -> list[int]:
    """Poll GET /ping until 200; return the statuses seen (to show 503 came first)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{url}/ping", timeout=5).status_code
        except httpx.HTTPError:
            time.sleep(0.05)
            continue
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == 200:
            return seen
        assert status == 503, f"/ping answered {status} while loading"
        time.sleep(0.05)
    raise AssertionError(f"/ping never answered 200 within {timeout_s} s; saw {seen}")


def check_invocations_json(url: str) -> None:
    """A JSON /invocations with a task gives exactly what the endpoint itself gives."""
    with httpx.Client(base_url=url, timeout=300) as client:
        direct = ok(client.post("/segment", json={"image": b64(photo_bytes("dog")), **POINT}))
        via = ok(client.post("/invocations", json={"task": "segment", "image": b64(photo_bytes("dog")), **POINT}))
        assert via == direct
        embed = ok(client.post("/invocations", json={"task": "embed", "image_id": direct["image_id"], "dtype": "float16"}))
        assert embed["image_id"] == direct["image_id"] and embed["embedding"]["shape"] == [1, 256, 64, 64]
        error(client.post("/invocations", json={"task": "classify", "image_id": direct["image_id"]}), 400, "invalid_request")
        # the .npy form (float16: serverless returns at most 4 MiB, and float32 is 4 MiB plus the .npy header);
        # SageMaker returns no response header but CustomAttributes, which carries the other fields
        npy = client.post("/invocations", json={"task": "embed", "image_id": direct["image_id"], "dtype": "float16"},
                          headers={"accept": "application/x-npy"})
        assert npy.status_code == 200 and npy.headers["content-type"] == "application/x-npy", npy.text[:300]
        np.testing.assert_array_equal(np.load(io.BytesIO(npy.content)), embedding_of(embed).astype(np.float16))
        assert npy.headers["x-amzn-sagemaker-custom-attributes"] == (
            f"image_id={direct['image_id']};model=tiny;original_size=534,800;input_size=684,1024")
        wrong = error(client.post("/invocations", json={"task": "segment", "image_id": direct["image_id"], **POINT},
                                  headers={"accept": "application/x-npy"}), 406)
        assert "task=embed" in wrong["message"]


def check_invocations_raw_image(url: str) -> None:
    """A raw image body, as Async Inference and Batch Transform deliver S3 objects: the task
    and options come from X-Amzn-SageMaker-Custom-Attributes, segment-everything by default."""
    data = small_photo_png("dog", 256)
    with httpx.Client(base_url=url, timeout=300) as client:
        everything = ok(client.post("/invocations", content=data, headers={
            "content-type": "application/x-image", "x-amzn-sagemaker-custom-attributes": OPEN_THRESHOLDS}))
        assert len(everything["instances"]) > 0 and everything["output"] == "rle"
        direct = ok(client.post("/segment_everything", json={
            "image": b64(data), "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1, "points_per_side": 4}))
        assert everything == direct
        segment = ok(client.post("/invocations", content=photo_bytes("dog"), headers={
            "content-type": "image/jpeg", "x-amzn-sagemaker-custom-attributes": "task=segment;points=[[400,260]];labels=[1]"}))
        assert segment == ok(client.post("/segment", json={"image": b64(photo_bytes("dog")), **POINT}))
        png = client.post("/invocations", content=photo_bytes("dog"), headers={
            "content-type": "image/jpeg", "accept": "image/png",
            "x-amzn-sagemaker-custom-attributes": "task=segment;points=[[400,260]];labels=[1]"})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (800, 534)
        error(client.post("/invocations", content=photo_bytes("dog"), headers={
            "content-type": "image/jpeg", "x-amzn-sagemaker-custom-attributes": "task"}), 400)
        error(client.post("/invocations", content=photo_bytes("dog"), headers={
            "content-type": "image/jpeg", "accept": "text/csv"}), 406)


def check_health(url: str) -> None:
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    assert httpx.get(f"{url}/livez", timeout=10).status_code == 200


def check_segment(url: str) -> dict:
    body = ok(httpx.post(f"{url}/segment", json={"image": b64(photo_bytes("dog")), **POINT}, timeout=300))
    masks = body["results"][0]["masks"]
    assert len(masks) == 3 and all(0 < m["area"] < 800 * 534 for m in masks)
    return body


def embedding_of(body: dict) -> np.ndarray:
    from tests.client import array

    return array(body["embedding"])
