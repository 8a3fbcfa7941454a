"""The container contracts' parsing and configuration, without a server."""

from __future__ import annotations

import json
import logging

import pytest

from deploy.aws.contract import embed_attributes, parse_custom_attributes, route_for
from deploy.entrypoint import ContainerConfig, listen, platform_for, serve_command, worker_command
from deploy.gcp.contract import CloudLoggingFormatter, _trace, parse_trace
from deploy.limits import SAGEMAKER
from runners.errors import ConfigError, InputError


def test_custom_attributes():
    assert parse_custom_attributes("task=everything; output=rle;points_per_side=16") == {
        "task": "everything", "output": "rle", "points_per_side": "16"}
    assert parse_custom_attributes("") == {}
    with pytest.raises(InputError, match="key=value"):
        parse_custom_attributes("task")


@pytest.mark.parametrize(
    "task, fields, route",
    [("segment", {}, "/segment"), ("everything", {}, "/segment_everything"), ("embed", {}, "/embed"),
     (None, {"points": [[1, 2]]}, "/segment"), (None, {"boxes": [[1, 2, 3, 4]]}, "/segment"), (None, {}, "/segment_everything")],
)
def test_routes(task, fields, route):
    assert route_for(task, fields) == route


def test_an_npy_embedding_carries_its_fields_in_custom_attributes():
    headers = [(b"content-type", b"application/x-npy"), (b"X-Segany-Image-Id", b"ab12"), (b"x-segany-model", b"vit_h"),
               (b"x-segany-original-size", b"534,800"), (b"x-segany-input-size", b"684,1024")]
    assert embed_attributes(headers) == [
        (b"x-amzn-sagemaker-custom-attributes", b"image_id=ab12;model=vit_h;original_size=534,800;input_size=684,1024")]
    assert embed_attributes([(b"content-type", b"application/json")]) == []


def test_unknown_task():
    with pytest.raises(InputError) as caught:
        route_for("classify", {})
    assert caught.value.field == "task" and "segment" in caught.value.message


def test_platform_from_arguments():
    assert platform_for(["serve"]) == "sagemaker" and platform_for([]) == "cloudrun"
    with pytest.raises(ConfigError, match="serve"):
        platform_for(["train"])


def test_container_config_reads_the_platform_variables():
    sm = ContainerConfig.from_env("sagemaker", {"SAGEMAKER_BIND_TO_PORT": "9090", "SEGANY_SAGEMAKER_MODE": "async"})
    assert (sm.port, sm.host, sm.sagemaker_mode, sm.json_logs) == (9090, "0.0.0.0", "async", False)
    assert ContainerConfig.from_env("sagemaker", {"PORT": "1234"}).port == 8080  # PORT is Cloud Run's
    cr = ContainerConfig.from_env("cloudrun", {"PORT": "8081", "K_SERVICE": "sam", "GOOGLE_CLOUD_PROJECT": "p"})
    assert (cr.port, cr.json_logs, cr.gcp_project, cr.shutdown_grace_s) == (8081, True, "p", 10)
    assert "--timeout-graceful-shutdown" in serve_command(cr) and "0.0.0.0" in serve_command(cr)
    with pytest.raises(ConfigError, match="PORT"):
        ContainerConfig.from_env("cloudrun", {"PORT": "eighty"})
    with pytest.raises(ConfigError, match="SEGANY_SAGEMAKER_MODE"):
        ContainerConfig.from_env("sagemaker", {"SEGANY_SAGEMAKER_MODE": "fast"})
    assert set(SAGEMAKER) == {"realtime", "serverless", "async", "batch"}


