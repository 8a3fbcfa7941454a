"""Turn SAM masks into response payloads.

All masks here are ``(N, H, W)`` arrays (``bool``, or ``uint8`` 0/1) in the pixel
coordinates of the original image: row ``y`` in ``[0, H)``, column ``x`` in ``[0, W)``.
Points and boxes are always written ``x`` first. The encodings are:

* ``rle``: COCO compressed RLE, ``{"size": [H, W], "counts": "<str>"}``, exactly what
  ``pycocotools.mask.encode`` gives (counts decoded to ``str``); ``decode_rle`` inverts it.
* ``png``: base64 (ASCII ``str``) of a 1-bit PNG (PIL mode ``"1"``), ``W x H`` pixels.
* ``polygon``: per mask a list of regions ``{"exterior": [[x, y], ...], "holes": [[[x, y], ...], ...]}``
  from ``cv2.findContours`` (``RETR_CCOMP``, ``CHAIN_APPROX_SIMPLE``). Rings run through the
  centres of boundary pixels: the exterior through the outermost foreground pixels, each hole
  through the foreground pixels that border the hole (OpenCV's convention).
* ``overlay``: no per-mask payload; the masks are drawn into one picture by ``render_overlay``.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from runners.errors import InputError

OUTPUT_FORMATS: tuple[str, ...] = ("rle", "png", "polygon", "overlay")

# Fixed RGB palette (Tableau 10), cycled in mask order so colours are deterministic.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def check_output_format(name: str) -> str:
    """Return ``name`` if it is one of ``OUTPUT_FORMATS``; otherwise raise ``InputError(field="output")``."""
    if isinstance(name, str) and name in OUTPUT_FORMATS:
        return name
    raise InputError(
        f"Unknown output format {name!r}; use one of: {', '.join(OUTPUT_FORMATS)}.",
        field="output",
    )


def _as_masks(masks: Any) -> np.ndarray:
    """``masks`` as an ``(N, H, W)`` bool array (nonzero is foreground); an ``(H, W)`` mask gets N=1."""
    arr = np.asarray(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {arr.shape}")
    return arr if arr.dtype == np.bool_ else arr != 0


def encode_masks(masks: np.ndarray, fmt: str) -> list[object]:
    """Encode each mask in ``fmt`` (one of ``OUTPUT_FORMATS``; see the module docstring).

    Arguments:
      masks (np.ndarray): ``(N, H, W)`` bool or uint8 0/1, original-image pixel coordinates.
      fmt (str): the output format; an unknown one raises ``InputError(field="output")``.

    Returns:
      (list): N payloads, in mask order (``[None] * N`` for ``overlay``).
    """
    fmt = check_output_format(fmt)
    arr = _as_masks(masks)
    if fmt == "rle":
        return encode_rle(arr)
    if fmt == "png":
        return [_encode_png(m) for m in arr]
    if fmt == "polygon":
        return [mask_to_polygons(m) for m in arr]
    return [None] * arr.shape[0]


def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO compressed RLE of ``(N, H, W)`` masks, all N in one ``pycocotools.mask.encode`` call.

    Returns N dicts ``{"size": [H, W], "counts": str}`` (JSON-serialisable).
    """
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in _pycoco_rles(masks)]


def describe_masks(masks: np.ndarray, fmt: str) -> tuple[list[object], np.ndarray, list[int]]:
    """Payloads in ``fmt``, bboxes ``(N, 4)`` as :func:`masks_to_bboxes_xywh`, and areas.

    For ``rle`` the boxes and areas are read off the RLEs (pycocotools), several times
    cheaper than scanning the full-size masks again; the values are the same.
    """
    if check_output_format(fmt) != "rle":
        return encode_masks(masks, fmt), masks_to_bboxes_xywh(masks), mask_areas(masks)
    rles = _pycoco_rles(masks)
    if not rles:
        return [], np.zeros((0, 4), np.int64), []
    areas = mask_utils.area(rles).astype(np.int64)
    boxes = mask_utils.toBbox(rles).astype(np.int64)
    boxes[:, 2:] -= (areas > 0)[:, None]  # pycocotools' w, h count pixels; SAM's are index differences
    payloads = [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]
    return payloads, boxes, [int(a) for a in areas]


def _pycoco_rles(masks: np.ndarray) -> list[dict[str, Any]]:
    """pycocotools' RLE dicts (counts as bytes) of ``(N, H, W)`` masks."""
    arr = _as_masks(masks)
    if arr.shape[0] == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order, i.e. (N, W, H) in C order. The
    # transpose copy dominates the cost; cv2.transpose is ~3x faster at it than numpy.
    src = np.ascontiguousarray(arr.view(np.uint8))  # bool -> uint8 is a free view
    n, h, w = src.shape
    columns = np.empty((n, w, h), np.uint8)
    for i in range(n):
        cv2.transpose(src[i], dst=columns[i])
    return mask_utils.encode(columns.transpose(2, 1, 0))


