"""Listening sockets the embedded mode serves on (the stack's services, the serving routers)."""

from __future__ import annotations

import socket


def bind_loopback(host: str, port: int = 0) -> socket.socket:
    """A listening socket on `host` (an IPv4 or IPv6 loopback address, or localhost)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it (Linux): an answer's head and body, written apart, leave at once
    # instead of the body waiting out the client's delayed ACK (40 ms a request).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def free_loopback_port() -> int:
    """A port nothing listens on now (for a child process that binds it itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
