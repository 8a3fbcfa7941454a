"""The cpu image with baked weights carries no torch (deploy/build.py builds it on the image made
with SEGANY_TORCH=0): its converted folder, served by the image's entrypoint in processes where
torch, torchvision and segment_anything cannot be imported. A ``sitecustomize`` on PYTHONPATH sets
them to None in ``sys.modules`` in every process of the server, which is what an uninstalled
package is to ``import`` and to ``importlib.util.find_spec``. Masks equal eager fp32 SamPredictor's
on the same weights; what only torch serves stops the start with the fix named.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from segment_anything import SamPredictor

from bench.server import ROOT, entrypoint_process
from runners import converted, prestart as prestart_module
from runners.errors import ConfigError
from runners.lifecycle import EXIT_STARTUP_FAILED
from runners.converted import torch_needed_by
from runners.prestart import prestart
from runners.settings import Settings
from tests.client import b64, ok, photo_b64, result_masks
from tests.photos import photo_rgb, small_photo_png
from tests.test_everything import OPEN
from tests.test_openvino import PROMPTS, eager_predict, iou
from tests.test_prestart import baked_folder, converted_cache  # noqa: F401 - converted_cache is a fixture

BLOCKED = ("torch", "torchvision", "segment_anything")


@pytest.fixture(scope="module")
def baked(tiny_checkpoint, converted_cache, tmp_path_factory) -> Path:  # noqa: F811 - the fixture imported above
    return baked_folder(converted_cache, tiny_checkpoint, tmp_path_factory.mktemp("image") / "openvino")


def env_without_torch(folder: Path, tmp: Path, **settings: str) -> dict[str, str]:
    """The baked image's environment (deploy/build.py), with torch made unimportable."""
    site = tmp / "no-torch"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({BLOCKED!r}))\n")
    return {"SEGANY_OPENVINO_DIR": str(folder), "SEGANY_MODEL": "", "SEGANY_CHECKPOINT": "",
            "SEGANY_CACHE_DIR": str(tmp / "cache"), "SEGANY_DEVICE": "", "SEGANY_ENCODER": "", "SEGANY_DECODER": "",
            "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "BENTOML_DO_NOT_TRACK": "true", **settings}


def test_the_baked_folder_serves_without_torch(baked, reference_model, tmp_path):
    """Started as Cloud Run starts the image (`segany entrypoint`, PORT): an embedding, point and
    box prompts on a photo (each mask as eager fp32 SamPredictor's), and segment-everything."""
    server = entrypoint_process(env_without_torch(baked, tmp_path), tmp_path / "server.log").start()
    try:
        server.wait_ready()
        assert "without torch" in server.log() and "no torch)" in server.log()
        predictor = SamPredictor(reference_model)
        predictor.set_image(photo_rgb("dog"))
        with httpx.Client(base_url=server.url, timeout=300) as client:
            image_id = ok(client.post("/embed", json={"image": photo_b64("dog")}))["image_id"]
            for kind, prompt in PROMPTS["dog"].items():
                body = ok(client.post("/segment", json={"image_id": image_id, **prompt}))
                masks, _, _ = eager_predict(predictor, kind, prompt)
                ours = result_masks(body["results"][0])
                assert ours.shape == masks.shape
                assert min(iou(mine, theirs) for mine, theirs in zip(ours, masks)) >= 0.999, kind
            everything = ok(client.post("/segment_everything", json={"image": b64(small_photo_png("groceries")),
                                                                      "points_per_side": 4, **OPEN}))
        assert everything["instances"]
    finally:
        server.stop()


@pytest.mark.parametrize("setting, named", [
    ({"SEGANY_ENCODER": "torch"}, "SEGANY_ENCODER=torch needs torch"),
    ({"SEGANY_DECODER": "torch"}, "SEGANY_DECODER=torch needs torch"),
    ({"SEGANY_DEVICE": "cuda"}, "SEGANY_DEVICE=cuda needs torch"),
])
def test_what_only_torch_serves_stops_the_start_with_the_fix(baked, tmp_path, setting, named):
    server = entrypoint_process(env_without_torch(baked, tmp_path, **setting), tmp_path / "server.log").start()
    try:
        assert server.wait_exit() == EXIT_STARTUP_FAILED
        log = server.log()
        assert named in log and "segany build --keep-torch" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    finally:
        server.stop()


def test_torch_needed_by_names_every_setting_that_takes_torch():
    base = Settings(device="cpu")
    both = torch_needed_by(dataclasses.replace(base, encoder="torch", attention="sdpa")).message
    assert both.startswith("SEGANY_ENCODER=torch and SEGANY_ATTENTION=sdpa needs torch") and "unset it" in both
    assert torch_needed_by(dataclasses.replace(base, precision="fp16")).message.startswith("SEGANY_PRECISION=fp16 needs")
    older = torch_needed_by(base).message
    assert older.startswith("this model") and "point SEGANY_OPENVINO_DIR" in older and "--keep-torch" in older


def test_without_torch_a_gpu_host_still_serves_on_the_cpu(monkeypatch, tmp_path, tiny_checkpoint,
                                                          converted_cache):  # noqa: F811
    """SEGANY_DEVICE=auto on a host with an NVIDIA driver means CUDA only where torch is there to use it."""
    monkeypatch.setattr(prestart_module, "NVIDIA_DRIVER_PATHS", (tmp_path,))  # a driver, as far as it can tell
    settings = Settings(model_type="tiny", checkpoint=str(tiny_checkpoint), cache_dir=converted_cache)
    assert prestart(settings) is None  # torch is here: CUDA decides
    monkeypatch.setattr(prestart_module, "torch_available", lambda: False)
    early = prestart(settings)
    assert early is not None and early.compiled.result(timeout=300).prompts is not None


def test_converting_without_torch_names_the_converted_folder(monkeypatch, tmp_path, tiny_checkpoint):
    monkeypatch.setattr(converted, "torch_available", lambda: False)
    with pytest.raises(ConfigError, match="converting .* needs torch.*SEGANY_OPENVINO_DIR.*--keep-torch"):
        converted.convert_in_child(tiny_checkpoint, "tiny", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_segany_convert_without_torch_says_where_to_run_it(baked, tmp_path, tiny_checkpoint):
    env = {**os.environ, **env_without_torch(baked, tmp_path), "COLUMNS": "400"}
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "convert", "--checkpoint", str(tiny_checkpoint),
                           "--out", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "segany convert needs torch" in said and "run it where torch is installed" in said, said
    assert "Traceback" not in said and not (tmp_path / "out").exists()
