"""``segany emulate``: each target's front over one real tiny-model server process (the image's
entrypoint, shared by every front of this module), seen through boto3 and httpx as a client
sees the platform: caps at the byte, the timeout, the concurrency cap, scale to zero and the
measured cold start, a memory cap, and ``segany invoke aws`` unchanged against the emulator.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from bench.server import free_port
from deploy.emulate import build, instance_for
from deploy.emulate.lifecycle import Instance
from deploy.emulate.limits_front import COLD_START_HEADER, Front
from deploy.limits import CLOUD_RUN, SAGEMAKER
from tests.conftest import server_env
from tests.photos import small_photo_png

uvicorn = pytest.importorskip("uvicorn")
boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

PNG = small_photo_png("truck", long_side=64)
POINT = {"points": [[32, 20]], "labels": [1], "output": "rle"}


class Served:
    """A front served by uvicorn in a thread, on 127.0.0.1."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(front, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the emulator did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def runtime(self, retries: int = 1) -> Any:
        return boto3.session.Session().client(
            "sagemaker-runtime", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="testing",
            aws_secret_access_key="testing", config=Config(retries={"mode": "standard", "max_attempts": retries}))

    def status(self) -> dict:
        return httpx.get(f"{self.url}/emulator/status", timeout=10).json()


def padded(fields: dict, size: int) -> bytes:
    """A JSON request of exactly ``size`` bytes (JSON allows trailing whitespace)."""
    body = json.dumps(fields).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def sagemaker_request(**extra: Any) -> dict:
    return {"task": "segment", "image": base64.b64encode(PNG).decode(), **POINT, **extra}


def error_of(call: Any, **kwargs: Any) -> tuple[str, int, dict]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response


