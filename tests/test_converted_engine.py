"""The torch-free engine: SamPredictor's answers from OpenVINO graphs, numpy and PIL alone.

Each step is held to segment_anything's own on the same weights and the real photos: the encoder
input bit for bit, the prompt decoder and the upsampling within float rounding (masks equal
except at pixels whose logit is within LOGIT_ATOL of the threshold). And a process that serves
on it never imports torch, segment-everything included (tests/test_mask_generator.py holds
that one to segment_anything's generator).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

from runners.converted_engine import ConvertedEngine, preprocess_shape
from runners.engine_types import ImageEmbedding, Prompts
from tests.photos import PHOTOS, photo_rgb
from tests.test_segment import LOGIT_ATOL, assert_masks_match

pytest.importorskip("openvino")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def engine(converted_engine) -> ConvertedEngine:
    return converted_engine


@pytest.mark.parametrize("size", [(1, 1), (3, 2000), (480, 640), (683, 1024), (1200, 1800), (1024, 1024), (1500, 1001)])
def test_preprocess_shape_is_resize_longest_sides(size):
    assert preprocess_shape(*size) == ResizeLongestSide.get_preprocess_shape(*size, 1024)


@pytest.mark.parametrize("name", PHOTOS)
def test_the_encoder_input_is_sam_predictors_bit_for_bit(engine, reference_model, name):
    rgb = photo_rgb(name)
    transform = ResizeLongestSide(1024)
    resized = torch.as_tensor(transform.apply_image(rgb)).permute(2, 0, 1).contiguous()[None]
    expected = reference_model.preprocess(resized)[0].numpy()
    prepared = engine.prepare(rgb)
    assert prepared.original_size == rgb.shape[:2] and prepared.input_size == tuple(resized.shape[-2:])
    assert prepared.tensor.dtype == np.float32 and np.array_equal(prepared.tensor, expected)


@pytest.mark.parametrize("size", [(1200, 1800), (683, 1024), (300, 200), (1024, 1024), (1500, 1001), (37, 1600)])
def test_upsampling_is_postprocess_masks(engine, reference_model, size):
    low_res = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(sum(size)))
    input_size = preprocess_shape(*size)
    ours = engine.upsample(low_res.numpy(), input_size, size)
    with torch.no_grad():
        logits = reference_model.postprocess_masks(low_res, input_size, size).numpy()
    assert ours.shape == logits.shape and ours.dtype == bool
    assert_masks_match(ours, logits)


def test_torchs_bilinear_coordinates_are_what_upsample_assumes():
    """The graph blends with source_weights' float32 coordinates; a resize of a ramp shows them."""
    from runners.upsample import source_weights

    for n_in, n_out in [(683, 1200), (1024, 1800), (800, 300), (7, 1000)]:
        ramp = torch.arange(n_in, dtype=torch.float32)[None, None, None]
        theirs = F.interpolate(ramp, (1, n_out), mode="bilinear", align_corners=False)[0, 0, 0].numpy()
        index, weight = source_weights(n_in, n_out)
        ours = index[0] * weight[0] + index[1] * weight[1]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-4)


CASES = {
    "one point, three masks": ("dog", {"points": [[400, 260]], "labels": [1]}, True),
    "fg and bg points": ("groceries", {"points": [[200, 300], [500, 150], [620, 400]], "labels": [1, 0, 1]}, False),
    "box": ("truck", {"boxes": [[425, 600, 700, 875]]}, False),
    "box and a point": ("truck", {"boxes": [[75, 275, 1725, 850]], "points": [[575, 750]], "labels": [0]}, False),
    "box, multimask": ("truck", {"boxes": [[1375, 550, 1650, 800]]}, True),
}


def embedding_of(predictor: SamPredictor) -> ImageEmbedding:
    """The reference's own features: the decoder is compared on equal inputs."""
    return ImageEmbedding(predictor.features.numpy(), predictor.original_size, predictor.input_size)


