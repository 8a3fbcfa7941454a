"""The page as the service serves it (strict CSP, BentoML's docs left at /), and ``segany ui``'s
forwarding to each target, checked field by field where the request lands: a URL (the real
server, and a recording upstream), a private Cloud Run service (an upstream that checks the
identity token) and a SageMaker endpoint (moto's control plane, the emulator's runtime over the
real server). No browser: tests/test_web_ui.py drives the page itself.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from deploy.ui.app import forwarding_app
from deploy.ui.targets import AwsTarget, GcpTarget, UrlTarget, target_for
from runners.edge import replay
from runners.errors import ConfigError
from runners.web import CSP, STATIC_DIR
from tests.photos import small_photo_png
from tests.test_emulate import Served, instance  # noqa: F401  (the emulator's server process, a fixture)

PNG = small_photo_png("truck", long_side=64)
B64 = base64.b64encode(PNG).decode()
POINT = {"points": [[32, 20]], "labels": [1], "output": "rle"}


class Recorder:
    """An ASGI app in front of ``app`` that keeps each HTTP request's path, headers and body."""

    def __init__(self, app: Any) -> None:
        self.app, self.requests = app, []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.requests.append({"path": scope["path"], "headers": {k.decode().lower(): v.decode() for k, v in scope["headers"]},
                              "body": body})
        await self.app(scope, replay(body, receive), send)

    def json(self, i: int = -1) -> dict:
        return json.loads(self.requests[i]["body"])


def direct(api: httpx.Client, route: str, fields: dict) -> httpx.Response:
    return api.post(route, json=fields)


# --- the page on the service ----------------------------------------------------------------------


def test_service_serves_the_page_under_a_strict_csp(api: httpx.Client) -> None:
    page = api.get("/ui/")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe" not in CSP and "connect-src 'self'" in CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="app.js"></script>' in page.text
    script = api.get("/ui/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["content-security-policy"] == CSP
    assert api.get("/ui", follow_redirects=False).headers["location"].endswith("/ui/")
    docs = api.get("/")
    assert docs.status_code == 200 and "<title>segment-anywhere</title>" not in docs.text  # BentoML's own page
    assert api.get("/ui/missing.js").status_code == 404


def test_page_sources_need_no_inline_code_or_eval() -> None:
    """What the CSP would block must not be there: inline scripts or styles, eval, HTML injection."""
    html = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) and "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    for source in STATIC_DIR.glob("*.js"):
        code = source.read_text()
        for banned in ("eval(", "new Function", "innerHTML", "setAttribute(\"style", "document.write"):
            assert banned not in code, f"{source.name} uses {banned}"
        for imported in re.findall(r'from "\./([\w.]+)"', code):
            assert (STATIC_DIR / imported).is_file(), f"{source.name} imports a missing {imported}"


# --- a URL --------------------------------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[tuple[Recorder, Served]]:
    """An upstream that records what reaches it and answers 503 not_ready with Retry-After."""

    async def loading(request: Request) -> Response:
        body = {"error": {"code": "not_ready", "message": "the model is still loading"}}
        return Response(json.dumps(body), 503, {"Retry-After": "7"}, media_type="application/json")

    recorder = Recorder(Starlette(routes=[Route("/{path:path}", loading, methods=["POST"])]))
    with Served(recorder) as served:
        yield recorder, served


def test_url_target_forwards_and_passes_answers_back(api: httpx.Client, server: Any) -> None:
    with TestClient(forwarding_app(UrlTarget(server.url))) as page:
        assert page.get("/", follow_redirects=False).headers["location"] == "/ui/"
        assert page.get("/ui/").headers["content-security-policy"] == CSP
        first = page.post("/segment", json={"image": f"data:image/png;base64,{B64}", **POINT})
        expected = direct(api, "/segment", {"image": B64, **POINT}).json()
        assert first.status_code == 200 and first.json() == expected
        again = page.post("/segment", json={"image_id": expected["image_id"], "boxes": [[0, 0, 40, 30]]})
        assert again.json() == direct(api, "/segment", {"image_id": expected["image_id"], "boxes": [[0, 0, 40, 30]]}).json()
        lost = page.post("/segment", json={"image_id": "0" * 64, **POINT})
        assert lost.status_code == 404 and lost.json()["error"]["code"] == "image_not_found"
        two = page.post("/segment", json={"image": B64, "image_id": "x", **POINT})
        assert two.status_code == 400 and "not image and image_id" in two.json()["error"]["message"]
        assert page.post("/segment", content=b"not json").status_code == 400
        assert page.post("/segment", json={"image": "%%%", **POINT}).json()["error"]["code"] == "invalid_request"


def test_url_target_sends_fields_as_given_and_keeps_retry_after(upstream: tuple[Recorder, Served]) -> None:
    recorder, served = upstream
    fields = {"image_url": "s3://bucket/truck.jpg", "points_per_side": 4, "pred_iou_thresh": 0, "output": "rle"}
    with TestClient(forwarding_app(UrlTarget(served.url + "/"))) as page:
        answer = page.post("/segment_everything", json=fields)
        embed = page.post("/embed", json={"image": B64, "dtype": "float16"})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "7"
    assert answer.json()["error"]["code"] == "not_ready" and embed.status_code == 503
    assert [r["path"] for r in recorder.requests] == ["/segment_everything", "/embed"]
    assert recorder.json(0) == fields and recorder.json(1) == {"image": B64, "dtype": "float16"}
    assert recorder.requests[0]["headers"]["content-type"] == "application/json"


