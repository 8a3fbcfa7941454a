"""The equality tests on a vit_b-shaped model (random-init weights of the official shape):
minutes on CPU, so marked slow. Run with `make test-slow` (pytest -m slow)."""

from __future__ import annotations

import numpy as np
import pytest
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

from bench.server import ServerProcess
from runners.models import write_checkpoint
from runners.specs import get_spec
from tests.client import array, b64, ok, photo_b64, result_masks, result_scores
from tests.conftest import server_env
from tests.photos import photo_rgb, small_photo_png, small_photo_rgb
from tests.test_everything import OPEN, assert_instances_equal

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vit_b_checkpoint(tmp_path_factory):
    return write_checkpoint(get_spec("vit_b"), tmp_path_factory.mktemp("vit_b") / "sam_vit_b_random.pth")


@pytest.fixture(scope="module")
def reference(vit_b_checkpoint):
    return sam_model_registry["vit_b"](checkpoint=str(vit_b_checkpoint))


def start(vit_b_checkpoint, tmp_path_factory, moto, gcs, **extra):
    tmp = tmp_path_factory.mktemp("server")
    env = {**server_env(vit_b_checkpoint, tmp / "cache", moto, gcs.endpoint), "SEGANY_MODEL": "vit_b", **extra}
    return ServerProcess(env, tmp / "server.log").start()


@pytest.fixture(scope="module")
def torch_server(vit_b_checkpoint, tmp_path_factory, _moto_server, _fake_gcs_server):
    server = start(vit_b_checkpoint, tmp_path_factory, _moto_server, _fake_gcs_server, SEGANY_ENCODER="torch")
    try:
        yield server.wait_ready(timeout_s=900)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def truck_predictor(reference):
    predictor = SamPredictor(reference)
    predictor.set_image(photo_rgb("truck"))
    return predictor


def test_segment_equals_sam_predictor_on_vit_b(torch_server, truck_predictor):
    import httpx

    with httpx.Client(base_url=torch_server.url, timeout=900) as client:
        point = ok(client.post("/segment", json={"image": photo_b64("truck"), "points": [[500, 375]], "labels": [1],
                                                 "return_logits": True}))
        box = ok(client.post("/segment", json={"image_id": point["image_id"], "boxes": [[425, 600, 700, 875]],
                                               "return_logits": True}))
    for body, kwargs in ((point, dict(point_coords=np.array([[500, 375]]), point_labels=np.array([1]))),
                         (box, dict(box=np.array([425, 600, 700, 875]), multimask_output=False))):
        masks, scores, logits = truck_predictor.predict(**kwargs)
        result = body["results"][0]
        np.testing.assert_array_equal(result_masks(result), masks)
        np.testing.assert_allclose(result_scores(result), scores, atol=1e-4)
        np.testing.assert_allclose(array(result["low_res_logits"]), logits, atol=1e-4)


def test_segment_everything_equals_the_generator_on_vit_b(torch_server, reference):
    import httpx

    params = {"points_per_side": 4, **OPEN}
    body = ok(httpx.post(f"{torch_server.url}/segment_everything", json={"image": b64(small_photo_png("dog")), **params}, timeout=900))
    expected = SamAutomaticMaskGenerator(reference, output_mode="coco_rle", **params).generate(small_photo_rgb("dog"))
    assert_instances_equal(body["instances"], expected)


def test_default_openvino_path_on_vit_b(vit_b_checkpoint, tmp_path_factory, _moto_server, _fake_gcs_server, truck_predictor):
    import httpx

    server = start(vit_b_checkpoint, tmp_path_factory, _moto_server, _fake_gcs_server, SEGANY_ENCODER="")
    try:
        server.wait_ready(timeout_s=1800)
        with httpx.Client(base_url=server.url, timeout=900) as client:
            embed = ok(client.post("/embed", json={"image": photo_b64("truck")}))
            assert np.abs(array(embed["embedding"]) - truck_predictor.features.numpy()).max() <= 1e-3
            for kwargs, body in (
                (dict(point_coords=np.array([[500, 375]]), point_labels=np.array([1])), {"points": [[500, 375]], "labels": [1]}),
                (dict(box=np.array([425, 600, 700, 875]), multimask_output=False), {"boxes": [[425, 600, 700, 875]]}),
            ):
                masks, _, _ = truck_predictor.predict(**kwargs)
                ours = result_masks(ok(client.post("/segment", json={"image_id": embed["image_id"], **body}))["results"][0])
                for mine, theirs in zip(ours, masks):
                    assert np.logical_and(mine, theirs).sum() / np.logical_or(mine, theirs).sum() >= 0.999
    finally:
        server.stop()