def test_one_process_unless_the_supervisor_is_asked_for():
    one = ContainerConfig.from_env("cloudrun", {"SEGANY_SHUTDOWN_GRACE_S": "25"})
    assert not one.supervisor and ContainerConfig.from_env("cloudrun", {"SEGANY_SUPERVISOR": " ON "}).supervisor
    command = worker_command(one, 7)
    assert command[1:3] == ["-m", "deploy.worker"] and command[3] == "deploy.container_service:SegmentAnything"
    assert command[command.index("--fd") + 1] == "7" and command[command.index("--timeout-graceful-shutdown") + 1] == "25"
    assert command[command.index("--worker-id") + 1] == "1"  # a worker: the service prestarts at import
    with pytest.raises(ConfigError, match="SEGANY_SUPERVISOR='yes' is not one of off, on; for example SEGANY_SUPERVISOR=off"):
        ContainerConfig.from_env("cloudrun", {"SEGANY_SUPERVISOR": "yes"})


def test_listen_binds_and_says_what_to_fix():
    config = ContainerConfig.from_env("cloudrun", {"SEGANY_HOST": "127.0.0.1", "PORT": "0"})
    with listen(config) as server:
        assert server.get_inheritable() and server.getsockname()[0] == "127.0.0.1"
        taken = ContainerConfig.from_env("cloudrun", {"SEGANY_HOST": "127.0.0.1", "PORT": str(server.getsockname()[1])})
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1:.*free the port"):
            listen(taken)
    with pytest.raises(ConfigError, match="SEGANY_HOST='localhost' is not an IP address"):
        listen(ContainerConfig.from_env("cloudrun", {"SEGANY_HOST": "localhost"}))


def test_trace_headers():
    assert parse_trace({b"x-cloud-trace-context": b"105445AA7843BC8BF206B12000100000/123;o=1"}) == (
        "105445aa7843bc8bf206b12000100000", "123")
    assert parse_trace({b"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}) == (
        "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert parse_trace({b"x-cloud-trace-context": b"nonsense"}) is None


def test_cloud_logging_formatter():
    record = logging.LogRecord("runners.pipeline", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    token = _trace.set(("abc", "7"))
    try:
        entry = json.loads(CloudLoggingFormatter("proj").format(record))
    finally:
        _trace.reset(token)
    assert entry["severity"] == "WARNING" and entry["message"] == "hello world"
    assert entry["logging.googleapis.com/trace"] == "projects/proj/traces/abc"
    assert entry["logging.googleapis.com/spanId"] == "7" and entry["time"].endswith("Z")


def test_default_custom_attributes_apply_to_raw_image_requests_under_the_header():
    """SEGANY_CUSTOM_ATTRIBUTES (what `segany deploy aws --mode batch|async` sets): Batch Transform
    sends no header, so the task comes from there; a header still overrides it key by key."""
    import asyncio

    from deploy.aws.contract import SageMakerContract

    assert ContainerConfig.from_env("sagemaker", {"SEGANY_CUSTOM_ATTRIBUTES": " task=embed "}).custom_attributes == "task=embed"
    contract = SageMakerContract(app=None, limits=SAGEMAKER["batch"], default_attributes="task=segment;points=[[1,2]];output=png")

    def translated(headers: list[tuple[bytes, bytes]]) -> dict:
        async def receive() -> dict:
            return {"type": "http.request", "body": b"\xff\xd8jpeg", "more_body": False}

        scope = {"type": "http", "path": "/invocations", "method": "POST", "query_string": b"",
                 "headers": [(b"content-type", b"image/jpeg"), *headers]}
        inner, body = asyncio.run(contract._translate(scope, receive))
        assert body == b"\xff\xd8jpeg"
        return {"path": inner["path"], "query": dict(pair.split("=", 1) for pair in inner["query_string"].decode().split("&"))}

    plain = translated([])
    assert plain["path"] == "/segment" and plain["query"]["output"] == "png" and "points" in plain["query"]
    header = translated([(b"x-amzn-sagemaker-custom-attributes", b"task=everything;output=rle")])
    assert header["path"] == "/segment_everything" and header["query"]["output"] == "rle"
