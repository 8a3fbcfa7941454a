"""The HTTP edge: one request shape for every body form, one error shape for every error.

``RequestEdge`` is an ASGI middleware added to the BentoML service. For the API routes
it caps the body size (413 before reading a declared oversize body), and turns a
multipart upload or a raw image body (``image/*``, ``application/octet-stream``) into
the JSON request the typed API takes: the file becomes ``image`` (base64), the other
form fields or query parameters become fields. Every error response of the server,
ours or BentoML's (validation, routing, overload), leaves it as
``{"error": {"code", "message", "field"?}}``.

``json_errors`` wraps the API methods so that a ``SegAnyError`` becomes that JSON body
with its status, and anything unexpected a logged 500, never a dead worker.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from typing import Any, Awaitable, Callable, Iterable, TypeVar
from urllib.parse import parse_qsl

from starlette.datastructures import Headers, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse

from .errors import InputError, PayloadTooLarge, SegAnyError, UnsupportedMediaType

logger = logging.getLogger(__name__)

API_ROUTES = frozenset({"/segment", "/segment_everything", "/embed"})
RAW_IMAGE_TYPES = frozenset({"application/octet-stream", "application/x-image"})
# Fields that are always strings, never JSON-decoded from a form field or query parameter.
STRING_FIELDS = frozenset({"image", "image_id", "image_url", "output", "dtype", "task"})
_CODES = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    408: "timeout", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
    429: "overloaded", 500: "internal_error", 503: "unavailable", 504: "timeout",
}
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def error_response(exc: SegAnyError, ctx: Any = None) -> JSONResponse:
    """The JSON error response of ``exc``. With a BentoML context (which overrides a returned
    response's status with its own), the status and headers are set there too."""
    headers = {"Retry-After": "5"} if exc.status == 503 else {}
    if ctx is not None:
        ctx.response.status_code = exc.status
        ctx.response.headers.update(headers)
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)


def json_errors(fn: F) -> F:
    """Return ``SegAnyError`` as its JSON error response; log anything else as a 500."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except SegAnyError as exc:
            (logger.error if exc.status >= 500 else logger.info)("%s: %s", exc.code, exc.message)
            return error_response(exc, kwargs.get("ctx"))
        except Exception:
            logger.exception("unexpected error in %s", fn.__name__)
            internal = SegAnyError("an unexpected error occurred; the server log has the details.")
            return error_response(internal, kwargs.get("ctx"))

    return wrapper  # type: ignore[return-value]


class RequestEdge:
    def __init__(self, app: Any, max_body_bytes: int, routes: Iterable[str] = API_ROUTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.routes = frozenset(routes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _ErrorEnvelope(send)
        if scope["method"] != "POST" or scope["path"] not in self.routes:
            return await self.app(scope, receive, send)
        try:
            body = await self._json_body(scope, receive)
        except SegAnyError as exc:
            return await error_response(exc)(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self.app({**scope, "headers": headers}, replay(body, receive), send)

    async def _json_body(self, scope: dict[str, Any], receive: Any) -> bytes:
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        media_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        limited = LimitedReceive(receive, self.max_body_bytes, self._too_large)
        if media_type in ("application/json", ""):
            return await limited.read_all()
        if media_type == "multipart/form-data":
            return json.dumps(await _multipart_fields(Request(scope, limited))).encode()
        if media_type.startswith("image/") or media_type in RAW_IMAGE_TYPES:
            data = await limited.read_all()
            fields = _decode_fields(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            fields["image"] = base64.b64encode(data).decode("ascii")
            return json.dumps(fields).encode()
        raise UnsupportedMediaType(
            f"Content-Type {media_type} is not accepted; send application/json, multipart/form-data with the file "
            "in the 'image' field, or the image itself with its image/* type."
        )

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body exceeds {self.max_body_bytes / 2**20:g} MiB (SEGANY_MAX_BODY_MB); send image_url "
            "(https, s3, gs) instead of the bytes, or image_id for an image sent before."
        )


async def _multipart_fields(request: Request) -> dict[str, Any]:
    form = await request.form(max_files=2, max_fields=64)
    try:
        uploads = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        if len(uploads) > 1:
            raise InputError("send one file per request, in the 'image' field.", field="image")
        fields = _decode_fields((k, v) for k, v in form.multi_items() if not isinstance(v, UploadFile))
        if uploads:
            fields["image"] = base64.b64encode(await uploads[0][1].read()).decode("ascii")
        return fields
    finally:
        await form.close()


def _decode_fields(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Form fields / query parameters: JSON values where they parse (points=[[1,2]]), else strings."""
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if key in STRING_FIELDS:
            fields[key] = value
            continue
        try:
            fields[key] = json.loads(value)
        except ValueError:
            fields[key] = value
    return fields


class LimitedReceive:
    """An ASGI receive that refuses bodies over ``limit`` bytes, whatever the headers said."""

    def __init__(self, receive: Any, limit: int, error: Callable[[], SegAnyError]) -> None:
        self.receive, self.limit, self.error, self.seen = receive, limit, error, 0

    async def __call__(self) -> dict[str, Any]:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                raise self.error()
        return message

    async def read_all(self) -> bytes:
        chunks = []
        while True:
            message = await self()
            if message["type"] == "http.disconnect":
                raise InputError("the client disconnected before sending the whole body.")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


def replay(body: bytes, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Deliver ``body`` once, then pass through (so a real disconnect is still seen)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _ErrorEnvelope:
    """Rewrites error responses (status >= 400) that are not in our JSON shape."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.start: dict[str, Any] | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if message["status"] < 400:
                return await self.send(message)
            self.start = message
            return None
        if self.start is None or message["type"] != "http.response.body":
            return await self.send(message)
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return None
        status = self.start["status"]
        body = _envelope(status, b"".join(self.chunks))
        headers = [(k, v) for k, v in self.start["headers"] if k.lower() not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


def _envelope(status: int, body: bytes) -> bytes:
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = body.decode("utf-8", "replace").strip()
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict) and "code" in payload["error"]:
        return body  # already ours
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]  # BentoML wraps some errors in a one-element list
    error: dict[str, Any] = {"code": _CODES.get(status, "internal_error" if status >= 500 else "invalid_request")}
    if isinstance(payload, dict) and isinstance(payload.get("detail"), list):  # pydantic validation
        problems = payload["detail"]
        parts = []
        for problem in problems:
            location = ".".join(str(p) for p in problem.get("loc", ()) if p != "__root__")
            parts.append(f"{location}: {problem.get('msg')}" if location else str(problem.get("msg")))
        error["message"] = "; ".join(parts) + ". The request schema is at /docs.json."
        first = ".".join(str(p) for p in problems[0].get("loc", ())) if problems else ""
        if first:
            error["field"] = first
    elif isinstance(payload, dict) and "error" in payload:
        error["message"] = str(payload["error"])
    else:
        error["message"] = str(payload or _CODES.get(status, "error"))
    return json.dumps({"error": error}).encode()
