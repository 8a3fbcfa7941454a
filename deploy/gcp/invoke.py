"""``segany invoke gcp``: one request to the service's URL (or a revision's tag URL), with an
identity token when the service is private.

The token comes from ``SEGANY_ID_TOKEN`` if set, else from google-auth for the service's URL as
audience (service-account credentials), else from ``gcloud auth print-identity-token`` (a user's
login). A body over Cloud Run's 32 MiB HTTP/1 cap is refused before sending, with the fix.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.limits import CLOUD_RUN
from runners.errors import DeployError

ROUTES = {"segment": "/segment", "everything": "/segment_everything", "embed": "/embed"}


@dataclass(frozen=True)
class GcpInvoke:
    url: str
    image: Path
    task: str = "segment"
    fields: dict[str, Any] | None = None
    authenticate: bool = True
    timeout_s: float = 3600


_TOKENS: dict[str, tuple[float, str]] = {}
TOKEN_REUSE_S = 45 * 60  # Google's identity tokens last an hour


def identity_token(audience: str) -> str:
    """An identity token for ``audience``, reused for 45 minutes (a gcloud call takes a second)."""
    token = os.environ.get("SEGANY_ID_TOKEN")
    if token:
        return token
    cached = _TOKENS.get(audience)
    if cached and time.monotonic() - cached[0] < TOKEN_REUSE_S:
        return cached[1]
    token = _fresh_token(audience)
    _TOKENS[audience] = (time.monotonic(), token)
    return token


def _fresh_token(audience: str) -> str:
    try:
        from google.auth.transport.requests import Request
        from google.oauth2 import id_token

        return id_token.fetch_id_token(Request(), audience)
    except Exception:  # user credentials cannot mint one for an audience; gcloud can
        pass
    if shutil.which("gcloud"):
        result = subprocess.run(["gcloud", "auth", "print-identity-token"], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    raise DeployError("no identity token for the private service: set SEGANY_ID_TOKEN=$(gcloud auth print-identity-token), "
                      "use service-account credentials, or deploy with --invoker / --allow-unauthenticated")


def invoke(r: GcpInvoke) -> tuple[int, bytes, str]:
    """``segany invoke gcp``: the request's image file and fields, sent as :func:`send` sends them."""
    return send(r.url, {"task": r.task, **(r.fields or {})}, r.image.read_bytes(), authenticate=r.authenticate,
                timeout_s=r.timeout_s)


def send(url: str, fields: dict[str, Any], image: bytes | None, *, authenticate: bool = True,
         timeout_s: float = 3600) -> tuple[int, bytes, str]:
    """One request to the service at ``url``: ``fields`` are the JSON request's fields other than the
    image, ``task`` (segment|everything|embed) choosing the route; ``image`` the image's bytes, or
    None when ``fields`` name an ``image_id``. Answers (status, body, content type); a refused
    identity (401/403) raises DeployError naming the fix."""
    import httpx

    fields = dict(fields)
    route = ROUTES[fields.pop("task", "segment")]
    if image is not None:
        fields["image"] = base64.b64encode(image).decode()
    body = json.dumps(fields).encode()
    cap = CLOUD_RUN.request_bytes or 0
    if len(body) > cap:
        raise DeployError(f"the request is {len(body) / 2**20:.1f} MiB, over Cloud Run's {cap // 2**20} MiB HTTP/1 cap "
                          "(cloud.google.com/run/quotas); put the image in gs:// and send image_url, or shrink it",
                          status=413)
    headers = {"Content-Type": "application/json"}
    if authenticate:
        headers["Authorization"] = f"Bearer {identity_token(url)}"
    answer = httpx.post(url.rstrip("/") + route, content=body, headers=headers, timeout=timeout_s)
    if answer.status_code in (401, 403):
        raise DeployError(f"Cloud Run refused the request ({answer.status_code}): the caller needs roles/run.invoker "
                          "(segany deploy gcp --invoker user:YOU@example.com)", status=answer.status_code)
    return answer.status_code, answer.content, answer.headers.get("content-type", "")


def url_of(project: str, region: str, service: str, tag: str | None = None, clients: Any = None) -> str:
    """The URL of Cloud Run service ``service`` (or of its revision tagged ``tag``), from the Admin API."""
    from deploy.gcp.session import GcpClients, as_dict

    name = f"projects/{project}/locations/{region}/services/{service}"
    return service_url(as_dict((clients or GcpClients())("services").get_service(name=name)), tag)


def service_url(service: dict[str, Any], tag: str | None) -> str:
    if not tag:
        if not service.get("uri"):
            raise DeployError("the service has no URL yet; see segany status gcp")
        return service["uri"]
    for status in service.get("traffic_statuses", []):
        if status.get("tag") == tag and status.get("uri"):
            return status["uri"]
    raise DeployError(f"no tag {tag!r} on the service; segany status gcp lists its tags")
