"""Where ``segany ui`` sends the page's calls: one request in, one :class:`Answer` out.

A target takes the request's fields (everything but the image) and the image's bytes (None when
the fields name an ``image_id`` or an ``image_url``) and answers the status, body and content
type to hand back to the page unchanged; a failure of the path to the target (unreachable,
refused credentials, a platform cap) becomes an answer in the API's error shape, with the fix.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

from deploy.gcp.invoke import ROUTES  # the API's routes by task (the module imports no SDK)
from runners.errors import ConfigError, ContainerError, SegAnyError

logger = logging.getLogger(__name__)

TASKS = {route: task for task, route in ROUTES.items()}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def error_answer(status: int, code: str, message: str) -> Answer:
    return Answer(status, json.dumps({"error": {"code": code, "message": message}}).encode(),
                  headers={"Retry-After": "5"} if status == 503 else {})


def failure_answer(exc: SegAnyError, target: str) -> Answer:
    """A failure on the way to ``target`` (not the container's own answer) in the API's error shape."""
    if isinstance(exc, ContainerError):
        return Answer(exc.status, exc.body, exc.content_type or "application/json")
    status = exc.status if 400 <= exc.status < 600 and exc.status != 500 else 502
    return error_answer(status, exc.code, f"{target}: {exc.message}")


class Target(Protocol):
    description: str

    def send(self, task: str, fields: dict[str, Any], image: bytes | None) -> Answer: ...


def _body(fields: dict[str, Any], image: bytes | None) -> bytes:
    import base64

    return json.dumps({**fields, **({"image": base64.b64encode(image).decode()} if image is not None else {})}).encode()


class UrlTarget:
    """Any running service (``segany serve``, the image, a load balancer): the same API at ``url``."""

    def __init__(self, url: str, timeout_s: float = 3600) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.description = self.url
        self.client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10))

    def send(self, task: str, fields: dict[str, Any], image: bytes | None) -> Answer:
        import httpx

        try:
            answer = self.client.post(self.url + ROUTES[task], content=_body(fields, image),
                                      headers={"Content-Type": "application/json", "Accept": "application/json"})
        except httpx.HTTPError as exc:
            return error_answer(502, "target_unreachable", f"cannot reach {self.url} ({type(exc).__name__}: {exc}); "
                                "check that the service is running and the URL is right")
        kept = {k: v for k, v in answer.headers.items() if k.lower() == "retry-after"}
        return Answer(answer.status_code, answer.content, answer.headers.get("content-type", "application/json"), kept)


class AwsTarget:
    """A SageMaker endpoint of ``segany deploy aws``, through ``deploy.aws.invoke.send`` (boto3, SigV4):
    inline JSON, raw body or S3 (``upload``) as the mode allows; async through S3."""

    def __init__(self, endpoint: str, region: str | None = None, upload: str | None = None) -> None:
        from deploy.aws.invoke import describe
        from deploy.aws.session import Clients

        self.endpoint, self.upload = endpoint, upload
        self.clients = Clients(region)
        self.deployment = describe(endpoint, self.clients)  # once: an unknown endpoint fails here, before serving
        self.description = f"SageMaker endpoint {endpoint} ({self.deployment.mode})"

    def send(self, task: str, fields: dict[str, Any], image: bytes | None) -> Answer:
        from deploy.aws.invoke import send

        try:
            result = send(self.endpoint, {"task": task, **fields}, image, self.clients, deployment=self.deployment,
                          upload=self.upload)
        except SegAnyError as exc:
            return failure_answer(exc, self.description)
        return Answer(200, result.body, result.content_type or "application/json")


class GcpTarget:
    """A Cloud Run service's URL, with an identity token (``deploy.gcp.invoke.send``) unless the
    service is public (``authenticate=False``)."""

    def __init__(self, url: str, authenticate: bool = True) -> None:
        self.url, self.authenticate = url.rstrip("/"), authenticate
        self.description = f"Cloud Run {self.url}"

    def send(self, task: str, fields: dict[str, Any], image: bytes | None) -> Answer:
        import httpx

        from deploy.gcp.invoke import send

        try:
            status, body, content_type = send(self.url, {"task": task, **fields}, image, authenticate=self.authenticate)
        except SegAnyError as exc:
            return failure_answer(exc, self.description)
        except httpx.HTTPError as exc:
            return error_answer(502, "target_unreachable", f"cannot reach {self.url} ({type(exc).__name__}: {exc})")
        return Answer(status, body, content_type or "application/json")


def cloud_run_url(service: str, project: str | None, region: str | None) -> str:
    """The URL of Cloud Run service ``service`` (needs --project and --region)."""
    if not project or not region:
        raise ConfigError(f"gcp:{service} needs --project and --region (or give the service's https://...run.app URL)")
    from deploy.gcp.invoke import url_of

    return url_of(project, region, service)


def target_for(spec: str, *, region: str | None = None, upload: str | None = None, project: str | None = None,
               authenticate: bool = True) -> Target:
    """``https://HOST`` (a ``*.run.app`` host gets an identity token), ``aws:ENDPOINT``, ``gcp:SERVICE``
    or ``gcp:https://...``."""
    kind, _, rest = spec.partition(":")
    if kind == "aws" and rest:
        return AwsTarget(rest, region, upload)
    if kind == "gcp" and rest:
        url = rest if rest.startswith(("https://", "http://")) else cloud_run_url(rest, project, region)
        return GcpTarget(url, authenticate)
    if kind in ("http", "https") and urlparse(spec).netloc:
        if urlparse(spec).hostname.endswith(".run.app") and authenticate:
            return GcpTarget(spec, authenticate)
        return UrlTarget(spec)
    raise ConfigError(f"unknown target {spec!r}: give a URL (http://localhost:3000), aws:ENDPOINT, gcp:SERVICE "
                      "(with --project and --region) or gcp:https://SERVICE-HASH.run.app")
