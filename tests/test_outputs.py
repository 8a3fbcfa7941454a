"""runners.outputs: every output format round-trips, on masks cut from real photos."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from segment_anything.utils.amg import (
    batched_mask_to_box,
    box_xyxy_to_xywh,
    coco_encode_rle,
    mask_to_rle_pytorch,
)

from runners.errors import InputError
from runners.outputs import (
    OUTPUT_FORMATS,
    PALETTE,
    check_output_format,
    decode_rle,
    encode_masks,
    mask_areas,
    masks_to_bboxes_xywh,
    render_overlay,
    uncompressed_rle_to_coco,
)

IMAGES = Path("/work/shared/images")


def load_rgb(name: str) -> np.ndarray:
    with Image.open(IMAGES / name) as im:
        return np.asarray(im.convert("RGB"))


def blob(h: int, w: int, cx: int, cy: int, ax: int, ay: int, hole: int = 0) -> np.ndarray:
    """Filled ellipse centred (cx, cy) with semi-axes (ax, ay); optional round hole of radius ``hole``."""
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (cx, cy), (ax, ay), 0, 0, 360, 1, -1)
    if hole:
        cv2.circle(m, (cx, cy), hole, 0, -1)
    return m.astype(bool)


def photo_masks(image: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: thresholds of the photo's channels plus hand-made edge cases."""
    h, w, _ = image.shape
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    single = np.zeros((h, w), bool)
    single[h // 3, w // 5] = True
    corner = np.zeros((h, w), bool)
    corner[: h // 4, w - w // 5 :] = True  # touches the top and right borders
    line = np.zeros((h, w), bool)
    line[h // 2, 10:60] = True
    return np.stack(
        [
            gray > 128,
            image[..., 0] > image[..., 2],  # redder than blue
            image[..., 1] < 60,
            blob(h, w, w // 2, h // 2, w // 4, h // 4, hole=min(h, w) // 12),
            np.zeros((h, w), bool),
            np.ones((h, w), bool),
            single,
            corner,
            line,
        ]
    )


@pytest.fixture(scope="module", params=["dog.jpg", "groceries.jpg", "truck.jpg"])
def photo(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    image = load_rgb(request.param)
    return image, photo_masks(image)


def rasterise(regions: list[dict], h: int, w: int) -> np.ndarray:
    """Each region on its own (exterior filled, holes cleared), then OR-ed: an island inside a hole survives."""
    out = np.zeros((h, w), bool)
    for region in regions:
        canvas = np.zeros((h, w), np.uint8)
        cv2.fillPoly(canvas, [np.asarray(region["exterior"], np.int32)], 1)
        for hole in region["holes"]:
            cv2.fillPoly(canvas, [np.asarray(hole, np.int32)], 0)
        out |= canvas.astype(bool)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# --- format names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", OUTPUT_FORMATS)
def test_known_formats_pass(name: str) -> None:
    assert check_output_format(name) == name


@pytest.mark.parametrize("name", ["mask", "RLE", "", "png ", None, 3])
def test_unknown_format_is_input_error(name: object) -> None:
    with pytest.raises(InputError) as info:
        check_output_format(name)  # type: ignore[arg-type]
    err = info.value
    assert err.field == "output"
    assert err.status == 400
    for allowed in OUTPUT_FORMATS:
        assert allowed in err.message
    assert err.to_body()["error"]["field"] == "output"


def test_encode_masks_rejects_unknown_format() -> None:
    with pytest.raises(InputError) as info:
        encode_masks(np.zeros((1, 4, 4), bool), "jpeg")
    assert info.value.field == "output"


# --- rle ------------------------------------------------------------------------------------


def test_rle_round_trips_bit_exactly(photo: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = photo
    n, h, w = masks.shape
    rles = encode_masks(masks, "rle")
    assert len(rles) == n
    json.dumps(rles)  # serialisable as-is
    for mask, rle in zip(masks, rles):
        assert rle["size"] == [h, w]
        assert isinstance(rle["counts"], str)
        restored = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert restored.dtype == np.uint8 and restored.shape == (h, w)
        np.testing.assert_array_equal(restored.astype(bool), mask)
        np.testing.assert_array_equal(decode_rle(rle), mask)
        # identical to pycocotools encoding this one mask on its own
        alone = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle["counts"] == alone["counts"].decode()


def test_rle_accepts_uint8_and_non_contiguous() -> None:
    masks = photo_masks(load_rgb("dog.jpg"))
    as_bool = encode_masks(masks, "rle")
    assert encode_masks(masks.astype(np.uint8), "rle") == as_bool
    flipped = masks[:, ::-1, :]  # a strided view
    for mask, rle in zip(flipped, encode_masks(flipped, "rle")):
        np.testing.assert_array_equal(decode_rle(rle), mask)


def test_uncompressed_rle_from_sam_converts_like_sam() -> None:
    masks = photo_masks(load_rgb("groceries.jpg"))
    uncompressed = mask_to_rle_pytorch(torch.as_tensor(masks))
    ours = encode_masks(masks, "rle")
    for mask, unc, compressed in zip(masks, uncompressed, ours):
        converted = uncompressed_rle_to_coco(unc)
        assert converted == coco_encode_rle(unc) == compressed
        np.testing.assert_array_equal(decode_rle(unc), mask)
        # idempotent on already-compressed input
        assert uncompressed_rle_to_coco(converted) == converted


def test_uncompressed_rle_with_wrong_total_is_rejected() -> None:
    with pytest.raises(ValueError):
        uncompressed_rle_to_coco({"size": [4, 5], "counts": [3, 4]})


# --- png ------------------------------------------------------------------------------------


def test_png_round_trips_as_one_bit(photo: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = photo
    n, h, w = masks.shape
    pngs = encode_masks(masks, "png")
    assert len(pngs) == n
    for mask, b64 in zip(masks, pngs):
        assert isinstance(b64, str) and b64.isascii()
        data = base64.b64decode(b64, validate=True)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG"
            assert im.mode == "1"
            assert im.size == (w, h)
            np.testing.assert_array_equal(np.asarray(im), mask)


# --- polygon --------------------------------------------------------------------------------


def test_polygon_of_blob_with_hole() -> None:
    h, w = 534, 800
    mask = blob(h, w, 400, 260, 220, 150, hole=50)
    (region,) = encode_masks(mask[None], "polygon")[0]
    assert len(region["holes"]) == 1
    assert all(isinstance(v, int) for point in region["exterior"] for v in point)
    assert all(len(point) == 2 for point in region["exterior"])
    back = rasterise([region], h, w)
    assert iou(back, mask) >= 0.97
    assert not back[260, 400]  # the hole is there
    assert back[260, 400 + 120]  # and the ring around it is filled
    xs = [p[0] for p in region["exterior"]]
    ys = [p[1] for p in region["exterior"]]
    assert (min(xs), max(xs), min(ys), max(ys)) == (180, 620, 110, 410)  # x first, then y


def test_polygon_separate_regions_and_island_in_hole() -> None:
    h, w = 300, 400
    donut = blob(h, w, 120, 150, 100, 100, hole=60)
    island = blob(h, w, 120, 150, 20, 20)
    other = blob(h, w, 320, 150, 50, 80)
    mask = donut | island | other
    regions = encode_masks(mask[None], "polygon")[0]
    assert len(regions) == 3
    assert sorted(len(r["holes"]) for r in regions) == [0, 0, 1]
    back = rasterise(regions, h, w)
    assert iou(back, mask) >= 0.97
    assert back[150, 120] and not back[150, 120 + 40]  # island kept, hole around it cleared


def test_polygon_on_photo_blobs(photo: tuple[np.ndarray, np.ndarray]) -> None:
    image, masks = photo
    h, w = masks.shape[1:]
    # blob-like masks from the photo: the largest smoothed component of each threshold
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    checked = 0
    for raw in masks[:3]:
        smooth = cv2.morphologyEx(raw.astype(np.uint8), cv2.MORPH_OPEN, kernel)
        smooth = cv2.morphologyEx(smooth, cv2.MORPH_CLOSE, kernel)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(smooth, connectivity=8)
        if count < 2:
            continue
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        if stats[largest, cv2.CC_STAT_AREA] < 2000:
            continue
        component = labels == largest
        regions = encode_masks(component[None], "polygon")[0]
        assert len(regions) == 1
        assert iou(rasterise(regions, h, w), component) >= 0.97
        checked += 1
    assert checked >= 1


def test_polygon_edge_cases(photo: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = photo
    h, w = masks.shape[1:]
    polys = encode_masks(masks, "polygon")
    assert len(polys) == len(masks)
    json.dumps(polys)
    assert polys[4] == []  # empty mask
    (full,) = polys[5]
    assert sorted(map(tuple, full["exterior"])) == [(0, 0), (0, h - 1), (w - 1, 0), (w - 1, h - 1)]
    assert full["holes"] == []
    (single,) = polys[6]
    assert single["exterior"] == [[w // 5, h // 3]]
    (corner,) = polys[7]
    assert iou(rasterise([corner], h, w), masks[7]) == 1.0  # border pixels are kept


# --- boxes and areas ------------------------------------------------------------------------


def test_bboxes_equal_segment_anything(photo: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = photo
    h, w = masks.shape[1:]
    ours = masks_to_bboxes_xywh(masks)
    assert ours.shape == (len(masks), 4)
    sam_xyxy = batched_mask_to_box(torch.as_tensor(masks))
    sam = np.stack([box_xyxy_to_xywh(box).numpy() for box in sam_xyxy])
    np.testing.assert_array_equal(ours, sam)
    assert ours[4].tolist() == [0, 0, 0, 0]  # empty
    assert ours[5].tolist() == [0, 0, w - 1, h - 1]  # full
    assert ours[6].tolist() == [w // 5, h // 3, 0, 0]  # single pixel
    assert ours[8].tolist() == [10, h // 2, 49, 0]  # line
    np.testing.assert_array_equal(masks_to_bboxes_xywh(masks.astype(np.uint8)), ours)


def test_areas_equal_sums(photo: tuple[np.ndarray, np.ndarray]) -> None:
    _, masks = photo
    areas = mask_areas(masks)
    assert areas == [int(m.sum()) for m in masks]
    assert all(type(a) is int for a in areas)
    assert areas[4] == 0 and areas[5] == masks.shape[1] * masks.shape[2] and areas[6] == 1
    rles = encode_masks(masks, "rle")
    assert areas == [int(mask_utils.area({"size": r["size"], "counts": r["counts"].encode()})) for r in rles]


def test_no_masks() -> None:
    empty = np.zeros((0, 8, 9), bool)
    for fmt in OUTPUT_FORMATS:
        assert encode_masks(empty, fmt) == []
    assert masks_to_bboxes_xywh(empty).shape == (0, 4)
    assert mask_areas(empty) == []


# --- overlay --------------------------------------------------------------------------------


def test_overlay_tints_masks_and_leaves_the_rest(photo: tuple[np.ndarray, np.ndarray]) -> None:
    image, masks = photo
    h, w = masks.shape[1:]
    chosen = masks[[3, 7, 6, 4]]  # blob with hole, border corner, single pixel, empty
    assert encode_masks(chosen, "overlay") == [None] * 4
    png = render_overlay(image, chosen)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size == (w, h) and im.mode == "RGB"
        out = np.asarray(im)
    union = chosen.any(axis=0)
    changed = (out != image).any(axis=2)
    # inside: (nearly) every pixel is tinted, and clearly so on average
    assert changed[union].mean() > 0.99
    assert np.abs(out[union].astype(int) - image[union]).mean() > 10
    # far outside (beyond the outline): untouched
    far = ~cv2.dilate(union.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    np.testing.assert_array_equal(out[far], image[far])
    # the hole of the blob is outside the mask too
    hole_centre = (h // 2, w // 2)
    np.testing.assert_array_equal(out[hole_centre], image[hole_centre])
    # deterministic
    assert render_overlay(image, chosen) == png


def test_overlay_colours_are_distinct_and_cycled() -> None:
    h, w = 60, 40 * (len(PALETTE) + 1)
    image = np.full((h, w, 3), 128, np.uint8)
    masks = np.zeros((len(PALETTE) + 1, h, w), bool)
    for i in range(len(masks)):
        masks[i, 10:50, 40 * i + 10 : 40 * i + 30] = True
    with Image.open(io.BytesIO(render_overlay(image, masks, alpha=1.0))) as im:
        out = np.asarray(im)
    centres = [tuple(out[30, 40 * i + 20]) for i in range(len(masks))]
    assert centres[: len(PALETTE)] == list(PALETTE)
    assert len(set(centres[: len(PALETTE)])) == len(PALETTE)
    assert centres[-1] == PALETTE[0]  # palette cycles
    with Image.open(io.BytesIO(render_overlay(image, masks, alpha=0.0))) as im:
        out0 = np.asarray(im)
    np.testing.assert_array_equal(out0[30, 20], image[30, 20])  # no tint inside at alpha 0
    assert tuple(out0[10, 20]) == PALETTE[0]  # but the outline is drawn


def test_overlay_without_masks_is_the_image() -> None:
    image = load_rgb("dog.jpg")
    with Image.open(io.BytesIO(render_overlay(image, np.zeros((0, 1, 1), bool)))) as im:
        np.testing.assert_array_equal(np.asarray(im), image)


def test_overlay_rejects_mismatched_shapes() -> None:
    image = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError):
        render_overlay(image, np.zeros((1, 12, 10), bool))
    with pytest.raises(ValueError):
        render_overlay(image[..., 0], np.zeros((1, 10, 12), bool))


@pytest.mark.parametrize("fmt", ["rle", "png"])
def test_describe_masks_gives_the_same_boxes_and_areas_for_every_format(fmt):
    from runners.outputs import describe_masks

    rng = np.random.default_rng(3)
    masks = rng.random((5, 40, 60)) > 0.97
    masks[1] = False  # empty
    masks[2] = True  # full
    masks[3, 10:12, 50] = True  # tiny
    payloads, boxes, areas = describe_masks(masks, fmt)
    np.testing.assert_array_equal(boxes, masks_to_bboxes_xywh(masks))
    assert areas == mask_areas(masks) and len(payloads) == 5
