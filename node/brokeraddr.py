"""Is a broker address one a node on a pole can reach? Used by `node new`, `sdcard`, `check-config`
and the self-test, so a card is never finished, and a node never blames its 4G link, for an address
that can only mean the machine itself or a name nobody can resolve."""

from __future__ import annotations

import ipaddress
import socket

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def split_server(server: str) -> tuple[str, int | None]:
    host, sep, port = server.rpartition(":")
    if not sep:
        return server.strip("[]"), None
    return host.strip("[]"), int(port) if port.isdigit() else None


def is_loopback(host: str) -> bool:
    """Pure: 127.0.0.0/8, ::1, 0.0.0.0/:: (which connect() treats as this machine) and localhost names."""
    name = host.strip("[]").lower().rstrip(".")
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def loopback_problem(server: str) -> str | None:
    host, _ = split_server(server)
    if is_loopback(host):
        return (f"broker {server} is a loopback address: on the node it means the node itself, "
                f"not the district broker (use the broker's DNS name or public IP)")
    return None


def resolve_problem(server: str, getaddrinfo=socket.getaddrinfo) -> str | None:
    """None when the host name resolves (an IP literal always does); else what the resolver said."""
    host, port = split_server(server)
    try:
        getaddrinfo(host, port or 8883, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return f"broker {server}: the name {host!r} does not resolve ({exc})"
    return None
