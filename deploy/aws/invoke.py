"""``segany invoke aws``: one request to a deployment, sent the way its mode allows.

- serverless / real-time: inline ``InvokeEndpoint`` while the body fits the mode's cap (4 MB /
  6 MB, deploy/limits.py): JSON with the image in base64 first, else the image as the raw body
  with the prompts in ``CustomAttributes``; else the image is uploaded to S3 and sent by
  ``image_url`` (the container fetches it with its role);
- an inference component (real-time scaled to zero) is named in each call; while it has no
  copy, SageMaker refuses the call and the wake alarm adds one: the invoke says so and retries
  with backoff until ``wake_timeout_s``;
- async: the image goes to ``OUTPUT/inputs/``, ``InvokeEndpointAsync`` names it, and the
  result (or the failure) is read from the locations SageMaker answers with.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import mimetypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.limits import SAGEMAKER, SAGEMAKER_CUSTOM_ATTRIBUTES_MAX
from deploy.aws.s3 import S3_NO_KEY, error_of
from runners.errors import ContainerError, DeployError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InvokeRequest:
    endpoint: str
    image: Path
    task: str = "segment"  # segment, everything, embed
    points: list | None = None
    labels: list | None = None
    boxes: list | None = None
    output: str = "rle"
    upload: str | None = None  # s3://bucket/prefix for images over the inline cap
    wake_timeout_s: float = 900
    result_timeout_s: float = 3600
    poll_s: float = 5


@dataclass(frozen=True)
class InvokeResult:
    body: bytes
    content_type: str
    how: str  # "inline json", "raw body", "s3 upload", "async"
    waited_s: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


def _fields(r: InvokeRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {"task": r.task}
    if r.task != "embed":
        fields["output"] = r.output
    for key in ("points", "labels", "boxes"):
        if getattr(r, key) is not None:
            fields[key] = getattr(r, key)
    return fields


def _attributes(fields: dict[str, Any]) -> str:
    return ";".join(f"{k}={json.dumps(v, separators=(',', ':')) if isinstance(v, list) else v}" for k, v in fields.items())


@dataclass(frozen=True)
class Deployment:
    """What a send needs to know of an endpoint, read once from its tags and config."""

    endpoint: str
    mode: str  # serverless, realtime, async
    config: dict[str, Any]
    component: str | None  # the inference component (real-time scaled to zero), named in each call


def describe(endpoint: str, clients: Any) -> Deployment:
    """The deployment's mode, endpoint config and inference component, from its tags."""
    sm = clients("sagemaker")
    try:
        described = sm.describe_endpoint(EndpointName=endpoint)
    except Exception:
        raise DeployError(f"no endpoint {endpoint} in {clients.region}; deploy it with segany deploy aws") from None
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=described["EndpointArn"])["Tags"]}
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    mode = tags.get("segany:mode") or ("async" if config.get("AsyncInferenceConfig") else
                                       "serverless" if config["ProductionVariants"][0].get("ServerlessConfig") else "realtime")
    component = endpoint if not config["ProductionVariants"][0].get("ModelName") and mode == "realtime" else None
    return Deployment(endpoint, mode, config, component)


def _upload(clients: Any, image: bytes, name: str, prefix: str) -> str:
    bucket, _, key_prefix = prefix.removeprefix("s3://").partition("/")
    key = f"{key_prefix.rstrip('/') + '/' if key_prefix else ''}{hashlib.sha256(image).hexdigest()[:16]}{Path(name).suffix}"
    clients("s3").put_object(Bucket=bucket, Key=key, Body=image)
    return f"s3://{bucket}/{key}"


def _no_capacity(exc: Exception) -> bool:
    message = str(error_of(exc).get("Message", exc)).lower()
    return "no capacity" in message or "capacity to process" in message


def _platform_error(exc: Exception, mode: str) -> DeployError:
    error = error_of(exc)
    code, message = error.get("Code", type(exc).__name__), error.get("Message", str(exc))
    if code == "ModelError":  # the container's own answer: its status and body (API_runtime_InvokeEndpoint, ModelError)
        response = getattr(exc, "response", {}) or {}
        status = int(response.get("OriginalStatusCode") or error.get("OriginalStatusCode") or 500)
        body = str(response.get("OriginalMessage") or error.get("OriginalMessage") or message)
        return ContainerError(f"the container answered an error ({status}): {body[:500]}", status=status,
                              body=body.encode())
    if "payload" in message.lower() or "too large" in message.lower():
        return DeployError(f"{mode} refused the request size ({message}); send the image by --upload s3://bucket/prefix",
                           status=413)
    if "timed out" in message.lower() or code == "ModelNotReadyException":
        return DeployError(f"{mode} gave up waiting ({message}); for requests over 60 s deploy --mode async", status=504)
    return DeployError(f"InvokeEndpoint failed: {code}: {message}")


def invoke(r: InvokeRequest, clients: Any) -> InvokeResult:
    """``segany invoke aws``: the request's image file and prompts, sent as :func:`send` sends them."""
    return send(r.endpoint, _fields(r), r.image.read_bytes(), clients, name=r.image.name, upload=r.upload,
                wake_timeout_s=r.wake_timeout_s, result_timeout_s=r.result_timeout_s, poll_s=r.poll_s)


