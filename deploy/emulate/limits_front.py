"""The emulator's front: an ASGI app that stands where the platform's router stands, in front
of the real server process (:class:`deploy.emulate.lifecycle.Instance`), and enforces one
target's contract with the numbers of ``deploy/limits.py``:

- the request cap (checked on Content-Length, then on the bytes read) and the response cap;
- the invocation timeout (Cloud Run counts the container's start in it; SageMaker does not);
- the concurrency cap (SageMaker Serverless MaxConcurrency, Cloud Run's concurrency with one
  instance: ``--max-instances 1``);
- scale to zero after ``idle_s`` without requests, and the cold start the next request pays
  (``X-Segany-Emulator-Cold-Start-S`` on that response, and ``GET /emulator/status``);
- a server killed for memory or crashed, answered as the platform answers it.

Each refusal is rendered by the target's :class:`Errors` (``sagemaker.py``, ``cloudrun.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from deploy.emulate.lifecycle import Instance, StartFailed
from deploy.limits import PlatformLimits

logger = logging.getLogger(__name__)

COLD_START_HEADER = "x-segany-emulator-cold-start-s"
# not passed back: hop-by-hop, and content-encoding (httpx hands over the body decoded)
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host", "upgrade",
               "te", "trailer"}


class Errors(Protocol):
    """How a platform answers each refusal (status, headers, body), as its clients parse it."""

    def request_too_large(self, size: int, cap: int) -> Response: ...
    def response_too_large(self, size: int, cap: int) -> Response: ...
    def timeout(self, timeout_s: float) -> Response: ...
    def throttled(self, cap: int) -> Response: ...
    def out_of_memory(self, memory_mb: int | None) -> Response: ...
    def crashed(self, detail: str) -> Response: ...
    def container_error(self, upstream: httpx.Response) -> Response | None: ...
    def not_found(self, path: str) -> Response: ...


@dataclass(frozen=True)
class Target:
    name: str  # sagemaker-realtime, sagemaker-serverless, cloudrun
    platform: str  # how the image is started: "sagemaker" (serve) or "cloudrun"
    limits: PlatformLimits
    timeout_s: float
    max_concurrency: int | None  # None: the platform queues, it does not refuse
    scales_to_zero: bool
    timeout_covers_start: bool  # Cloud Run: the request timeout includes the container's start
    billing: str
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass
class Upstream:
    """What the front sends to the container for one request."""

    method: str
    path: str
    headers: dict[str, str]
    query: bytes = b""
    # turns the container's answer into the platform's (SageMaker: its response headers)
    shape: Callable[[httpx.Response, bytes], Response] | None = None


Router = Callable[[Request], Awaitable["Upstream | Response"]]


class Front:
    """ASGI app: ``route`` maps a request to the container (or answers it), the rest is the contract."""

    def __init__(self, target: Target, instance: Instance, errors: Errors, route: Router, idle_s: float | None = None) -> None:
        self.target, self.instance, self.errors, self.route = target, instance, errors, route
        self.idle_s = idle_s if target.scales_to_zero else None
        self.in_flight = 0
        self.refused: dict[str, int] = {}
        self._client: httpx.AsyncClient | None = None
        self._watcher: asyncio.Task | None = None
        self.on_close: Callable[[], None] | None = None  # run at the server's shutdown (segany emulate: stop the instance)

    # --- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if request.url.path == "/emulator/status" and request.method == "GET":
            return await JSONResponse(self.status())(scope, receive, send)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_watcher()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start_watcher(self) -> None:
        if self.idle_s is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_idle())

    async def _watch_idle(self) -> None:
        assert self.idle_s is not None
        while True:
            await asyncio.sleep(min(self.idle_s / 4, 1.0))
            if self.in_flight == 0:
                await asyncio.to_thread(self.instance.stop_if_idle, self.idle_s)

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._client is not None:
            await self._client.aclose()
        if self.on_close is not None:
            await asyncio.to_thread(self.on_close)

    # --- one request ------------------------------------------------------------------------------

    def _refuse(self, cause: str, response: Response) -> Response:
        self.refused[cause] = self.refused.get(cause, 0) + 1
        logger.info("%s: refused (%s) with %d", self.target.name, cause, response.status_code)
        return response

    async def handle(self, request: Request) -> Response:
        routed = await self.route(request)
        if isinstance(routed, Response):
            return routed
        cap = self.target.max_concurrency
        if cap is not None and self.in_flight >= cap:
            return self._refuse("concurrency", self.errors.throttled(cap))
        self.in_flight += 1
        self.instance.begin()
        try:
            return await self._forward(request, routed)
        finally:
            self.in_flight -= 1
            self.instance.end()

    async def _read_capped(self, request: Request, cap: int | None) -> bytes | int:
        """The body, or its size (at least cap + 1) when it is over the cap."""
        declared = request.headers.get("content-length")
        if cap is not None and declared and declared.isdigit() and int(declared) > cap:
            return int(declared)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if cap is not None and size > cap:
                return size
            chunks.append(chunk)
        return b"".join(chunks)

    async def _forward(self, request: Request, upstream: Upstream) -> Response:
        limits = self.target.limits
        body = await self._read_capped(request, limits.request_bytes)
        if isinstance(body, int):
            return self._refuse("request size", self.errors.request_too_large(body, limits.request_bytes or 0))
        started = time.monotonic()
        try:
            cold_s = await asyncio.to_thread(self.instance.ensure_running)
        except StartFailed as exc:
            logger.warning("the server did not start: %s", exc)
            if exc.oom:
                return self._refuse("memory", self.errors.out_of_memory(self.instance.memory_mb))
            return self._refuse("crash", self.errors.crashed(str(exc)))
        budget = self.target.timeout_s - (time.monotonic() - started if self.target.timeout_covers_start else 0)
        if budget <= 0:
            return self._refuse("timeout", self.errors.timeout(self.target.timeout_s))
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=None)
        url = f"{self.instance.url}{upstream.path}"
        try:
            answer = await asyncio.wait_for(
                self._client.request(upstream.method, url, headers=upstream.headers, content=body,
                                     params=upstream.query.decode("latin-1") or None),
                budget,
            )
        except asyncio.TimeoutError:
            return self._refuse("timeout", self.errors.timeout(self.target.timeout_s))
        except httpx.HTTPError as exc:
            ended = await asyncio.to_thread(self.instance.died)
            if ended == "oom":
                return self._refuse("memory", self.errors.out_of_memory(self.instance.memory_mb))
            return self._refuse("crash", self.errors.crashed(f"{type(exc).__name__}: {exc}"))
        content = answer.content
        if limits.response_bytes is not None and len(content) > limits.response_bytes:
            return self._refuse("response size", self.errors.response_too_large(len(content), limits.response_bytes))
        error = self.errors.container_error(answer) if answer.status_code >= 400 else None
        if error is not None:
            response = error
        elif upstream.shape is not None:
            response = upstream.shape(answer, content)
        else:
            headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            response = Response(content, status_code=answer.status_code, headers=headers)
        if cold_s is not None:
            response.headers[COLD_START_HEADER] = f"{cold_s:.3f}"
        return response

    # --- status ---------------------------------------------------------------------------------

    def status(self) -> dict:
        t = self.target
        return {
            "target": t.name,
            "limits": {**asdict(t.limits), "timeout_s": t.timeout_s, "max_concurrency": t.max_concurrency,
                       "memory_mb": self.instance.memory_mb},
            "sources": t.sources,
            "scale_to_zero": {"enabled": self.idle_s is not None, "idle_s": self.idle_s},
            "billing": t.billing,
            "process": self.instance.status(),
            "in_flight": self.in_flight,
            "refused": self.refused,
            "cold_starts": [asdict(c) for c in self.instance.cold_starts],
            "notes": list(t.notes),
        }
