"""The torch-free segment-everything (runners/mask_generator.py) equals SamAutomaticMaskGenerator.

Both run on the same embeddings (the reference predictor's, for the image and for each crop), so
what is compared is the generator, not the encoder: the same instances in the same order, with
the same prompt points, crop boxes and scores, and masks that differ only where the decoder's
logit rounds the other way at the threshold (the decoder is an OpenVINO graph here). Random-init
SAM keeps nothing at the default thresholds, so most cases open them, and assert that many
instances came back.
"""

from __future__ import annotations

import numpy as np
import pytest
from segment_anything import SamAutomaticMaskGenerator, SamPredictor

from runners.engine_types import ImageEmbedding
from runners.mask_generator import GeneratorParams, MaskGenerator
from runners.outputs import decode_rle, uncompressed_rle_to_coco
from runners.schemas import EverythingRequest
from tests.photos import small_photo_rgb

OPEN = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
MAX_FLIPPED = 1e-4  # pixels of an image a mask may differ in (a logit at the threshold)


def run_both(reference_model, engine, name: str, params: dict) -> tuple[list, list[dict]]:
    rgb = small_photo_rgb(name)
    reference = SamAutomaticMaskGenerator(reference_model, output_mode="uncompressed_rle", **params).generate(rgb)
    predictor = SamPredictor(reference_model)
    crops: list[tuple[int, int]] = []

    def embed(crop: np.ndarray) -> ImageEmbedding:
        crops.append(crop.shape[:2])
        predictor.set_image(crop)
        return ImageEmbedding(predictor.features.numpy().copy(), predictor.original_size, predictor.input_size)

    full = embed(rgb)
    request = EverythingRequest(image_id="x", **params)  # the server's defaults and checks
    ours = MaskGenerator(engine, GeneratorParams(**request.generator_kwargs())).generate(rgb, full, embed)
    assert len(crops) == 1 + sum(4**layer for layer in range(1, params.get("crop_n_layers", 0) + 1))
    return ours, reference


def assert_same_instances(ours: list, reference: list[dict]) -> None:
    assert len(ours) == len(reference)
    identical = 0
    for mine, theirs in zip(ours, reference):
        assert mine.point_coords == theirs["point_coords"] and mine.crop_box == theirs["crop_box"]
        assert abs(mine.predicted_iou - theirs["predicted_iou"]) <= 1e-5
        assert abs(mine.stability_score - theirs["stability_score"]) <= 1e-4
        if mine.rle == uncompressed_rle_to_coco(theirs["segmentation"]):
            identical += 1
            assert mine.bbox == theirs["bbox"] and mine.area == theirs["area"]
        else:
            flipped = (decode_rle(mine.rle) != decode_rle(theirs["segmentation"])).sum()
            assert flipped <= MAX_FLIPPED * np.prod(mine.rle["size"]), flipped
            assert abs(mine.area - theirs["area"]) <= flipped
            np.testing.assert_allclose(mine.bbox, theirs["bbox"], atol=1)
    assert identical >= 0.9 * len(ours)


CASES = {
    "open thresholds": ("dog", {"points_per_side": 5, **OPEN}),
    "batches of 5, small regions removed": ("groceries", {"points_per_side": 4, "points_per_batch": 5, **OPEN,
                                                          "min_mask_region_area": 100}),
    "a crop layer, small regions": ("truck", {"points_per_side": 4, "crop_n_layers": 1, **OPEN,
                                                  "crop_nms_thresh": 1.0, "min_mask_region_area": 400}),
    "an IoU threshold": ("dog", {"points_per_side": 6, **OPEN, "pred_iou_thresh": 0.02}),
}


@pytest.mark.parametrize("case", CASES)
def test_instances_equal_the_automatic_mask_generators(reference_model, converted_engine, case):
    name, params = CASES[case]
    ours, reference = run_both(reference_model, converted_engine, name, params)
    assert len(reference) >= 10
    assert_same_instances(ours, reference)


def test_nms_keeps_the_generators_instance(reference_model, converted_engine):
    """Random-init masks nearly fill the image, so NMS keeps one of 108: the one SAM keeps, the
    highest predicted IoU (tests/test_amg.py holds the NMS to torchvision's on many boxes)."""
    params = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    ours, reference = run_both(reference_model, converted_engine, "truck", params)
    assert len(reference) == 1
    assert_same_instances(ours, reference)


def test_a_stability_threshold_between_the_scores(reference_model, converted_engine):
    """Offset 0.03 (random-init logits are small) and the threshold at the median score: about
    half of the masks kept."""
    params = {"points_per_side": 5, **OPEN, "stability_score_offset": 0.03}
    every, _ = run_both(reference_model, converted_engine, "dog", params)
    params["stability_score_thresh"] = float(np.median([i.stability_score for i in every]))
    ours, reference = run_both(reference_model, converted_engine, "dog", params)
    assert 0 < len(reference) < len(every)
    assert_same_instances(ours, reference)


def test_thresholds_that_keep_nothing_give_nothing(reference_model, converted_engine):
    ours, reference = run_both(reference_model, converted_engine, "dog", {"points_per_side": 4})
    assert ours == reference == []


def test_upsampling_a_few_masks_at_a_time_changes_nothing(reference_model, converted_engine, monkeypatch):
    """Large images upsample fewer masks at once (runners.upsample.masks_at_once); here 3 of the
    small photo's, so that batches end mid-chunk."""
    from runners import upsample

    monkeypatch.setattr(upsample, "LOGITS_AT_ONCE_BYTES", 3 * 4 * 267 * 400)
    assert upsample.masks_at_once(267, 400) == 3
    ours, reference = run_both(reference_model, converted_engine, "dog", {"points_per_side": 4, **OPEN})
    assert len(reference) == 48
    assert_same_instances(ours, reference)


@pytest.mark.parametrize("size, expected", [((1080, 1920), 16), ((1200, 1800), 15), ((3000, 4000), 2), ((8000, 8000), 1), ((1, 1), 16)])
def test_masks_at_once_holds_the_logits_near_128_mb(size, expected):
    from runners.upsample import masks_at_once

    assert masks_at_once(*size) == expected
