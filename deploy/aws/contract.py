"""SageMaker's container contract, in front of the unchanged service.

- ``GET /ping``: 200 once the model is loaded and warmed up (the service's ``/readyz``),
  503 before.
- ``POST /invocations``: what every SageMaker mode sends, translated into a request to
  ``/segment``, ``/segment_everything`` or ``/embed``:
  * a JSON body of one of those requests plus a ``task`` field
    (``segment``, ``everything``/``segment_everything``, ``embed``; inferred when absent:
    prompts mean ``segment``, none mean ``everything``);
  * a raw image body (``image/*``, ``application/x-image``, ``application/octet-stream``),
    as Async Inference and Batch Transform deliver an S3 object, with the task and its
    options in ``X-Amzn-SageMaker-Custom-Attributes`` (``task=everything;output=rle``),
    segment-everything by default (``SEGANY_CUSTOM_ATTRIBUTES`` sets other defaults: Batch
    Transform sends no header, so `segany deploy aws --mode batch` puts the task there).
  The response has the type ``Accept`` asks for: JSON, ``image/png`` (the overlay), or for
  ``task=embed`` ``application/x-npy`` (the embedding as a .npy file; its image_id, model and
  sizes come back in ``CustomAttributes``, since SageMaker returns no other response header).
- A response larger than the mode's limit (``SEGANY_SAGEMAKER_MODE``: real-time 6 MB,
  serverless 4 MB) becomes a 413 that says how to get under it, never a truncated body.
- ``GET /execution-parameters``: Batch Transform's optional question, answered.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.responses import JSONResponse

from deploy.limits import PlatformLimits
from runners.edge import RAW_IMAGE_TYPES, LimitedReceive, replay
from runners.errors import InputError, PayloadTooLarge, ResponseTooLarge, SegAnyError
from runners.schemas import EMBED_HEADERS, NPY_MEDIA_TYPE

logger = logging.getLogger(__name__)

TASK_ROUTES = {
    "segment": "/segment",
    "everything": "/segment_everything",
    "segment_everything": "/segment_everything",
    "embed": "/embed",
}
PROMPT_FIELDS = ("points", "boxes", "mask_input")
ATTRIBUTES_HEADER = b"x-amzn-sagemaker-custom-attributes"
ACCEPTED = ("application/json", "image/png", NPY_MEDIA_TYPE, "*/*")


def parse_custom_attributes(value: str) -> dict[str, str]:
    """``task=everything;output=rle;points_per_side=16`` -> {"task": "everything", ...}."""
    attributes: dict[str, str] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        key, sep, item = part.partition("=")
        if not sep or not key.strip():
            raise InputError(
                f"X-Amzn-SageMaker-Custom-Attributes part {part.strip()!r} is not key=value; "
                "write for example task=everything;output=rle.",
                field="X-Amzn-SageMaker-Custom-Attributes",
            )
        attributes[key.strip()] = item.strip()
    return attributes


def route_for(task: str | None, fields: dict[str, Any]) -> str:
    if task is None:
        return "/segment" if any(name in fields for name in PROMPT_FIELDS) else "/segment_everything"
    try:
        return TASK_ROUTES[task]
    except KeyError:
        raise InputError(f"task={task!r} is not one of {', '.join(TASK_ROUTES)}.", field="task") from None


def check_produces(accept: str, route: str) -> None:
    if accept == NPY_MEDIA_TYPE and route != TASK_ROUTES["embed"]:
        raise InputError(f"Accept: {NPY_MEDIA_TYPE} is the embedding's form: send task=embed, or accept "
                         "application/json for masks.", field="Accept", status=406)


def embed_attributes(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The /embed .npy response's X-Segany-* headers, repeated as the one response header that
    SageMaker hands back to the caller: ``image_id=...;model=...;original_size=H,W;input_size=H,W``."""
    found = {key.lower().decode("latin-1"): value.decode("latin-1") for key, value in headers}
    parts = [f"{name.removeprefix('x-segany-').replace('-', '_')}={found[name]}" for name in EMBED_HEADERS if name in found]
    return [(ATTRIBUTES_HEADER, ";".join(parts).encode("latin-1"))] if parts else []


