"""The opt-in fast paths: SEGANY_PRECISION=bf16 (OpenVINO's bf16 inference precision) and int8
(the encoder quantized with NNCF at conversion, calibrated on a folder of photos).

Served masks are held against eager fp32 SamPredictor on the real photos: bf16 at the
performance issue's bar (IoU >= 0.98), int8 at 0.95 (measured here 0.97-0.99 on the tiny model;
the benchmark reports both per prompt kind on vit_b and vit_h). The served embedding must be
exactly what the same converted encoder gives in-process, so serving changes nothing; and a
misconfigured int8 stops with the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from bench.server import ServerProcess
from runners import calibration
from runners.calibration import calibration_images
from runners.converted import check_prebuilt, compile_converted, compile_for, conversion_key, converted_encoder
from runners.encoders import OpenVINOEncoder
from runners.errors import ConfigError, DependencyMissing
from runners.sam import autocast_dtype
from runners.settings import Settings
from tests.client import array, ok, photo_b64, result_masks
from tests.conftest import server_env
from tests.photos import IMAGES, PHOTOS, photo_rgb
from tests.test_openvino import PROMPTS, eager_predict, iou

ov = pytest.importorskip("openvino")

BARS = {"bf16": 0.98, "int8": 0.95}


# Without bf16 units (AVX-512 BF16 or AMX) OpenVINO runs a bf16 request in f32.
BF16_UNITS = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module", params=["bf16", "int8"])
def fast_server(request, tiny_checkpoint, tmp_path_factory, _moto_server, _fake_gcs_server):
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    env = server_env(tiny_checkpoint, tmp / "cache", _moto_server, _fake_gcs_server.endpoint)
    env.update(SEGANY_ENCODER="openvino", SEGANY_PRECISION=request.param, SEGANY_INT8_CALIBRATION=str(IMAGES))
    server = ServerProcess(env, tmp / "server.log").start()
    try:
        yield request.param, server.wait_ready(timeout_s=300), tmp / "cache"
    finally:
        server.stop()


def test_fast_paths_keep_masks_close_to_eager_fp32(fast_server, reference_model, tiny_checkpoint):
    precision, server, cache = fast_server
    assert f"precision {precision}" in server.log()
    if precision == "bf16" and not BF16_UNITS:  # OpenVINO runs f32, and the log says so
        assert "this CPU has no bf16 support" in server.log()
    # the encoder the server converted, found in its cache by the same key, compiled here
    converted = converted_encoder(cache, tiny_checkpoint, None, "tiny",
                                  int8_calibration=IMAGES if precision == "int8" else None)
    manifest = json.loads((converted.xml.parent / "manifest.json").read_text())
    fake_quantize = [op for op in ov.Core().read_model(converted.xml).get_ops() if op.get_type_name() == "FakeQuantize"]
    if precision == "int8":  # quantized: int8 inputs to the matrix products, ranges from the 3 photos
        assert manifest["weights"] == "int8" and manifest["calibration_images"] == 3 and fake_quantize
    else:
        assert manifest["weights"] == "float32" and not fake_quantize
    encoder = OpenVINOEncoder(compile_converted(converted, precision), precision)

    predictor = SamPredictor(reference_model)
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for name in PHOTOS:
            rgb = photo_rgb(name)
            predictor.set_image(rgb)
            eager = predictor.features.clone()
            embed = ok(client.post("/embed", json={"image": photo_b64(name)}))
            x = predictor.model.preprocess(torch.as_tensor(predictor.transform.apply_image(rgb)).permute(2, 0, 1)[None].float())
            np.testing.assert_array_equal(array(embed["embedding"]), encoder(x).numpy())  # serving changes nothing
            if precision == "int8" or BF16_UNITS:  # and it is not the fp32 path
                assert not np.allclose(array(embed["embedding"]), eager.numpy(), atol=1e-4)
            for kind, prompt in PROMPTS[name].items():
                body = ok(client.post("/segment", json={"image_id": embed["image_id"], **prompt}))
                masks, _, _ = eager_predict(predictor, kind, prompt)
                for ours, theirs in zip(result_masks(body["results"][0]), masks):
                    assert iou(ours, theirs) >= BARS[precision], (precision, name, kind)


# --- int8 settings that cannot work stop with the fix ----------------------------------------------


def test_int8_needs_calibration_photos(tmp_path, tiny_checkpoint):
    from runners.checkpoints import ResolvedCheckpoint

    settings = Settings(model_type="tiny", precision="int8", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="SEGANY_INT8_CALIBRATION"):
        compile_for(settings, ResolvedCheckpoint(tiny_checkpoint, "test", None), "tiny", "int8")
    with pytest.raises(ConfigError, match="does not exist"):
        calibration_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    with pytest.raises(ConfigError, match="no .jpg, .png or .webp"):
        calibration_images(tmp_path / "empty")
    assert not (tmp_path / "openvino").exists()  # nothing was converted


def test_int8_without_nncf_names_the_package(tmp_path, tiny_checkpoint, monkeypatch):
    real = calibration.importlib.util.find_spec
    monkeypatch.setattr(calibration.importlib.util, "find_spec", lambda name: None if name == "nncf" else real(name))
    with pytest.raises(DependencyMissing, match=r"segment-anywhere\[int8\]"):
        converted_encoder(tmp_path, tiny_checkpoint, None, "tiny", int8_calibration=IMAGES)


def test_int8_is_the_openvino_encoders():
    with pytest.raises(ConfigError, match="SEGANY_ENCODER=auto"):
        autocast_dtype("int8", torch.device("cpu"))


def test_a_prebuilt_encoder_must_match_the_precision(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"weights": "int8"}))
    check_prebuilt(tmp_path, "int8")
    with pytest.raises(ConfigError, match="holds a int8 encoder.*SEGANY_PRECISION=int8"):
        check_prebuilt(tmp_path, "fp32")
    (tmp_path / "manifest.json").write_text(json.dumps({"weights": "float32"}))
    check_prebuilt(tmp_path, "bf16")
    with pytest.raises(ConfigError, match="--int8-calibration"):
        check_prebuilt(tmp_path, "int8")


def test_other_photos_make_another_int8_encoder(tmp_path, tiny_checkpoint):
    photos = calibration_images(IMAGES)
    float_key = conversion_key(tiny_checkpoint, None, "tiny")
    int8_key = conversion_key(tiny_checkpoint, None, "tiny", photos)
    assert len({float_key, int8_key, conversion_key(tiny_checkpoint, None, "tiny", photos[:2])}) == 3
    renamed = tmp_path / "same-bytes-new-folder"
    renamed.mkdir()
    for photo in photos:
        (renamed / photo.name).write_bytes(photo.read_bytes())
    assert conversion_key(tiny_checkpoint, None, "tiny", calibration_images(renamed)) == int8_key  # content, not place


def test_a_conversion_killed_for_memory_says_so(tmp_path, tiny_checkpoint, monkeypatch):
    import subprocess

    from runners import converted as module
    from runners.errors import CheckpointError

    killed = subprocess.CompletedProcess([], -9, "", "W1202 a warning torch printed before the kill\n")
    monkeypatch.setattr(module.subprocess, "run", lambda *args, **kwargs: killed)
    with pytest.raises(CheckpointError, match=r"killed \(signal 9\), most likely for lack of memory.*segany convert"):
        converted_encoder(tmp_path, tiny_checkpoint, None, "tiny")


def test_a_bad_calibration_photo_is_named(tmp_path, tiny_checkpoint):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    from runners.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"int8 calibration image .*broken\.jpg: the data is not an image"):
        converted_encoder(tmp_path / "cache", tiny_checkpoint, None, "tiny", int8_calibration=tmp_path / "photos")
