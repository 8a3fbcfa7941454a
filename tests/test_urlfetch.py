"""fetch_url: SSRF refusals, redirects, deadlines, size caps and TLS against the vetted IP."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from runners.errors import InputError, PayloadTooLarge, URLFetchFailed, URLNotAllowed
from runners.settings import Settings
from runners.urlfetch import UrlPolicy, blocked_reason, fetch_url
from tests.cloud_fakes import LocalHTTP

IMAGE = bytes(range(256)) * 40  # 10 KiB, every byte value


def policy(**overrides: Any) -> UrlPolicy:
    values: dict[str, Any] = dict(
        schemes=("http", "https", "s3", "gs"), allow_hosts=("127.0.0.1",), timeout_s=5.0, max_bytes=1 << 20
    )
    values.update(overrides)
    return UrlPolicy(**values)


class FakeDNS:
    """Answers socket.getaddrinfo for the names in ``names``; other names go to the real resolver."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.lookups: list[str] = []  # every lookup of a faked name
        self._real = socket.getaddrinfo

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in self.names:
            return self._real(host, port, *args, **kwargs)
        self.lookups.append(host)
        out: list[Any] = []
        for addr in self.names[host]:
            if ":" in addr:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, int(port), 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, int(port))))
        return out


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    dns = FakeDNS()
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    return dns


def test_fetches_exact_bytes(local_http: LocalHTTP) -> None:
    url = local_http.add("/img.png", IMAGE, headers={"Content-Type": "image/png"})
    assert fetch_url(url, policy()) == IMAGE
    assert local_http.hits("/img.png") == 1


def test_chunked_body_without_length_under_the_cap(local_http: LocalHTTP) -> None:
    body = IMAGE * 20
    url = local_http.add("/chunked", body, chunked=True, chunk_size=3000)
    assert fetch_url(url, policy()) == body


def test_loopback_refused_without_allow_list(local_http: LocalHTTP) -> None:
    url = local_http.add("/img.png", IMAGE)
    with pytest.raises(URLNotAllowed) as info:
        fetch_url(url, policy(allow_hosts=()))
    assert info.value.field == "image_url"
    assert info.value.status == 403
    assert "127.0.0.1" in info.value.message and "SEGANY_URL_ALLOW_HOSTS" in info.value.message
    assert local_http.hits("/img.png") == 0  # refused before any connection


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[2002:a9fe:a9fe::]/x",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://2130706433/x",  # 127.0.0.1 as one decimal number
        "http://localhost/x",
        "https://LocalHost/x",
    ],
)
def test_internal_destinations_refused(url: str) -> None:
    with pytest.raises(URLNotAllowed) as info:
        fetch_url(url, policy(allow_hosts=("example.com",)))
    assert info.value.field == "image_url"
    assert "SEGANY_URL_ALLOW_HOSTS" in info.value.message


def test_any_blocked_address_refuses_the_name(fake_dns: FakeDNS) -> None:
    fake_dns.names["mixed.segany.test"] = ["93.184.216.34", "10.1.2.3"]
    with pytest.raises(URLNotAllowed, match=r"10\.1\.2\.3"):
        fetch_url("http://mixed.segany.test/x", policy(allow_hosts=()))


@pytest.mark.parametrize(
    "address, blocked",
    [("8.8.8.8", False), ("2606:4700::1111", False), ("::ffff:8.8.8.8", False), ("192.168.1.1", True),
     ("fe80::1", True), ("224.0.0.1", True), ("240.0.0.1", True), ("64:ff9b::a00:1", True), ("::", True)],
)
def test_blocked_reason(address: str, blocked: bool) -> None:
    assert (blocked_reason(ipaddress.ip_address(address)) is not None) is blocked


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://example.com/", "s3://bucket/key", "gs://b/k"]
)
def test_other_schemes_refused(url: str) -> None:
    with pytest.raises(URLNotAllowed) as info:
        fetch_url(url, policy(schemes=("https", "http")))
    assert "SEGANY_URL_SCHEMES" in info.value.message and "https" in info.value.message


