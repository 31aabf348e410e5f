"""The HAProxy configuration cilia generates for one node (a golden-file output).

The configuration is static for a node: one listener per (parser, direction) proxy port of the
contract (HTTP ingress/egress, TLS ingress/egress), whatever the policies are. Every policy change
is data loaded at run time (the rules document through ``cilia load``, the ipcache map through
``prepare/add/commit map``), so a change never needs a reload and an open keep-alive connection
gets the new rules on its next request, as with Envoy.

Each listener sets the request's facts as variables (direction, addresses, the identities of both
addresses from the ipcache map: ``map_ip`` is a longest-prefix match). An HTTP listener decides
natively: it looks the key ``<dir>|<endpoint>|<port>|<peer identity>\\x01<method>\\x01<host>\\x01<path>``
up in the decision map (``map_reg``, :func:`cilia.proxy.http.rules.decision_map`), whose first
matching pattern says ``allow`` or ``deny`` (no pattern: ``deny``), or ``lua``: then the Lua action
decides (header matches and their mismatch actions, port ranges, a host or path holding control
characters, which the key's separator could not keep apart). The egress listener also looks up the
destination's ingress policy (``both_at_egress``). A TLS listener runs the Lua action on the
ClientHello's SNI. Anything unexpected leaves the verdict at ``deny`` or ``lua``: fail closed.
A refused HTTP request gets Cilium's answer, ``403`` with ``Access denied\\r\\n``, on a connection
that stays open; a refused TLS ClientHello closes the connection (Envoy finds no filter chain for
the server name and closes it).

``transparent=True`` is the node's mode: ``bind :PORT transparent`` and ``bind :::PORT transparent
v6only`` (IPv4 and IPv6; the datapath assigns redirected connections to these sockets, their local
address is the original destination) and onward
connections to that destination from the client's own address (``usesrc clientip``). Tests run the
same configuration without the kernel redirect (``transparent=False``): each listener is bound on a
given address and forwards to a fixed server, with the "original destination" given as constants.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cilia.policy.types import Direction
from cilia.proxy.http.marks import PROXY_GID

LUA_PATH = Path(__file__).with_name("cilia.lua")
WORLD = 2  # reserved:world, the identity of an address outside the ipcache
DEFAULT_PORTS: Mapping[tuple[str, Direction], int] = {
    ("http", Direction.INGRESS): 15001,
    ("http", Direction.EGRESS): 15002,
    ("tls", Direction.INGRESS): 15003,
    ("tls", Direction.EGRESS): 15004,
}
DENIED_BODY = "Access denied\\r\\n"  # Cilium's (Envoy's local reply) body, escaped for the config
# path, host and the request's header block are URL-encoded (url_enc): a line always splits into
# the same fields; "-" is an absent (or empty) value
HTTP_LOG = (
    "%Ts.%ms %ci %cp %[var(txn.cilia_dir)] %[var(txn.cilia_dst)] %[var(txn.cilia_dport)] "
    "%[var(txn.cilia_sid)] %[var(txn.cilia_did)] %ST %Ta %Tr %HV %[var(txn.cilia_v)] "
    "%[var(txn.cilia_eval)] %HM %[var(txn.cilia_path),url_enc] %[var(txn.cilia_host),url_enc] "
    "%[var(txn.cilia_hdrs)]"
)
LOG_RING = "cilia-access"
LOG_RING_BYTES = 8 << 20  # ~25,000 lines the agent may lag behind before the oldest are dropped
CTL = "'[\\x00-\\x1f\\x7f]'"  # control characters (single quotes: the regex as written)
TLS_LOG = (
    "%Ts.%ms %ci %cp %[var(sess.cilia_dir)] %[var(sess.cilia_dst)] %[var(sess.cilia_dport)] "
    "%[var(sess.cilia_sid)] %[var(sess.cilia_did)] tls %[var(sess.cilia_v)] %[var(sess.cilia_eval)] "
    "%[var(sess.cilia_sni),url_enc]"
)


@dataclass(frozen=True)
class StaticDestination:
    """Test mode: where a listener forwards and what it takes as the original destination."""

    bind: str  # "127.0.0.1:18001"
    server: str  # "127.0.0.1:18080": the real server
    original: tuple[str, int]  # the original destination the policy is keyed by


SOCKET_PATH_MAX = 90  # HAProxy refuses a unix socket path over 97 characters (sun_path less its temp suffix)


@dataclass(frozen=True)
class ProxyFiles:
    """Where the proxy's files live (the agent's run directory, mode 0700)."""

    run_dir: Path

    @property
    def socket_dir(self) -> Path:
        """The run directory; where that is too deep for a unix socket path (a test's or a node's
        run directory under a long temp path), a short directory named after it in the temp dir."""
        if len(str(self.run_dir / "haproxy.sock")) <= SOCKET_PATH_MAX:
            return self.run_dir
        digest = hashlib.sha256(str(self.run_dir.absolute()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"cilia-proxy-{digest}"

    def make_dirs(self) -> None:
        """The run and socket directories, mode 0700; a socket directory someone else owns is refused
        (it sits in the shared temp dir)."""
        for d in dict.fromkeys((self.run_dir, self.socket_dir)):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            if d.stat().st_uid != os.geteuid():
                raise PermissionError(f"{d} belongs to another user: remove it or use another run directory")
            os.chmod(d, 0o700)

    def remove_socket_dir(self) -> None:
        """The short socket directory, once its sockets are gone (the run directory is the caller's)."""
        if self.socket_dir != self.run_dir:
            with contextlib.suppress(OSError):
                self.socket_dir.rmdir()

    @property
    def config(self) -> Path:
        return self.run_dir / "haproxy.cfg"

    @property
    def api_socket(self) -> Path:
        return self.socket_dir / "haproxy.sock"

    @property
    def log_socket(self) -> Path:
        return self.socket_dir / "access.sock"

    @property
    def ipcache_map(self) -> Path:
        return self.run_dir / "ipcache.map"

    @property
    def decide_map(self) -> Path:
        return self.run_dir / "decide.map"

    @property
    def rules(self) -> Path:
        return self.run_dir / "rules.txt"

    @property
    def pid(self) -> Path:
        return self.run_dir / "haproxy.pid"


@dataclass(frozen=True)
class ProxyConfig:
    files: ProxyFiles
    ports: Mapping[tuple[str, Direction], int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    transparent: bool = True
    static: Mapping[tuple[str, Direction], StaticDestination] = field(default_factory=dict)
    nbthread: int = 2
    both_at_egress: bool = True  # the egress listener also decides a local destination's ingress policy
    lua_path: Path = LUA_PATH
    # "" (every address): the datapath finds a listener by (original destination, proxy port), so
    # it must listen on every address; tests bind one address in a namespace of their own
    bind_address: str = ""


def _vars(
    scope: str, kind: str, direction: Direction, ipcache: Path, static: StaticDestination | None
) -> list[str]:
    act = "http-request" if kind == "http" else "tcp-request content"
    if static is None:
        dst, dport = "dst", "dst_port"
    else:
        dst, dport = f"str({static.original[0]})", f"int({static.original[1]})"
    return [
        f"{act} set-var({scope}.cilia_dir) str({direction.label})",
        *([f"{act} set-var({scope}.cilia_v) str(deny)"] if kind != "http" else []),
        f"{act} set-var({scope}.cilia_src) src",
        f"{act} set-var({scope}.cilia_dst) {dst}",
        f"{act} set-var({scope}.cilia_dport) {dport}",
        f"{act} set-var({scope}.cilia_sid) src,map_ip({ipcache},{WORLD})",
        f"{act} set-var({scope}.cilia_did) var({scope}.cilia_dst),map_ip({ipcache},{WORLD})",
    ]


def _key(direction: str, endpoint: str, peer: str) -> str:
    """The decision map's key of one policy: ``<dir>|<endpoint>|<port>|<peer>`` + the request."""
    return (f"str({direction}|),concat(,txn.{endpoint},\"|\"),concat(,txn.cilia_dport,\"|\"),"
            f"concat(,txn.{peer},),concat(,txn.cilia_req,)")  # fmt: skip


def _decide_http(direction: Direction, decide_map: Path, both_at_egress: bool) -> list[str]:
    """The native decision (see the module docstring): ``txn.cilia_v`` and ``txn.cilia_eval``."""
    v, v2 = "var(txn.cilia_v)", "var(txn.cilia_v2)"
    out = [
        "http-request set-var(txn.cilia_m) method",
        "http-request set-var(txn.cilia_host) req.fhdr(host)",
        "http-request set-var(txn.cilia_path) pathq",
        "http-request set-var(txn.cilia_hdrs) req.hdrs,url_enc",
        'http-request set-var(txn.cilia_req) str("\\x01"),concat(,txn.cilia_m,"\\x01"),'
        'concat(,txn.cilia_host,"\\x01"),concat(,txn.cilia_path,)',
    ]
    if direction == Direction.INGRESS:
        out += [
            f"http-request set-var(txn.cilia_k) {_key('ingress', 'cilia_dst', 'cilia_sid')}",
            f"http-request set-var(txn.cilia_v) var(txn.cilia_k),map_reg({decide_map},deny)",
            f"http-request set-var(txn.cilia_v) str(lua) if {{ var(txn.cilia_host) -m reg {CTL} }} "
            f"|| {{ var(txn.cilia_path) -m reg {CTL} }}",
            f"http-request set-var(txn.cilia_eval) str(ingress+) if {{ {v} -m str allow }}",
            f"http-request set-var(txn.cilia_eval) str(ingress-) if {{ {v} -m str deny }}",
        ]
        return out
    out += [
        f"http-request set-var(txn.cilia_k) {_key('egress', 'cilia_src', 'cilia_did')}",
        f"http-request set-var(txn.cilia_v) var(txn.cilia_k),map_reg({decide_map},deny)",
        f"http-request set-var(txn.cilia_v) str(lua) if {{ var(txn.cilia_host) -m reg {CTL} }} "
        f"|| {{ var(txn.cilia_path) -m reg {CTL} }}",
    ]
    if both_at_egress:
        out += [
            f"http-request set-var(txn.cilia_k2) {_key('ingress', 'cilia_dst', 'cilia_sid')} "
            f"if {{ {v} -m str allow }}",
            f"http-request set-var(txn.cilia_v2) var(txn.cilia_k2),map_reg({decide_map},none) "
            f"if {{ {v} -m str allow }}",
            f"http-request set-var(txn.cilia_v) str(lua) if {{ {v2} -m str lua }}",
            f"http-request set-var(txn.cilia_eval) str(egress+;ingress+) if {{ {v} -m str allow }} "
            f"{{ {v2} -m str allow }}",
            f"http-request set-var(txn.cilia_eval) str(egress+;ingress-) if {{ {v} -m str allow }} "
            f"{{ {v2} -m str deny }}",
            f"http-request set-var(txn.cilia_v) str(deny) if {{ {v2} -m str deny }}",
        ]
    unset = "!{ var(txn.cilia_eval) -m found }"  # not decided above (egress+,ingress±)
    out += [
        f"http-request set-var(txn.cilia_eval) str(egress+) if {{ {v} -m str allow }} {unset}",
        f"http-request set-var(txn.cilia_eval) str(egress-) if {{ {v} -m str deny }} {unset}",
    ]
    return out


def render(cfg: ProxyConfig) -> str:
    """The complete ``haproxy.cfg`` text."""
    f = cfg.files
    out = [
        "# generated by cilia (cilia.proxy.http.config): do not edit",
        "global",
        f"    stats socket {f.api_socket} mode 600 level admin",
        "    stats timeout 10s",
        f"    nbthread {cfg.nbthread}",
        *([f"    gid {PROXY_GID}"] if cfg.transparent else []),  # its packets marked (cilia.proxy.http.marks)
        "    maxconn 8192",
        "    noreuseport",  # a second node's HAProxy on this machine must not share the ports
        f"    lua-load-per-thread {cfg.lua_path}",  # a Lua state per thread: no lock between them
        # the access log goes to a ring in HAProxy's memory, forwarded in bulk over one unix
        # stream connection to the agent: no datagram (and no agent wake-up) per request, and no
        # line dropped when the agent is a moment late (a datagram socket queues 10)
        f"    log ring@{LOG_RING} len 16384 format raw local0",
        "",
        f"ring {LOG_RING}",
        "    format raw",
        "    maxlen 16384",
        f"    size {LOG_RING_BYTES}",
        "    timeout connect 5s",
        "    timeout server 3600s",
        f"    server agent unix@{f.log_socket}",
        "",
        "defaults",
        "    log global",
        "    timeout connect 5s",
        "    timeout client 120s",
        "    timeout server 120s",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 120s",
    ]
    for (kind, direction), port in sorted(cfg.ports.items(), key=lambda kv: kv[1]):
        static = cfg.static.get((kind, direction))
        if not cfg.transparent and static is None:
            continue  # test mode: only the listeners given a destination
        name = f"{kind}-{direction.label}"
        bind = f"bind {cfg.bind_address}:{port} transparent" if static is None else f"bind {static.bind}"
        out += ["", f"frontend {name}", f"    {bind}"]
        if static is None and not cfg.bind_address:  # every address: IPv6 too, on a socket of its own
            out.append(f"    bind :::{port} transparent v6only")
        if kind == "http":
            out += [
                "    mode http",
                "    option http-keep-alive",
                f'    log-format "{HTTP_LOG}"',
                *(f"    {line}" for line in _vars("txn", kind, direction, f.ipcache_map, static)),
                *(f"    {line}" for line in _decide_http(direction, f.decide_map, cfg.both_at_egress)),
                "    http-request lua.cilia_http if { var(txn.cilia_v) -m str lua }",
                f'    http-request return status 403 content-type text/plain string "{DENIED_BODY}"'
                " unless { var(txn.cilia_v) -m str allow }",
                f"    default_backend {name}-out",
            ]
        else:
            out += [
                "    mode tcp",
                f'    log-format "{TLS_LOG}"',
                "    tcp-request inspect-delay 10s",
                *(f"    {line}" for line in _vars("sess", kind, direction, f.ipcache_map, static)),
                "    tcp-request content set-var(sess.cilia_sni) req.ssl_sni if { req.ssl_hello_type 1 }",
                "    tcp-request content lua.cilia_sni if { req.ssl_hello_type 1 }",
                "    tcp-request content reject unless { var(sess.cilia_v) -m str allow }",
                f"    default_backend {name}-out",
            ]
        out += ["", f"backend {name}-out", f"    mode {kind if kind == 'http' else 'tcp'}"]
        if kind == "http":
            out.append("    http-reuse never")  # a server connection belongs to its client's connection
        if static is None:
            out += ["    source 0.0.0.0 usesrc clientip", "    server original-destination 0.0.0.0"]
        else:
            out.append(f"    server original-destination {static.server}")
    return "\n".join(out) + "\n"