def send(endpoint: str, fields: dict[str, Any], image: bytes | None, clients: Any, *, name: str = "image.jpg",
         deployment: Deployment | None = None, upload: str | None = None, wake_timeout_s: float = 900,
         result_timeout_s: float = 3600, poll_s: float = 5) -> InvokeResult:
    """One request to ``endpoint``: ``fields`` are the JSON request's fields other than the image
    (``task`` segment|everything|embed, ``points``, ``labels``, ``boxes``, ``output``, ``image_id``, ...);
    ``image`` the image's bytes, or None when ``fields`` name an ``image_id``. Sent inline (JSON,
    else raw body + CustomAttributes), through S3 (``upload``) when over the mode's cap, or async.
    The container's own error answer is raised as :class:`ContainerError` (its status and body)."""
    deployment = deployment or describe(endpoint, clients)
    mode, component = deployment.mode, deployment.component
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if mode == "async":
        return _invoke_async(endpoint, clients, deployment.config, image, name, content_type, fields, upload=upload,
                             result_timeout_s=result_timeout_s, poll_s=poll_s)
    cap = SAGEMAKER[mode].request_bytes or 0
    call: dict[str, Any] = {"EndpointName": endpoint, "Accept": "application/json"}
    if component:
        call["InferenceComponentName"] = component
    attributes = _attributes(fields)
    body = json.dumps({**fields, **({"image": base64.b64encode(image).decode()} if image is not None else {})}).encode()
    if len(body) <= cap:
        call.update(ContentType="application/json", Body=body)
        how = "inline json"
    elif image is not None and len(image) <= cap and len(attributes) <= SAGEMAKER_CUSTOM_ATTRIBUTES_MAX:
        call.update(ContentType=content_type, Body=image, CustomAttributes=attributes)
        how = "raw body"
    elif image is not None:
        if not upload:
            raise DeployError(f"{name} is {len(image) / 2**20:.1f} MiB, over {mode}'s {cap / 2**20:.0f} MiB request cap "
                              "(API_runtime_InvokeEndpoint); give --upload s3://bucket/prefix to send it through S3",
                              status=413)
        url = _upload(clients, image, name, upload)
        call.update(ContentType="application/json", Body=json.dumps({**fields, "image_url": url}).encode())
        how = "s3 upload"
    else:
        raise DeployError(f"the request's fields are {len(body) / 2**20:.1f} MiB, over {mode}'s {cap / 2**20:.0f} MiB "
                          "request cap (API_runtime_InvokeEndpoint); send fewer prompts per request", status=413)
    runtime = clients("sagemaker-runtime")
    started, delay = time.monotonic(), poll_s
    while True:
        try:
            answer = runtime.invoke_endpoint(**call)
            break
        except Exception as exc:
            if not (component and _no_capacity(exc)):
                raise _platform_error(exc, mode) from None
            waited = time.monotonic() - started
            if waited >= wake_timeout_s:
                raise DeployError(f"{endpoint} is scaled to zero and did not wake within {wake_timeout_s:.0f} s; "
                                  "see segany status aws", status=503) from None
            logger.warning("%s is scaled to zero: waking it takes minutes (the wake alarm adds a copy); retrying in %.0f s",
                           endpoint, delay)
            time.sleep(delay)
            delay = min(delay * 2, 60)
    return InvokeResult(answer["Body"].read(), answer.get("ContentType", ""), how, time.monotonic() - started)


def _read_s3(clients: Any, uri: str) -> bytes | None:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        return clients("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        if error_of(exc).get("Code") in S3_NO_KEY:
            return None
        raise


def _invoke_async(endpoint: str, clients: Any, config: dict[str, Any], image: bytes | None, name: str,
                  content_type: str, fields: dict[str, Any], *, upload: str | None, result_timeout_s: float,
                  poll_s: float) -> InvokeResult:
    """The input goes to S3 (the image with the prompts in CustomAttributes, or, with an
    ``image_id`` and no image, the JSON request itself); the answer is read where SageMaker says."""
    output = config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"].rsplit("/results", 1)[0]
    if image is None:
        data, name, content_type, attributes = json.dumps(fields).encode(), "request.json", "application/json", None
    else:
        data, attributes = image, _attributes(fields)
    location = _upload(clients, data, name, upload or f"{output}/inputs")
    call = {"EndpointName": endpoint, "InputLocation": location, "ContentType": content_type, "Accept": "application/json"}
    if attributes:
        call["CustomAttributes"] = attributes
    answer = clients("sagemaker-runtime").invoke_endpoint_async(**call)
    started = time.monotonic()
    while time.monotonic() - started < result_timeout_s:
        body = _read_s3(clients, answer["OutputLocation"])
        if body is not None:
            return InvokeResult(body, "application/json", "async", time.monotonic() - started)
        failure = answer.get("FailureLocation") and _read_s3(clients, answer["FailureLocation"])
        if failure:
            raise DeployError(f"the async request failed: {failure.decode(errors='replace')[:500]} "
                              f"(input {location}, failure {answer['FailureLocation']})")
        time.sleep(poll_s)
    raise DeployError(f"no result at {answer['OutputLocation']} after {result_timeout_s:.0f} s; it may still come "
                      "(async requests queue while the endpoint wakes from zero)", status=504)
