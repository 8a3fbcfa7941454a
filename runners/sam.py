"""The SAM runner: image preprocessing, batched image encoder, multi-prompt mask decoder.

Every step reuses segment_anything's own code path (``ResizeLongestSide``,
``Sam.preprocess``, ``SamPredictor.predict``/``predict_torch``) so that outputs equal
``SamPredictor``'s on the same weights; what this module adds is batching several
images into one encoder forward and decoding from a cached embedding.
"""

from __future__ import annotations

import logging
import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from .attention import use_lean_encoder
from .engine_types import ImageEmbedding, PreparedImage, Prediction, Prompts
from .encoders import Encoder, TorchEncoder
from .errors import ConfigError

logger = logging.getLogger(__name__)


def prepare_image(model: Sam, transform: ResizeLongestSide, image: np.ndarray, device: torch.device) -> PreparedImage:
    """image: (H, W, 3) uint8 RGB -> the encoder's input, as ``SamPredictor.set_image`` makes it."""
    resized = transform.apply_image(image)
    tensor = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()[None, :, :, :]
    with torch.inference_mode():
        tensor = model.preprocess(tensor)[0]
    return PreparedImage(tensor, (image.shape[0], image.shape[1]), (resized.shape[0], resized.shape[1]))


def select_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("SEGANY_DEVICE=cuda but no CUDA device is visible; use SEGANY_DEVICE=cpu or auto.")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The torch encoder's autocast dtype; None means plain fp32 (the exact reference path)."""
    if precision == "int8":
        raise ConfigError("SEGANY_PRECISION=int8 is the OpenVINO encoder's, on CPU: use SEGANY_ENCODER=auto (or "
                          "openvino) with SEGANY_DEVICE=cpu, or bf16/fp16 with torch on CUDA.")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("SEGANY_PRECISION=fp16 needs a CUDA device; on CPU use fp32, bf16 or int8.")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def uses_sdpa(attention: str, device: torch.device, backend: str) -> bool:
    """Whether the torch encoder's attention runs in ``scaled_dot_product_attention``
    (runners/attention.py): ``SEGANY_ATTENTION`` sdpa, or auto on CUDA."""
    if attention == "sdpa" and backend != "torch":
        raise ConfigError("SEGANY_ATTENTION=sdpa is the torch encoder's (OpenVINO fuses attention itself): "
                          "set SEGANY_ENCODER=torch as well, or leave SEGANY_ATTENTION=auto.")
    return backend == "torch" and (attention == "sdpa" or (attention == "auto" and device.type == "cuda"))


class SamEngine:
    """Thread-compatible runner over one loaded ``Sam`` model.

    ``prepare`` and ``predict`` may run concurrently from several threads; ``encode`` is
    called by one batching thread at a time.
    """

    def __init__(self, model: Sam, device: torch.device, encoder: Encoder | None = None, sdpa: bool = False) -> None:
        """``encoder`` runs the image encoder (default: the model's own, in torch); ``sdpa``: its
        attention in ``scaled_dot_product_attention`` (see :func:`uses_sdpa`)."""
        self.model = model
        self.device = device
        self.encoder = encoder or TorchEncoder(model.image_encoder, device, None)
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        # SamPredictor recomputes the decoder's dense positional encoding (a 64x64 grid of
        # sin/cos features) on every prompt; it depends only on the grid, so compute it once.
        with torch.inference_mode():
            dense_pe = model.prompt_encoder.get_dense_pe()
        model.prompt_encoder.get_dense_pe = lambda: dense_pe
        # Global attention a few heads at a time, windowed blocks' linear layers on the real
        # tokens only: the same numbers with a fraction of the memory and less work.
        use_lean_encoder(model.image_encoder, sdpa=sdpa)  # (a no-op when another runtime holds the encoder)
        self.attention = "sdpa" if sdpa else "exact"

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """image: (H, W, 3) uint8 RGB -> the encoder's input, as ``SamPredictor.set_image`` makes it."""
        return prepare_image(self.model, self.transform, image, self.device)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """batch: (B, 3, 1024, 1024) from ``prepare`` -> features (B, 256, 64, 64) float32."""
        return self.encoder(batch)

    def embed(self, prepared: list[PreparedImage]) -> list[ImageEmbedding]:
        """Encode several prepared images in one forward."""
        features = self.encode(torch.stack([p.tensor for p in prepared]))
        return [
            ImageEmbedding(features[i : i + 1].clone(), p.original_size, p.input_size)
            for i, p in enumerate(prepared)
        ]

    def predict(self, embedding: ImageEmbedding, prompts: Prompts) -> Prediction:
        """Decode all prompts of one image in one decoder forward."""
        predictor = predictor_for(self.model, embedding)
        with torch.inference_mode():
            if prompts.count == 1:
                box = None if prompts.boxes is None else prompts.boxes[0]
                masks, scores, logits = predictor.predict(
                    point_coords=prompts.points,
                    point_labels=prompts.labels,
                    box=box,
                    mask_input=prompts.mask_input,
                    multimask_output=prompts.multimask,
                )
                return Prediction(masks[None], scores[None], logits[None])
            return self._predict_boxes(predictor, prompts)

    def _predict_boxes(self, predictor: SamPredictor, prompts: Prompts) -> Prediction:
        """Several boxes in one batch, as segment_anything's README batches them
        (``apply_boxes_torch`` + ``predict_torch``); points and mask_input apply to every box."""
        n = prompts.count
        size = predictor.original_size
        boxes = predictor.transform.apply_boxes_torch(torch.as_tensor(prompts.boxes, dtype=torch.float, device=self.device), size)
        coords = labels = mask = None
        if prompts.points is not None:
            points = torch.as_tensor(prompts.points, dtype=torch.float, device=self.device)
            coords = predictor.transform.apply_coords_torch(points, size)[None].expand(n, -1, -1)
            labels = torch.as_tensor(prompts.labels, dtype=torch.int, device=self.device)[None].expand(n, -1)
        if prompts.mask_input is not None:
            mask = torch.as_tensor(prompts.mask_input, dtype=torch.float, device=self.device)[None].expand(n, -1, -1, -1)
        masks, scores, logits = predictor.predict_torch(coords, labels, boxes, mask, prompts.multimask)
        return Prediction(masks.cpu().numpy(), scores.float().cpu().numpy(), logits.float().cpu().numpy())

    def warm_up(self, encoder: bool = True) -> None:
        """One decoder forward on a synthetic image, after one encoder forward (``encoder``)
        or on a zero embedding."""
        prepared = self.prepare(np.zeros((64, 64, 3), dtype=np.uint8))
        if encoder:
            embedding = self.embed([prepared])[0]
        else:
            features = torch.zeros((1, self.model.prompt_encoder.embed_dim, 64, 64), device=self.device)
            embedding = ImageEmbedding(features, prepared.original_size, prepared.input_size)
        self.predict(embedding, Prompts(points=np.array([[32.0, 32.0]]), labels=np.array([1]), multimask=True))


def predictor_for(model: Sam, embedding: ImageEmbedding) -> SamPredictor:
    """A ``SamPredictor`` whose image is set from a cached embedding instead of the encoder."""
    predictor = SamPredictor(model)
    predictor.features = embedding.features
    predictor.original_size = embedding.original_size
    predictor.input_size = embedding.input_size
    predictor.is_image_set = True
    return predictor
