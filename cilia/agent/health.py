"""The node's health port (Cilium's ``cilium-health`` listens on 4240): an HTTP server on each of the
node's own lab addresses, so that host policies have a node port to allow or deny (Cilium's host
policy examples allow 4240 from ``remote-node`` and ``health``).

It binds the node's addresses only — never a wildcard — with ``IP_FREEBIND``, because on a single
node the gateway address appears on the first pod's or world host's veth, possibly after the agent
starts. Every request gets ``200 OK`` and the node's name.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Iterable
from typing import BinaryIO

log = logging.getLogger(__name__)

HEALTH_PORT = 4240
IP_FREEBIND = 15  # linux/in.h
# how often a server's loop looks for a shutdown request: the agent's stop waits this long per server
SHUTDOWN_POLL_S = 0.05


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5.0)
        try:
            self.rfile.readline(8192)  # the request line is enough: every request is a health check
            body = f"{self.server.node_name} ok\n".encode()  # type: ignore[attr-defined]
            write_text_response(self.wfile, body)
        except OSError:  # the peer went away (or was dropped mid-request): nothing to answer
            return


class _Freebind:
    """Binds an address the node may not carry yet (the single node's gateway comes with its first veth)."""

    socket: socket.socket

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        super().server_bind()  # type: ignore[misc]


class FreebindTCPServer(_Freebind, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FreebindUDPServer(_Freebind, socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True


def write_text_response(wfile: BinaryIO, body: bytes) -> None:
    """A 200 text/plain answer that closes the connection."""
    wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class HealthServer:
    """The health port on each given address, each in a daemon thread; :meth:`close` stops them."""

    def __init__(self, addresses: Iterable[str], node_name: str, port: int = HEALTH_PORT) -> None:
        self.servers: list[FreebindTCPServer] = []
        for addr in addresses:
            try:
                srv = FreebindTCPServer((addr, port), _Handler)
            except OSError as e:  # e.g. a second lab on this address: the node runs without it
                log.warning("health port %s:%d not served: %s", addr, port, e)
                continue
            srv.node_name = node_name  # type: ignore[attr-defined]
            threading.Thread(target=srv.serve_forever, args=(SHUTDOWN_POLL_S,), name=f"cilia-health-{addr}",
                             daemon=True).start()
            self.servers.append(srv)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.server_address for s in self.servers]  # type: ignore[misc]

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()