@pytest.mark.parametrize("case", CASES)
def test_predict_equals_sam_predictor(engine, predictor_for, case):
    name, prompt, multimask = CASES[case]
    predictor = predictor_for(name)
    points = np.array(prompt["points"], float) if "points" in prompt else None
    labels = np.array(prompt["labels"]) if "labels" in prompt else None
    box = np.array(prompt["boxes"][0], float) if "boxes" in prompt else None
    logits, scores, low_res = predictor.predict(points, labels, box, multimask_output=multimask, return_logits=True)
    ours = engine.predict(embedding_of(predictor), Prompts(points=points, labels=labels, boxes=None if box is None else box[None],
                                                           multimask=multimask))
    assert ours.masks.shape == (1, *logits.shape)
    assert_masks_match(ours.masks[0], logits)
    assert 0.01 < ours.masks.mean() < 0.99
    np.testing.assert_allclose(ours.scores[0], scores, rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(ours.low_res_logits[0], low_res, rtol=0, atol=LOGIT_ATOL)


def test_mask_input_alone_and_with_points(engine, predictor_for):
    predictor = predictor_for("dog")
    _, _, low_res = predictor.predict(np.array([[400.0, 260.0]]), np.array([1]), multimask_output=False)
    for points, labels in [(None, None), (np.array([[300.0, 200.0]]), np.array([1]))]:
        logits, scores, _ = predictor.predict(points, labels, mask_input=low_res, multimask_output=False, return_logits=True)
        ours = engine.predict(embedding_of(predictor), Prompts(points=points, labels=labels, mask_input=low_res))
        assert_masks_match(ours.masks[0], logits)
        np.testing.assert_allclose(ours.scores[0], scores, rtol=0, atol=LOGIT_ATOL)


def test_several_boxes_equal_predict_torch(engine, predictor_for):
    """Several boxes (with a shared point) as segment_anything batches them: apply_*_torch in float32."""
    predictor = predictor_for("truck")
    boxes = np.array([[75, 275, 1725, 850], [425, 600, 700, 875], [1375, 550, 1650, 800]], float)
    point, label = np.array([[575.0, 750.0]]), np.array([1])
    size = predictor.original_size
    boxes_t = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float), size)
    coords_t = predictor.transform.apply_coords_torch(torch.as_tensor(point, dtype=torch.float), size)[None].expand(3, -1, -1)
    labels_t = torch.as_tensor(label, dtype=torch.int)[None].expand(3, -1)
    with torch.no_grad():
        logits, scores, low_res = predictor.predict_torch(coords_t, labels_t, boxes_t, multimask_output=False, return_logits=True)
    ours = engine.predict(embedding_of(predictor), Prompts(points=point, labels=label, boxes=boxes))
    assert ours.masks.shape == tuple(logits.shape)
    assert_masks_match(ours.masks, logits.numpy())
    np.testing.assert_allclose(ours.scores, scores.numpy(), rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(ours.low_res_logits, low_res.numpy(), rtol=0, atol=LOGIT_ATOL)


SERVE_WITHOUT_TORCH = """
import json, sys
import numpy as np
from runners.pipeline import Pipeline
from runners.settings import Settings
from runners.engine_types import Prompts
from runners.mask_generator import GeneratorParams, MaskGenerator
from runners.schemas import EverythingRequest
settings = Settings.from_env({"SEGANY_MODEL": "tiny", "SEGANY_CHECKPOINT": sys.argv[1], "SEGANY_CACHE_DIR": sys.argv[2], "SEGANY_DEVICE": "cpu"})
pipeline = Pipeline(settings)
pipeline.load()
engine = pipeline.engine
image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)
embedding = engine.embed([engine.prepare(image)])[0]
masks = engine.predict(embedding, Prompts(points=np.array([[200.0, 150.0]]), labels=np.array([1]))).masks
request = EverythingRequest(image_id="x", points_per_side=2, crop_n_layers=1, pred_iou_thresh=0, stability_score_thresh=0,
                            box_nms_thresh=1, crop_nms_thresh=1, min_mask_region_area=50)
params = GeneratorParams(**request.generator_kwargs())
instances = MaskGenerator(engine, params).generate(image, embedding, lambda crop: engine.embed([engine.prepare(crop)])[0])
loaded = [name for name in ("torch", "torchvision", "segment_anything") if name in sys.modules]
print(json.dumps({"engine": type(engine).__name__, "masks": list(masks.shape), "instances": len(instances) > 0,
                  "imported": loaded}))
"""


def test_a_server_on_it_never_imports_torch(tiny_checkpoint, tmp_path):
    """The whole loading, a prompt's round trip and segment-everything (crops and small-region
    cleanup included) in a fresh interpreter: torch, torchvision and segment_anything stay
    unimported (their import was 1.7 s of a cold start, and 4.3 s of vit_h's first
    segment-everything when it still loaded them)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TORCH, str(tiny_checkpoint), str(tmp_path / "cache")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"engine": "ConvertedEngine", "masks": [1, 1, 300, 400], "instances": True, "imported": []}