def test_http_refused_when_the_policy_is_https_only(local_http: LocalHTTP) -> None:
    url = local_http.add("/img.png", IMAGE)
    with pytest.raises(URLNotAllowed, match="SEGANY_URL_SCHEMES"):
        fetch_url(url, policy(schemes=("https",)))
    assert local_http.hits("/img.png") == 0


@pytest.mark.parametrize("url", ["not a url", "http://", "http:///path", "http://[::1/x", "http://h:99999/x"])
def test_malformed_urls(url: str) -> None:
    with pytest.raises(InputError) as info:
        fetch_url(url, policy())
    assert info.value.field == "image_url"
    assert not isinstance(info.value, URLNotAllowed)


def test_redirect_followed(local_http: LocalHTTP) -> None:
    local_http.add("/final.png", IMAGE)
    url = local_http.add("/start", redirect_to="/hop", status=301)
    local_http.add("/hop", redirect_to=local_http.url_for("/final.png"), status=307)
    assert fetch_url(url, policy()) == IMAGE
    assert [local_http.hits(p) for p in ("/start", "/hop", "/final.png")] == [1, 1, 1]


def test_redirect_to_metadata_service_refused(local_http: LocalHTTP) -> None:
    url = local_http.add("/r", redirect_to="http://169.254.169.254/latest/meta-data/")
    with pytest.raises(URLNotAllowed, match=r"169\.254\.169\.254"):
        fetch_url(url, policy())


def test_redirect_to_object_store_refused(local_http: LocalHTTP) -> None:
    url = local_http.add("/r", redirect_to="s3://private-bucket/secret")
    with pytest.raises(URLNotAllowed, match="redirected"):
        fetch_url(url, policy())


def test_redirect_loop_stops_after_five(local_http: LocalHTTP) -> None:
    url = local_http.add("/loop", redirect_to="/loop")
    with pytest.raises(URLFetchFailed, match="more than 5"):
        fetch_url(url, policy())
    assert local_http.hits("/loop") == 6


def test_content_length_over_cap(local_http: LocalHTTP) -> None:
    url = local_http.add("/big", IMAGE)
    with pytest.raises(PayloadTooLarge) as info:
        fetch_url(url, policy(max_bytes=len(IMAGE) - 1))
    assert info.value.status == 413 and "SEGANY_MAX_BODY_MB" in info.value.message
    assert fetch_url(url, policy(max_bytes=len(IMAGE))) == IMAGE  # exactly at the cap is fine


def test_streamed_body_over_cap_stops_reading(local_http: LocalHTTP) -> None:
    body = b"\0" * (8 << 20)
    url = local_http.add("/stream", body, chunked=True, chunk_size=16 * 1024, drip_s=0.001)
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge, match="SEGANY_MAX_BODY_MB"):
        fetch_url(url, policy(max_bytes=64 * 1024))
    assert time.monotonic() - started < 2.0  # the whole body would take > 0.5 s to drip


def test_slow_headers_hit_the_deadline(local_http: LocalHTTP) -> None:
    url = local_http.add("/slow", IMAGE, delay_s=10)
    started = time.monotonic()
    with pytest.raises(URLFetchFailed, match="SEGANY_URL_TIMEOUT_S"):
        fetch_url(url, policy(timeout_s=0.5))
    assert 0.4 < time.monotonic() - started < 1.5


def test_slow_drip_hits_the_deadline(local_http: LocalHTTP) -> None:
    # 100 bytes every 50 ms: each read is quick, so only an overall deadline stops it.
    url = local_http.add("/drip", IMAGE, chunk_size=100, drip_s=0.05)
    started = time.monotonic()
    with pytest.raises(URLFetchFailed, match="SEGANY_URL_TIMEOUT_S"):
        fetch_url(url, policy(timeout_s=0.5))
    assert 0.4 < time.monotonic() - started < 1.5


