"""Start-up: readiness only after load and warm-up, 503 before; a model that cannot load
ends `bentoml serve` with a non-zero status and a message naming the fix."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from tests.client import b64, error, ok
from tests.conftest import server_env
from tests.photos import photo_bytes
from bench.server import ServerProcess


@pytest.fixture
def start(tiny_checkpoint, tmp_path, _moto_server, _fake_gcs_server):
    started: list[ServerProcess] = []

    def run(cache_dir=None, **overrides: str) -> ServerProcess:
        env = server_env(tiny_checkpoint, cache_dir or tmp_path / "cache", _moto_server, _fake_gcs_server.endpoint)
        process = ServerProcess({**env, **overrides}, tmp_path / f"server{len(started)}.log").start()
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"SEGANY_CHECKPOINT": "/nowhere/sam_vit_h.pth"}, ["no such file", "SEGANY_MODEL=tiny"]),
        ({"SEGANY_CHECKPOINT_SHA256": "0" * 64}, ["sha256", "expected " + "0" * 64]),
        ({"SEGANY_CHECKPOINT": "http://127.0.0.1:9/sam_vit_h_4b8939.pth"}, ["could not download", "SEGANY_MODEL=tiny"]),
        ({"SEGANY_MODEL": "vit_b"}, ["does not fit SEGANY_MODEL=vit_b"]),
    ],
)
def test_a_model_that_cannot_load_exits_non_zero_with_the_fix(start, overrides, words):
    server = start(**overrides)
    status = server.wait_exit(timeout_s=120)
    log = server.log()
    assert status == 3, log
    for word in words:
        assert word in log, log


def test_a_bad_setting_stops_before_serving(start):
    server = start(SEGANY_MAX_BATCH_SIZE="lots")
    assert server.wait_exit(timeout_s=60) != 0
    assert "SEGANY_MAX_BATCH_SIZE" in server.log()


def test_not_ready_until_loaded_then_ready_and_cached(start, tmp_path, local_http, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    # a slow download keeps the model loading for a few seconds
    url = local_http.add("/models/sam_tiny.pth", data, chunk_size=len(data) // 20, drip_s=0.25)
    overrides = {"SEGANY_CHECKPOINT": url, "SEGANY_CHECKPOINT_SHA256": hashlib.sha256(data).hexdigest()}
    server = start(cache_dir=tmp_path / "shared-cache", **overrides)
    seen_503 = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            readyz = httpx.get(f"{server.url}/readyz", timeout=5)
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if readyz.status_code == 200:
            break
        assert readyz.status_code == 503
        if not seen_503:
            response = httpx.post(f"{server.url}/embed", json={"image": b64(photo_bytes("dog"))}, timeout=30)
            err = error(response, 503, "not_ready")
            assert "/readyz" in err["message"] and response.headers.get("retry-after")
            seen_503 = True
        time.sleep(0.2)
    assert seen_503, "the server was never observed loading"
    ok(httpx.post(f"{server.url}/embed", json={"image": b64(photo_bytes("dog"))}, timeout=60))
    server.stop()

    again = start(cache_dir=tmp_path / "shared-cache", **overrides).wait_ready()
    ok(httpx.post(f"{again.url}/embed", json={"image": b64(photo_bytes("dog"))}, timeout=60))
    assert local_http.hits("/models/sam_tiny.pth") == 1  # the second start used the cache
