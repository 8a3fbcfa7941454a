"""SAM's prompt encoder and mask decoder as one graph to convert: prompts in, low-res masks out.

``SamPredictor.predict_torch`` runs ``PromptEncoder.forward`` and then ``MaskDecoder.forward``;
``PromptDecoder`` is the two as one traceable module, written the way segment_anything's own
ONNX export writes them (``segment_anything.utils.onnx.SamOnnxModel``): box corners are points
with labels 2 and 3, the padding point SAM appends when there is no box is a point with label -1,
and masks by label are products with 0/1 instead of indexed writes. Each product by 1 and each
sum with 0 is exact in float32, so the embeddings are SAM's own; only the runtime's sin/cos may
round differently (logits within 1e-5 of torch's, tests/test_converted_engine.py). Unlike the
ONNX export it keeps SamPredictor's output: all four masks and IoUs, upsampling and mask
selection left to the caller (runners/converted_engine.py), and no "multi-click" reweighting.

Converted once per checkpoint beside the encoder (runners/convert.py), it lets a server answer
prompts with no torch in the process at all.
"""

from __future__ import annotations

import torch

from .converted import PADDING


class PromptDecoder(torch.nn.Module):
    """Inputs, all float32 but the labels:

    - image_embeddings (1, 256, 64, 64): one image's features from the encoder;
    - point_coords (B, N, 2): (x, y) in the encoder's 1024 x 1024 input frame (the caller applies
      ``ResizeLongestSide.apply_coords``), box corners and SAM's padding point included;
    - point_labels (B, N) int32: runners.converted's PADDING, BACKGROUND, FOREGROUND, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT;
    - mask_input (1 or B, 1, 256, 256): low-res logits of an earlier prediction (zeros if none);
    - has_mask_input (1,): 1.0 to use mask_input, 0.0 for SAM's no-mask embedding.

    Outputs: low-res mask logits (B, 4, 256, 256) and predicted IoUs (B, 4), float32: mask 0 is
    the single-mask output, masks 1-3 the multimask ones (``MaskDecoder.forward``'s slices).
    """

    def __init__(self, sam: torch.nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        with torch.no_grad():
            self.register_buffer("image_pe", sam.prompt_encoder.get_dense_pe(), persistent=False)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        encoder = self.prompt_encoder
        height, width = encoder.input_image_size
        shifted = coords + 0.5  # to the pixel's centre
        normalized = torch.stack([shifted[..., 0] / width, shifted[..., 1] / height], dim=-1)
        embedding = encoder.pe_layer._pe_encoding(normalized)
        labels = labels[..., None]
        embedding = embedding * (labels != PADDING).to(embedding.dtype)
        embedding = embedding + encoder.not_a_point_embed.weight * (labels == PADDING).to(embedding.dtype)
        for label in range(encoder.num_point_embeddings):
            embedding = embedding + encoder.point_embeddings[label].weight * (labels == label).to(embedding.dtype)
        return embedding

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):  # type: ignore[no-untyped-def]
        sparse = self.embed_points(point_coords, point_labels)
        encoder = self.prompt_encoder
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has_mask_input * encoder.mask_downscaling(mask_input) + (1 - has_mask_input) * no_mask
        return self.mask_decoder.predict_masks(image_embeddings, self.image_pe, sparse, dense)


def convert_prompt_decoder(sam: torch.nn.Module):  # type: ignore[no-untyped-def]
    """``PromptDecoder`` as an OpenVINO model: any number of prompts and of points per prompt."""
    import openvino as ov

    dim = sam.prompt_encoder.embed_dim
    grid = sam.prompt_encoder.image_embedding_size
    low_res = [4 * side for side in grid]
    example = (torch.zeros(1, dim, *grid), torch.full((2, 3, 2), 100.0), torch.tensor([[1, 0, -1], [2, 3, 1]], dtype=torch.int32),
               torch.zeros(1, 1, *low_res), torch.zeros(1))
    shapes = [ov.PartialShape([1, dim, *grid]), ov.PartialShape([-1, -1, 2]), ov.PartialShape([-1, -1]),
              ov.PartialShape([-1, 1, *low_res]), ov.PartialShape([1])]
    types = [ov.Type.f32, ov.Type.f32, ov.Type.i32, ov.Type.f32, ov.Type.f32]
    with torch.no_grad():
        return ov.convert_model(PromptDecoder(sam).eval(), example_input=example, input=list(zip(shapes, types)))