def test_stall_mid_body_hits_the_deadline(local_http: LocalHTTP) -> None:
    # Headers and a first piece arrive late, then nothing: the last read gets only the time left.
    url = local_http.add("/stall", IMAGE, delay_s=0.8, chunk_size=1000, drip_s=30)
    started = time.monotonic()
    with pytest.raises(URLFetchFailed, match="SEGANY_URL_TIMEOUT_S"):
        fetch_url(url, policy(timeout_s=1.0))
    assert 0.9 < time.monotonic() - started < 1.5


def test_http_error_status(local_http: LocalHTTP) -> None:
    with pytest.raises(URLFetchFailed, match="404") as info:
        fetch_url(local_http.url_for("/missing.png"), policy())
    assert info.value.field == "image_url"
    url = local_http.add("/boom", b"oops", status=500)
    with pytest.raises(URLFetchFailed, match="500"):
        fetch_url(url, policy())


def test_connects_to_the_vetted_address_with_the_name_as_host(
    local_http: LocalHTTP, fake_dns: FakeDNS
) -> None:
    fake_dns.names["images.segany.test"] = ["127.0.0.1"]
    url = local_http.add("/img.png", IMAGE)
    named = local_http.url_for("/img.png", host="images.segany.test")
    with pytest.raises(URLNotAllowed):  # the name resolves to loopback and is not allowed ...
        fetch_url(named, policy(allow_hosts=("127.0.0.1",)))
    assert fetch_url(named, policy(allow_hosts=("Images.Segany.Test",))) == IMAGE  # ... until it is
    assert fake_dns.lookups == ["images.segany.test"] * 2  # one lookup per fetch, no re-resolve
    assert local_http.requests[-1][2]["Host"] == f"images.segany.test:{local_http.port}"
    assert url != named


def test_policy_from_settings() -> None:
    settings = Settings(url_schemes=("https", "gs"), url_allow_hosts=("minio.local",), url_timeout_s=3.0, max_body_mb=2)
    assert UrlPolicy.from_settings(settings) == UrlPolicy(("https", "gs"), ("minio.local",), 3.0, 2 * 1024 * 1024)


# --- https: SNI and certificate verification against the vetted IP -------------------------


def _make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for images.segany.test signed by it: (ca, cert, key)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, key: Any, issuer: Any, issuer_key: Any, ca: bool) -> Any:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(issuer_key or key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("segany test CA", ca_key, None, None, True)
    leaf = build("images.segany.test", leaf_key, ca_cert.subject, ca_key, False)
    paths = directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.fixture
def https_server(tmp_path: Path) -> Any:
    ca, cert, key = _make_certs(tmp_path)
    server = LocalHTTP(tls=(cert, key)).start()
    server.ca_file = ca  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


def test_https_verifies_the_name_on_the_vetted_ip(
    https_server: LocalHTTP, fake_dns: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns.names["images.segany.test"] = ["127.0.0.1"]
    fake_dns.names["other.segany.test"] = ["127.0.0.1"]
    https_server.add("/img.png", IMAGE)
    monkeypatch.setenv("SSL_CERT_FILE", str(https_server.ca_file))  # type: ignore[attr-defined]
    allowed = policy(allow_hosts=("images.segany.test", "other.segany.test", "127.0.0.1"))

    assert fetch_url(https_server.url_for("/img.png", host="images.segany.test"), allowed) == IMAGE
    assert https_server.sni_names[-1] == "images.segany.test"
    assert https_server.requests[-1][2]["Host"] == f"images.segany.test:{https_server.port}"

    # Same IP, same trusted CA, but the certificate is not for this name: refused.
    with pytest.raises(URLFetchFailed, match="TLS"):
        fetch_url(https_server.url_for("/img.png", host="other.segany.test"), allowed)
    with pytest.raises(URLFetchFailed, match="TLS"):
        fetch_url(https_server.url_for("/img.png"), allowed)  # the IP is not in the certificate either
    # The right name, but a CA the system store does not trust: refused.
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(URLFetchFailed, match="TLS"):
        fetch_url(https_server.url_for("/img.png", host="images.segany.test"), allowed)
    assert https_server.hits("/img.png") == 1
