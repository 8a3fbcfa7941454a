"""SSRF-safe download of a user-supplied ``image_url``.

:func:`fetch_url` is synchronous (the service runs it in a worker thread). For http and
https it resolves the host once, refuses any address that is not globally routable
(loopback, private, link-local including the cloud metadata service, shared, multicast,
reserved, unspecified, or an IPv6 form embedding one of those) unless the host is in
``SEGANY_URL_ALLOW_HOSTS``, and then connects to that vetted address itself, so a second
DNS answer (DNS rebinding) cannot redirect the request. Redirects are followed by hand,
at most :data:`MAX_REDIRECTS`, each hop vetted again. ``s3://`` and ``gs://`` go to
``deploy.aws.s3`` / ``deploy.gcp.gcs``, imported only when used.

Why urllib3 and not httpx: urllib3's connection pools take the address to dial and the
TLS ``server_hostname`` separately (SNI and certificate verification against the name,
socket to the vetted IP), and its ``read1`` returns whatever one socket read gives, so
the socket timeout can be shrunk to the time left before every read: the deadline holds
even against a server that drips one byte at a time. httpx's read timeout is fixed per
request, which would let such a server stretch a download to about twice the deadline.
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import logging
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urljoin, urlsplit

from .errors import DependencyMissing, InputError, PayloadTooLarge, URLFetchFailed, URLNotAllowed
from .netguard import FIELD, IPAddress, blocked_reason, resolve, too_slow

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
USER_AGENT = "segment-anywhere/0.1 (image_url fetch)"
_CHUNK = 64 * 1024
_OBJECT_STORES = {"s3": "deploy.aws.s3", "gs": "deploy.gcp.gcs"}
_WEB_SCHEMES = ("http", "https")
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class UrlPolicy:
    """What ``image_url`` may point at.

    schemes: URL schemes allowed (``SEGANY_URL_SCHEMES``), e.g. ``("https", "s3", "gs")``.
    allow_hosts: host names or IP literals fetched even when they resolve to blocked
        ranges (``SEGANY_URL_ALLOW_HOSTS``); matched against the URL's host, not against
        what it resolves to.
    timeout_s: deadline for the whole download: DNS, connect, TLS, redirects and body.
    max_bytes: largest body accepted (``SEGANY_MAX_BODY_MB``).
    """

    schemes: tuple[str, ...]
    allow_hosts: tuple[str, ...]
    timeout_s: float
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Any) -> "UrlPolicy":
        """Build the policy from a :class:`runners.settings.Settings`."""
        return cls(
            schemes=tuple(s.lower() for s in settings.url_schemes),
            allow_hosts=tuple(settings.url_allow_hosts),
            timeout_s=float(settings.url_timeout_s),
            max_bytes=int(settings.max_body_bytes),
        )

    def allows_host(self, host: str) -> bool:
        """True when ``host`` (a name or an IP literal) is on the allow-list."""
        wanted = _normalise_host(host)
        return any(_normalise_host(entry) == wanted for entry in self.allow_hosts)


def fetch_url(url: str, policy: UrlPolicy) -> bytes:
    """Download ``url`` under ``policy`` and return the body.

    url: the user's ``image_url`` (http, https, s3 or gs, as the policy allows).
    policy: schemes, allow-list, deadline and size cap.
    Raises URLNotAllowed, URLFetchFailed, PayloadTooLarge or InputError, all with
    ``field="image_url"``.
    """
    scheme = _scheme_of(url)
    _check_scheme(scheme, policy)
    if scheme in _OBJECT_STORES:
        return _read_object(scheme, url, policy)
    if scheme not in _WEB_SCHEMES:
        raise URLNotAllowed(f"image_url scheme {scheme!r} is not supported; use https, http, s3 or gs.", field=FIELD)
    deadline = time.monotonic() + policy.timeout_s
    current = url
    for hop in range(MAX_REDIRECTS + 1):
        target = _Target.parse(current)
        if hop:
            if target.scheme not in _WEB_SCHEMES:
                raise URLNotAllowed(
                    f"image_url redirected to a {target.scheme}:// URL; only http(s) redirects are followed.",
                    field=FIELD,
                )
            _check_scheme(target.scheme, policy)
        addresses = _vet(target, policy, deadline)
        body, location = _get(target, addresses, policy, deadline)
        if location is None:
            logger.debug("image_url: %d bytes from %s after %d redirect(s)", len(body), target.host, hop)
            return body
        current = urljoin(current, location)
    raise URLFetchFailed(
        f"image_url redirected more than {MAX_REDIRECTS} times; pass the final URL of the image instead.", field=FIELD
    )


# --- parsing and vetting -------------------------------------------------------------------


def _normalise_host(host: str) -> str:
    host = host.strip().lower().strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _scheme_of(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise InputError(
            "image_url must be an absolute URL such as https://example.com/image.jpg or s3://bucket/key.", field=FIELD
        )
    return url.split("://", 1)[0].strip().lower()


def _check_scheme(scheme: str, policy: UrlPolicy) -> None:
    if scheme not in policy.schemes:
        allowed = ", ".join(policy.schemes) or "none"
        raise URLNotAllowed(
            f"image_url scheme {scheme!r} is not allowed (allowed: {allowed}); "
            "send the image in the request body, or have the operator add the scheme to SEGANY_URL_SCHEMES.",
            field=FIELD,
        )


@dataclass(frozen=True)
class _Target:
    """One http(s) request: where to connect and what to send."""

    scheme: str
    host: str  # as written in the URL, lower case, no brackets (IDNA-encoded names)
    port: int
    path: str  # request target: path and query
    literal: IPAddress | None

    @classmethod
    def parse(cls, url: str) -> "_Target":
        try:
            parts = urlsplit(url)
            port = parts.port
            host = parts.hostname
        except ValueError as exc:
            raise InputError(f"image_url is malformed ({exc}); check the URL.", field=FIELD) from None
        if not host:
            raise InputError("image_url has no host; use a URL such as https://example.com/image.jpg.", field=FIELD)
        if parts.username is not None or parts.password is not None:
            raise InputError("image_url must not carry a user name or password; use a pre-signed URL.", field=FIELD)
        scheme = parts.scheme.lower()
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                raise InputError(f"image_url host {host!r} is not a valid host name.", field=FIELD) from None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(scheme, host, port or (443 if scheme == "https" else 80), path, literal)

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if isinstance(self.literal, ipaddress.IPv6Address) else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def _vet(target: _Target, policy: UrlPolicy, deadline: float) -> list[IPAddress]:
    """Resolve once and refuse blocked addresses unless the host is allow-listed."""
    addresses = [target.literal] if target.literal is not None else resolve(target.host, target.port, deadline)
    if policy.allows_host(target.host):
        return addresses
    for address in addresses:
        reason = blocked_reason(address)
        if reason is not None:
            raise URLNotAllowed(
                f"image_url host {target.host!r} resolves to {address}, a {reason} address, which is refused to "
                "protect internal services; if the operator trusts this host, add it to SEGANY_URL_ALLOW_HOSTS.",
                field=FIELD,
            )
    return addresses


# --- the request -----------------------------------------------------------------------------


def _too_large(size: int, max_bytes: int, *, known: bool) -> PayloadTooLarge:
    what = f"is {size} bytes" if known else f"exceeded {max_bytes} bytes"
    return PayloadTooLarge(
        f"image_url body {what}, more than the {max_bytes}-byte limit; "
        "send a smaller image or raise SEGANY_MAX_BODY_MB.",
        field=FIELD,
    )


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise too_slow()
    return left


def _tls_context() -> ssl.SSLContext:
    """The default context: system CA store, honouring SSL_CERT_FILE / SSL_CERT_DIR.

    Made per call so the environment at call time counts. When the system store is empty
    (a slim image without ca-certificates) certifi's bundle is loaded instead.
    """
    context = ssl.create_default_context()
    capath = ssl.get_default_verify_paths().capath
    has_dir = bool(capath and os.path.isdir(capath) and os.listdir(capath))
    if context.cert_store_stats().get("x509_ca", 0) == 0 and not has_dir:
        try:
            import certifi

            context.load_verify_locations(certifi.where())
        except ImportError:  # pragma: no cover - certifi comes with bentoml
            logger.warning("no CA certificates found and certifi is not installed; https image_url will fail")
    return context


@functools.lru_cache(maxsize=None)
def _pools() -> tuple[Any, Any]:
    """HTTP and HTTPS pool classes whose connections keep their socket as ``segany_sock``.

    http.client forgets ``conn.sock`` once a ``Connection: close`` response begins, and the
    body reader needs the socket to shrink its timeout before each read. urllib3 is
    imported here, on first use (it comes with botocore and requests).
    """
    try:
        import urllib3
        from urllib3.connection import HTTPConnection, HTTPSConnection
    except ImportError:  # pragma: no cover
        raise DependencyMissing(
            "image_url over http(s) needs urllib3; run `pip install 'urllib3>=2.1'`.", field=FIELD, status=501
        ) from None

    class KeepSock(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            self.segany_sock = self.sock

    class KeepSockTLS(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            self.segany_sock = self.sock

    class Pool(urllib3.HTTPConnectionPool):
        ConnectionCls = KeepSock

    class TLSPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = KeepSockTLS

    return Pool, TLSPool


def _get(
    target: _Target, addresses: Sequence[IPAddress], policy: UrlPolicy, deadline: float
) -> tuple[bytes, str | None]:
    """GET from the first vetted address that accepts a connection: (body, None) or (b"", Location)."""
    pool_cls, tls_pool_cls = _pools()
    import urllib3
    from urllib3.exceptions import HTTPError, NewConnectionError, SSLError, TimeoutError as Urllib3Timeout

    headers = {"Host": target.host_header, "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    last_error: Exception | None = None
    for address in addresses:
        left = _remaining(deadline)
        pool_kw: dict[str, Any] = dict(timeout=urllib3.Timeout(connect=left, read=left), retries=False, maxsize=1)
        if target.scheme == "https":
            # Dial the vetted IP; SNI and the certificate check use the URL's host name.
            pool = tls_pool_cls(
                str(address), target.port, ssl_context=_tls_context(), server_hostname=target.host, **pool_kw
            )
        else:
            pool = pool_cls(str(address), target.port, **pool_kw)
        try:
            with pool:
                response = pool.urlopen(
                    "GET", target.path, headers=headers, redirect=False, retries=False,
                    preload_content=False, assert_same_host=False, release_conn=False,
                )
                try:
                    return _handle(response, target, policy, deadline)
                finally:
                    response.close()
        except NewConnectionError as exc:
            last_error = exc
            logger.debug("image_url: cannot connect to %s: %s", address, exc)
            continue
        except Urllib3Timeout:
            raise too_slow() from None
        except (SSLError, ssl.SSLError) as exc:
            raise URLFetchFailed(
                f"image_url TLS with {target.host!r} failed ({_short(exc)}); the certificate must be valid for "
                "that host name and trusted by the system CA store (or SSL_CERT_FILE).",
                field=FIELD,
            ) from None
        except (HTTPError, OSError, ValueError) as exc:
            raise URLFetchFailed(
                f"image_url download from {target.host!r} failed ({_short(exc)}); check the URL.", field=FIELD
            ) from None
    raise URLFetchFailed(
        f"image_url host {target.host!r} did not accept a connection ({_short(last_error)}); check the URL and port.",
        field=FIELD,
    )


def _short(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else "no address"
    return text if len(text) <= 200 else text[:197] + "..."


def _handle(response: Any, target: _Target, policy: UrlPolicy, deadline: float) -> tuple[bytes, str | None]:
    status = int(response.status)
    if status in _REDIRECTS:
        location = response.headers.get("Location")
        if not location:
            raise URLFetchFailed(f"image_url answered HTTP {status} without a Location; check the URL.", field=FIELD)
        return b"", location
    if status >= 400:
        raise URLFetchFailed(
            f"image_url answered HTTP {status}; check that the URL is right and publicly readable (or pre-signed).",
            field=FIELD,
        )
    if not 200 <= status < 300:
        raise URLFetchFailed(f"image_url answered HTTP {status}, not an image; check the URL.", field=FIELD)
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > policy.max_bytes:
        raise _too_large(int(declared), policy.max_bytes, known=True)
    return _read_capped(response, policy.max_bytes, deadline), None


def _read_capped(response: Any, max_bytes: int, deadline: float) -> bytes:
    """Read the body with read1 (one socket read each), shrinking the socket timeout to
    the time left before every read; stop as soon as the cap is passed."""
    sock = getattr(response.connection, "segany_sock", None)
    chunks: list[bytes] = []
    total = 0
    while True:
        left = _remaining(deadline)
        if sock is not None and sock.fileno() != -1:  # -1: http.client closed it at the end of the body
            sock.settimeout(left)
        chunk = response.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(total, max_bytes, known=False)
        chunks.append(chunk)


def _read_object(scheme: str, url: str, policy: UrlPolicy) -> bytes:
    module = importlib.import_module(_OBJECT_STORES[scheme])
    return module.read_object(url, max_bytes=policy.max_bytes, timeout_s=policy.timeout_s)
