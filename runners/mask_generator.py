"""Segment-everything on the torch-free engine: ``SamAutomaticMaskGenerator`` without torch.

The torch engine runs segment_anything's own generator (runners/everything.py). The torch-free
engine (runners/converted_engine.py) runs this port of it instead, so that a server that never
imports torch for prompts does not import it for segment-everything either (it cost a replica's
first such request 4.3 s and 0.7 GB on vit_h). The algorithm is the generator's, step for step:
the point grid per crop layer, the crops, single-point prompts in batches of
``points_per_batch``, the multimask outputs filtered by predicted IoU, stability score and
nearness to a crop's edge, NMS within a crop and then across crops, small-region cleanup. Its
helpers are runners/amg.py's numpy ports; the decoder and the upsampling are OpenVINO graphs
(runners/prompt_decoder.py, runners/upsample.py), the latter computing the stability counts on
the full-size logits as it thresholds them; RLEs are pycocotools' (runners/outputs.py), which
the responses carry, where segment_anything makes uncompressed ones and converts them.

What changes changes no result (runners/everything.py does the same in torch): batches are
filtered by predicted IoU before upsampling, only survivors are upsampled, a few at a time; the
decoder runs ``ConvertedEngine.POINTS_PER_FORWARD`` points per forward. One difference in order
only: torchvision's ``batched_nms`` re-sorts its result with an unstable sort when it is given
more than 1000 boxes, so where an NMS gets that many, instances with equal scores may come in
another order there (the same instances): likely in the cross-crop NMS (its scores are equal
within a crop) and the small-region cleanup (scores 0 or 1), rare among predicted IoUs. Here ties
always keep the generator's order. tests/test_mask_generator.py holds the results to the
generator's on the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from . import amg
from .converted_engine import ConvertedEngine
from .engine_types import ImageEmbedding, Instance
from .outputs import decode_rle, encode_rle, mask_areas, masks_to_boxes_xyxy
from .upsample import masks_at_once

EmbedCrop = Callable[[np.ndarray], ImageEmbedding]


@dataclass(frozen=True)
class GeneratorParams:
    """``SamAutomaticMaskGenerator``'s parameters (runners.schemas.EverythingRequest holds their
    defaults, the generator's, and checks a request's: ``GeneratorParams(**request.generator_kwargs())``)."""

    points_per_side: int
    points_per_batch: int
    pred_iou_thresh: float
    stability_score_thresh: float
    stability_score_offset: float
    box_nms_thresh: float
    crop_n_layers: int
    crop_nms_thresh: float
    crop_overlap_ratio: float
    crop_n_points_downscale_factor: int
    min_mask_region_area: int


@dataclass(frozen=True)
class _Masks:
    """The generator's ``MaskData``: N masks as COCO RLEs of the image (pycocotools'), and per
    mask its area and box (x0, y0, x1, y1) int64, predicted IoU and stability score float32,
    prompt point (x, y) float64 and crop box int64."""

    rles: list[dict[str, Any]]
    areas: np.ndarray
    boxes: np.ndarray
    iou_preds: np.ndarray
    stability: np.ndarray
    points: np.ndarray
    crop_boxes: np.ndarray

    def take(self, keep: np.ndarray) -> _Masks:
        """The masks at ``keep`` (indices, in their order, or a bool mask)."""
        index = np.flatnonzero(keep) if keep.dtype == bool else keep
        return _Masks([self.rles[i] for i in index], self.areas[index], self.boxes[index], self.iou_preds[index],
                      self.stability[index], self.points[index], self.crop_boxes[index])

    @staticmethod
    def concat(parts: list[_Masks]) -> _Masks:
        if not parts:
            return _Masks([], np.zeros(0, np.int64), np.zeros((0, 4), np.int64), np.zeros(0, np.float32),
                          np.zeros(0, np.float32), np.zeros((0, 2)), np.zeros((0, 4), np.int64))
        return _Masks([rle for part in parts for rle in part.rles],
                      *(np.concatenate([getattr(p, name) for p in parts])
                        for name in ("areas", "boxes", "iou_preds", "stability", "points", "crop_boxes")))


class MaskGenerator:
    """``SamAutomaticMaskGenerator(model, output_mode="coco_rle", **params)`` on a ConvertedEngine;
    ``generate`` takes the image's embedding as given."""

    def __init__(self, engine: ConvertedEngine, params: GeneratorParams) -> None:
        self.engine = engine
        self.params = params
        self.point_grids = amg.build_point_grids(params.points_per_side, params.crop_n_layers,
                                                 params.crop_n_points_downscale_factor)

    def generate(self, image: np.ndarray, embedding: ImageEmbedding, embed_crop: EmbedCrop) -> list[Instance]:
        """All instances in ``image`` ((H, W, 3) uint8 RGB whose embedding is ``embedding``);
        ``embed_crop`` embeds a crop's pixels (crop layers only)."""
        p = self.params
        orig_size = image.shape[:2]
        crop_boxes, layers = amg.generate_crop_boxes(orig_size, p.crop_n_layers, p.crop_overlap_ratio)
        data = _Masks.concat([self._process_crop(image, embedding, embed_crop, box, layer)
                              for box, layer in zip(crop_boxes, layers)])
        if len(crop_boxes) > 1:  # duplicates between crops: prefer the smaller crop's
            boxes = data.crop_boxes
            areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32)
            data = data.take(amg.nms(data.boxes, np.float32(1) / areas, p.crop_nms_thresh))
        if p.min_mask_region_area > 0:
            data = _without_small_regions(data, p.min_mask_region_area, max(p.box_nms_thresh, p.crop_nms_thresh))
        return [
            Instance(rle=rle, bbox=amg.xyxy_to_xywh(box), area=int(area), predicted_iou=float(iou),
                     stability_score=float(stability), point_coords=[[float(x), float(y)]],
                     crop_box=amg.xyxy_to_xywh(crop_box))
            for rle, area, box, iou, stability, (x, y), crop_box in zip(data.rles, data.areas, data.boxes, data.iou_preds,
                                                                         data.stability, data.points, data.crop_boxes)
        ]

    def _process_crop(self, image: np.ndarray, embedding: ImageEmbedding, embed_crop: EmbedCrop,
                      crop_box: list[int], layer: int) -> _Masks:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        if tuple(crop.shape[:2]) != embedding.original_size:
            embedding = embed_crop(crop)
        points = self.point_grids[layer] * np.array(crop.shape[:2])[None, ::-1]
        step = self.params.points_per_batch
        data = _Masks.concat([self._process_batch(embedding, points[i:i + step], crop_box, image.shape[:2])
                              for i in range(0, len(points), step)])
        data = data.take(amg.nms(data.boxes, data.iou_preds, self.params.box_nms_thresh))
        offset = np.array([x0, y0, x0, y0])
        return replace(data, boxes=data.boxes + offset, points=data.points + offset[:2],
                       crop_boxes=np.tile(np.array(crop_box, np.int64), (len(data.rles), 1)))

    def _process_batch(self, embedding: ImageEmbedding, points: np.ndarray, crop_box: list[int],
                       orig_size: tuple[int, int]) -> _Masks:
        p = self.params
        low_res, iou_preds = self.engine.decode_points(embedding, points)
        low_res, iou_preds = low_res.reshape(-1, *low_res.shape[2:]), iou_preds.reshape(-1)
        points = points.repeat(3, axis=0)
        if p.pred_iou_thresh > 0.0:
            keep = iou_preds > np.float32(p.pred_iou_thresh)
            low_res, iou_preds, points = low_res[keep], iou_preds[keep], points[keep]
        step = masks_at_once(*embedding.original_size)
        return _Masks.concat([self._finish(embedding, low_res[i:i + step], iou_preds[i:i + step], points[i:i + step],
                                           crop_box, orig_size)
                              for i in range(0, len(iou_preds), step)])

    def _finish(self, embedding: ImageEmbedding, low_res: np.ndarray, iou_preds: np.ndarray, points: np.ndarray,
                crop_box: list[int], orig_size: tuple[int, int]) -> _Masks:
        """The rest of the generator's ``_process_batch`` on a few masks' low-res logits."""
        p = self.params
        masks, stability = self.engine.upsample_scored(low_res, embedding.input_size, embedding.original_size,
                                                        p.stability_score_offset)
        if p.stability_score_thresh > 0.0:
            keep = stability >= np.float32(p.stability_score_thresh)
            masks, stability, iou_preds, points = masks[keep], stability[keep], iou_preds[keep], points[keep]
        boxes = masks_to_boxes_xyxy(masks)
        orig_h, orig_w = orig_size
        keep = ~amg.box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
        masks, boxes, stability, iou_preds, points = masks[keep], boxes[keep], stability[keep], iou_preds[keep], points[keep]
        rles = encode_rle(amg.uncrop_masks(masks, crop_box, orig_h, orig_w))
        areas = np.array(mask_areas(masks), np.int64)
        return _Masks(rles, areas, boxes, iou_preds, stability, points, np.zeros((len(rles), 4), np.int64))