def _encode_png(mask: np.ndarray) -> str:
    """Base64 (ASCII) of a 1-bit PNG (mode "1") of one ``(H, W)`` bool mask."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.bool_)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def mask_to_polygons(mask: np.ndarray) -> list[dict[str, Any]]:
    """Regions of one ``(H, W)`` mask: ``[{"exterior": [[x, y], ...], "holes": [[[x, y], ...], ...]}]``.

    Uses ``cv2.findContours`` with ``RETR_CCOMP`` (two levels: outer contours and their holes)
    and ``CHAIN_APPROX_SIMPLE``; coordinates are Python ints, ``x`` (column) first. A region
    lying inside another region's hole is its own top-level entry. Empty mask -> ``[]``.
    """
    contours, hierarchy = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    tree = hierarchy[0]  # (K, 4): next, previous, first_child, parent
    regions: list[dict[str, Any]] = []
    for i, (_, _, child, parent) in enumerate(tree):
        if parent != -1:
            continue
        holes = []
        while child != -1:
            holes.append(contours[child].reshape(-1, 2).tolist())
            child = tree[child][0]
        regions.append({"exterior": contours[i].reshape(-1, 2).tolist(), "holes": holes})
    return regions


def masks_to_boxes_xyxy(masks: np.ndarray) -> np.ndarray:
    """Tight boxes ``[x0, y0, x1, y1]`` (inclusive pixel indices) of ``(N, H, W)`` masks as an
    ``(N, 4)`` int64 array: segment_anything's ``batched_mask_to_box``. An empty mask gives
    ``[0, 0, 0, 0]``."""
    arr = _as_masks(masks)
    n, h, w = arr.shape
    rows = arr.any(axis=2)  # (N, H)
    cols = arr.any(axis=1)  # (N, W)
    y0 = rows.argmax(axis=1)
    y1 = h - 1 - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = w - 1 - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.int64).reshape(n, 4)
    boxes[~rows.any(axis=1)] = 0
    return boxes


def masks_to_bboxes_xywh(masks: np.ndarray) -> np.ndarray:
    """Tight boxes ``[x, y, w, h]`` of ``(N, H, W)`` masks as an ``(N, 4)`` int64 array.

    ``x, y`` is the top-left foreground pixel; ``w = x_max - x_min`` and ``h = y_max - y_min``
    (inclusive pixel indices), matching segment_anything's ``box_xyxy_to_xywh(batched_mask_to_box(...))``
    and so the ``bbox`` of its automatic mask generator. Note pycocotools' ``toBbox`` is one
    larger in ``w`` and ``h``. An empty mask gives ``[0, 0, 0, 0]``.
    """
    boxes = masks_to_boxes_xyxy(masks)
    boxes[:, 2:] -= boxes[:, :2]
    return boxes


def mask_areas(masks: np.ndarray) -> list[int]:
    """Foreground pixel count of each of ``(N, H, W)`` masks, as N Python ints."""
    # per mask without an axis: numpy's fast path, several times quicker than axis=(1, 2)
    return [int(np.count_nonzero(mask)) for mask in _as_masks(masks)]


def render_overlay(image_rgb: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> bytes:
    """PNG bytes of ``image_rgb`` with every mask tinted and outlined, for people to look at.

    Arguments:
      image_rgb (np.ndarray): ``(H, W, 3)`` uint8, RGB.
      masks (np.ndarray): ``(N, H, W)`` bool or uint8 0/1, same H and W as the image.
      alpha (float): tint opacity in ``[0, 1]``.

    Mask ``i`` gets colour ``PALETTE[i % len(PALETTE)]``: its pixels are blended towards it
    with ``alpha`` (later masks over earlier ones), then its contours are drawn opaque,
    ``max(1, min(H, W) // 400)`` px thick (centred on the boundary pixels). Returns an RGB PNG, W x H.
    """
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image_rgb must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    arr = _as_masks(masks)
    if arr.shape[0] and arr.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks {arr.shape[1:]} do not match image {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = image.astype(np.float32)
    keep, tint = np.float32(1.0 - alpha), np.float32(alpha)
    for i, (m, (x, y, bw, bh)) in enumerate(zip(arr, masks_to_bboxes_xywh(arr))):
        window = (slice(y, y + bh + 1), slice(x, x + bw + 1))  # blend only inside the mask's box
        region, inside = out[window], m[window][..., None]
        colour = np.asarray(PALETTE[i % len(PALETTE)], np.float32)
        np.copyto(region, region * keep + tint * colour, where=inside)
    canvas = np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    thickness = max(1, min(image.shape[:2]) // 400)
    for i, m in enumerate(arr):
        m8 = np.ascontiguousarray(m).view(np.uint8)
        contours, _ = cv2.findContours(m8, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, PALETTE[i % len(PALETTE)], thickness)
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()


def uncompressed_rle_to_coco(rle: dict[str, Any]) -> dict[str, Any]:
    """Convert uncompressed RLE ``{"size": [H, W], "counts": [run, ...]}`` to the compressed ``rle`` format.

    Uncompressed runs are column-major (Fortran order) and start with a run of zeros, as
    segment_anything's ``mask_to_rle_pytorch`` emits. Same result as its ``coco_encode_rle``.
    Already-compressed input (``counts`` str/bytes) is returned with ``counts`` as ``str``.
    """
    h, w = (int(s) for s in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return {"size": [h, w], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
    if sum(counts) != h * w:
        raise ValueError(f"RLE counts sum to {sum(counts)}, expected H*W = {h * w}")
    out = mask_utils.frPyObjects({"size": [h, w], "counts": list(counts)}, h, w)
    return {"size": [h, w], "counts": out["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of the ``rle`` format: an ``(H, W)`` bool mask (uncompressed RLE is accepted too)."""
    coco = uncompressed_rle_to_coco(rle)
    return mask_utils.decode({"size": coco["size"], "counts": coco["counts"].encode("ascii")}).astype(bool)
