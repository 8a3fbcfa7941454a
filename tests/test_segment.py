"""/segment on the real server equals segment_anything.SamPredictor on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from tests.client import array, batches_formed, ok, photo_b64, result_masks, result_scores
from tests.photos import photo_rgb

CASES = {
    "one point (multimask by default)": ("dog", {"points": [[400, 260]], "labels": [1]}),
    "one point, single mask": ("dog", {"points": [[400, 260]], "labels": [1], "multimask": False}),
    "fg and bg points": ("groceries", {"points": [[200, 300], [500, 150], [620, 400]], "labels": [1, 0, 1]}),
    "box": ("truck", {"boxes": [[425, 600, 700, 875]]}),
    "box and a point": ("truck", {"boxes": [[75, 275, 1725, 850]], "points": [[575, 750]], "labels": [0]}),
    "box, multimask": ("truck", {"boxes": [[1375, 550, 1650, 800]], "multimask": True}),
}


LOGIT_ATOL = 1e-4  # the server's logits against SamPredictor's: another process may round the last bits apart


def reference(predictor: SamPredictor, prompt: dict, multimask: bool):
    """SamPredictor's (full-size logits, scores, low-res logits): masks are the logits > 0."""
    return predictor.predict(
        point_coords=np.array(prompt["points"]) if "points" in prompt else None,
        point_labels=np.array(prompt["labels"]) if "labels" in prompt else None,
        box=np.array(prompt["boxes"][0]) if "boxes" in prompt else None,
        mask_input=prompt.get("_mask_input"),
        multimask_output=multimask,
        return_logits=True,
    )


def assert_masks_match(ours: np.ndarray, logits: np.ndarray) -> None:
    """Masks equal ``logits > 0`` except where the logit is within LOGIT_ATOL of 0 (at most 1e-5 of the pixels)."""
    differ = ours != (logits > 0)
    assert not (differ & (np.abs(logits) > LOGIT_ATOL)).any(), f"{differ.sum()} pixels differ, not all at the threshold"
    assert differ.sum() <= 1e-5 * differ.size


def assert_same(result: dict, full_logits: np.ndarray, scores: np.ndarray, logits: np.ndarray) -> None:
    """Masks equal SamPredictor's (logits > 0) at every pixel whose logit is further than
    LOGIT_ATOL from the threshold; scores and low-res logits within LOGIT_ATOL."""
    assert_masks_match(result_masks(result), full_logits)
    np.testing.assert_allclose(result_scores(result), scores, rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(array(result["low_res_logits"]), logits, rtol=0, atol=LOGIT_ATOL)


@pytest.mark.parametrize("case", CASES)
def test_segment_equals_sam_predictor(api, predictor_for, case):
    name, prompt = CASES[case]
    body = ok(api.post("/segment", json={"image": photo_b64(name), **prompt, "return_logits": True}))
    multimask = prompt.get("multimask", list(prompt) == ["points", "labels"] and len(prompt["points"]) == 1)
    full_logits, scores, logits = reference(predictor_for(name), prompt, multimask)
    rgb = photo_rgb(name)
    assert (body["height"], body["width"]) == rgb.shape[:2] and body["output"] == "rle"
    [result] = body["results"]
    assert len(result["masks"]) == (3 if multimask else 1)
    assert_same(result, full_logits, scores, logits)
    coverage = (full_logits > 0).mean()
    assert 0.01 < coverage < 0.99  # real masks, not an empty or full image


def test_several_boxes_give_one_result_per_box_equal_to_predict_torch(api, predictor_for):
    boxes = [[75, 275, 1725, 850], [425, 600, 700, 875], [1375, 550, 1650, 800], [1240, 675, 1400, 750]]
    body = ok(api.post("/segment", json={"image": photo_b64("truck"), "boxes": boxes, "return_logits": True}))
    predictor = predictor_for("truck")
    boxes_t = predictor.transform.apply_boxes_torch(torch.tensor(boxes, dtype=torch.float), predictor.original_size)
    full_logits, scores, logits = predictor.predict_torch(None, None, boxes_t, multimask_output=False, return_logits=True)
    assert len(body["results"]) == 4
    for i, result in enumerate(body["results"]):
        assert_same(result, full_logits[i].numpy(), scores[i].numpy(), logits[i].numpy())


def test_mask_input_refinement_round_trip(api, predictor_for):
    first = ok(api.post("/segment", json={"image": photo_b64("dog"), "points": [[400, 260]], "labels": [1], "return_logits": True}))
    [result] = first["results"]
    best = int(np.argmax(result_scores(result)))
    logits = array(result["low_res_logits"])[best : best + 1]
    prompt = {"points": [[400, 260], [300, 200]], "labels": [1, 1], "multimask": False}
    second = ok(api.post("/segment", json={"image_id": first["image_id"], **prompt, "return_logits": True,
                                           "mask_input": {"shape": [1, 256, 256], "dtype": "float32",
                                                          "data": __import__("base64").b64encode(logits.astype("<f4").tobytes()).decode()}}))
    full_logits, scores, ref_logits = reference(predictor_for("dog"), {**prompt, "_mask_input": logits}, False)
    assert_same(second["results"][0], full_logits, scores, ref_logits)
    # nested lists are accepted too
    third = ok(api.post("/segment", json={"image_id": first["image_id"], **prompt, "mask_input": logits[0].tolist(), "return_logits": True}))
    assert_same(third["results"][0], full_logits, scores, ref_logits)


def test_image_id_reuses_the_cached_embedding_without_the_encoder(api, predictor_for):
    prompt = {"points": [[210, 320]], "labels": [1]}
    first = ok(api.post("/segment", json={"image": photo_b64("groceries"), **prompt}))
    batches_before, _ = batches_formed(api)
    assert batches_before >= 1  # the first request did run the encoder through the batcher
    second = ok(api.post("/segment", json={"image_id": first["image_id"], **prompt}))
    again = ok(api.post("/segment", json={"image": photo_b64("groceries"), **prompt}))  # same bytes: cache hit too
    assert batches_formed(api)[0] == batches_before  # no encoder batch ran
    assert second["image_id"] == first["image_id"] == again["image_id"]
    assert second["results"] == first["results"] == again["results"]


def test_evicted_image_id_is_a_404_that_says_to_resend(api):
    from tests.client import b64, error
    from tests.photos import small_photo_png

    prompt = {"points": [[10, 10]], "labels": [1]}
    first = ok(api.post("/segment", json={"image": b64(small_photo_png("truck", 97)), **prompt}))
    for side in range(98, 110):  # SEGANY_CACHE_MB=48 holds about ten 4 MiB embeddings
        ok(api.post("/embed", json={"image": b64(small_photo_png("truck", side))}))
    err = error(api.post("/segment", json={"image_id": first["image_id"], **prompt}), 404, "image_not_found")
    assert "send the image again" in err["message"]
    # and sending it again works
    assert ok(api.post("/segment", json={"image": b64(small_photo_png("truck", 97)), **prompt}))["image_id"] == first["image_id"]