def _without_small_regions(data: _Masks, min_area: int, nms_thresh: float) -> _Masks:
    """The generator's ``postprocess_small_regions``: holes and islands under ``min_area`` pixels
    removed, then NMS preferring the masks that needed no change. Masks are decoded one at a time
    (the original stacks them all at full size)."""
    if not data.rles:
        return data
    rles, areas, boxes = list(data.rles), data.areas.copy(), data.boxes.copy()
    scores, new_boxes = np.zeros(len(rles), np.float32), np.zeros_like(boxes)
    for i, rle in enumerate(data.rles):
        mask, filled = amg.remove_small_regions(decode_rle(rle), min_area, "holes")
        mask, dropped = amg.remove_small_regions(mask, min_area, "islands")
        scores[i] = float(not (filled or dropped))
        new_boxes[i] = masks_to_boxes_xyxy(mask[None])[0]
        if filled or dropped:
            rles[i], areas[i] = encode_rle(mask[None])[0], mask_areas(mask[None])[0]
    keep = amg.nms(new_boxes, scores, nms_thresh)
    changed = scores == 0.0
    boxes[changed] = new_boxes[changed]  # the unchanged keep theirs (equal, as the masks are)
    return replace(data, rles=rles, areas=areas, boxes=boxes).take(keep)
