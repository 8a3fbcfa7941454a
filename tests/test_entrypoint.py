"""The image's entrypoint, run outside the image: SageMaker mode (`segany entrypoint serve`)
and Cloud Run mode (`segany entrypoint`), started exactly as the container starts them."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from bench.server import ENTRYPOINT, ServerProcess, free_port
from tests import contract_checks
from tests.client import b64, error, ok
from tests.conftest import server_env
from tests.photos import photo_bytes


@pytest.fixture(scope="module")
def model_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    """/opt/ml/model as SageMaker leaves it: model.tar.gz from `segany package-model`, extracted."""
    work = tmp_path_factory.mktemp("sagemaker")
    result = subprocess.run([*ENTRYPOINT[:-1], "package-model", "--checkpoint", str(tiny_checkpoint),
                             "--out", str(work / "model.tar.gz")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    target = work / "opt-ml-model"
    with tarfile.open(work / "model.tar.gz") as archive:
        assert archive.getnames() == ["sam_tiny.pth"]
        archive.extractall(target)
    return target


def container_env(tiny_checkpoint, tmp_path, moto, gcs, **extra: str) -> dict[str, str]:
    env = server_env(tiny_checkpoint, tmp_path / "cache", moto, gcs.endpoint)
    for name in ("SEGANY_MODEL", "SEGANY_CHECKPOINT"):  # the container gets neither
        env[name] = ""
    return {**env, "BENTOML_HOME": str(tmp_path / "bentoml-home"), **extra}


@pytest.fixture(scope="module")
def sagemaker(model_dir, tiny_checkpoint, tmp_path_factory, _moto_server, _fake_gcs_server):
    tmp = tmp_path_factory.mktemp("sm")
    port = free_port()
    env = container_env(tiny_checkpoint, tmp, _moto_server, _fake_gcs_server, SM_MODEL_DIR=str(model_dir),
                        SAGEMAKER_BIND_TO_PORT=str(port), SEGANY_SAGEMAKER_MODE="serverless")
    server = ServerProcess(env, tmp / "server.log", command=[*ENTRYPOINT, "serve"], port=port).start()
    try:
        contract_checks.wait_for_ping(server.url, timeout_s=180)
        yield server
    finally:
        server.stop()


def test_sagemaker_serves_the_model_from_opt_ml_model(sagemaker):
    contract_checks.check_health(sagemaker.url)
    assert "opt-ml-model/sam_tiny.pth" in sagemaker.log()
    contract_checks.check_segment(sagemaker.url)


def test_invocations_json(sagemaker):
    contract_checks.check_invocations_json(sagemaker.url)


def test_invocations_raw_image_with_custom_attributes(sagemaker):
    contract_checks.check_invocations_raw_image(sagemaker.url)


def test_response_over_the_mode_limit_is_a_clear_413(sagemaker):
    first = ok(httpx.post(f"{sagemaker.url}/segment", json={"image": b64(photo_bytes("dog")), "points": [[9, 9]], "labels": [1]}, timeout=60))
    # float32 embedding: 4 MiB of floats, ~5.6 MB as base64 JSON, over serverless' 4 MB
    err = error(httpx.post(f"{sagemaker.url}/invocations", json={"task": "embed", "image_id": first["image_id"]}, timeout=60),
                413, "response_too_large")
    assert "rle" in err["message"] and "async" in err["message"] and "Serverless" in err["message"]
    ok(httpx.post(f"{sagemaker.url}/invocations", json={"task": "embed", "image_id": first["image_id"], "dtype": "float16"}, timeout=60))


def test_batch_transform_execution_parameters(sagemaker):
    body = ok(httpx.get(f"{sagemaker.url}/execution-parameters", timeout=10))
    assert body == {"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 4}


def test_ping_is_503_until_the_model_is_loaded(tiny_checkpoint, tmp_path, local_http, _moto_server, _fake_gcs_server):
    data = tiny_checkpoint.read_bytes()
    url = local_http.add("/sam_tiny.pth", data, chunk_size=len(data) // 10, drip_s=0.3)
    port = free_port()
    env = container_env(tiny_checkpoint, tmp_path, _moto_server, _fake_gcs_server, SEGANY_CHECKPOINT=url,
                        SEGANY_CHECKPOINT_SHA256=hashlib.sha256(data).hexdigest(), SAGEMAKER_BIND_TO_PORT=str(port))
    server = ServerProcess(env, tmp_path / "server.log", command=[*ENTRYPOINT, "serve"], port=port).start()
    try:
        assert contract_checks.wait_for_ping(server.url, timeout_s=180) == [503, 200]
    finally:
        server.stop()


@pytest.fixture
def cloud_run(tiny_checkpoint, tmp_path, _moto_server, _fake_gcs_server):
    started = []

    def start(**extra: str) -> ServerProcess:
        port = free_port()
        env = container_env(tiny_checkpoint, tmp_path, _moto_server, _fake_gcs_server, SEGANY_MODEL="tiny",
                            SEGANY_CHECKPOINT=str(tiny_checkpoint), PORT=str(port), **extra)
        server = ServerProcess(env, tmp_path / f"cloudrun{len(started)}.log", command=ENTRYPOINT, port=port).start()
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


def test_cloud_run_mode_logs_json_lines_with_the_trace(cloud_run):
    server = cloud_run(K_SERVICE="segment-anywhere", GOOGLE_CLOUD_PROJECT="demo-project")
    contract_checks.check_health(server.url)
    trace = "105445aa7843bc8bf206b12000100000"
    headers = {"x-cloud-trace-context": f"{trace}/1;o=1"}
    error(httpx.post(f"{server.url}/segment", json={"image_id": "0" * 64, "points": [[1, 1]], "labels": [1]},
                     headers=headers, timeout=30), 404)
    time.sleep(1)
    lines = [line for line in server.log().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records and all({"severity", "message"} <= set(r) for r in records)
    traced = [r for r in records if r.get("logging.googleapis.com/trace") == f"projects/demo-project/traces/{trace}"]
    assert traced, lines[-5:]
    assert any("image_not_found" in r["message"] for r in traced)


@pytest.mark.parametrize("supervisor", ["off", "on"])
def test_sigterm_finishes_in_flight_requests_then_exits_0(cloud_run, supervisor):
    server = cloud_run(SEGANY_SHUTDOWN_GRACE_S="30", SEGANY_SUPERVISOR=supervisor)
    result: dict = {}

    def slow_request() -> None:  # segment-everything on the full truck photo: seconds of work
        response = httpx.post(f"{server.url}/segment_everything", json={
            "image": b64(photo_bytes("truck")), "points_per_side": 4, "pred_iou_thresh": 0,
            "stability_score_thresh": 0, "box_nms_thresh": 1}, timeout=120)
        result["status"], result["body"] = response.status_code, response.json()

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(1.5)
    assert worker.is_alive(), "the request finished before SIGTERM; make it slower"
    server.process.send_signal(signal.SIGTERM)
    worker.join(timeout=120)
    assert result.get("status") == 200 and len(result["body"]["instances"]) > 0, result
    assert server.wait_exit(timeout_s=60) == 0


def test_one_process_serves_unless_the_supervisor_is_asked_for(cloud_run):
    """By default the entrypoint itself becomes BentoML's worker; SEGANY_SUPERVISOR=on runs
    bentoml serve (a supervisor with a worker child). Both serve the same masks and metrics."""
    one, supervised = cloud_run(), cloud_run(SEGANY_SUPERVISOR="on")
    for server in (one, supervised):  # early lines (the prestart's) must not leave later ones nameless
        assert "[entry_service:segment_anything:1] model tiny ready" in server.log(), server.log_tail()
    assert psutil.Process(one.process.pid).children() == []
    assert [p.cmdline()[2] for p in psutil.Process(supervised.process.pid).children()] == ["_bentoml_impl.worker.service"]
    bodies = [contract_checks.check_segment(server.url) for server in (one, supervised)]
    assert bodies[0]["results"] == bodies[1]["results"]
    for server in (one, supervised):
        metrics = httpx.get(f"{server.url}/metrics", timeout=30)
        assert metrics.status_code == 200 and 'endpoint="/segment"' in metrics.text


def test_one_process_start_failure_exits_3_with_the_fix(tiny_checkpoint, tmp_path, _moto_server, _fake_gcs_server):
    port = free_port()
    env = container_env(tiny_checkpoint, tmp_path, _moto_server, _fake_gcs_server, PORT=str(port),
                        SEGANY_MODEL="tiny", SEGANY_CHECKPOINT=str(tmp_path / "missing.pth"))
    server = ServerProcess(env, tmp_path / "server.log", command=ENTRYPOINT, port=port).start()
    try:
        assert server.wait_exit(timeout_s=120) == 3
    finally:
        server.stop()
    assert "no such file" in server.log() and "SEGANY_MODEL=tiny" in server.log()


def test_a_taken_port_is_a_clear_error(tiny_checkpoint, tmp_path, _moto_server, _fake_gcs_server):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = container_env(tiny_checkpoint, tmp_path, _moto_server, _fake_gcs_server, PORT=str(port), SEGANY_HOST="127.0.0.1")
        result = subprocess.run(ENTRYPOINT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr + result.stdout


def test_unknown_arguments_are_refused():
    result = subprocess.run([*ENTRYPOINT, "train"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "serve" in result.stderr + result.stdout
