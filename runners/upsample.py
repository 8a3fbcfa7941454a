"""``Sam.postprocess_masks`` and the threshold, in OpenVINO: low-res logits -> masks of the image.

SAM upsamples the decoder's (256, 256) logits bilinearly to the 1024 x 1024 input frame, crops
the resized image's part (h, w), upsamples that to the image (H, W), and thresholds at 0
(``F.interpolate(mode="bilinear", align_corners=False)`` twice). OpenVINO's Interpolate does not
give torch's numbers for the second step: torch computes each source coordinate as
``(in / out) * (dst + 0.5) - 0.5`` in float32 with a fused multiply-add, OpenVINO as
``(dst + 0.5) / (out / in) - 0.5``, and the logits differed by 1e-4 (measured), enough to flip
pixels near the threshold. So both steps are written out here: the source rows and columns and
their weights are computed in numpy as torch computes them (``source_weights``, one small table
per axis; the first step's is fixed, and only its part inside the crop is computed), and the
graph gathers and blends with them, the columns first as torch does: logits within 1e-6 of
torch's. numpy alone was 20x slower than torch for a 2 MP image; this graph takes 17 ms for three
1800 x 1200 masks on two cores (torch 12 ms; Interpolate for the first step and a slice, 25 ms).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .converted import ThreadRequests

LOW_RES = 256


def source_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's bilinear resize of one axis from n_in to n_out samples (align_corners=False, output
    size given): indices (2, n_out) int32 of the two source samples of each output sample, and
    their weights (2, n_out) float32. ``ratio * (dst + 0.5) - 0.5`` is rounded once, as the fused
    multiply-add in torch's CPU kernel rounds it (the float32 product is exact in float64)."""
    ratio = np.float32(n_in) / np.float32(n_out)
    centres = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    source = (np.float64(ratio) * centres.astype(np.float64) - 0.5).astype(np.float32)
    source = np.maximum(source, np.float32(0))
    first = np.minimum(np.floor(source).astype(np.int32), n_in - 1)
    far = np.clip(source - first.astype(np.float32), 0, 1).astype(np.float32)
    second = first + (first < n_in - 1)
    return np.stack([first, second]).astype(np.int32), np.stack([np.float32(1) - far, far])


def build_upsampler(scored: bool = False) -> Any:
    """The graph (an ``openvino.Model``). Inputs: low-res logits (P, C, 256, 256) float32, then
    for each step the rows' and the columns' indices (2, n) int32 and weights (2, n) float32 from
    ``source_weights``: the 4x step's first (n = h, then w: cropped), the image's next (H, then
    W). Output: masks (P, C, H, W) bool.

    ``scored`` (segment-everything's): one more input, the stability offset (1,) float32, and two
    more outputs, each mask's pixel counts (P, C) int32 with logits above +offset and above
    -offset: ``calculate_stability_score``'s intersections and unions, on the same logits."""
    import openvino as ov
    import openvino.opset13 as ops

    def const(value: Any, dtype: Any) -> Any:
        return ops.constant(np.asarray(value, dtype))

    def row(table: Any, k: int) -> Any:
        return ops.gather(table, const(k, np.int32), const(0, np.int32))

    def blend(data: Any, index: Any, weight: Any, axis: int) -> Any:
        w0, w1 = row(weight, 0), row(weight, 1)
        if axis == 2:  # weights per row: (n, 1)
            w0, w1 = (ops.unsqueeze(w, const(1, np.int32)) for w in (w0, w1))
        near = ops.multiply(ops.gather(data, row(index, 0), const(axis, np.int32)), w0)
        return ops.add(near, ops.multiply(ops.gather(data, row(index, 1), const(axis, np.int32)), w1))

    logits = ops.parameter([-1, -1, LOW_RES, LOW_RES], ov.Type.f32, name="low_res_logits")
    tables = []
    for step in ("crop", "image"):
        for axis in ("rows", "cols"):
            tables += [ops.parameter([2, -1], ov.Type.i32, name=f"{step}_{axis}_index"),
                       ops.parameter([2, -1], ov.Type.f32, name=f"{step}_{axis}_weight")]
    masks = logits
    for rows_index, rows_weight, cols_index, cols_weight in (tables[:4], tables[4:]):
        masks = blend(blend(masks, cols_index, cols_weight, 3), rows_index, rows_weight, 2)
    outputs = [ops.greater(masks, const(0.0, np.float32))]  # Sam.mask_threshold
    if scored:
        offset = ops.parameter([1], ov.Type.f32, name="stability_offset")
        tables.append(offset)
        for threshold in (offset, ops.negative(offset)):
            above = ops.convert(ops.greater(masks, threshold), ov.Type.i32)
            outputs.append(ops.reduce_sum(above, const([2, 3], np.int32), keep_dims=False))
    return ov.Model([out.output(0) for out in outputs], [logits, *tables], "upsample_scored" if scored else "upsample_masks")


_FRAME = source_weights(LOW_RES, 4 * LOW_RES)  # the first step's table, cropped per image
LOGITS_AT_ONCE_BYTES = 128 * 2**20  # segment-everything's full-size float32 logits upsampled at once


def masks_at_once(height: int, width: int) -> int:
    """How many masks of an (H, W) image segment-everything upsamples at once: 16 for a 2 MP
    photo, fewer for larger ones, down to 1 (a 64 MP image, SEGANY_MAX_IMAGE_PIXELS' default cap,
    has 256 MB of logits per mask). Each mask is upsampled on its own, so results do not depend
    on it; memory does: the graph's intermediates are a few times the logits."""
    return max(1, min(16, LOGITS_AT_ONCE_BYTES // (4 * height * width)))


def _tables(input_size: tuple[int, int], original_size: tuple[int, int]) -> list[np.ndarray]:
    (h, w), (height, width) = input_size, original_size
    crop = [table[:, :size].copy() for size in (h, w) for table in _FRAME]
    return [*crop, *source_weights(h, height), *source_weights(w, width)]


class Upsampler:
    """Runs the compiled graph; thread-safe (an infer request per calling thread)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self._requests = ThreadRequests(compiled)

    def __call__(self, low_res: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int]) -> np.ndarray:
        """low_res (P, C, 256, 256) float32 logits -> masks (P, C, H, W) bool for the image (H, W)
        that was resized to ``input_size`` (h, w): ``Sam.postprocess_masks(...) > 0``."""
        tables = _tables(input_size, original_size)
        return self._requests.get().infer([np.ascontiguousarray(low_res, np.float32), *tables])[0].copy()


class ScoredUpsampler(Upsampler):
    """The ``scored`` graph: masks with their stability scores."""

    def __call__(self, low_res: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int],
                 offset: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """low_res (P, 256, 256) float32 logits -> masks (P, H, W) bool as ``Upsampler``'s, and
        stability scores (P,) float32 as ``calculate_stability_score(logits, 0.0, offset)``
        computes them (counts divided in float32; NaN for a mask with no logit above -offset)."""
        tables = _tables(input_size, original_size)
        result = self._requests.get().infer([np.ascontiguousarray(low_res[:, None], np.float32), *tables,
                                              np.array([offset], np.float32)])
        masks, high, low = (result[k] for k in range(3))
        with np.errstate(invalid="ignore", divide="ignore"):
            stability = high[:, 0].astype(np.float32) / low[:, 0].astype(np.float32)
        return masks[:, 0].copy(), stability
