"""The proxy's listening socket, bound by the supervisor before anything else starts.

Binding here (not in gunicorn) means a port in use or a bad `listen_address` is one error
line and exit status 2 before any worker starts, instead of gunicorn retrying for five
seconds and exiting 1 after edge already announced itself. gunicorn receives the bound
socket as `--bind fd://N` and listens on it; the supervisor then closes its own copy so that, on SIGTERM,
closing gunicorn's copy really stops accepting while the workers drain.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from pathlib import Path

TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
LISTEN = "0A"  # the state column of a listening socket in those tables


class ListenError(Exception):
    """The proxy cannot listen where the config says; the message is one line for the operator."""


def display_address(address: str, port: int) -> str:
    """`127.0.0.1:8080`, `[::1]:8080`: how addresses are written in log lines."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def resolve(address: str, port: int, section: str = "") -> tuple[int, tuple]:
    """The family and socket address `listen_address` names (a host name resolves to its first address)."""
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ListenError(f"config key {section}listen_address: cannot listen on {address!r}: {reason}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _bind_failure(exc: OSError, address: str, port: int, section: str = "") -> ListenError:
    where = display_address(address, port)
    if exc.errno == errno.EADDRINUSE:
        return ListenError(f"cannot listen on {where}: the port is already in use (config key {section}listen_port)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(f"cannot listen on {where}: {address} is not an address of this host "
                           f"(config key {section}listen_address)")
    return ListenError(f"cannot listen on {where}: {exc.strerror or exc}")


def bind_listener(address: str, port: int) -> socket.socket:
    """A bound TCP socket on `address:port`, inheritable by gunicorn; ListenError when impossible.

    It does not listen yet: gunicorn does, once its master has imported the workers' modules
    (`workers.preload`), so a sender connecting while edge starts is refused and retries rather than
    waiting in the backlog for workers still booting. A bind with SO_REUSEADDR (needed to rebind over
    our last run's TIME_WAIT connections) succeeds beside a socket that is only bound, so listeners
    already on the port are looked up in the kernel's tables too.
    """
    family, sockaddr = resolve(address, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if port and _listened_on(ipaddress.ip_address(sockaddr[0]), port):
            raise OSError(errno.EADDRINUSE, "in use")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise _bind_failure(exc, address, port) from None
    sock.set_inheritable(True)
    return sock


def reserve_port(address: str, port: int, section: str) -> socket.socket:
    """A bound socket, never listening, holding `address:port` for worker processes that bind it too with
    SO_REUSEPORT (the gRPC workers): a port in use fails here, once, and port 0 becomes one port for all."""
    family, sockaddr = resolve(address, port, section)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if port and _listened_on(ipaddress.ip_address(sockaddr[0]), port):
            raise OSError(errno.EADDRINUSE, "in use")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise _bind_failure(exc, address, port, section) from None
    return sock


def _listened_on(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
    """Whether a socket already listens on `port` at `address`, the wildcard, or any address if ours is it.

    SO_REUSEPORT lets every process of the same user bind a port that is in use: a second edge
    (another team's, another config) would silently share the gRPC port and take half of the
    calls. The bind alone cannot tell, so the kernel's socket tables are asked first (a probe bind
    without SO_REUSEPORT would also fail on the TIME_WAIT connections of our own last run).
    """
    for table in TCP_TABLES:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            hex_address, hex_port = local.rsplit(":", 1)
            if state != LISTEN or int(hex_port, 16) != port:
                continue
            other = _table_address(hex_address)
            if other.is_unspecified or address.is_unspecified or other == address:
                return True
    return False


def _table_address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp* writes it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    return address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) else address
