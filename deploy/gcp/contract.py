"""Cloud Run's container contract, beyond what the service already does.

The service already listens where it is told, answers ``/readyz`` (startup and readiness
probes) and ``/livez`` (liveness), and BentoML's server drains in-flight requests on
SIGTERM within the grace the entrypoint sets. What Cloud Run adds is logging: on Cloud
Run (``K_SERVICE`` set) every log record is one JSON line that Cloud Logging parses, with
``severity``, ``message`` and the request's trace, so a request's log lines group under
its trace in the console.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from typing import Any

TRACE_HEADER = b"x-cloud-trace-context"  # TRACE_ID/SPAN_ID;o=1
TRACEPARENT_HEADER = b"traceparent"  # 00-TRACE_ID-SPAN_ID-01 (W3C)
_trace: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("segany_trace", default=None)
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
SEVERITIES = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}


def parse_trace(headers: dict[bytes, bytes]) -> tuple[str, str] | None:
    """(trace id, span id) from Cloud Run's headers, or None."""
    cloud = headers.get(TRACE_HEADER, b"").decode("latin-1")
    if match := _CLOUD_TRACE.match(cloud):
        return match[1].lower(), match[2] or ""
    parent = headers.get(TRACEPARENT_HEADER, b"").decode("latin-1").strip()
    if match := _TRACEPARENT.match(parent):
        return match[1], match[2]
    return None


class CloudTraceMiddleware:
    """Remembers the request's trace for the log records written while serving it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = _trace.set(parse_trace(dict(scope["headers"])))
        try:
            await self.app(scope, receive, send)
        finally:
            _trace.reset(token)


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per record, in Cloud Logging's structured-logging fields."""

    def __init__(self, project: str | None) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": SEVERITIES.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        if record.exc_info:
            entry["message"] += "\n" + self.formatException(record.exc_info)
        trace = _trace.get()
        if trace is not None:
            trace_id, span_id = trace
            entry["logging.googleapis.com/trace"] = f"projects/{self.project}/traces/{trace_id}" if self.project else trace_id
            if span_id:
                entry["logging.googleapis.com/spanId"] = span_id
        return json.dumps(entry, ensure_ascii=False)


def install_cloud_logging(project: str | None) -> None:
    """Give every configured handler the JSON formatter (BentoML has set its handlers up
    by the time the service module is imported)."""
    formatter = CloudLoggingFormatter(project)
    formatter.converter = __import__("time").gmtime
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            handler.setFormatter(formatter)
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(formatter)
        logging.getLogger().addHandler(handler)
