"""hostNetwork pods: pods that are their node (Cilium gives them no endpoint and no identity of their
own; their traffic is the host's, so host policies decide for it).

The lab runs a hostNetwork pod's TCP ports in the agent's network namespace — the node's — as the
lab's built-in HTTP server does for pods (``Server name: <pod>``), bound to each of the node's
own lab addresses only (never a wildcard: on one node that namespace is the machine's), with
``IP_FREEBIND`` since the single node's gateway address appears with its first veth. UDP ports
echo. A container ``command`` is not run for a hostNetwork pod (docs/differences.md).
"""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any

from cilia.agent.desired import PodKey
from cilia.agent.health import SHUTDOWN_POLL_S, FreebindTCPServer, FreebindUDPServer, write_text_response
from cilia.k8s.objects import Pod

log = logging.getLogger(__name__)


class _Http(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5.0)
        try:
            line = self.rfile.readline(8192).decode(errors="replace").split()
            while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                pass  # the headers: not needed
            addr, port = self.server.server_address[:2]  # type: ignore[index]
            uri = line[1] if len(line) > 1 else "/"
            body = (f"Server address: {addr}:{port}\nServer name: {self.server.pod_name}\n"  # type: ignore[attr-defined]
                    f"URI: {uri}\n").encode()
            write_text_response(self.wfile, body)
        except OSError:  # the client went away (or was dropped): nothing to answer
            return


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


def host_network(pod: Pod | None) -> bool:
    return bool(pod is not None and pod.host_network)


class HostNetworkPods:
    """The node's hostNetwork pods and their servers (:meth:`sync` with the pods that run here)."""

    def __init__(self, addresses: Callable[[], list[str]]) -> None:
        self.addresses = addresses
        self._servers: dict[PodKey, list[socketserver.BaseServer]] = {}
        self._ports: dict[PodKey, tuple[tuple[int, str], ...]] = {}

    def running(self) -> dict[PodKey, list[str]]:
        """``pod -> addr:port/PROTO`` of what each serves."""
        out = {}
        for pk, servers in self._servers.items():
            out[pk] = [f"{s.server_address[0]}:{s.server_address[1]}/"  # type: ignore[index]
                       f"{'UDP' if isinstance(s, FreebindUDPServer) else 'TCP'}" for s in servers]
        return out

    def sync(self, pods: dict[PodKey, Pod]) -> None:
        """Serve exactly these pods (a pod whose ports changed is served again)."""
        for pk in list(self._servers):
            if pk not in pods or self._ports[pk] != _ports_of(pods[pk]):
                self._stop(pk)
        for pk, pod in sorted(pods.items()):
            if pk not in self._servers:
                self._start(pk, pod)

    def _start(self, pk: PodKey, pod: Pod) -> None:
        servers: list[socketserver.BaseServer] = []
        for port, proto in _ports_of(pod):
            for addr in self.addresses():
                try:
                    srv: Any = (FreebindUDPServer((addr, port), _Echo) if proto == "UDP"
                                else FreebindTCPServer((addr, port), _Http))
                except OSError as e:  # the node's port is taken: as a hostNetwork pod that cannot bind
                    log.warning("hostNetwork pod %s: %s:%d/%s not served: %s", pk, addr, port, proto, e)
                    continue
                srv.pod_name = pod.name
                name = f"cilia-hostpod-{pod.name}"
                threading.Thread(target=srv.serve_forever, args=(SHUTDOWN_POLL_S,), name=name,
                                 daemon=True).start()
                servers.append(srv)
        self._servers[pk] = servers
        self._ports[pk] = _ports_of(pod)
        log.info("hostNetwork pod %s serves %s", pk, ", ".join(self.running()[pk]) or "nothing")

    def _stop(self, pk: PodKey) -> None:
        for s in self._servers.pop(pk, []):
            s.shutdown()
            s.server_close()
        self._ports.pop(pk, None)

    def close(self) -> None:
        for pk in list(self._servers):
            self._stop(pk)


def _ports_of(pod: Pod) -> tuple[tuple[int, str], ...]:
    return tuple(sorted({(p.container_port, p.protocol.upper()) for p in pod.ports
                         if p.protocol.upper() in ("TCP", "UDP")}))


def describe(pods: Iterable[tuple[PodKey, str, list[str]]]) -> list[dict[str, Any]]:
    """The hostNetwork pods as the agent's pod listing shows them (the node's address, no endpoint)."""
    return [{"pod": str(pk), "ip": ip, "host_network": True, "serving": serving, "state": "ready", "id": 0,
             "identity": 1, "ifindex": 0, "host_ifname": "", "netns": "", "labels": ["reserved:host="]}
            for pk, ip, serving in pods]


def start(agent: Any, node: Any) -> HostNetworkPods | None:
    """The node's hostNetwork pods, served from the agent (kernel lab only; None otherwise)."""
    if node.host_devices is None:
        return None
    rec = agent.reconciler
    pods = HostNetworkPods(lambda: [str(rec.gateway), *rec.host_addresses])
    rec.on_host_pods = pods.sync
    agent.host_pods = pods
    return pods
