"""SageMaker Runtime's side of the emulator: its API paths and its error shapes.

- ``POST /endpoints/NAME/invocations`` (InvokeEndpoint, rest-json): ``Content-Type``, ``Accept``,
  ``X-Amzn-SageMaker-Custom-Attributes`` go to the container's ``POST /invocations``; the answer
  comes back with the container's body and ``Content-Type`` and the headers botocore reads
  (``x-Amzn-Invoked-Production-Variant``, ``X-Amzn-SageMaker-Custom-Attributes``,
  ``x-amzn-RequestId``). ``X-Amzn-SageMaker-Inference-Component`` is accepted and not routed
  on (one model per emulator).
- ``GET /ping``: the container's ``/ping`` while it runs; 200 with no instance while scaled to
  zero (the endpoint stays InService).

Errors are rest-json errors as botocore parses them: the code in ``x-amzn-ErrorType``, the
text in the JSON body's ``message``; a container's error is SageMaker's ``ModelError`` (424)
with ``OriginalStatusCode``, ``OriginalMessage`` and ``LogStreamArn``. The wording follows what
clients report from AWS (cited per method below).
"""

from __future__ import annotations

import os
import re
import uuid

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from deploy.emulate.lifecycle import Instance
from deploy.emulate.limits_front import Front, Target, Upstream
from deploy.limits import SAGEMAKER, SAGEMAKER_CUSTOM_ATTRIBUTES_MAX, SAGEMAKER_NAME_PATTERN, SERVERLESS_MAX_CONCURRENCY

INVOKE_DOC = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html"
INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")
FORWARDED = ("content-type", "accept", "x-amzn-sagemaker-custom-attributes")
VARIANT = "AllTraffic"  # the variant name segany deploy aws creates


class SageMakerErrors:
    """SageMaker Runtime's answers, for one emulated endpoint."""

    def __init__(self, endpoint: str = "emulated") -> None:
        self.endpoint = endpoint
        self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"

    def error(self, code: str, status: int, message: str, **fields: object) -> Response:
        request_id = str(uuid.uuid4())
        return JSONResponse({"message": message.replace("{request_id}", request_id), **fields}, status_code=status,
                            headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.sagemaker/",
                                     "x-amzn-RequestId": request_id})

    def _logs(self) -> str:
        return (f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}#logEventViewer:"
                f"group=/aws/sagemaker/Endpoints/{self.endpoint}")

    def model_error(self, original_status: int, original_message: str) -> Response:
        # "Received client error (400) from primary with message "...". See https://... for more information."
        # (github.com/aws/sagemaker-python-sdk/issues/2955); 424 per botocore's sagemaker-runtime model.
        kind = "client" if 400 <= original_status < 500 else "server"
        message = (f'Received {kind} error ({original_status}) from primary with message "{original_message}". '
                   f"See {self._logs()} in account emulated for more information.")
        return self.error("ModelError", 424, message, OriginalStatusCode=original_status,
                          OriginalMessage=original_message,
                          LogStreamArn=f"arn:aws:logs:{self.region}:emulated:log-group:/aws/sagemaker/Endpoints/{self.endpoint}")

    def request_too_large(self, size: int, cap: int) -> Response:
        # "ValidationError ... Request {request-id} has oversize body." (github.com/aws/sagemaker-python-sdk/issues/4271)
        return self.error("ValidationError", 400, "Request {request_id} has oversize body.")

    def response_too_large(self, size: int, cap: int) -> Response:
        return self.model_error(0, f"Response payload of {size} bytes exceeds the {cap} bytes InvokeEndpoint returns.")

    def timeout(self, timeout_s: float) -> Response:
        # github.com/aws/amazon-sagemaker-examples/issues/799: ModelError, server error (0), 424
        return self.model_error(0, "Your invocation timed out while waiting for a response from container primary. "
                                   "Review the latency metrics for each container in Amazon CloudWatch, resolve the "
                                   "issue, and try again.")

    def throttled(self, cap: int) -> Response:
        # Serverless: invocations over MaxConcurrency are throttled (ThrottlingException, which botocore retries).
        return self.error("ThrottlingException", 400,
                          f"Rate exceeded: the endpoint is serving its MaxConcurrency of {cap} invocations.")

    def out_of_memory(self, memory_mb: int | None) -> Response:
        return self.model_error(500, f"the container was stopped: it ran out of memory ({memory_mb} MB).")

    def crashed(self, detail: str) -> Response:
        return self.model_error(500, f"the container exited: {detail[-300:]}")

    def container_error(self, upstream: httpx.Response) -> Response:
        return self.model_error(upstream.status_code, upstream.text)

    def not_found(self, path: str) -> Response:
        return self.error("UnknownOperationException", 404, f"no SageMaker Runtime operation at {path}")


