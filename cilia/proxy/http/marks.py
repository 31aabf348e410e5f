"""The mark on HAProxy's own connections (the node's nftables table ``inet cilia_http_mark``).

Several nodes can share a network namespace (tests, a benchmark beside ``cilia up``); each has its
own table (named by its HTTP ingress proxy port), and the node that removes the last one also
removes the namespace's policy routing for proxy traffic (:func:`remove`).

The datapath redirects a connection to the proxy when a policy entry asks for it, on the client's
side (egress) and on the destination's (ingress). The proxy's onward connection must not be
redirected a second time by the destination's ingress policy: the proxy decided that policy already
(the ingress listener, or the egress listener for a local destination, ``both_at_egress``). An
ingress proxy says so with ``SO_MARK`` :data:`cilia.proxy.transparent.MARK_PROXY_INGRESS`; HAProxy
2.6 cannot mark its server-side connections (``set-bc-mark`` came with 2.9), so HAProxy runs with a
group of its own (:data:`PROXY_GID`, its user stays root for ``usesrc clientip``) and an nftables
rule marks every packet its sockets send. Marks do not cross network namespaces: a destination on
another node is decided by that node's proxy.
"""

from __future__ import annotations

import subprocess

from cilia.proxy.errors import ProxyError
from cilia.proxy.transparent import MARK_PROXY_INGRESS

PROXY_GID = 3100  # the group HAProxy runs as (0xc1c, the mark's number)
TABLE_PREFIX = "cilia_http_mark_"  # family inet; one table per node: cilia_http_mark_<its HTTP ingress port>


class MarkError(ProxyError, RuntimeError):
    """The nftables table could not be installed or removed."""


def table_name(node_port: int) -> str:
    return f"{TABLE_PREFIX}{node_port}"


def ruleset(node_port: int) -> str:
    return (
        f"table inet {table_name(node_port)} {{\n"
        "  chain output {\n"
        "    type filter hook output priority mangle; policy accept;\n"
        f"    meta skgid {PROXY_GID} meta l4proto tcp meta mark set {MARK_PROXY_INGRESS:#x}\n"
        "  }\n"
        "}\n"
    )


def _nft(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise MarkError(f"nft {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def install(node_port: int) -> None:
    """Install (or replace) the node's table in the caller's network namespace."""
    name = table_name(node_port)
    _nft("-f", "-", stdin=f"table inet {name}\ndelete table inet {name}\n" + ruleset(node_port))


def tables() -> list[str]:
    """The mark tables of every node in the caller's namespace."""
    out = _nft("list", "tables", "inet", check=False).stdout
    return sorted(w for line in out.splitlines() for w in line.split() if w.startswith(TABLE_PREFIX))


def remove(node_port: int) -> bool:
    """Remove the node's table; True if it was there."""
    return _nft("delete", "table", "inet", table_name(node_port), check=False).returncode == 0
