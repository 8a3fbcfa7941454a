"""Segment-everything: ``SamAutomaticMaskGenerator`` fed from our encoder path.

The generator's own algorithm (point grid, crops, batched decoding, stability scores,
NMS, small-region cleanup) is reused unchanged; only ``set_image`` is redirected, so the
full image's embedding comes from the embedding cache and crop embeddings go through
the batched encoder. Instances are returned as uncompressed RLE, so even thousands of
masks never sit in memory as full-size arrays at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from segment_anything import SamAutomaticMaskGenerator, SamPredictor

from .sam import ImageEmbedding, SamEngine

EmbedCrop = Callable[[np.ndarray], ImageEmbedding]


@dataclass(frozen=True)
class Instance:
    """One mask of segment-everything.

    rle: uncompressed RLE ({"size": [H, W], "counts": [...]}, column-major, as
    segment_anything emits it); bbox: (x, y, w, h); point_coords: [[x, y]] the prompt;
    crop_box: (x0, y0, x1, y1) of the crop it came from.
    """

    rle: dict[str, Any]
    bbox: list[float]
    area: int
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[float]


class _CachedImagePredictor(SamPredictor):
    """``set_image`` takes the full image's embedding as given and encodes crops via ``embed_crop``."""

    def __init__(self, engine: SamEngine, full: ImageEmbedding, embed_crop: EmbedCrop) -> None:
        super().__init__(engine.model)
        self._full = full
        self._embed_crop = embed_crop

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        embedding = self._full if tuple(image.shape[:2]) == self._full.original_size else self._embed_crop(image)
        self.reset_image()
        self.features = embedding.features
        self.original_size = embedding.original_size
        self.input_size = embedding.input_size
        self.is_image_set = True


def segment_everything(
    engine: SamEngine,
    image: np.ndarray,
    embedding: ImageEmbedding,
    embed_crop: EmbedCrop,
    **generator_kwargs: Any,
) -> list[Instance]:
    """All instances in ``image`` ((H, W, 3) uint8 RGB whose embedding is ``embedding``).

    ``generator_kwargs`` are ``SamAutomaticMaskGenerator``'s parameters; results equal its
    ``generate(image)`` on the same weights (same order, same masks).
    """
    generator = SamAutomaticMaskGenerator(engine.model, output_mode="uncompressed_rle", **generator_kwargs)
    generator.predictor = _CachedImagePredictor(engine, embedding, embed_crop)
    return [
        Instance(
            rle=record["segmentation"],
            bbox=[float(v) for v in record["bbox"]],
            area=int(record["area"]),
            predicted_iou=float(record["predicted_iou"]),
            stability_score=float(record["stability_score"]),
            point_coords=[[float(x), float(y)] for x, y in record["point_coords"]],
            crop_box=[float(v) for v in record["crop_box"]],
        )
        for record in generator.generate(image)
    ]