def started_instance(target: str, tiny_checkpoint: Path, moto: str, gcs: Any, logs: Path, **env: str) -> Iterator[Instance]:
    """A tiny-model server process as ``target`` starts it (S3 on moto, GCS on the fake), running
    until the generator closes; ``env`` adds to the server's environment."""
    env = {**os.environ, **server_env(tiny_checkpoint, logs / "cache", moto, gcs.endpoint), "SEGANY_MAX_BODY_MB": "40",
           **env}
    server = instance_for(target, env, logs)
    server.ensure_running(reason="at emulator start")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def instance(tiny_checkpoint: Path, _moto_server: str, _fake_gcs_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from started_instance("sagemaker-realtime", tiny_checkpoint, _moto_server, _fake_gcs_server,
                                tmp_path_factory.mktemp("emulate"), SEGANY_URL_TIMEOUT_S="10", SEGANY_ENCODER="torch")


@pytest.fixture
def slow_image(local_http: Any) -> str:
    local_http.add("/slow.png", body=PNG, headers={"Content-Type": "image/png"}, delay_s=2.0)
    return local_http.url_for("/slow.png")


# --- SageMaker real-time and serverless: caps at the byte --------------------------------------


@pytest.mark.parametrize("target", ["sagemaker-realtime", "sagemaker-serverless"])
def test_sagemaker_request_cap_at_the_byte(instance: Instance, target: str) -> None:
    cap = SAGEMAKER[target.removeprefix("sagemaker-")].request_bytes
    with Served(build(target, instance, endpoint="sam")) as served:
        runtime = served.runtime()
        answer = runtime.invoke_endpoint(EndpointName="sam", ContentType="application/json", Accept="application/json",
                                         Body=padded(sagemaker_request(), cap))
        assert answer["ContentType"].startswith("application/json")
        assert answer["InvokedProductionVariant"] == "AllTraffic"
        assert json.loads(answer["Body"].read())["results"][0]["masks"]
        code, status, response = error_of(runtime.invoke_endpoint, EndpointName="sam", ContentType="application/json",
                                          Body=padded(sagemaker_request(), cap + 1))
        assert (code, status) == ("ValidationError", 400)
        assert response["Error"]["Message"].endswith("has oversize body.")
        assert served.status()["refused"] == {"request size": 1}


def test_sagemaker_container_error_is_model_error(instance: Instance) -> None:
    with Served(build("sagemaker-realtime", instance)) as served:
        code, status, response = error_of(served.runtime().invoke_endpoint, EndpointName="sam",
                                          ContentType="application/json", Body=b'{"task": "segment", "image": "bm90"}')
    assert (code, status) == ("ModelError", 424)
    assert response["OriginalStatusCode"] == 400 and "Received client error (400) from primary" in response["Error"]["Message"]
    assert "LogStreamArn" in response


def test_sagemaker_custom_attributes_and_ping(instance: Instance) -> None:
    with Served(build("sagemaker-serverless", instance)) as served:
        answer = served.runtime().invoke_endpoint(EndpointName="sam", ContentType="image/png", Body=PNG,
                                                  CustomAttributes="task=embed;dtype=float16", Accept="application/x-npy")
        assert answer["Body"].read()[:6] == b"\x93NUMPY"
        assert "image_id=" in answer["CustomAttributes"]
        assert httpx.get(f"{served.url}/ping", timeout=10).status_code == 200
        code, status, _ = error_of(served.runtime().invoke_endpoint, EndpointName="sam", Body=b"{}",
                                   CustomAttributes="x" * 1025)
        assert (code, status) == ("ValidationError", 400)


def test_sagemaker_response_cap(instance: Instance) -> None:
    """A float32 embedding as .npy is 4194432 bytes: over Serverless' 4 MB, under real-time's 6 MB."""
    call = dict(EndpointName="sam", ContentType="image/png", Body=PNG, CustomAttributes="task=embed", Accept="application/x-npy")
    with Served(build("sagemaker-realtime", instance)) as served:
        assert len(served.runtime().invoke_endpoint(**call)["Body"].read()) == 4194432 > SAGEMAKER["serverless"].response_bytes
    with Served(build("sagemaker-serverless", instance)) as served:
        code, status, response = error_of(served.runtime().invoke_endpoint, **call)
        assert served.status()["refused"] == {"response size": 1}
    assert (code, status) == ("ModelError", 424) and "Response payload of 4194432 bytes" in response["Error"]["Message"]


def test_sagemaker_timeout_is_model_error(instance: Instance, slow_image: str) -> None:
    with Served(build("sagemaker-serverless", instance, timeout_s=1)) as served:
        body = json.dumps({"task": "segment", "image_url": slow_image, **POINT}).encode()
        started = time.monotonic()
        code, status, response = error_of(served.runtime().invoke_endpoint, EndpointName="sam",
                                          ContentType="application/json", Body=body)
        assert time.monotonic() - started < 2.0
    assert (code, status) == ("ModelError", 424)
    assert "Your invocation timed out while waiting for a response from container primary" in response["Error"]["Message"]


def test_serverless_max_concurrency_throttles(instance: Instance, slow_image: str) -> None:
    with Served(build("sagemaker-serverless", instance, max_concurrency=1)) as served:
        body = json.dumps({"task": "segment", "image_url": slow_image, **POINT}).encode()
        first: dict = {}
        thread = threading.Thread(target=lambda: first.update(served.runtime().invoke_endpoint(
            EndpointName="sam", ContentType="application/json", Body=body)))
        thread.start()
        while served.front.in_flight == 0:
            time.sleep(0.02)
        code, status, _ = error_of(served.runtime().invoke_endpoint, EndpointName="sam",
                                   ContentType="application/json", Body=body)
        thread.join(30)
    assert (code, status) == ("ThrottlingException", 400)
    assert json.loads(first["Body"].read())["results"][0]["masks"]


# --- Cloud Run ------------------------------------------------------------------------------------


def test_cloudrun_request_cap_timeout_and_concurrency(instance: Instance, slow_image: str) -> None:
    fields = {"image": base64.b64encode(PNG).decode(), **POINT}
    with Served(build("cloudrun", instance, timeout_s=1, max_concurrency=1)) as served:
        with httpx.Client(base_url=served.url, timeout=60) as client:
            headers = {"Content-Type": "application/json"}
            assert client.post("/segment", content=padded(fields, CLOUD_RUN.request_bytes), headers=headers).json()["results"][0]["masks"]
            over = client.post("/segment", content=padded(fields, CLOUD_RUN.request_bytes + 1), headers=headers)
            assert over.status_code == 413 and "Your client issued a request that was too large" in over.text
            slow = {"image_url": slow_image, **POINT}
            timed_out = client.post("/segment", json=slow)
            assert (timed_out.status_code, timed_out.text) == (504, "upstream request timeout")
            # the timed-out request is still being served by the container: concurrency 1 is taken... until it ends;
            # a new front's count starts at zero, so take the one slot with a request of our own
        with Served(build("cloudrun", instance, max_concurrency=1)) as patient:
            results: dict = {}
            thread = threading.Thread(target=lambda: results.update(first=httpx.post(f"{patient.url}/segment", json=slow, timeout=60)))
            thread.start()
            while patient.front.in_flight == 0:
                time.sleep(0.02)
            refused = httpx.post(f"{patient.url}/segment", json=slow, timeout=60)
            thread.join(30)
            assert refused.status_code == 429 and "no available instance" in refused.text
            assert results["first"].status_code == 200
            assert patient.status()["refused"] == {"concurrency": 1}


# --- SageMaker async: S3 in, S3 out ---------------------------------------------------------------


def test_sagemaker_async_writes_output_and_failure_to_s3(instance: Instance, moto_s3: Any) -> None:
    good = moto_s3.put("segany-async", "sam/inputs/truck.png", PNG)
    bad = moto_s3.put("segany-async", "sam/inputs/bad.png", b"not an image")
    instance.stop()  # at zero: the backlog wakes it
    with Served(build("sagemaker-async", instance, output="s3://segany-async/sam", idle_s=30)) as served:
        runtime = served.runtime()
        ok = runtime.invoke_endpoint_async(EndpointName="sam", InputLocation=good, ContentType="image/png",
                                           Accept="application/json", CustomAttributes="task=segment;points=[[32,20]];labels=[1]")
        failed = runtime.invoke_endpoint_async(EndpointName="sam", InputLocation=bad, ContentType="image/png")
        assert ok["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert ok["OutputLocation"] == f"s3://segany-async/sam/results/{ok['InferenceId']}.out"
        assert failed["FailureLocation"] == f"s3://segany-async/sam/failures/{failed['InferenceId']}-error.out"
        deadline = time.monotonic() + 90
        while served.status()["async"]["succeeded"] + served.status()["async"]["failed"] < 2:
            assert time.monotonic() < deadline, served.status()
            time.sleep(0.2)
        status = served.status()

    def read(uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return moto_s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    assert json.loads(read(ok["OutputLocation"]))["results"][0]["masks"]
    assert "Received client error (400) from primary" in read(failed["FailureLocation"]).decode()
    assert status["async"] | {} == {**status["async"], "succeeded": 1, "failed": 1, "backlog": 0}
    assert status["cold_starts"][-1]["reason"] == "scale from zero"


# --- scale to zero and the measured cold start ------------------------------------------------------


def test_scale_to_zero_then_measured_cold_start(instance: Instance) -> None:
    instance.ensure_running()
    with Served(build("sagemaker-serverless", instance, idle_s=1.0)) as served:
        deadline = time.monotonic() + 10
        while instance.state != "stopped":
            assert time.monotonic() < deadline, "the server was not scaled to zero"
            time.sleep(0.1)
        assert served.status()["process"]["state"] == "stopped"
        assert httpx.get(f"{served.url}/ping", timeout=10).json()["instances"] == 0
        answer = served.runtime().invoke_endpoint(EndpointName="sam", ContentType="application/json",
                                                  Body=json.dumps(sagemaker_request()).encode())
        cold_s = float(answer["ResponseMetadata"]["HTTPHeaders"][COLD_START_HEADER])
        assert cold_s > 0
        status = served.status()
        assert status["cold_starts"][-1]["reason"] == "scale from zero"
        assert status["cold_starts"][-1]["seconds"] == pytest.approx(cold_s, abs=1e-3)
        assert status["scale_to_zero"] == {"enabled": True, "idle_s": 1.0}
        warm = served.runtime().invoke_endpoint(EndpointName="sam", ContentType="application/json",
                                                Body=json.dumps(sagemaker_request()).encode())
        assert COLD_START_HEADER not in warm["ResponseMetadata"]["HTTPHeaders"]


def test_realtime_never_scales_to_zero(instance: Instance) -> None:
    front = build("sagemaker-realtime", instance, idle_s=0.1)
    assert front.idle_s is None
    assert "never scale to zero" in front.status()["billing"]


# --- memory ---------------------------------------------------------------------------------------


def test_memory_cap_below_the_model_ends_as_cloud_run_reports_it(tiny_checkpoint: Path, tmp_path: Path) -> None:
    env = {**os.environ, "SEGANY_MODEL": "tiny", "SEGANY_CHECKPOINT": str(tiny_checkpoint), "SEGANY_DEVICE": "cpu",
           "SEGANY_CACHE_DIR": str(tmp_path / "cache")}
    small = instance_for("cloudrun", env, tmp_path / "logs", memory_mb=64)
    small._cgroup_for()
    if small._cgroup is None:
        pytest.skip(small.memory_note)
    try:
        with Served(build("cloudrun", small)) as served:
            answer = httpx.post(f"{served.url}/segment", json={"image": base64.b64encode(PNG).decode(), **POINT}, timeout=120)
            status = served.status()
    finally:
        small.close()
    assert answer.status_code == 500 and "Memory limit of 64 MiB exceeded" in answer.text
    assert status["process"]["oom_kills"] == 1 and status["refused"] == {"memory": 1}


# --- segany invoke aws, unchanged ---------------------------------------------------------------


def test_segany_invoke_aws_against_the_emulator(instance: Instance, moto_aws: Any, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """The control plane (describe_endpoint, list_tags) is moto; the runtime is the emulator."""
    from deploy.aws.invoke import InvokeRequest, describe, invoke, send
    from deploy.aws.session import Clients
    from runners.errors import ContainerError

    sm = moto_aws.client("sagemaker")
    role = "arn:aws:iam::123456789012:role/segany-sagemaker"
    sm.create_model(ModelName="sam", ExecutionRoleArn=role, PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/sam:1"})
    sm.create_endpoint_config(EndpointConfigName="sam-cfg", ExecutionRoleArn=role, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "sam", "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}])
    arn = sm.create_endpoint(EndpointName="sam", EndpointConfigName="sam-cfg")["EndpointArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "segany:mode", "Value": "serverless"}])
    image = tmp_path / "truck.png"
    image.write_bytes(PNG)
    with Served(build("sagemaker-serverless", instance, endpoint="sam")) as served:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", served.url)
        clients = Clients()
        result = invoke(InvokeRequest(endpoint="sam", image=image, points=[[32, 20]], labels=[1]), clients)
        deployment = describe("sam", clients)
        again = send("sam", {"task": "segment", "image_id": result.json()["image_id"], "points": [[10, 10]],
                             "labels": [0], "output": "rle"}, None, clients, deployment=deployment)
        with pytest.raises(ContainerError) as refused:
            send("sam", {"task": "segment", "image_id": "0" * 64, "points": [[1, 1]], "labels": [1]}, None, clients,
                 deployment=deployment)
    assert result.how == "inline json" and deployment.mode == "serverless" and deployment.component is None
    assert result.json()["results"][0]["masks"]
    assert again.how == "inline json" and again.json()["image_id"] == result.json()["image_id"]
    assert again.json()["results"][0]["masks"] != result.json()["results"][0]["masks"]  # the other prompt's mask
    assert refused.value.status == 404 and json.loads(refused.value.body)["error"]["code"] == "image_not_found"


@pytest.mark.parametrize("args, message", [
    (["sagemaker-async"], "needs --output s3://"),
    (["sagemaker-realtime", "--max-concurrency", "2"], "a real-time endpoint has none"),
    (["sagemaker-serverless", "--memory-mb", "1000"], "SageMaker Serverless offers 1024, 2048"),
    (["sagemaker-serverless", "--max-concurrency", "201"], "outside SageMaker Serverless' 1-200"),
    (["cloudrun", "--timeout-s", "3601"], "outside Cloud Run's 1-3600"),
])
def test_command_refuses_settings_the_platform_refuses(args: list[str], message: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from deploy.emulate.command import emulate

    result = CliRunner().invoke(emulate, [*args, "--log-dir", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output
