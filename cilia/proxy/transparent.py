"""Transparent proxy sockets and the node's policy routing for proxy traffic.

The datapath (``cilia/datapath/bpf/proxy.h``) hands a connection whose policy entry has a proxy
port to the socket listening on that port in the node's network namespace, without rewriting any
address (``bpf_sk_assign``, as Cilium's BPF TPROXY): the proxy's accepted socket (TCP) or the
datagram's destination (UDP) is the original destination. What a proxy needs for that:

* a listener bound to the **wildcard address** (``0.0.0.0`` or ``::``) on the proxy port, with
  ``IP_TRANSPARENT`` (:func:`tcp_listener`, :func:`udp_listener`): the datapath looks listeners up
  by port, and an accepted socket's local address is a pod's, not the node's;
* the original destination: :func:`original_destination` (TCP, the accepted socket's own address)
  and :func:`recv_with_destination` (UDP, ``IP_RECVORIGDSTADDR``); a UDP answer is sent from that
  address (:func:`send_from`);
* the onward connection from the client's own address (:func:`connect_from`), so that the
  destination's policy sees the client's identity. An **ingress** proxy's onward connection
  must not be sent to the proxy again by the destination's ingress policy: it either carries
  :data:`MARK_PROXY_INGRESS` (``SO_MARK``, as Envoy's do in Cilium) or keeps the client's own
  port too (HAProxy's ``usesrc client``, which cannot set a mark on server connections in 2.6):
  the datapath recognises a connection from a node socket on the very tuple it redirected;
* the node's policy routing (:func:`install_routing`): packets the datapath assigned to a proxy
  socket carry :data:`MARK_TO_PROXY`, and an ``ip rule`` sends them to a route table whose
  ``local`` default route makes the stack deliver them locally. Later packets of a connection an
  ingress proxy took over arrive at the node from the client's side, not through the pod's device,
  and would be forwarded (the kernel drops a forwarded packet its early demultiplexing found a
  local socket for): the nftables table ``cilia_proxy`` marks every packet that belongs to a
  local transparent socket (not a wildcard listener) the same way in prerouting, as Cilium's
  ``-m socket --transparent`` rule does; this also brings a proxy the replies of its onward
  connections from anywhere.
  Table, rule priority and nftables table are cilia's own; :func:`remove_routing` takes them away
  again (``cilia down``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import subprocess

from cilia.proxy.errors import ProxyError

MARK_MASK = 0xFFFF
MARK_TO_PROXY = 0x0C1A  # cilia.h CILIA_MARK_TO_PROXY
MARK_PROXY_INGRESS = 0x0C1C  # cilia.h CILIA_MARK_PROXY_INGRESS
ROUTE_TABLE = 3098  # 0xc1a
RULE_PRIORITY = 3098  # before the main table's rule (32766)
LISTEN_ADDRESS = "0.0.0.0"
LISTEN_ADDRESS_V6 = "::"  # the IPv6 listeners beside the IPv4 ones (IPV6_V6ONLY)
NFT_TABLE = "cilia_proxy"  # family inet

# <linux/in.h>, <linux/in6.h>
IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20
IP_ORIGDSTADDR = 20
IPV6_TRANSPARENT = 75
IPV6_RECVORIGDSTADDR = 74
IPV6_ORIGDSTADDR = 74
SO_MARK = 36


class RoutingError(ProxyError, RuntimeError):
    """The node's policy routing for proxy traffic could not be installed or removed."""


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _transparent(sock: socket.socket, family: int) -> None:
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)


