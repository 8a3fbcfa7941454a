"""segment_anything's automatic-mask-generation helpers in numpy: no torch, same numbers.

``segment_anything.utils.amg`` imports torch at module level, and the generator's NMS is
torchvision's; the torch-free engine's segment-everything (runners/mask_generator.py) needs
them without either. Each function here is the one named in its docstring, computed in the same
dtypes in the same order, so that results are equal, not close; tests/test_amg.py holds each to
the original on random and real masks. RLEs, boxes from masks (``batched_mask_to_box``) and
areas are runners/outputs.py's, which the responses use too.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np


def build_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """``build_all_layer_point_grids``: per crop layer, an (n*n, 2) float64 grid of (x, y) in
    [0, 1], evenly spaced cell centres, ``n_per_side / scale_per_layer**layer`` per side."""
    grids = []
    for layer in range(n_layers + 1):
        n = int(n_per_side / (scale_per_layer**layer))
        offset = 1 / (2 * n)
        side = np.linspace(offset, 1 - offset, n)
        grids.append(np.stack([np.tile(side[None, :], (n, 1)), np.tile(side[:, None], (1, n))], axis=-1).reshape(-1, 2))
    return grids


def generate_crop_boxes(im_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """``generate_crop_boxes``: the whole image (x0, y0, x1, y1) and layer i's (2**i)**2 crops,
    overlapping; with the layer index of each."""
    im_h, im_w = im_size
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for layer in range(n_layers):
        per_side = 2 ** (layer + 1)
        overlap = int(overlap_ratio * min(im_h, im_w) * (2 / per_side))
        crop_w = int(math.ceil((overlap * (per_side - 1) + im_w) / per_side))
        crop_h = int(math.ceil((overlap * (per_side - 1) + im_h) / per_side))
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer + 1)
    return boxes, layers


def box_near_crop_edge(boxes: np.ndarray, crop_box: list[int], orig_box: list[int], atol: float = 20.0) -> np.ndarray:
    """``is_box_near_crop_edge``: (N,) bool, boxes (in the crop's frame) within ``atol`` of an
    edge of the crop that is not an edge of the image."""
    boxes = (boxes + np.array([crop_box[0], crop_box[1]] * 2)).astype(np.float32)
    near_crop = np.abs(boxes - np.asarray(crop_box, np.float32)) <= atol
    near_image = np.abs(boxes - np.asarray(orig_box, np.float32)) <= atol
    return np.any(near_crop & ~near_image, axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """``torchvision.ops.nms`` (its CPU kernel): the indices (int64) of the boxes kept, by score,
    highest first, ties in input order (its sort is stable). A box is dropped when its IoU with a
    kept, higher-scored one exceeds ``iou_threshold``, compared in float64 as the kernel does.
    boxes: (N, 4) (x0, y0, x1, y1), computed in float32; scores: (N,) float32."""
    boxes = np.asarray(boxes, np.float32)
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    x0, y0, x1, y1 = (boxes[order, k] for k in range(4))
    areas = (x1 - x0) * (y1 - y0)
    alive = np.ones(len(order), bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        width = np.maximum(np.float32(0), np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        height = np.maximum(np.float32(0), np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = width * height
        with np.errstate(invalid="ignore", divide="ignore"):  # empty boxes: 0/0, never above the threshold
            overlap = inter / (areas[i] + areas[rest] - inter)
        alive[rest[overlap.astype(np.float64) > iou_threshold]] = False
    return order[alive].astype(np.int64)


def uncrop_masks(masks: np.ndarray, crop_box: list[int], orig_h: int, orig_w: int) -> np.ndarray:
    """``uncrop_masks``: (N, h, w) masks of the crop -> (N, H, W) of the image, zeros outside."""
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    return np.pad(masks, ((0, 0), (y0, orig_h - y1), (x0, orig_w - x1)))


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """``remove_small_regions`` (numpy and OpenCV there already): fill holes (``mode`` "holes")
    or drop islands ("islands") under ``area_thresh`` pixels; the mask, and whether it changed."""
    import cv2

    correct_holes = mode == "holes"
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats((correct_holes ^ mask).astype(np.uint8), 8)
    sizes = stats[:, -1][1:]  # row 0 is the background
    small = [i + 1 for i, size in enumerate(sizes) if size < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not correct_holes:
        fill = [i for i in range(n_labels) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def xyxy_to_xywh(box: Any) -> list[float]:
    """``box_xyxy_to_xywh`` as the generator's records list it."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]
