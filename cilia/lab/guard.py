"""The lab's second guard: an nftables table in the node's forward path that drops every packet
arriving from a lab device (pod veths ``lxc…``, world hosts' ``ciliaw…``, any other ``cilia…``
link) for an address outside the lab's ranges (198.18.0.0/15, 2001:2::/48) or for any device that
is not a lab device (a lab address with nothing of the lab behind it would otherwise follow the
node's default route off the machine), and in its output path every packet the node itself sends
to a lab address out of a device that is neither a lab device nor loopback.

It holds while no agent (and so no eBPF datapath) runs; the first guard is the pods' routing
table, which has routes for the lab's ranges only and no default route. The table is installed
when the lab turns IPv4 forwarding on and removed when the lab restores it (``cilia down``). Its
name carries a hash of the lab's run directory, so labs with different run directories on one
machine (tests) keep their own table and one lab's teardown never removes another's guard.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from cilia.lab.errors import LabError

LAB_RANGE_V4 = "198.18.0.0/15"
LAB_RANGE_V6 = "2001:2::/48"
TABLE_PREFIX = "cilia_guard_"
LAB_DEVICES = ("lxc*", "cilia*")


def table_name(run_dir: Path) -> str:
    """``cilia_guard_<8 hex digits of the run directory's path>``."""
    return TABLE_PREFIX + hashlib.sha256(str(Path(run_dir).absolute()).encode()).hexdigest()[:8]


def ruleset(table: str) -> str:
    """The table as ``nft -f`` reads it (deleted first, so installing again replaces it whole)."""
    not_lab_out = " ".join(f'oifname != "{dev}"' for dev in LAB_DEVICES)
    forward = []
    for dev in LAB_DEVICES:
        forward.append(f'iifname "{dev}" meta nfproto ipv4 ip daddr != {LAB_RANGE_V4} counter drop')
        forward.append(f'iifname "{dev}" meta nfproto ipv6 ip6 daddr != {LAB_RANGE_V6} counter drop')
        # a lab address with no lab host behind it would follow the node's default route
        forward.append(f'iifname "{dev}" {not_lab_out} counter drop')
    # what the node itself sends to a lab address (the DNS proxy forwarding a query, say) goes to
    # a lab device or stays on the node, never out of a device of the machine
    output = [f'meta nfproto ipv4 ip daddr {LAB_RANGE_V4} oifname != "lo" {not_lab_out} counter drop',
              f'meta nfproto ipv6 ip6 daddr {LAB_RANGE_V6} oifname != "lo" {not_lab_out} counter drop']
    fwd = "\n".join(f"    {r}" for r in forward)
    out = "\n".join(f"    {r}" for r in output)
    return (
        f"table inet {table}\ndelete table inet {table}\n"
        f"table inet {table} {{\n"
        "  chain forward {\n    type filter hook forward priority filter - 10; policy accept;\n"
        f"{fwd}\n  }}\n"
        "  chain output {\n    type filter hook output priority filter - 10; policy accept;\n"
        f"{out}\n  }}\n}}\n"
    )


def _nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    nft = shutil.which("nft")
    if nft is None:
        raise LabError("nft not found: apt-get install -y nftables (the lab's forward guard)")
    return subprocess.run([nft, *args], input=stdin, capture_output=True, text=True, check=False, timeout=30)


def install(run_dir: Path) -> str:
    """Install (or replace) this lab's guard table in the calling thread's network namespace."""
    table = table_name(run_dir)
    proc = _nft(["-f", "-"], ruleset(table))
    if proc.returncode != 0:
        raise LabError(f"install the lab's nftables guard {table}: {proc.stderr.strip()}")
    return table


def installed(run_dir: Path) -> bool:
    if shutil.which("nft") is None:  # without nft nothing can have been installed
        return False
    return _nft(["list", "table", "inet", table_name(run_dir)]).returncode == 0


def listing(run_dir: Path) -> str:
    """``nft list table inet <guard>`` (empty when there is none)."""
    proc = _nft(["list", "table", "inet", table_name(run_dir)])
    return proc.stdout if proc.returncode == 0 else ""


def remove(run_dir: Path) -> bool:
    """Remove this lab's guard table; True when there was one."""
    if not installed(run_dir):
        return False
    proc = _nft(["delete", "table", "inet", table_name(run_dir)])
    if proc.returncode != 0:
        raise LabError(f"remove the lab's nftables guard {table_name(run_dir)}: {proc.stderr.strip()}")
    return True
