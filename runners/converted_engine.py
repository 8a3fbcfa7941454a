"""The SAM engine with no torch in the process: OpenVINO encoder, prompt decoder and upsampling.

When the encoder and the prompt decoder (runners/prompt_decoder.py) are converted and served by
OpenVINO on a CPU, nothing of a request needs torch: this engine does ``SamPredictor``'s
remaining work in numpy and PIL, step for step (``ResizeLongestSide``, ``Sam.preprocess``,
``SamPredictor.predict`` / ``predict_torch``'s coordinate transforms, ``MaskDecoder.forward``'s
mask selection) and leaves ``Sam.postprocess_masks`` to runners/upsample.py. A server on it
starts without importing torch (1.7 s of CPU and 300+ MB here, on the cold start's critical
path) and reads nothing from the checkpoint. Segment-everything runs on it too
(runners/mask_generator.py, segment_anything's generator in numpy).

Outputs equal ``SamPredictor``'s on the same weights: the encoder input bit for bit, the masks
up to float rounding (tests/test_converted_engine.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .engine_types import ImageEmbedding, PreparedImage, Prediction, Prompts
from .converted import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, FOREGROUND, PADDING, PromptGraphs, ThreadRequests
from .specs import IMAGE_SIZE, PIXEL_MEAN, PIXEL_STD
from .upsample import ScoredUpsampler, Upsampler

LOW_RES = IMAGE_SIZE // 4  # the decoder's mask logits: (256, 256)
_MEAN = np.asarray(PIXEL_MEAN, np.float32)
_STD = np.asarray(PIXEL_STD, np.float32)


def preprocess_shape(height: int, width: int, long_side: int = IMAGE_SIZE) -> tuple[int, int]:
    """(h, w) with the longest side resized to ``long_side`` (ResizeLongestSide.get_preprocess_shape)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def scale_coords(coords: np.ndarray, original_size: tuple[int, int], dtype: type, cast: bool = True) -> np.ndarray:
    """(..., 2) (x, y) pixel coordinates of the original image -> the encoder's input frame, as
    ``ResizeLongestSide.apply_coords`` (``dtype`` float64, then cast to float32 as SamPredictor
    does) or ``apply_coords_torch`` (float32 throughout: the batched-boxes path) computes them.
    ``cast=False`` leaves them in ``dtype`` (the automatic mask generator's float64 path)."""
    height, width = original_size
    new_h, new_w = preprocess_shape(height, width)
    coords = np.array(coords, dtype=dtype)
    coords[..., 0] = coords[..., 0] * dtype(new_w / width)
    coords[..., 1] = coords[..., 1] * dtype(new_h / height)
    return coords.astype(np.float32) if cast else coords


