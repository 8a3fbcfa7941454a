"""Which addresses an ``image_url`` may reach: DNS resolution under a deadline, and the
address classes refused to protect internal services (loopback, private, link-local with
the cloud metadata service, shared, multicast, reserved, unspecified, and IPv6 forms that
embed one of those)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

from .errors import URLFetchFailed

FIELD = "image_url"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def too_slow() -> URLFetchFailed:
    return URLFetchFailed(
        "image_url download was slower than SEGANY_URL_TIMEOUT_S allows; use a faster host, send the image "
        "in the request body, or raise SEGANY_URL_TIMEOUT_S.",
        field=FIELD,
    )


def resolve(host: str, port: int, deadline: float) -> list[IPAddress]:
    """getaddrinfo with the deadline (it has no timeout of its own, so it runs in a daemon thread)."""
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            result["error"] = exc

    thread = threading.Thread(target=work, name="segany-dns", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise too_slow()
    if "error" in result:
        raise URLFetchFailed(
            f"image_url host {host!r} could not be resolved ({result['error']}); check the URL.", field=FIELD
        )
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in result["infos"]:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise URLFetchFailed(f"image_url host {host!r} has no addresses; check the URL.", field=FIELD)
    return addresses


_METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries: 6to4, Teredo, NAT64, IPv4-compatible."""
    found: list[ipaddress.IPv4Address] = []
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` must not be fetched (e.g. "loopback"), or None when it is public."""
    if address in _METADATA:
        return "cloud metadata service"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # judged only by the IPv4 address it stands for
            inner_reason = blocked_reason(address.ipv4_mapped)
            return None if inner_reason is None else f"{inner_reason} (IPv4-mapped)"
        for inner in _embedded_ipv4(address):
            reason = blocked_reason(inner)
            if reason is not None:
                return f"{reason} (embedded in an IPv6 address)"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared (carrier-grade NAT)", isinstance(address, ipaddress.IPv4Address) and address in _SHARED),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-global", not address.is_global),
    )
    for reason, hit in checks:
        if hit:
            return reason
    return None
