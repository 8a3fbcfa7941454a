"""How ``segany compare`` sends the workload's requests: to an emulator (as that platform's client
sends them: boto3 ``sagemaker-runtime``, S3 in and out for async, HTTP for Cloud Run) or to a real
deployment, through the code ``segany invoke aws`` / ``segany invoke gcp`` use
(:func:`deploy.aws.invoke.send`, :func:`deploy.gcp.invoke.send`).

Every client's ``send(kind, data, image_id, point)`` answers
``(ok, status, image_id, cause, detail, workaround)``; ``cause`` is one of ``runner.CAUSES``.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

ENDPOINT = "sam"


class MotoS3:
    """A local S3 (moto's threaded server) for the async target, set in this process's environment
    while it runs (the async front's boto3 client reads AWS_ENDPOINT_URL)."""

    KEYS = {"AWS_ENDPOINT_URL": None, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}

    def __enter__(self) -> "MotoS3":
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log

        from bench.server import free_port

        port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        self.saved = {k: os.environ.get(k) for k in self.KEYS}
        os.environ.update({k: v or f"http://127.0.0.1:{port}" for k, v in self.KEYS.items()})
        import boto3

        self.client = boto3.session.Session().client("s3")
        self.bucket = "segany-compare"
        self.client.create_bucket(Bucket=self.bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self.server.stop()


# --- clients --------------------------------------------------------------------------------------------
def fields_for(kind: str, image_id: str | None, point: list[int], points_per_side: int) -> dict[str, Any]:
    if kind == "everything":
        return {"task": "everything", "output": "rle", "points_per_side": points_per_side}
    fields: dict[str, Any] = {"task": "segment", "output": "rle", "points": [point], "labels": [1]}
    if kind == "point_cached" and image_id:
        fields["image_id"] = image_id
    return fields


def _sagemaker_cause(code: str, message: str) -> str:
    text = message.lower()
    if code == "ValidationError" and "oversize" in text or "response payload" in text or "too large" in text:
        return "payload limit"
    if "timed out" in text:
        return "timeout"
    if "out of memory" in text or "memory limit" in text:
        return "memory"
    if code == "ThrottlingException":
        return "concurrency"
    return "container error"


def _cloudrun_cause(status: int, text: str) -> str:
    if status == 413 or (status == 500 and "exceeds the" in text):
        return "payload limit"
    if status == 504:
        return "timeout"
    if status == 500 and "Memory limit" in text:
        return "memory"
    if status == 429:
        return "concurrency"
    return "container error"


class EmulatorClient:
    """Sends one planned request to the served emulator; returns (ok, status, image_id, cause, detail, workaround)."""

    def __init__(self, target: str, url: str, points_per_side: int, s3: MotoS3 | None) -> None:
        self.target, self.url, self.points_per_side, self.s3 = target, url, points_per_side, s3
        if target.startswith("sagemaker"):
            import boto3
            from botocore.config import Config

            self.runtime = boto3.session.Session().client(
                "sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(retries={"mode": "standard", "max_attempts": 1}, read_timeout=4000, connect_timeout=30))
        else:
            import httpx

            self.http = httpx.Client(base_url=url, timeout=4000)

    def close(self) -> None:
        if hasattr(self, "http"):
            self.http.close()

    def send(self, kind: str, data: bytes, image_id: str | None, point: list[int]) -> tuple:
        fields = fields_for(kind, image_id, point, self.points_per_side)
        if self.target == "cloudrun":
            return self._cloudrun(kind, data, fields)
        if self.target == "sagemaker-async":
            return self._async(kind, data, fields)
        return self._sagemaker(kind, data, fields)

    def _cloudrun(self, kind: str, data: bytes, fields: dict) -> tuple:
        task = fields.pop("task")
        body = dict(fields)
        if "image_id" not in body:
            body["image"] = base64.b64encode(data).decode()
        path = "/segment_everything" if task == "everything" else "/segment"
        answer = self.http.post(path, json=body)
        workaround = "image_id reuse" if "image_id" in fields else None
        if answer.status_code >= 400:
            return False, answer.status_code, None, _cloudrun_cause(answer.status_code, answer.text), answer.text[:300], workaround
        return True, answer.status_code, answer.json().get("image_id"), None, "", workaround

    def _sagemaker(self, kind: str, data: bytes, fields: dict) -> tuple:
        from botocore.exceptions import ClientError

        from deploy.aws.invoke import _attributes
        from deploy.limits import SAGEMAKER, SAGEMAKER_CUSTOM_ATTRIBUTES_MAX

        cap = SAGEMAKER[self.target.removeprefix("sagemaker-")].request_bytes or 0
        call: dict[str, Any] = {"EndpointName": ENDPOINT, "Accept": "application/json"}
        workaround = None
        if "image_id" in fields:
            call.update(ContentType="application/json", Body=json.dumps(fields).encode())
            workaround = "image_id reuse"
        else:
            inline = json.dumps({**fields, "image": base64.b64encode(data).decode()}).encode()
            attributes = _attributes(fields)
            if len(inline) <= cap:
                call.update(ContentType="application/json", Body=inline)
            elif len(data) <= cap and len(attributes) <= SAGEMAKER_CUSTOM_ATTRIBUTES_MAX:
                call.update(ContentType="image/jpeg", Body=data, CustomAttributes=attributes)
                workaround = "raw body (base64 JSON over the cap)"
            else:  # S3 image_url would need a bucket the endpoint reads: sent as is, refused
                call.update(ContentType="image/jpeg", Body=data, CustomAttributes=attributes)
                workaround = "none possible inline (image over the cap): S3 upload or async needed"
        try:
            answer = self.runtime.invoke_endpoint(**call)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return False, status, None, _sagemaker_cause(code, message), f"{code}: {message}"[:300], workaround
        body = json.loads(answer["Body"].read())
        return True, 200, body.get("image_id"), None, "", workaround

    def _async(self, kind: str, data: bytes, fields: dict) -> tuple:
        from deploy.aws.invoke import _attributes

        assert self.s3 is not None
        key = f"inputs/{uuid.uuid4().hex}"
        if "image_id" in fields:
            self.s3.client.put_object(Bucket=self.s3.bucket, Key=key, Body=json.dumps(fields).encode())
            content_type, attributes = "application/json", None
        else:
            self.s3.client.put_object(Bucket=self.s3.bucket, Key=key, Body=data)
            content_type, attributes = "image/jpeg", _attributes(fields)
        call = {"EndpointName": ENDPOINT, "InputLocation": f"s3://{self.s3.bucket}/{key}", "ContentType": content_type,
                "Accept": "application/json"}
        if attributes:
            call["CustomAttributes"] = attributes
        answer = self.runtime.invoke_endpoint_async(**call)
        workaround = "async (S3 in/out)" + (" + image_id reuse" if "image_id" in fields else "")
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            for location, ok in ((answer["OutputLocation"], True), (answer.get("FailureLocation"), False)):
                bucket, _, k = location.removeprefix("s3://").partition("/")
                try:
                    body = self.s3.client.get_object(Bucket=bucket, Key=k)["Body"].read()
                except Exception:
                    continue
                if ok:
                    return True, 200, json.loads(body).get("image_id"), None, "", workaround
                text = body.decode(errors="replace")
                return False, None, None, _sagemaker_cause("", text), text[:300], workaround
            time.sleep(0.05)
        return False, None, None, "timeout", "no output after 3600 s", workaround


# --- real deployments ------------------------------------------------------------------------------------
HOW = {"inline json": None, "raw body": "raw body (base64 JSON over the cap)", "s3 upload": "S3 upload (image_url)",
       "async": "async (S3 in/out)"}


def _cause_of_error(exc: Exception) -> tuple[int | None, str, str]:
    """(status, cause, detail) of a failed send through deploy/aws or deploy/gcp invoke code."""
    from runners.errors import ContainerError, SegAnyError

    status = getattr(exc, "status", None) if isinstance(exc, SegAnyError) else None
    text = getattr(exc, "message", str(exc))
    if isinstance(exc, ContainerError):
        body = exc.body.decode(errors="replace")
        cause = "payload limit" if exc.status == 413 else _sagemaker_cause("ModelError", body)
        return exc.status, cause, body[:300]
    cause = {413: "payload limit", 504: "timeout", 503: "scale-from-zero", 429: "concurrency"}.get(status or 0,
                                                                                                   "container error")
    return status, cause, text[:300]


@dataclass(frozen=True)
class RealTarget:
    """A deployment given to ``segany compare``: ``aws:ENDPOINT`` (``--aws-endpoint``) or
    ``gcp:SERVICE`` (``--gcp-service``: a service name with project and region, or its URL)."""

    cloud: str  # "aws" or "gcp"
    endpoint: str  # the SageMaker endpoint; the Cloud Run service's name or URL
    region: str | None = None
    project: str | None = None
    upload: str | None = None  # aws: s3://bucket/prefix for images over the inline cap
    authenticate: bool = True  # gcp: send an identity token

    @property
    def name(self) -> str:
        return f"{self.cloud}:{self.endpoint}"

    def client(self, points_per_side: int) -> Any:
        if self.cloud == "aws":
            return AwsEndpointClient(self, points_per_side)
        return CloudRunServiceClient(self, points_per_side)


class AwsEndpointClient:
    """A SageMaker endpoint, through :func:`deploy.aws.invoke.send` (its mode read once from its tags)."""

    def __init__(self, target: RealTarget, points_per_side: int) -> None:
        from deploy.aws.invoke import describe
        from deploy.aws.session import Clients

        self.target, self.points_per_side = target, points_per_side
        self.clients = Clients(target.region)
        self.deployment = describe(target.endpoint, self.clients)
        self.platform = f"sagemaker-{self.deployment.mode}"
        self.where = f"endpoint {target.endpoint} in {self.clients.region}"

    def limits(self) -> dict[str, Any]:
        from deploy.limits import SAGEMAKER

        scales = self.deployment.mode in ("serverless", "async") or self.deployment.component is not None
        return {**asdict(SAGEMAKER[self.deployment.mode]), "scales_to_zero": scales,
                "billing": "per request (GB-s)" if self.deployment.mode == "serverless" else "instance-hours"}

    def close(self) -> None:
        pass

    def send(self, kind: str, data: bytes, image_id: str | None, point: list[int]) -> tuple:
        from deploy.aws.invoke import send

        fields = fields_for(kind, image_id, point, self.points_per_side)
        reuse = "image_id" in fields
        try:
            result = send(self.target.endpoint, fields, None if reuse else data, self.clients, name="image.jpg",
                          deployment=self.deployment, upload=self.target.upload, poll_s=0.5)
        except Exception as exc:
            status, cause, detail = _cause_of_error(exc)
            return False, status, None, cause, detail, "image_id reuse" if reuse else None
        how = HOW.get(result.how, result.how)
        workaround = " + ".join(w for w in (how, "image_id reuse" if reuse else None) if w) or None
        return True, 200, json.loads(result.body).get("image_id"), None, "", workaround


class CloudRunServiceClient:
    """A Cloud Run service, through :func:`deploy.gcp.invoke.send` (its URL read once from the Admin
    API unless given), with an identity token unless ``authenticate`` is off."""

    platform = "cloudrun"

    def __init__(self, target: RealTarget, points_per_side: int) -> None:
        from deploy.gcp.invoke import url_of
        from runners.errors import ConfigError

        self.target, self.points_per_side = target, points_per_side
        if target.endpoint.startswith(("https://", "http://")):
            self.url = target.endpoint
        else:
            if not (target.project and target.region):
                raise ConfigError(f"--gcp-service {target.endpoint}: give --gcp-project and --gcp-region, or the "
                                  "service's URL")
            self.url = url_of(target.project, target.region, target.endpoint)
        self.where = self.url

    def limits(self) -> dict[str, Any]:
        from deploy.limits import CLOUD_RUN

        return {**asdict(CLOUD_RUN), "scales_to_zero": True, "billing": "as deployed"}

    def close(self) -> None:
        pass

    def send(self, kind: str, data: bytes, image_id: str | None, point: list[int]) -> tuple:
        from deploy.gcp.invoke import send

        fields = fields_for(kind, image_id, point, self.points_per_side)
        reuse = "image_id" in fields
        workaround = "image_id reuse" if reuse else None
        try:
            status, body, _type = send(self.url, fields, None if reuse else data,
                                       authenticate=self.target.authenticate)
        except Exception as exc:
            status, cause, detail = _cause_of_error(exc)
            return False, status, None, cause, detail, workaround
        if status >= 400:
            text = body.decode(errors="replace")
            return False, status, None, _cloudrun_cause(status, text), text[:300], workaround
        return True, status, json.loads(body).get("image_id"), None, "", workaround
