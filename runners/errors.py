"""One exception tree for the whole runtime.

Every error a user can cause maps to an HTTP status and a JSON body of the form
``{"error": {"code": ..., "message": ..., "field": ...}}``. Messages say what was
wrong and what to do next.
"""

from __future__ import annotations

from typing import Any


class SegAnyError(Exception):
    """Base class: an error with a stable ``code`` and an HTTP ``status``."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if status is not None:
            self.status = status

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


# --- start-up errors: the process refuses to serve -------------------------------------------


class ConfigError(SegAnyError):
    """A ``SEGANY_*`` setting is malformed or inconsistent."""

    code = "invalid_setting"


class DeployError(SegAnyError):
    """A cloud call of ``segany deploy``/``invoke``/``status``/``destroy`` failed, or left the
    cloud in a state the message describes (what still serves, what was cleaned up)."""

    code = "deploy_failed"


class ContainerError(DeployError):
    """The deployed container answered an error of its own (SageMaker's ``ModelError``, a Cloud Run
    service's 4xx/5xx): ``status`` and ``body`` are the container's, to pass on unchanged."""

    code = "container_error"

    def __init__(self, message: str, *, status: int, body: bytes, content_type: str = "application/json") -> None:
        super().__init__(message, status=status)
        self.body = body
        self.content_type = content_type


class CheckpointError(SegAnyError):
    """The model checkpoint cannot be found, fetched, verified or loaded."""

    code = "checkpoint_unavailable"


class DependencyMissing(SegAnyError):
    """An optional package is needed for what was asked (for example boto3 for s3://)."""

    code = "dependency_missing"


# --- request errors: 4xx, the server keeps serving --------------------------------------------


class InputError(SegAnyError):
    """The request is malformed or asks for something impossible."""

    code = "invalid_request"
    status = 400


class InvalidImage(InputError):
    code = "invalid_image"


class ImageTooLarge(InputError):
    code = "image_too_large"
    status = 413


class PayloadTooLarge(InputError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(InputError):
    code = "unsupported_media_type"
    status = 415


class PromptError(InputError):
    code = "invalid_prompt"


class ImageNotFound(InputError):
    """An ``image_id`` that this replica does not hold (never sent, or evicted)."""

    code = "image_not_found"
    status = 404


class URLNotAllowed(InputError):
    """An ``image_url`` with a scheme or destination that the policy forbids."""

    code = "url_not_allowed"
    status = 403


class URLFetchFailed(InputError):
    """An ``image_url`` that could not be downloaded (unreachable, HTTP error, timeout)."""

    code = "url_fetch_failed"
    status = 400


class ResponseTooLarge(InputError):
    """The response would exceed the platform's response-size limit."""

    code = "response_too_large"
    status = 413


# --- server state -----------------------------------------------------------------------------


class NotReady(SegAnyError):
    code = "not_ready"
    status = 503


class Overloaded(SegAnyError):
    code = "overloaded"
    status = 503