def tcp_listener(port: int, address: str = LISTEN_ADDRESS, backlog: int = 128, *,
                 v6only: bool = False) -> socket.socket:
    """A transparent TCP listener on the proxy port (in the calling thread's network namespace);
    ``v6only``: an IPv6 listener that leaves IPv4 to a listener of its own (no mapped addresses)."""
    family = _family(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _transparent(sock, family)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((address, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def udp_listener(port: int, address: str = LISTEN_ADDRESS, *, v6only: bool = False) -> socket.socket:
    """A transparent UDP socket on the proxy port that reports each datagram's original destination
    (``v6only`` as for :func:`tcp_listener`)."""
    family = _family(address)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _transparent(sock, family)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVORIGDSTADDR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVORIGDSTADDR, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def original_destination(conn: socket.socket) -> tuple[str, int]:
    """The address the client connected to: an accepted transparent socket's own address."""
    addr = conn.getsockname()
    return str(addr[0]), int(addr[1])


def _sockaddr(raw: bytes) -> tuple[str, int]:
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET:
        port, addr = struct.unpack_from("!H4s", raw, 2)
        return socket.inet_ntop(socket.AF_INET, addr), port
    port, _flow, addr = struct.unpack_from("!HI16s", raw, 2)
    return socket.inet_ntop(socket.AF_INET6, addr), port


def recv_with_destination(sock: socket.socket, bufsize: int = 65535
                          ) -> tuple[bytes, tuple[str, int], tuple[str, int] | None]:
    """One datagram of a :func:`udp_listener`: (data, client address, original destination; None
    when the kernel gave none, e.g. a datagram sent to the proxy port itself)."""
    data, ancdata, _flags, client = sock.recvmsg(bufsize, socket.CMSG_SPACE(64))
    if client is None:  # the socket was shut down
        raise ConnectionAbortedError("proxy socket shut down")
    dst = None
    for level, kind, raw in ancdata:
        if (level, kind) in ((socket.IPPROTO_IP, IP_ORIGDSTADDR), (socket.IPPROTO_IPV6, IPV6_ORIGDSTADDR)):
            dst = _sockaddr(raw)
    return data, (str(client[0]), int(client[1])), dst


def _bound_from(src: tuple[str, int], kind: int, mark: int) -> socket.socket:
    family = _family(src[0])
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _transparent(sock, family)
        if mark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        sock.bind(src)
    except OSError:
        sock.close()
        raise
    return sock


def send_from(data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> None:
    """Send one UDP datagram from ``src`` (an address of another host: the original destination
    the client sent to) to ``dst``."""
    sock = _bound_from(src, socket.SOCK_DGRAM, 0)
    try:
        sock.sendto(data, dst)
    finally:
        sock.close()


def connect_from(client_ip: str, dst: tuple[str, int], *, port: int = 0, mark: int = 0,
                 timeout: float | None = 5.0, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """The onward connection (TCP, or a connected UDP socket) from the client's own address (and
    ``port``; 0 = any) to ``dst``. An ingress proxy either marks it (``mark=MARK_PROXY_INGRESS``)
    or keeps the client's own port (the tuple of the connection it took over, e.g. HAProxy's
    ``usesrc client``): either way the datapath does not send it to the proxy again."""
    sock = _bound_from((client_ip, port), kind, mark)
    try:
        sock.settimeout(timeout)
        sock.connect(dst)
    except OSError:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------------- policy routing

_DEFAULTS = {"-4": "0.0.0.0/0", "-6": "::/0"}


def _ip(netns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(("-n", netns) if netns else ()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RoutingError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


def _nft(netns: str | None, *args: str, stdin: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [*(("ip", "netns", "exec", netns) if netns else ()), "nft", *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RoutingError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


def _nft_ruleset() -> str:
    return (f"table inet {NFT_TABLE} {{\n"
            "  chain prerouting {\n"
            "    type filter hook prerouting priority mangle; policy accept;\n"
            # not a wildcard listener (a connection to another host's proxy port is not taken);
            # a TCP request socket (handshake) has no wildcard value, so this test comes first
            "    meta l4proto { tcp, udp } socket wildcard 1 accept\n"
            f"    meta l4proto {{ tcp, udp }} socket transparent 1 meta mark set {MARK_TO_PROXY:#x}\n"
            "  }\n"
            "}\n")


def _rule_present(netns: str | None, fam: str) -> bool:
    out = _ip(netns, fam, "rule", "show", "priority", str(RULE_PRIORITY)).stdout
    return f"lookup {ROUTE_TABLE}" in out


def install_routing(netns: str | None = None) -> None:
    """Install the node's policy routing for proxy traffic (idempotent), in the named network
    namespace (a cluster node's) or the caller's: ``ip rule fwmark 0xc1a/0xffff lookup 3098`` and
    ``local default dev lo table 3098``, for IPv4 and IPv6, and the nftables table ``cilia_proxy``."""
    # the table is replaced as a whole: delete (if there) and create in one transaction
    _nft(netns, "-f", "-", stdin=f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n" + _nft_ruleset())
    for fam, default in _DEFAULTS.items():
        _ip(netns, fam, "route", "replace", "local", default, "dev", "lo", "table", str(ROUTE_TABLE))
        if not _rule_present(netns, fam):
            _ip(netns, fam, "rule", "add", "priority", str(RULE_PRIORITY), "fwmark",
                f"{MARK_TO_PROXY:#x}/{MARK_MASK:#x}", "lookup", str(ROUTE_TABLE))


def routing_installed(netns: str | None = None) -> bool:
    """Whether the rules and routes of both families and the nftables table are in place."""
    def routed(fam: str) -> bool:
        routes = _ip(netns, fam, "route", "show", "table", str(ROUTE_TABLE), check=False).stdout
        return _rule_present(netns, fam) and "local default dev lo" in routes

    table = _nft(netns, "list", "table", "inet", NFT_TABLE, check=False).returncode == 0
    return table and all(routed(fam) for fam in _DEFAULTS)


def remove_routing(netns: str | None = None) -> list[str]:
    """Remove cilia's proxy rule and route table (only cilia's numbers); what was removed."""
    removed = []
    for fam, default in _DEFAULTS.items():
        while _rule_present(netns, fam):
            _ip(netns, fam, "rule", "del", "priority", str(RULE_PRIORITY))
            removed.append(f"ip {fam} rule priority {RULE_PRIORITY}")
        with contextlib.suppress(RoutingError):
            _ip(netns, fam, "route", "del", "local", default, "dev", "lo", "table", str(ROUTE_TABLE))
            removed.append(f"ip {fam} route local {default} table {ROUTE_TABLE}")
    if _nft(netns, "delete", "table", "inet", NFT_TABLE, check=False).returncode == 0:
        removed.append(f"nftables table inet {NFT_TABLE}")
    return removed
