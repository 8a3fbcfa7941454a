"""Pytest fixtures for network and cloud fakes (loaded through ``pytest_plugins``).

* ``local_http``: a programmable HTTP server on 127.0.0.1 (:class:`LocalHTTP`);
* ``moto_s3``: moto's S3 in a thread, with the AWS environment pointing at it (:class:`MotoS3`);
* ``fake_gcs``: the fake GCS JSON API, with ``STORAGE_EMULATOR_HOST`` set (:class:`FakeGCS`).

The servers bind 127.0.0.1 on free ports; the cloud ones live for the session and are
emptied before each test.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fakes.fake_gcs import FakeGCS

logger = logging.getLogger(__name__)


# --- local_http -------------------------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Failed TLS handshakes and clients that hang up are expected in tests; log, do not print.
        logger.debug("local_http: error serving %s", client_address, exc_info=True)


@dataclass
class Route:
    """What the server answers on one path (see :meth:`LocalHTTP.add`)."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    redirect_to: str | None = None
    chunked: bool = False
    chunk_size: int = 64 * 1024
    drip_s: float = 0.0


class LocalHTTP:
    """A threaded HTTP(S) server on 127.0.0.1 whose answers are set per path.

    tls: optional (certfile, keyfile) to serve HTTPS instead of HTTP.
    """

    def __init__(self, tls: tuple[str | Path, str | Path] | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.sni_names: list[str | None] = []  # server names clients sent in TLS (HTTPS only)
        self._stopping = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self.scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            context.sni_callback = lambda _sock, name, _ctx: self.sni_names.append(name)
            # Handshake in the handler thread, so one bad client cannot stall accept().
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-http", daemon=True
        )

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def url_for(self, path: str, host: str | None = None) -> str:
        """The URL of ``path`` on this server; ``host`` replaces 127.0.0.1 (for name-based tests)."""
        path = path if path.startswith("/") else "/" + path
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def add(
        self,
        path: str,
        body: bytes = b"",
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
        redirect_to: str | None = None,
        chunked: bool = False,
        chunk_size: int = 64 * 1024,
        drip_s: float = 0.0,
    ) -> str:
        """Serve ``path`` and return its URL.

        body: the response body. status: the HTTP status. headers: extra headers.
        delay_s: sleep before answering. redirect_to: answer 302 (or ``status`` if it is a
        3xx) with this Location. chunked: send ``Transfer-Encoding: chunked`` and no
        Content-Length. chunk_size / drip_s: write the body in pieces of chunk_size bytes,
        sleeping drip_s between them (a slow drip).
        """
        path = path if path.startswith("/") else "/" + path
        if redirect_to is not None and not 300 <= status < 400:
            status = 302
        self.routes[path] = Route(body, status, dict(headers or {}), delay_s, redirect_to, chunked, chunk_size, drip_s)
        return self.url_for(path)

    def hits(self, path: str) -> int:
        """How many requests asked for ``path`` (query string ignored)."""
        return sum(1 for _m, p, _h in self.requests if p.split("?", 1)[0] == path)

    def start(self) -> "LocalHTTP":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _make_handler(server: LocalHTTP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("local_http: " + format, *args)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            server.requests.append(("GET", self.path, dict(self.headers.items())))
            route = server.routes.get(self.path.split("?", 1)[0])
            try:
                self._answer(route or Route(b"not found\n", 404))
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
                pass  # the client gave up, which is what several tests want
            self.close_connection = True

        def _answer(self, route: Route) -> None:
            if route.delay_s and server._stopping.wait(route.delay_s):
                return
            self.send_response(route.status)
            if route.redirect_to is not None:
                self.send_header("Location", route.redirect_to)
            for key, value in route.headers.items():
                self.send_header(key, value)
            if route.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            elif not any(k.lower() == "content-length" for k in route.headers):
                self.send_header("Content-Length", str(len(route.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            for start in range(0, len(route.body), max(1, route.chunk_size)):
                if start and route.drip_s and server._stopping.wait(route.drip_s):
                    return
                piece = route.body[start : start + route.chunk_size]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if route.chunked else piece)
                self.wfile.flush()
            if route.chunked:
                self.wfile.write(b"0\r\n\r\n")

    return Handler


@pytest.fixture
def local_http() -> Iterator[LocalHTTP]:
    """A plain-HTTP :class:`LocalHTTP` on 127.0.0.1, stopped after the test."""
    server = LocalHTTP().start()
    try:
        yield server
    finally:
        server.stop()


# --- moto_s3 ----------------------------------------------------------------------------------


@dataclass
class MotoS3:
    """moto's S3 server: ``endpoint`` URL, a boto3 ``client`` for it, and :meth:`put`."""

    endpoint: str
    client: Any

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Store ``data`` at s3://bucket/key (creating the bucket) and return that URI."""
        existing = {b["Name"] for b in self.client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            self.client.create_bucket(Bucket=bucket)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[str]:
    pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def aim_aws_at(server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Empty moto's state and point the AWS environment at it: its endpoint for every service,
    test keys, us-east-1, no profile or config file of the machine's."""
    import os
    import urllib.request

    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL_")]:
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    urllib.request.urlopen(urllib.request.Request(f"{server}/moto-api/reset", method="POST"), timeout=10).close()


@pytest.fixture
def moto_s3(_moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoS3]:
    """moto S3 with empty state and the AWS environment (endpoint, test keys, region) aimed at it."""
    import boto3

    aim_aws_at(_moto_server, monkeypatch, tmp_path)
    client = boto3.session.Session().client("s3", endpoint_url=_moto_server, region_name="us-east-1")
    yield MotoS3(endpoint=_moto_server, client=client)


# --- moto_aws ---------------------------------------------------------------------------------


@dataclass
class MotoAWS:
    """moto's server with the SageMaker extension (tests/fakes/moto_sagemaker.py) installed.

    ``endpoint``: the server's URL; :meth:`client`: a boto3 client of any service aimed at it;
    ``fakes``: the extension module (``settings``, ``fail_next_update``, ``fail_next_create``...).
    """

    endpoint: str
    region: str = "us-east-1"
    fakes: Any = None

    def client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session().client(service, endpoint_url=self.endpoint, region_name=self.region)


@pytest.fixture
def moto_aws(_moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoAWS]:
    """moto with empty state, the SageMaker / Application Auto Scaling extension installed and
    reset (default settings, no fault injected), and the AWS environment aimed at it."""
    from tests.fakes import moto_sagemaker

    moto_sagemaker.install()
    aim_aws_at(_moto_server, monkeypatch, tmp_path)
    moto_sagemaker.reset()
    yield MotoAWS(endpoint=_moto_server, fakes=moto_sagemaker)


# --- fake_gcs ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _fake_gcs_server() -> Iterator[FakeGCS]:
    server = FakeGCS().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_gcs(_fake_gcs_server: FakeGCS, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGCS]:
    """The fake GCS, emptied, with STORAGE_EMULATOR_HOST pointing at it."""
    _fake_gcs_server.clear()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", _fake_gcs_server.endpoint)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "segany-test")
    yield _fake_gcs_server


__all__ = ["FakeGCS", "LocalHTTP", "MotoS3", "Route", "fake_gcs", "local_http", "moto_s3"]
__all__ += ["MotoAWS", "moto_aws"]


# --- fake_cloudrun ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _fake_cloudrun_server() -> Iterator["FakeCloudRun"]:
    pytest.importorskip("google.cloud.run_v2")
    from tests.fakes.fake_cloudrun import FakeCloudRun

    server = FakeCloudRun(project="segany-test", region="us-central1").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_cloudrun(_fake_cloudrun_server: "FakeCloudRun") -> Iterator["FakeCloudRun"]:
    """The fake Cloud Run Admin API v2 (tests/fakes/fake_cloudrun.py), emptied, settings restored.

    ``endpoint`` ("http://127.0.0.1:PORT", the clients' api_endpoint), ``requests`` (every
    request: method, path, query, JSON body), ``project`` / ``region`` / ``parent``,
    ``client(kind)``: a run_v2 Services/Revisions/Jobs/ExecutionsClient ("services",
    "revisions", "jobs", "executions") aimed at it; ``operation_polls``, ``execution_polls``,
    ``on_execution``, ``fail_next_revision()`` to steer it.
    """
    _fake_cloudrun_server.reset()
    yield _fake_cloudrun_server


__all__ += ["fake_cloudrun"]
