"""Decoder results -> response models, in the requested mask format."""

from __future__ import annotations

import base64
import io

import numpy as np

from .cache import CachedImage
from .engine_types import Instance as EverythingInstance, Prediction
from .outputs import decode_rle, describe_masks, encode_masks, render_overlay, uncompressed_rle_to_coco
from .schemas import (
    EMBED_HEADERS,
    ArrayPayload,
    EmbedResponse,
    EverythingRequest,
    EverythingResponse,
    Instance,
    MaskResult,
    PromptResult,
    SegmentRequest,
    SegmentResponse,
)

# An overlay of segment-everything draws at most this many instances (the largest).
MAX_OVERLAY_INSTANCES = 256


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def segment_response(
    entry: CachedImage, prediction: Prediction, request: SegmentRequest, rgb: np.ndarray | None
) -> tuple[SegmentResponse, bytes | None]:
    """The response, and for output=overlay the PNG (the best-scoring mask of each prompt
    drawn over the image)."""
    height, width = entry.embedding.original_size
    results = []
    for masks, scores, logits in zip(prediction.masks, prediction.scores, prediction.low_res_logits):
        segmentations, boxes, areas = describe_masks(masks, request.output)
        results.append(
            PromptResult(
                masks=[
                    MaskResult(segmentation=seg, score=float(score), bbox=[float(v) for v in box], area=area)
                    for seg, score, box, area in zip(segmentations, scores, boxes, areas)
                ],
                low_res_logits=ArrayPayload.from_numpy(logits) if request.return_logits else None,
            )
        )
    png = None
    if request.output == "overlay" and rgb is not None:
        best = np.stack([masks[int(np.argmax(scores))] for masks, scores in zip(prediction.masks, prediction.scores)])
        png = render_overlay(rgb, best)
    response = SegmentResponse(
        image_id=entry.image_id, width=width, height=height, output=request.output, results=results, overlay=_b64(png)
    )
    return response, png


def everything_response(
    entry: CachedImage, instances: list[EverythingInstance], request: EverythingRequest, rgb: np.ndarray
) -> tuple[EverythingResponse, bytes | None]:
    height, width = entry.embedding.original_size
    fmt = request.output
    items = []
    for instance in instances:
        rle = uncompressed_rle_to_coco(instance.rle)
        if fmt == "rle":
            segmentation = rle
        elif fmt == "overlay":
            segmentation = None
        else:  # one mask at a time: thousands of instances never sit in memory as full arrays
            segmentation = encode_masks(decode_rle(rle)[None], fmt)[0]
        items.append(
            Instance(
                segmentation=segmentation,
                bbox=instance.bbox,
                area=instance.area,
                predicted_iou=instance.predicted_iou,
                stability_score=instance.stability_score,
                point_coords=instance.point_coords,
                crop_box=instance.crop_box,
            )
        )
    png = None
    if fmt == "overlay":
        largest = sorted(instances, key=lambda inst: -inst.area)[:MAX_OVERLAY_INSTANCES]
        masks = np.zeros((len(largest), height, width), dtype=bool)
        for i, instance in enumerate(largest):
            masks[i] = decode_rle(uncompressed_rle_to_coco(instance.rle))
        png = render_overlay(rgb, masks)
    response = EverythingResponse(
        image_id=entry.image_id, width=width, height=height, output=fmt, instances=items, overlay=_b64(png)
    )
    return response, png


def embed_response(entry: CachedImage, model_name: str, dtype: str) -> EmbedResponse:
    embedding = entry.embedding
    return EmbedResponse(
        image_id=entry.image_id,
        model=model_name,
        embedding=ArrayPayload.from_numpy(embedding.array(), dtype),
        original_size=list(embedding.original_size),
        input_size=list(embedding.input_size),
    )


def embed_npy(entry: CachedImage, model_name: str, dtype: str) -> tuple[bytes, dict[str, str]]:
    """The embedding (1, 256, 64, 64) as .npy bytes (little-endian ``dtype``; ``numpy.load``
    reads it), and the response headers that carry what the JSON form's other fields do: 4 MiB
    in float32 where the JSON's base64 is 5.6 MB, with no encoding on either side."""
    embedding = entry.embedding
    buffer = io.BytesIO()
    array = embedding.array().astype(np.dtype(dtype).newbyteorder("<"), copy=False)
    np.save(buffer, array, allow_pickle=False)
    values = (entry.image_id, model_name, embedding.original_size, embedding.input_size)
    headers = {
        name: value if isinstance(value, str) else ",".join(str(int(v)) for v in value)
        for name, value in zip(EMBED_HEADERS, values)
    }
    return buffer.getvalue(), headers
