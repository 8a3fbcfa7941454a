"""The default CPU path: the image encoder in OpenVINO, converted once per checkpoint.

Not bit-identical to torch (another runtime sums in another order), so the bar is the
performance issue's: masks with IoU >= 0.999 against eager fp32 SamPredictor on the real
photos, for point and box prompts, and embeddings within float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from bench.server import ServerProcess
from runners.converted import converted_encoder
from runners.encoders import OpenVINOEncoder, TorchEncoder
from runners.models import load_sam
from runners.specs import get_spec
from tests.client import array, ok, photo_b64, result_masks, result_scores
from tests.conftest import server_env
from tests.photos import PHOTOS, photo_rgb

pytest.importorskip("openvino")

PROMPTS = {
    "dog": {"point": {"points": [[400, 260]], "labels": [1]}, "box": {"boxes": [[150, 60, 650, 520]]}},
    "groceries": {"point": {"points": [[200, 300]], "labels": [1]}, "box": {"boxes": [[100, 100, 500, 450]]}},
    "truck": {"point": {"points": [[500, 375]], "labels": [1]}, "box": {"boxes": [[425, 600, 700, 875]]}},
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def eager_predict(predictor: SamPredictor, kind: str, prompt: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SamPredictor's answer to one of PROMPTS (a point gets three masks, as the server gives it)."""
    return predictor.predict(
        point_coords=np.array(prompt["points"]) if "points" in prompt else None,
        point_labels=np.array(prompt["labels"]) if "labels" in prompt else None,
        box=np.array(prompt["boxes"][0]) if "boxes" in prompt else None,
        multimask_output=kind == "point",
    )


@pytest.fixture(scope="module")
def converted(tiny_checkpoint, tmp_path_factory):
    return converted_encoder(tmp_path_factory.mktemp("ov-cache"), tiny_checkpoint, None, "tiny")


def test_conversion_is_cached(converted, tiny_checkpoint):
    assert converted.xml.is_file() and converted.xml.with_suffix(".bin").is_file()
    mtime = converted.xml.stat().st_mtime_ns
    again = converted_encoder(converted.xml.parents[2], tiny_checkpoint, None, "tiny")
    assert again == converted and again.xml.stat().st_mtime_ns == mtime  # not converted twice


def test_openvino_embeddings_match_torch(converted, tiny_checkpoint, reference_model):
    encoder = OpenVINOEncoder.from_converted(converted, "fp32")
    x = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    reference = TorchEncoder(reference_model.image_encoder, torch.device("cpu"), None)(x)
    ours = encoder(x)
    assert ours.shape == (2, 256, 64, 64) and ours.dtype == torch.float32
    assert (ours - reference).abs().max() <= 1e-4 * reference.abs().max()


def test_the_server_never_loads_the_encoder_weights_into_torch(tiny_checkpoint):
    model = load_sam(get_spec("tiny"), tiny_checkpoint, torch.device("cpu"), with_encoder=False)
    assert sum(p.numel() for p in model.image_encoder.parameters()) == 0
    assert model.image_encoder.img_size == 1024  # all SAM's predictor code needs of it


@pytest.fixture(scope="module")
def openvino_server(tiny_checkpoint, tmp_path_factory, _moto_server, _fake_gcs_server):
    tmp = tmp_path_factory.mktemp("ov-server")
    env = server_env(tiny_checkpoint, tmp / "cache", _moto_server, _fake_gcs_server.endpoint)
    env["SEGANY_ENCODER"] = ""  # the default: auto, which is OpenVINO on CPU
    server = ServerProcess(env, tmp / "server.log").start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.mark.parametrize("name", PHOTOS)
def test_default_path_masks_match_eager_fp32(openvino_server, reference_model, name):
    import httpx

    start_log = openvino_server.log_path.read_text()
    assert "openvino encoder" in start_log
    assert "compiling the OpenVINO encoder while torch loads" in start_log  # runners/prestart.py
    predictor = SamPredictor(reference_model)
    predictor.set_image(photo_rgb(name))
    with httpx.Client(base_url=openvino_server.url, timeout=120) as client:
        embed = ok(client.post("/embed", json={"image": photo_b64(name)}))
        np.testing.assert_allclose(array(embed["embedding"]), predictor.features.numpy(), atol=2e-4, rtol=0)
        for kind, prompt in PROMPTS[name].items():
            body = ok(client.post("/segment", json={"image_id": embed["image_id"], **prompt}))
            masks, scores, _ = eager_predict(predictor, kind, prompt)
            ours = result_masks(body["results"][0])
            assert ours.shape == masks.shape
            for mine, theirs in zip(ours, masks):
                assert iou(mine, theirs) >= 0.999, (name, kind)
            np.testing.assert_allclose(result_scores(body["results"][0]), scores, atol=1e-3)
