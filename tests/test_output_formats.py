"""Mask formats on the wire: rle, png, polygon, overlay (JSON and Accept: image/png)."""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.client import b64, ok, result_masks
from tests.photos import photo_bytes, photo_rgb, small_photo_png, small_photo_rgb

PROMPT = {"points": [[400, 260]], "labels": [1]}
EVERYTHING = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def reference_masks(api) -> tuple[str, np.ndarray]:
    body = ok(api.post("/segment", json={"image": b64(photo_bytes("dog")), **PROMPT}))
    return body["image_id"], result_masks(body["results"][0])


def test_png_masks_are_the_rle_masks(api, reference_masks):
    image_id, masks = reference_masks
    body = ok(api.post("/segment", json={"image_id": image_id, **PROMPT, "output": "png"}))
    for mask, expected in zip(body["results"][0]["masks"], masks):
        picture = Image.open(io.BytesIO(base64.b64decode(mask["segmentation"])))
        assert picture.mode == "1" and picture.size == (800, 534)
        np.testing.assert_array_equal(np.asarray(picture), expected)


def test_polygons_redraw_the_masks(api, reference_masks):
    image_id, masks = reference_masks
    body = ok(api.post("/segment", json={"image_id": image_id, **PROMPT, "output": "polygon"}))
    for mask, expected in zip(body["results"][0]["masks"], masks):
        canvas = np.zeros(expected.shape, np.uint8)
        for region in mask["segmentation"]:
            region_canvas = np.zeros_like(canvas)
            cv2.fillPoly(region_canvas, [np.array(region["exterior"], np.int32)], 1)
            for hole in region["holes"]:
                cv2.fillPoly(region_canvas, [np.array(hole, np.int32)], 0)
            canvas |= region_canvas
        union = np.logical_or(canvas, expected).sum()
        # random-init masks are speckled, and polygons trace pixel centres: loose but real agreement
        assert np.logical_and(canvas, expected).sum() / union > 0.6
        assert mask["area"] == int(expected.sum())


def test_overlay_json_and_png(api, reference_masks):
    image_id, masks = reference_masks
    body = ok(api.post("/segment", json={"image_id": image_id, **PROMPT, "output": "overlay"}))
    assert all(mask["segmentation"] is None for mask in body["results"][0]["masks"])
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["overlay"]))).convert("RGB"))
    rgb = photo_rgb("dog")
    assert picture.shape == rgb.shape
    best = masks[int(np.argmax([m["score"] for m in body["results"][0]["masks"]]))]
    changed = np.any(picture != rgb, axis=2)
    assert changed[best].mean() > 0.9  # tinted inside the best mask

    raw = api.post("/segment", json={"image_id": image_id, **PROMPT, "output": "overlay"}, headers={"accept": "image/png"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert raw.content == base64.b64decode(body["overlay"])


def test_everything_formats_agree(api):
    image = b64(small_photo_png("groceries", 300))
    rle = ok(api.post("/segment_everything", json={"image": image, **EVERYTHING}))
    assert len(rle["instances"]) > 0
    from runners.outputs import decode_rle

    masks = [decode_rle(inst["segmentation"]) for inst in rle["instances"]]
    as_png = ok(api.post("/segment_everything", json={"image_id": rle["image_id"], **EVERYTHING, "output": "png"}))
    for inst, mask in zip(as_png["instances"], masks):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(inst["segmentation"])))), mask)
    polygons = ok(api.post("/segment_everything", json={"image_id": rle["image_id"], **EVERYTHING, "output": "polygon"}))
    assert [len(i["segmentation"]) > 0 for i in polygons["instances"]] == [m.any() for m in masks]
    overlay = api.post("/segment_everything", json={"image_id": rle["image_id"], **EVERYTHING, "output": "overlay"},
                       headers={"accept": "image/png"})
    assert overlay.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(overlay.content)).convert("RGB"))
    assert picture.shape == small_photo_rgb("groceries", 300).shape
    assert np.any(picture != small_photo_rgb("groceries", 300))