def _shape(answer: httpx.Response, content: bytes) -> Response:
    headers = {"x-Amzn-Invoked-Production-Variant": VARIANT, "x-amzn-RequestId": str(uuid.uuid4())}
    attributes = answer.headers.get("x-amzn-sagemaker-custom-attributes")
    if attributes:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
    return Response(content, status_code=answer.status_code, headers=headers,
                    media_type=answer.headers.get("content-type", "application/octet-stream"))


def router(errors: SageMakerErrors, instance: Instance, endpoint: str | None):
    async def route(request: Request) -> Upstream | Response:
        path = request.url.path
        if path == "/ping" and request.method in ("GET", "HEAD"):
            url = instance.url
            if url is None:
                return JSONResponse({"status": "InService", "instances": 0, "note": "scaled to zero: the next invocation starts one"})
            async with httpx.AsyncClient(timeout=10) as client:
                try:
                    answer = await client.get(f"{url}/ping")
                except httpx.HTTPError as exc:
                    return JSONResponse({"status": "Unhealthy", "error": str(exc)}, status_code=503)
            return Response(answer.content, status_code=answer.status_code, media_type=answer.headers.get("content-type"))
        match = INVOCATIONS.match(path)
        if match is None or request.method != "POST":
            return errors.not_found(path)
        name = match.group(1)
        if not re.match(SAGEMAKER_NAME_PATTERN, name):
            return errors.error("ValidationError", 400, f"1 validation error detected: Value '{name}' at 'endpointName' failed "
                                f"to satisfy constraint: Member must satisfy regular expression pattern: {SAGEMAKER_NAME_PATTERN}")
        if endpoint is not None and name != endpoint:
            return errors.error("ValidationError", 400, f"Endpoint {name} of account emulated not found.")
        attributes = request.headers.get("x-amzn-sagemaker-custom-attributes", "")
        if len(attributes) > SAGEMAKER_CUSTOM_ATTRIBUTES_MAX:
            return errors.error("ValidationError", 400, "1 validation error detected: Value at 'customAttributes' failed to "
                                f"satisfy constraint: Member must have length less than or equal to {SAGEMAKER_CUSTOM_ATTRIBUTES_MAX}")
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
        return Upstream("POST", "/invocations", headers, shape=_shape)

    return route


def target(mode: str, timeout_s: float | None = None, max_concurrency: int | None = None) -> Target:
    """``realtime`` or ``serverless``: the limits of deploy/limits.py; ``timeout_s`` lowers the 60 s
    (a test setting: SageMaker's is fixed); serverless' MaxConcurrency defaults to our deploy's."""
    limits = SAGEMAKER[mode]
    sources = {"payload and timeout": limits.source, "errors": INVOKE_DOC}
    if mode == "realtime":
        return Target(
            "sagemaker-realtime", "sagemaker", limits, timeout_s or limits.timeout_s or 60, None, False, False,
            billing="billed per instance-hour while InService, idle or not: real-time endpoints never scale to zero "
                    "(unless served by an inference component with min copies 0)",
            sources=sources,
            notes=("no concurrency cap: the instance queues requests", "inference components are not routed on"),
        )
    from deploy.aws.settings import AwsSettings

    concurrency = max_concurrency or AwsSettings.model_fields["max_concurrency"].default
    low, high = SERVERLESS_MAX_CONCURRENCY
    if not low <= concurrency <= high:
        raise ValueError(f"--max-concurrency {concurrency} is outside SageMaker Serverless' {low}-{high}")
    return Target(
        "sagemaker-serverless", "sagemaker", limits, timeout_s or limits.timeout_s or 60, concurrency, True, False,
        billing="billed per GB-second of compute while serving requests; nothing while idle",
        sources={**sources, "concurrency and memory": "https://docs.aws.amazon.com/sagemaker/latest/APIReference/"
                 "API_ProductionVariantServerlessConfig.html"},
        notes=("one emulated instance serves up to MaxConcurrency at once; the platform may start several",),
    )


def front(mode: str, instance: Instance, *, endpoint: str | None = None, idle_s: float | None = None,
          timeout_s: float | None = None, max_concurrency: int | None = None) -> Front:
    errors = SageMakerErrors(endpoint or "emulated")
    return Front(target(mode, timeout_s, max_concurrency), instance, errors, router(errors, instance, endpoint), idle_s)
