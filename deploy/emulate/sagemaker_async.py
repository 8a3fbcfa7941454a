"""SageMaker Asynchronous Inference in the emulator: ``POST /endpoints/NAME/async-invocations``.

InvokeEndpointAsync names an S3 object (``X-Amzn-SageMaker-InputLocation``) and is answered at
once with 202, the ``InferenceId`` and the two places the outcome will appear
(``X-Amzn-SageMaker-OutputLocation``: ``S3OutputPath/ID.out``, ``X-Amzn-SageMaker-FailureLocation``:
``S3FailurePath/ID-error.out``; our deploy puts them at ``OUTPUT/results`` and ``OUTPUT/failures``).
A queue, served MaxConcurrentInvocationsPerInstance at a time, reads the object (boto3, so moto
or any ``AWS_ENDPOINT_URL``), refuses it over the 1 GB input cap (deploy/limits.py), sends it to
the container's ``/invocations`` with its content type, accept and custom attributes, and writes
the body to the output location (2xx) or the error to the failure location. The instance wakes
from zero on the backlog (a queued request starts it) and scales to zero when idle.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from deploy.emulate.lifecycle import Instance, StartFailed
from deploy.emulate.limits_front import Front, Target
from deploy.emulate.sagemaker import SageMakerErrors
from deploy.limits import ASYNC_MAX_CONCURRENT_INVOCATIONS, SAGEMAKER, SAGEMAKER_CUSTOM_ATTRIBUTES_MAX

logger = logging.getLogger(__name__)

ASYNC_INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/async-invocations$")
ASYNC_DOC = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointAsync.html"


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class AsyncQueue:
    """The endpoint's backlog and its workers (started on the first request, in the front's loop)."""

    def __init__(self, instance: Instance, output: str, timeout_s: float, concurrency: int) -> None:
        self.instance, self.timeout_s, self.concurrency = instance, timeout_s, concurrency
        self.output_path, self.failure_path = f"{output.rstrip('/')}/results", f"{output.rstrip('/')}/failures"
        self.queue: asyncio.Queue | None = None
        self.done = {"succeeded": 0, "failed": 0}
        self._workers: list[asyncio.Task] = []
        self._s3: Any = None

    def s3(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.session.Session().client("s3")
        return self._s3

    def submit(self, job: dict) -> None:
        if self.queue is None:
            self.queue = asyncio.Queue()
            self._workers = [asyncio.get_running_loop().create_task(self._work()) for _ in range(self.concurrency)]
        self.queue.put_nowait(job)

    def backlog(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    async def _work(self) -> None:
        assert self.queue is not None
        async with httpx.AsyncClient(timeout=None) as client:
            while True:
                job = await self.queue.get()
                self.instance.begin()
                try:
                    await self._one(client, job)
                except Exception as exc:  # a worker must outlive any one request
                    logger.exception("async request %s failed", job["id"])
                    await self._put(job["failure"], f"the emulator failed: {exc}".encode(), ok=False)
                finally:
                    self.instance.end()
                    self.queue.task_done()

    async def _put(self, uri: str, body: bytes, ok: bool) -> None:
        bucket, key = _split(uri)
        await asyncio.to_thread(self.s3().put_object, Bucket=bucket, Key=key, Body=body)
        self.done["succeeded" if ok else "failed"] += 1

    async def _one(self, client: httpx.AsyncClient, job: dict) -> None:
        bucket, key = _split(job["input"])
        try:
            head = await asyncio.to_thread(self.s3().head_object, Bucket=bucket, Key=key)
        except Exception as exc:
            return await self._put(job["failure"], f"could not read the input {job['input']}: {exc}".encode(), ok=False)
        cap = SAGEMAKER["async"].request_bytes or 0
        if head["ContentLength"] > cap:
            return await self._put(job["failure"], f"the input is {head['ContentLength']} bytes, over the {cap} bytes "
                                   "asynchronous inference accepts.".encode(), ok=False)
        body = (await asyncio.to_thread(self.s3().get_object, Bucket=bucket, Key=key))["Body"].read()
        try:
            await asyncio.to_thread(self.instance.ensure_running)  # a backlog wakes an endpoint at zero
        except StartFailed as exc:
            why = "it ran out of memory" if exc.oom else "it exited"
            return await self._put(job["failure"], f"the container did not start: {why}.".encode(), ok=False)
        timeout = min(job["timeout_s"] or self.timeout_s, self.timeout_s)
        try:
            answer = await asyncio.wait_for(client.post(f"{self.instance.url}/invocations", content=body,
                                                        headers=job["headers"]), timeout)
        except asyncio.TimeoutError:
            return await self._put(job["failure"], f"the invocation timed out after {timeout:g} s.".encode(), ok=False)
        except httpx.HTTPError as exc:
            ended = await asyncio.to_thread(self.instance.died)
            return await self._put(job["failure"], f"the container {'ran out of memory' if ended == 'oom' else 'failed'}: "
                                   f"{exc}".encode(), ok=False)
        if answer.status_code >= 400:
            return await self._put(job["failure"], f"Received {'client' if answer.status_code < 500 else 'server'} error "
                                   f"({answer.status_code}) from primary with message \"{answer.text}\"".encode(), ok=False)
        await self._put(job["output"], answer.content, ok=True)

    async def aclose(self) -> None:
        for worker in self._workers:
            worker.cancel()


def router(errors: SageMakerErrors, queue: AsyncQueue, endpoint: str | None):
    async def route(request: Request) -> Response:
        match = ASYNC_INVOCATIONS.match(request.url.path)
        if match is None or request.method != "POST":
            return errors.not_found(request.url.path)
        if endpoint is not None and match.group(1) != endpoint:
            return errors.error("ValidationError", 400, f"Endpoint {match.group(1)} of account emulated not found.")
        h = request.headers
        location = h.get("x-amzn-sagemaker-inputlocation", "")
        if not location.startswith("s3://"):
            return errors.error("ValidationError", 400, "InputLocation must be an s3:// URI.")
        attributes = h.get("x-amzn-sagemaker-custom-attributes", "")
        if len(attributes) > SAGEMAKER_CUSTOM_ATTRIBUTES_MAX:
            return errors.error("ValidationError", 400, "1 validation error detected: Value at 'customAttributes' failed to "
                                f"satisfy constraint: Member must have length less than or equal to {SAGEMAKER_CUSTOM_ATTRIBUTES_MAX}")
        inference_id = h.get("x-amzn-sagemaker-inference-id") or str(uuid.uuid4())
        headers = {"content-type": h.get("x-amzn-sagemaker-content-type", "application/octet-stream"),
                   "accept": h.get("x-amzn-sagemaker-accept", "application/json")}
        if attributes:
            headers["x-amzn-sagemaker-custom-attributes"] = attributes
        timeout = h.get("x-amzn-sagemaker-invocationtimeoutseconds", "")
        job = {"id": inference_id, "input": location, "headers": headers, "queued_at": time.time(),
               "timeout_s": float(timeout) if timeout.isdigit() else None,
               "output": f"{queue.output_path}/{inference_id}.out", "failure": f"{queue.failure_path}/{inference_id}-error.out"}
        queue.submit(job)
        return JSONResponse({"InferenceId": inference_id}, status_code=202, headers={
            "X-Amzn-SageMaker-OutputLocation": job["output"], "X-Amzn-SageMaker-FailureLocation": job["failure"],
            "x-amzn-RequestId": str(uuid.uuid4())})

    return route


class AsyncFront(Front):
    """The front with the queue's state in its status and the queue's workers stopped with it."""

    queue: AsyncQueue

    def status(self) -> dict:
        return {**super().status(), "async": {"backlog": self.queue.backlog(), **self.queue.done,
                                              "output_path": self.queue.output_path, "failure_path": self.queue.failure_path}}

    async def aclose(self) -> None:
        await self.queue.aclose()
        await super().aclose()


def front(instance: Instance, output: str, *, endpoint: str | None = None, idle_s: float | None = None,
          timeout_s: float | None = None, max_concurrency: int | None = None) -> Front:
    """``output``: s3://bucket/prefix, as ``segany deploy aws --mode async --output`` takes it."""
    from deploy.aws.settings import AwsSettings

    if not output.startswith("s3://"):
        raise ValueError("--output must be s3://bucket/prefix (results and failures go under it)")
    limits = SAGEMAKER["async"]
    concurrency = max_concurrency or AwsSettings.model_fields["max_concurrent_invocations"].default
    low, high = ASYNC_MAX_CONCURRENT_INVOCATIONS
    if not low <= concurrency <= high:
        raise ValueError(f"--max-concurrency {concurrency} is outside MaxConcurrentInvocationsPerInstance's {low}-{high}")
    timeout = timeout_s or limits.timeout_s or 3600
    target = Target(
        "sagemaker-async", "sagemaker", limits, timeout, None, True, False,
        billing="billed per instance-hour while an instance runs; scales to zero (min instances 0) with no backlog",
        sources={"payload and timeout": limits.source, "api": ASYNC_DOC,
                 "concurrency": "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_AsyncInferenceClientConfig.html"},
        notes=(f"MaxConcurrentInvocationsPerInstance {concurrency}: the rest waits in the backlog",
               "no SNS notifications; RequestTTLSeconds is not enforced"),
    )
    errors = SageMakerErrors(endpoint or "emulated")
    queue = AsyncQueue(instance, output, timeout, concurrency)
    made = AsyncFront(target, instance, errors, router(errors, queue, endpoint), idle_s)
    made.queue = queue
    return made