class SageMakerContract:
    """ASGI middleware: /ping, /invocations and /execution-parameters over the service's routes.

    Added outermost, so a translated request still passes the service's own edge (body
    forms, caps, error shape).
    """

    def __init__(self, app: Any, limits: PlatformLimits, default_attributes: str = "") -> None:
        self.app = app
        self.limits = limits
        # SEGANY_CUSTOM_ATTRIBUTES: what a raw-image request asks when its header does not say
        # (Batch Transform sends no custom attributes; `segany deploy aws` sets the task there).
        self.defaults = parse_custom_attributes(default_attributes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path, method = scope.get("path"), scope.get("method")
        if scope["type"] != "http" or path not in ("/ping", "/invocations", "/execution-parameters"):
            return await self.app(scope, receive, send)
        if path == "/ping" and method in ("GET", "HEAD"):
            return await self.app({**scope, "path": "/readyz", "raw_path": b"/readyz"}, receive, send)
        if path == "/execution-parameters" and method == "GET":
            max_mb = (self.limits.request_bytes or 6 * 2**20) // 2**20
            body = {"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": max_mb}
            return await JSONResponse(body)(scope, receive, send)
        if path != "/invocations" or method != "POST":
            return await JSONResponse(
                {"error": {"code": "method_not_allowed", "message": f"{method} {path} is not served; POST /invocations."}},
                status_code=405,
            )(scope, receive, send)
        try:
            inner_scope, body = await self._translate(scope, receive)
        except SegAnyError as exc:
            return await JSONResponse(exc.to_body(), status_code=exc.status)(scope, receive, send)
        await self.app(inner_scope, replay(body, receive), _SizeGuard(send, self.limits))

    async def _translate(self, scope: dict[str, Any], receive: Any) -> tuple[dict[str, Any], bytes]:
        headers = dict(scope["headers"])
        accept = headers.get(b"accept", b"application/json").decode("latin-1").split(",")[0].split(";")[0].strip()
        if accept not in ACCEPTED:
            raise InputError(f"Accept: {accept} cannot be produced; ask application/json, image/png (overlay) "
                             f"or {NPY_MEDIA_TYPE} (task=embed).", field="Accept", status=406)
        media_type = headers.get(b"content-type", b"application/json").decode("latin-1").split(";")[0].strip().lower()
        body = await LimitedReceive(receive, self.limits.request_bytes or 2**40, self._too_large).read_all()
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if media_type.startswith("image/") or media_type in RAW_IMAGE_TYPES:
            fields = {**self.defaults, **query, **parse_custom_attributes(headers.get(ATTRIBUTES_HEADER, b"").decode("latin-1"))}
            route = TASK_ROUTES["everything"] if "task" not in fields else route_for(fields["task"], fields)
            fields.pop("task", None)
            check_produces(accept, route)
            if accept == "image/png":
                fields.setdefault("output", "overlay")
            return {**scope, "path": route, "raw_path": route.encode(), "query_string": urlencode(fields).encode()}, body
        try:
            fields = json.loads(body or b"{}")
        except ValueError:
            raise InputError("the body is not valid JSON; send a JSON request or the image itself with its image/* type.") from None
        if not isinstance(fields, dict):
            raise InputError("the JSON body must be an object such as {\"task\": \"segment\", \"image\": ...}.")
        route = route_for(fields.pop("task", None), fields)
        check_produces(accept, route)
        if accept == "image/png":
            fields.setdefault("output", "overlay")
        return {**scope, "path": route, "raw_path": route.encode()}, json.dumps(fields).encode()

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request exceeds the {self.limits.request_bytes / 2**20:.0f} MiB that {self.limits.name} accepts; "
            "send image_url (s3:// or https://) instead of the image bytes, or use async mode."
        )


class _SizeGuard:
    """Holds the response back until its size is known; over the limit it becomes a 413."""

    def __init__(self, send: Any, limits: PlatformLimits) -> None:
        self.send, self.limits = send, limits
        self.start: dict[str, Any] | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body":
            return await self.send(message)
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.chunks)
        limit = self.limits.response_bytes
        if limit is not None and len(body) > limit:
            error = ResponseTooLarge(
                f"the response is {len(body) / 2**20:.1f} MiB, over the {limit / 2**20:.0f} MiB that {self.limits.name} "
                "returns. Ask output=rle (the most compact masks), fewer or coarser instances (a smaller "
                "points_per_side, higher thresholds), for /embed dtype=float16 or Accept: application/x-npy, "
                "or deploy in async mode, whose results go to S3."
            )
            logger.warning("%s", error.message)
            body = json.dumps(error.to_body()).encode()
            self.start = {**self.start, "status": error.status, "headers": [(b"content-type", b"application/json")]}
        headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
        headers += embed_attributes(headers)
        await self.send({**self.start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