def test_unreachable_url_says_so() -> None:
    from bench.server import free_port

    with TestClient(forwarding_app(UrlTarget(f"http://127.0.0.1:{free_port()}"))) as page:
        answer = page.post("/segment", json={"image": B64, **POINT})
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "target_unreachable"
    assert "check that the service is running" in answer.json()["error"]["message"]


# --- a private Cloud Run service ------------------------------------------------------------------


@pytest.fixture
def cloud_run(server: Any) -> Iterator[tuple[Recorder, str]]:
    """A private service: 403 without ``Bearer good-token``, else the real server's answer."""

    async def private(request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer good-token":
            return Response("Forbidden", 403)
        answer = httpx.post(server.url + request.url.path, content=await request.body(),
                            headers={"Content-Type": "application/json"}, timeout=120)
        return Response(answer.content, answer.status_code, media_type=answer.headers["content-type"])

    recorder = Recorder(Starlette(routes=[Route("/{path:path}", private, methods=["POST"])]))
    with Served(recorder) as served:
        yield recorder, served.url


def test_gcp_target_sends_the_identity_token(cloud_run: tuple[Recorder, str], api: httpx.Client,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, url = cloud_run
    monkeypatch.setenv("SEGANY_ID_TOKEN", "good-token")
    with TestClient(forwarding_app(target_for(f"gcp:{url}"))) as page:
        answer = page.post("/segment", json={"image": f"data:image/png;base64,{B64}", **POINT})
        lost = page.post("/segment", json={"image_id": "0" * 64, **POINT})
        monkeypatch.setenv("SEGANY_ID_TOKEN", "stale-token")
        refused = page.post("/segment", json={"image": B64, **POINT})
    assert answer.status_code == 200 and answer.json() == direct(api, "/segment", {"image": B64, **POINT}).json()
    assert recorder.requests[0]["path"] == "/segment" and recorder.json(0) == {**POINT, "image": B64}
    assert recorder.requests[0]["headers"]["authorization"] == "Bearer good-token"
    assert lost.status_code == 404 and lost.json()["error"]["code"] == "image_not_found"
    assert refused.status_code == 403 and "roles/run.invoker" in refused.json()["error"]["message"]


def test_targets_by_name() -> None:
    assert isinstance(target_for("http://localhost:3000"), UrlTarget)
    assert isinstance(target_for("https://sam-abc123-uc.a.run.app"), GcpTarget)
    assert isinstance(target_for("https://sam-abc123-uc.a.run.app", authenticate=False), UrlTarget)
    for wrong in ("localhost:3000", "gcp:sam", "ftp://host/x", "aws:"):
        with pytest.raises(ConfigError):
            target_for(wrong)


def refused(args: list[str], caplog: pytest.LogCaptureFixture) -> str:
    """``segany ui ARGS`` must exit 2 before serving; what it logged."""
    from click.testing import CliRunner

    from deploy.ui.command import ui

    assert CliRunner().invoke(ui, args).exit_code == 2
    return caplog.text


def test_cli_refuses_an_unknown_target(caplog: pytest.LogCaptureFixture) -> None:
    assert "gcp:sam needs --project and --region" in refused(["gcp:sam"], caplog)


# --- a SageMaker endpoint ---------------------------------------------------------------------------


def serverless_endpoint(moto_aws: Any, name: str = "sam") -> None:
    """A serverless endpoint in moto's control plane, tagged as segany deploy aws tags it."""
    sm = moto_aws.client("sagemaker")
    role = "arn:aws:iam::123456789012:role/segany-sagemaker"
    sm.create_model(ModelName=name, ExecutionRoleArn=role,
                    PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/sam:1"})
    sm.create_endpoint_config(EndpointConfigName=f"{name}-cfg", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}])
    arn = sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-cfg")["EndpointArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "segany:mode", "Value": "serverless"}])


def test_aws_target_invokes_the_endpoint(instance: Any, moto_aws: Any, api: httpx.Client,  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.emulate import build

    serverless_endpoint(moto_aws)
    recorder = Recorder(build("sagemaker-serverless", instance, endpoint="sam"))
    with Served(recorder) as served:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", served.url)
        target = target_for("aws:sam")
        assert isinstance(target, AwsTarget) and target.description == "SageMaker endpoint sam (serverless)"
        with TestClient(forwarding_app(target)) as page:
            first = page.post("/segment", json={"image": f"data:image/png;base64,{B64}", **POINT})
            image_id = first.json()["image_id"]
            again = page.post("/segment_everything", json={"image_id": image_id, "points_per_side": 2, "output": "rle"})
            lost = page.post("/segment", json={"image_id": "0" * 64, **POINT})
    assert first.status_code == 200 and first.json() == direct(api, "/segment", {"image": B64, **POINT}).json()
    assert again.status_code == 200
    assert again.json() == direct(api, "/segment_everything", {"image_id": image_id, "points_per_side": 2}).json()
    paths = {r["path"] for r in recorder.requests}
    assert paths == {"/endpoints/sam/invocations"}
    assert recorder.requests[0]["headers"]["content-type"] == "application/json"
    assert recorder.json(0) == {"task": "segment", **POINT, "image": B64}
    assert recorder.json(1) == {"task": "everything", "image_id": image_id, "points_per_side": 2, "output": "rle"}
    assert lost.status_code == 404 and lost.json()["error"]["code"] == "image_not_found"  # the container's own answer


def test_cli_refuses_an_endpoint_that_is_not_there(moto_aws: Any, caplog: pytest.LogCaptureFixture) -> None:
    assert "no endpoint nope" in refused(["aws:nope"], caplog)
