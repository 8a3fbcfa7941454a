"""Shared fixtures: the tiny checkpoint, the real server, the segment_anything reference.

The server is ``bentoml serve service:SegmentAnything`` on a free port with the tiny
model, URL fetching opened to 127.0.0.1 (for the local HTTP, moto S3 and fake GCS
servers), and small caps so that every limit can be crossed cheaply.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from bench.server import ServerProcess

pytest_plugins = ["tests.cloud_fakes"]

TINY_DIMS = dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])
SERVER_LIMITS = {
    "SEGANY_MAX_BODY_MB": "3",
    "SEGANY_MAX_IMAGE_PIXELS": "4000000",
    "SEGANY_MAX_IMAGE_SIDE": "4000",
    "SEGANY_MAX_POINTS": "16",
    "SEGANY_MAX_BOXES": "8",
    "SEGANY_MAX_POINTS_PER_SIDE": "16",
    "SEGANY_MAX_BATCH_SIZE": "4",
    "SEGANY_BATCH_STACKING": "stack",  # the CPU default runs batches image by image; test the stacked forward
    "SEGANY_CACHE_MB": "48",  # about ten images of ~4 MiB embeddings each
    "SEGANY_URL_TIMEOUT_S": "2",
}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from runners.models import write_checkpoint
    from runners.specs import get_spec

    return write_checkpoint(get_spec("tiny"), tmp_path_factory.mktemp("weights") / "tiny.pth")


@pytest.fixture(scope="session")
def reference_model(tiny_checkpoint: Path):
    """The tiny model built and loaded by segment_anything itself, not by our code."""
    from segment_anything.build_sam import _build_sam

    return _build_sam(**TINY_DIMS, checkpoint=str(tiny_checkpoint))


@pytest.fixture(scope="session")
def tiny_conversion(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the tiny checkpoint's fp32 OpenVINO conversion, converted once per
    session (each conversion is a child process importing torch: seconds). Tests take a copy of
    it through :func:`converted_cache_in`, never this folder itself."""
    from runners.converted import converted_encoder

    cache = tmp_path_factory.mktemp("tiny-conversion")
    converted_encoder(cache, tiny_checkpoint, None, "tiny", keep_compiled=False)
    return cache


def converted_cache_in(conversion: Path, cache_dir: Path) -> Path:
    """``cache_dir`` (a SEGANY_CACHE_DIR) holding a copy of ``conversion``'s converted models, as
    converted_encoder leaves them, but no compiled blob: loading from it compiles, as on a first start."""
    shutil.copytree(conversion / "openvino", cache_dir / "openvino", dirs_exist_ok=True)
    return cache_dir


@pytest.fixture(scope="session")
def converted_engine(tiny_checkpoint: Path, tiny_conversion: Path, tmp_path_factory: pytest.TempPathFactory):
    """The torch-free engine (runners/converted_engine.py) on the tiny checkpoint, fp32."""
    from runners.converted import compile_converted, compile_prompt_decoder, converted_encoder
    from runners.converted_engine import ConvertedEngine

    cache = converted_cache_in(tiny_conversion, tmp_path_factory.mktemp("ov-cache"))
    converted = converted_encoder(cache, tiny_checkpoint, None, "tiny")
    return ConvertedEngine(compile_converted(converted, "fp32"), compile_prompt_decoder(converted))


@pytest.fixture(scope="module")
def predictor_for(reference_model):
    """name -> a SamPredictor of the reference model with that photo set (made once per module)."""
    from segment_anything import SamPredictor

    from tests.photos import photo_rgb

    predictors: dict = {}

    def get(name: str) -> SamPredictor:
        if name not in predictors:
            predictors[name] = SamPredictor(reference_model)
            predictors[name].set_image(photo_rgb(name))
        return predictors[name]

    return get


def server_env(tiny_checkpoint: Path, cache_dir: Path, moto_endpoint: str, gcs_endpoint: str) -> dict[str, str]:
    return {
        "SEGANY_MODEL": "tiny",
        "SEGANY_CHECKPOINT": str(tiny_checkpoint),
        "SEGANY_CACHE_DIR": str(cache_dir),
        "SEGANY_DEVICE": "cpu",
        "SEGANY_ENCODER": "torch",  # the reference path, compared bit for bit; tests/test_openvino.py covers the default
        "SEGANY_URL_SCHEMES": "https,http,s3,gs",
        "SEGANY_URL_ALLOW_HOSTS": "127.0.0.1",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STORAGE_EMULATOR_HOST": gcs_endpoint,
        "GOOGLE_CLOUD_PROJECT": "segany-test",
        "BENTOML_DO_NOT_TRACK": "true",
        **SERVER_LIMITS,
    }


@pytest.fixture(scope="session")
def server(tiny_checkpoint: Path, _moto_server: str, _fake_gcs_server, tmp_path_factory) -> Iterator[ServerProcess]:
    logs = tmp_path_factory.mktemp("server")
    env = server_env(tiny_checkpoint, logs / "cache", _moto_server, _fake_gcs_server.endpoint)
    process = ServerProcess(env, logs / "server.log").start()
    try:
        yield process.wait_ready()
    finally:
        process.stop()


@pytest.fixture(scope="session")
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


# --- every run must execute tests ---------------------------------------------------------------

_passed = 0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _passed
    if report.when == "call" and report.passed:
        _passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == 0 and _passed == 0:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED  # nothing ran: fail, like pytest's exit 5