def prompt_inputs(prompts: Prompts, original_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The prompt decoder's point_coords (B, N, 2) float32 and point_labels (B, N) int32: the
    points, then each box's corners, with SAM's padding point when there is no box."""
    single = prompts.count == 1  # SamPredictor.predict; several boxes go through predict_torch
    dtype = np.float64 if single else np.float32
    count = prompts.count
    coords = np.zeros((count, 0, 2), np.float32)
    labels = np.zeros((count, 0), np.int32)
    if prompts.points is not None:
        points = scale_coords(prompts.points, original_size, dtype)
        coords = np.broadcast_to(points[None], (count, *points.shape))
        labels = np.broadcast_to(np.asarray(prompts.labels, np.int32)[None], (count, len(points)))
    if prompts.boxes is not None:
        corners = scale_coords(np.asarray(prompts.boxes).reshape(-1, 2, 2), original_size, dtype)
        coords = np.concatenate([coords, corners], axis=1)
        labels = np.concatenate([labels, np.tile(np.array([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]], np.int32), (count, 1))], axis=1)
    elif prompts.points is not None:
        coords = np.concatenate([coords, np.zeros((count, 1, 2), np.float32)], axis=1)
        labels = np.concatenate([labels, np.full((count, 1), PADDING, np.int32)], axis=1)
    return np.ascontiguousarray(coords), np.ascontiguousarray(labels)


class ConvertedEngine:
    """``SamEngine``'s interface (prepare, embed, predict, warm_up) over compiled OpenVINO models.

    ``prepare`` and ``predict`` may run concurrently from several threads (an infer request per
    thread); ``embed`` is called by one batching thread at a time.
    """

    device = "cpu"

    POINTS_PER_FORWARD = 4  # segment-everything's single-point prompts per decoder forward (decode_points)

    def __init__(self, encoder: Any, graphs: PromptGraphs) -> None:
        """encoder: the converted encoder's ``openvino.CompiledModel``; graphs: the prompt decoder
        and the upsampling graphs (runners.converted.compile_prompt_decoder)."""
        self.encoder = encoder
        self._encode_request = encoder.create_infer_request()
        self.prompt_decoder = graphs.prompt_decoder
        self._decoder_requests = ThreadRequests(graphs.prompt_decoder)
        self.upsample = Upsampler(graphs.upsampler)
        self.upsample_scored = ScoredUpsampler(graphs.scored_upsampler)

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """image: (H, W, 3) uint8 RGB -> the encoder's input, as ``SamPredictor.set_image`` makes
        it: resized with PIL's bilinear filter (what ResizeLongestSide's torchvision call runs),
        normalised in float32, padded with zeros at the bottom and right."""
        height, width = image.shape[:2]
        h, w = preprocess_shape(height, width)
        resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        tensor = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        tensor[:, :h, :w] = ((resized.astype(np.float32) - _MEAN) / _STD).transpose(2, 0, 1)
        return PreparedImage(tensor, (height, width), (h, w))

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """batch: (B, 3, 1024, 1024) float32 from ``prepare`` -> features (B, 256, 64, 64) float32."""
        return np.concatenate([encode_one(self._encode_request, image) for image in batch])

    def embed(self, prepared: list[PreparedImage]) -> list[ImageEmbedding]:
        """Encode prepared images (one forward each: the IR's batch is 1)."""
        return [ImageEmbedding(encode_one(self._encode_request, p.tensor), p.original_size, p.input_size) for p in prepared]

    def predict(self, embedding: ImageEmbedding, prompts: Prompts) -> Prediction:
        """All prompts of one image in one decoder forward (SamPredictor.predict's outputs)."""
        coords, labels = prompt_inputs(prompts, embedding.original_size)
        low_res, scores = self.decode(embedding, coords, labels, prompts.mask_input)
        chosen = slice(1, None) if prompts.multimask else slice(0, 1)  # MaskDecoder.forward's
        low_res, scores = np.ascontiguousarray(low_res[:, chosen]), np.ascontiguousarray(scores[:, chosen])
        masks = self.upsample(low_res, embedding.input_size, embedding.original_size)
        return Prediction(masks, scores, low_res)

    def decode(self, embedding: ImageEmbedding, coords: np.ndarray, labels: np.ndarray,
               mask_input: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The prompt decoder's forward (``prompt_inputs``' coords (B, N, 2) float32 and labels
        (B, N) int32; mask_input (1, 256, 256) or None): low-res logits (B, 4, 256, 256) and
        predicted IoUs (B, 4), float32, all four of MaskDecoder's masks."""
        has_mask = mask_input is not None
        mask = mask_input[None].astype(np.float32) if has_mask else np.zeros((1, 1, LOW_RES, LOW_RES), np.float32)
        result = self._decoder_requests.get().infer([embedding.array(), coords, labels, mask, np.array([float(has_mask)], np.float32)])
        return result[0], result[1]

    def decode_points(self, embedding: ImageEmbedding, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One foreground point per prompt, as ``SamAutomaticMaskGenerator`` prompts them.

        points: (N, 2) float64 (x, y) pixels of the embedded image. Returns the multimask outputs:
        low-res logits (N, 3, 256, 256) and predicted IoUs (N, 3), float32. The generator keeps
        the transformed coordinates in float64 (``apply_coords``, then ``+ 0.5`` in the prompt
        encoder) until ``forward_with_coords`` casts them; the graph adds its 0.5 in float32, so
        it is handed ``float32(x + 0.5) - 0.5``, exact in float32 (0.5 is a multiple of the
        spacing of floats below 2**23), which gives back float32(x + 0.5) exactly."""
        scaled = scale_coords(points, embedding.original_size, np.float64, cast=False)
        shifted = (scaled + 0.5).astype(np.float32) - np.float32(0.5)
        coords = np.stack([shifted, np.zeros_like(shifted)], axis=1)  # and SAM's padding point
        labels = np.tile(np.array([[FOREGROUND, PADDING]], np.int32), (len(points), 1))
        parts = [self.decode(embedding, coords[i:i + self.POINTS_PER_FORWARD], labels[i:i + self.POINTS_PER_FORWARD])
                 for i in range(0, len(points), self.POINTS_PER_FORWARD)]
        low_res = np.concatenate([low for low, _ in parts]) if parts else np.zeros((0, 4, LOW_RES, LOW_RES), np.float32)
        scores = np.concatenate([iou for _, iou in parts]) if parts else np.zeros((0, 4), np.float32)
        return low_res[:, 1:], scores[:, 1:]

    def warm_up(self, encoder: bool = True) -> None:
        """One decoder forward on a synthetic image, after one encoder forward (``encoder``) or on
        a zero embedding."""
        prepared = self.prepare(np.zeros((64, 64, 3), dtype=np.uint8))
        if encoder:
            embedding = self.embed([prepared])[0]
        else:
            features = np.zeros((1, 256, IMAGE_SIZE // 16, IMAGE_SIZE // 16), np.float32)
            embedding = ImageEmbedding(features, prepared.original_size, prepared.input_size)
        self.predict(embedding, Prompts(points=np.array([[32.0, 32.0]]), labels=np.array([1]), multimask=True))


def encode_one(request: Any, image: np.ndarray) -> np.ndarray:
    """image (3, 1024, 1024) float32 -> features (1, 256, 64, 64), on an encoder infer request."""
    return request.infer({0: np.ascontiguousarray(image, np.float32)[None]})[0].copy()
