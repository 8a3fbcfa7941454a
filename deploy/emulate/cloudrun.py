"""Cloud Run's side of the emulator: every path goes to the container as it is (the service's own
API: ``/segment``, ``/readyz``...), and refusals come back as Cloud Run's front end answers them.

Cloud Run's errors are not JSON: the Google front end answers a request that is too large with
its HTML error page (413), and Cloud Run itself with short text bodies (429, 500, 504); see
https://cloud.google.com/run/docs/troubleshooting. Clients tell them apart by status code,
which is what the emulator reproduces exactly; the wording follows those pages.
"""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from deploy.emulate.lifecycle import Instance
from deploy.emulate.limits_front import Front, Target, Upstream
from deploy.limits import CLOUD_RUN, CLOUD_RUN_CONCURRENCY, CLOUD_RUN_TIMEOUT_S

TROUBLESHOOTING = "https://cloud.google.com/run/docs/troubleshooting"
GFE_413 = """<!DOCTYPE html>
<html lang=en>
  <meta charset=utf-8>
  <title>Error 413 (Request Entity Too Large)!!1</title>
  <p><b>413.</b> <ins>That\u2019s an error.</ins>
  <p>Your client issued a request that was too large. <ins>That\u2019s all we know.</ins>
"""


class CloudRunErrors:
    def request_too_large(self, size: int, cap: int) -> Response:
        return HTMLResponse(GFE_413, status_code=413)

    def response_too_large(self, size: int, cap: int) -> Response:
        return PlainTextResponse(f"The response of {size} bytes exceeds the {cap} bytes Cloud Run returns without "
                                 "streaming (HTTP/1).", status_code=500)

    def timeout(self, timeout_s: float) -> Response:
        return PlainTextResponse("upstream request timeout", status_code=504)

    def throttled(self, cap: int) -> Response:
        return PlainTextResponse("The request was aborted because there was no available instance.", status_code=429)

    def out_of_memory(self, memory_mb: int | None) -> Response:
        # The client sees the broken connection; the memory is named in the service's log.
        return PlainTextResponse("The request failed because either the HTTP response was malformed or connection to "
                                 f"the instance had an error. (log: Memory limit of {memory_mb} MiB exceeded; the "
                                 "instance was terminated)", status_code=500)

    def crashed(self, detail: str) -> Response:
        return PlainTextResponse("The request failed because either the HTTP response was malformed or connection to "
                                 "the instance had an error.", status_code=500)

    def container_error(self, upstream: httpx.Response) -> Response | None:
        return None  # the container's own answer goes back unchanged

    def not_found(self, path: str) -> Response:
        return PlainTextResponse("Not Found", status_code=404)


def target(timeout_s: float | None = None, concurrency: int | None = None) -> Target:
    """Cloud Run with the settings our deploy uses unless given (deploy/gcp/settings.py)."""
    from deploy.gcp.settings import DEFAULT_CONCURRENCY, GcpSettings

    timeout = timeout_s or GcpSettings.model_fields["timeout_s"].default
    concurrency = concurrency or DEFAULT_CONCURRENCY["cpu"]
    for name, value, (low, high) in (("--timeout-s", timeout, CLOUD_RUN_TIMEOUT_S), ("--max-concurrency", concurrency, CLOUD_RUN_CONCURRENCY)):
        if not low <= value <= high:
            raise ValueError(f"{name} {value} is outside Cloud Run's {low}-{high}")
    return Target(
        "cloudrun", "cloudrun", CLOUD_RUN, float(timeout), concurrency, True, True,
        billing="request-based billing: vCPU-seconds and GiB-seconds while serving requests, nothing while scaled to zero",
        sources={"payload": CLOUD_RUN.source, "timeout": "https://cloud.google.com/run/docs/configuring/request-timeout",
                 "concurrency": "https://cloud.google.com/run/docs/about-concurrency", "errors": TROUBLESHOOTING},
        notes=("one instance (as --max-instances 1): requests over its concurrency are refused with 429 at once; Cloud "
               "Run first holds them pending for a while, and with more instances allowed it would start another",
               "the request timeout counts the container's start, as Cloud Run's does"),
    )


def router(instance: Instance):
    async def route(request: Request) -> Upstream | Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
        return Upstream(request.method, request.url.path, headers, query=request.url.query.encode("latin-1"))

    return route


def front(instance: Instance, *, idle_s: float | None = None, timeout_s: float | None = None,
          max_concurrency: int | None = None) -> Front:
    return Front(target(timeout_s, max_concurrency), instance, CloudRunErrors(), router(instance), idle_s)
