"""SAM's mask decoder run by OpenVINO: the same graph, converted beside the encoder.

``MaskDecoder.forward`` (called by ``SamPredictor.predict_torch`` and by segment-everything)
does its work in ``predict_masks``: a two-way transformer over the 64 x 64 image tokens and
the prompt tokens, then the upscaling convolutions and the hypernetwork heads. In torch on a
CPU that is mostly framework overhead at one prompt and memory traffic at 64; the converted
graph (runners/convert.py: ``convert_decoder``) runs it 1.4x (one prompt) to 2.8x (64 prompts)
faster on this project's 2-core CPUs, in float32, with logits within 1e-6 of torch's. Everything
around it stays segment_anything's own code: the prompt encoder, the multimask slicing, the
upsampling to the image and the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .converted import ThreadRequests


class OpenVINOMaskDecoder:
    """Stands in for ``MaskDecoder.predict_masks``.

    Arguments as segment_anything passes them: image_embeddings and image_pe (1, 256, 64, 64),
    sparse_prompt_embeddings (B, N, 256), dense_prompt_embeddings (B, 256, 64, 64), all float32
    on the CPU. Returns masks (B, 4, 256, 256) low-res logits and iou_pred (B, 4), float32.

    Thread-safe: each calling thread gets its own infer request (requests run concurrently;
    OpenVINO releases the GIL while one runs).
    """

    def __init__(self, compiled: Any) -> None:
        """compiled: an ``openvino.CompiledModel`` of the converted decoder (runners/converted.py)."""
        self.compiled = compiled
        self._requests = ThreadRequests(compiled)

    def __call__(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dense = dense_prompt_embeddings
        if dense.shape[0] > 1 and dense.stride(0) == 0:  # the no-mask embedding, expanded: send it once
            dense = dense[:1]  # the graph adds it to every prompt's copy of the image, broadcasting
        inputs = [_numpy(t) for t in (image_embeddings, image_pe, sparse_prompt_embeddings, dense)]
        result = self._requests.get().infer(inputs)
        masks, iou_pred = (torch.from_numpy(result[output].copy()) for output in self.compiled.outputs)
        return masks, iou_pred


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()


def use_openvino_decoder(mask_decoder: torch.nn.Module, compiled: Any) -> None:
    """Route ``mask_decoder.predict_masks`` through the compiled decoder."""
    mask_decoder.predict_masks = OpenVINOMaskDecoder(compiled)
