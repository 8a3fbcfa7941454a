"""The local server of ``segany ui``: the page at ``/ui/`` and the API's three routes, forwarded.

Each POST is checked at the edge (a JSON object with at most one image source, the image's
base64 decodable) and handed to the target as fields plus image bytes; the target's answer goes
back to the page as it came (status, body, content type, ``Retry-After``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any, Optional

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from deploy.ui.targets import TASKS, Answer, Target, error_answer
from runners.web import PAGE_PATH, page_app

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 2**20  # the target applies its own cap; this one only bounds this process


class PageRequest(BaseModel):
    """The page's request: any API fields, at most one image source (the target checks the rest)."""

    model_config = ConfigDict(extra="allow")

    image: Optional[str] = None
    image_id: Optional[str] = None
    image_url: Optional[str] = None

    @model_validator(mode="after")
    def _one_image_source(self) -> "PageRequest":
        given = [name for name in ("image", "image_id", "image_url") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"send one of image, image_id or image_url, not {' and '.join(given)}")
        return self

    def image_bytes(self) -> bytes | None:
        """The image's bytes from its base64 (a ``data:...;base64,`` prefix is fine)."""
        if self.image is None:
            return None
        encoded = self.image.split(",", 1)[1] if self.image.startswith("data:") else self.image
        return base64.b64decode(encoded, validate=True)

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k != "image" and v is not None}


def _response(answer: Answer) -> Response:
    return Response(answer.body, status_code=answer.status, media_type=answer.content_type, headers=answer.headers)


def forwarding_app(target: Target) -> Starlette:
    async def forward(request: Request) -> Response:
        task = TASKS[request.url.path]
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _response(error_answer(413, "payload_too_large", f"the request is over {MAX_BODY_BYTES // 2**20} MiB; "
                                          "send image_url (https, s3, gs) instead of the bytes"))
        try:
            parsed = PageRequest.model_validate(json.loads(body))
            image = parsed.image_bytes()
        except (ValueError, ValidationError, binascii.Error) as exc:
            return _response(error_answer(400, "invalid_request", f"the request is not a JSON object the API takes: {exc}"))
        started = time.monotonic()
        answer = await anyio.to_thread.run_sync(target.send, task, parsed.fields(), image)
        logger.info("%s -> %s: %d in %.0f ms", request.url.path, target.description, answer.status,
                    (time.monotonic() - started) * 1000)
        return _response(answer)

    async def home(request: Request) -> Response:
        return RedirectResponse(f"{PAGE_PATH}/")

    routes = [
        Route("/", home),
        *(Route(path, forward, methods=["POST"]) for path in TASKS),
        Mount(PAGE_PATH, page_app()),
    ]
    return Starlette(routes=routes)
