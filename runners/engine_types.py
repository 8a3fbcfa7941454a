"""What flows between the request path and an engine: images, embeddings, prompts, results.

Torch-free: a server whose encoder and prompt decoder both run in OpenVINO never imports torch
(runners/converted_engine.py); the torch engine (runners/sam.py) fills the same types with
tensors. Array fields say which they may hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PreparedImage:
    """An image resized and normalised for the encoder.

    tensor: (3, 1024, 1024) float32, padded bottom/right: a numpy array (OpenVINO engine) or a
    torch tensor on the model's device (torch engine). original_size: (H, W) of the image as
    sent. input_size: (h, w) after resizing the longest side to 1024, before padding.
    """

    tensor: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass(frozen=True)
class ImageEmbedding:
    """The encoder's output for one image: features (1, 256, 64, 64) float32, a numpy array or a
    torch tensor (see PreparedImage)."""

    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)

    def array(self) -> np.ndarray:
        """features as a float32 numpy array (no copy when it is one already)."""
        if isinstance(self.features, np.ndarray):
            return self.features
        return self.features.float().cpu().numpy()


@dataclass(frozen=True)
class Prompts:
    """Prompts for one image, in pixel coordinates of the original image.

    points: (N, 2) float (x, y) with labels (N,) int, 1 = foreground, 0 = background.
    boxes: (B, 4) float (x0, y0, x1, y1); B > 1 gives one mask set per box, the points
    (if any) applying to every box. mask_input: (1, 256, 256) float low-res logits from a
    previous prediction. multimask: three masks per prompt instead of one.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    mask_input: np.ndarray | None = None
    multimask: bool = False

    @property
    def count(self) -> int:
        return 1 if self.boxes is None else len(self.boxes)


@dataclass(frozen=True)
class Prediction:
    """Decoder output. masks: (P, C, H, W) bool; scores: (P, C) float32 predicted IoU;
    low_res_logits: (P, C, 256, 256) float32. P = number of prompts, C = 3 or 1."""

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray


@dataclass(frozen=True)
class Instance:
    """One mask of segment-everything.

    rle: uncompressed RLE ({"size": [H, W], "counts": [...]}, column-major, as
    segment_anything's generator emits it) or COCO's compressed one ("counts" a str, from
    runners/mask_generator.py); runners.outputs takes either. bbox: (x, y, w, h); point_coords: [[x, y]] the prompt;
    crop_box: (x, y, w, h) of the crop it came from.
    """

    rle: dict[str, Any]
    bbox: list[float]
    area: int
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[float]
