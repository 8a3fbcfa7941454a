"""Segment-everything on the torch engine: ``SamAutomaticMaskGenerator`` fed from our encoder path.

(The torch-free engine runs runners/mask_generator.py, a numpy port of the same generator.) The
generator's own algorithm (point grid, crops, batched decoding, stability scores,
NMS, small-region cleanup) is reused; what changes changes no result:

- ``set_image`` is redirected, so the full image's embedding comes from the embedding
  cache and crop embeddings go through the batched encoder;
- each batch is filtered by predicted IoU on the decoder's low-resolution output, before
  upsampling, and only the survivors are upsampled to full size (a few at a time). The
  original upsamples every mask of the batch (3 per point) and then drops most of them;
  upsampling is per mask, so a survivor's full-size logits are the same either way;
- the RLEs of a batch are handed to the generator's ``MaskData`` rather than deep-copied
  on every concatenation (``HandedOver``);
- on CPU the decoder runs a few points at a time instead of ``points_per_batch`` (64) at
  once: each point repeats the 256 x 64 x 64 image embedding, and past a few points those
  tensors fall out of the CPU caches (measured 143 ms per point in batches of 64 against
  87-100 ms in batches of 1-6, 2-core EPYC). The OpenVINO decoder (runners/decoders.py) costs
  the same per point at 4 as at 64 (105 ms on an AVX2 EPYC) but its peak memory grows with
  the batch (+0.2 GB at 4, +2.9 GB at 64), so it gets 4 as well. Each point's prediction is
  its own, so only floating-point rounding can differ; the tests hold it to SAM's instances.

Instances are returned as uncompressed RLE, so even thousands of masks never sit in
memory as full-size arrays at once.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    calculate_stability_score,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    uncrop_masks,
)

from .engine_types import ImageEmbedding, Instance
from .sam import SamEngine
from .upsample import masks_at_once

EmbedCrop = Callable[[np.ndarray], ImageEmbedding]


class HandedOver(list):
    """A list of RLEs that ``MaskData.cat`` takes over instead of deep-copying.

    ``MaskData.cat`` deep-copies every list it concatenates; for RLEs that copies every run
    length of every mask, before NMS drops most of them. With open thresholds that copy was 85%
    of segment-everything's time (vit_b, dog, 36 points: 29 of 34 s). These lists are made
    here and never changed afterwards (the generator only reads and filters them), so handing
    them over gives the same results.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> HandedOver:
        return self


class _CachedImagePredictor(SamPredictor):
    """``set_image`` takes the full image's embedding as given and encodes crops via ``embed_crop``."""

    def __init__(self, engine: SamEngine, full: ImageEmbedding, embed_crop: EmbedCrop) -> None:
        super().__init__(engine.model)
        self._full = full
        self._embed_crop = embed_crop

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        embedding = self._full if tuple(image.shape[:2]) == self._full.original_size else self._embed_crop(image)
        self.reset_image()
        self.features = torch.as_tensor(embedding.features)  # (the OpenVINO engine's are numpy arrays)
        self.original_size = embedding.original_size
        self.input_size = embedding.input_size
        self.is_image_set = True


class _FilterFirstGenerator(SamAutomaticMaskGenerator):
    """SamAutomaticMaskGenerator whose batches are filtered before upsampling."""

    CPU_DECODER_POINTS = 4  # points per decoder forward on CPU (see the module docstring)

    def _process_batch(self, points: np.ndarray, im_size: tuple[int, ...], crop_box: list[int],
                       orig_size: tuple[int, ...]) -> MaskData:
        model, predictor = self.predictor.model, self.predictor
        orig_h, orig_w = orig_size
        in_points = torch.as_tensor(predictor.transform.apply_coords(points, im_size), device=predictor.device)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        low_res, iou_preds = self._decode(in_points[:, None, :], in_labels[:, None])
        data = MaskData(
            low_res=low_res.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1),
            points=torch.as_tensor(points.repeat(low_res.shape[1], axis=0)),
        )
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        kept = MaskData()
        # at least one (maybe empty) chunk: a batch with no survivors still yields every key
        step = masks_at_once(*predictor.original_size)  # full-size float masks alive at once
        for start in range(0, max(1, len(data["iou_preds"])), step):
            part = slice(start, start + step)
            chunk = MaskData(iou_preds=data["iou_preds"][part], points=data["points"][part])
            chunk["masks"] = model.postprocess_masks(data["low_res"][part][:, None], predictor.input_size, predictor.original_size)[:, 0]
            kept.cat(self._finish(chunk, crop_box, orig_h, orig_w))
        kept["rles"] = HandedOver(kept["rles"])  # concatenation made a plain list of them
        return kept

    def _decode(self, points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """predict_torch's decoder step, without its upsampling: (N, 3, 256, 256) low-res logits
        and (N, 3) predicted IoUs for N single-point prompts ((N, 1, 2) coords, (N, 1) labels)."""
        model = self.predictor.model
        step = self.CPU_DECODER_POINTS if points.device.type == "cpu" else max(1, len(points))
        image_pe = model.prompt_encoder.get_dense_pe()
        parts = []
        for start in range(0, len(points), step):
            sparse, dense = model.prompt_encoder(
                points=(points[start:start + step], labels[start:start + step]), boxes=None, masks=None
            )
            parts.append(model.mask_decoder(
                image_embeddings=self.predictor.features,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            ))
        return torch.cat([low for low, _ in parts]), torch.cat([iou for _, iou in parts])

    def _finish(self, data: MaskData, crop_box: list[int], orig_h: int, orig_w: int) -> MaskData:
        """The rest of SamAutomaticMaskGenerator._process_batch, on full-size logits."""
        data["stability_score"] = calculate_stability_score(
            data["masks"], self.predictor.model.mask_threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        data["masks"] = data["masks"] > self.predictor.model.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            data.filter(keep)
        data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
        data["rles"] = HandedOver(mask_to_rle_pytorch(data["masks"]))
        del data["masks"]
        return data


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
    generator = _FilterFirstGenerator(engine.model, output_mode="uncompressed_rle", **generator_kwargs)
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
