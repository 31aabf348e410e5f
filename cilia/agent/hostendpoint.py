"""The node's host endpoint: the host firewall (Cilium's ``enable-host-firewall``) of one node.

As in Cilium, the host is an endpoint with identity 1 whose labels are ``reserved:host`` plus the
node's labels *after the identity label filter* (so ``kubernetes.io/hostname`` and
``kubernetes.io/os``, which every lab node carries as a kubelet-made node does, are not on it: a
``nodeSelector`` naming them selects nothing). Host policies (CCNP ``nodeSelector``) select it;
the policy engine decides (:class:`cilia.agent.policystate.PolicyState` with the host firewall on)
and this module only moves the engine's MapState and per-direction enforcement into the kernel
(:mod:`cilia.datapath.bpf.hostfw`): a direction is default-deny only when a host policy with a
section in that direction selects the node. Host-network pods run in the node's namespace and
are the host (no endpoint of their own).

Node labels live in the store as ``Kind.NODES`` objects (a Node manifest: ``metadata.labels``),
written by ``cilia label node``; a node without one has the lab's defaults
(:func:`default_node_labels`). Audit mode: the node's switch (``cilia audit``) or the host's
own (``cilia audit --host``, :data:`HOST_AUDIT_KEY` in the audit file) sets the host endpoint's
audit flag — drops are reported (``audited``) and not made.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cilia.identity.labels import Labels
from cilia.identity.nodelabels import host_labels
from cilia.identity.reserved import ReservedIdentity
from cilia.policy.mapstate import MapState
from cilia.store import Kind, Store

log = logging.getLogger(__name__)

HOST_IDENTITY = int(ReservedIdentity.HOST)
HOST_ENDPOINT_ID = 0xFEFF  # = cilia.datapath.bpf.hostfw.HOST_ENDPOINT_ID (never a pod's id)
HOST_EP_IFINDEX = 0  # the host endpoint's key in the endpoints map (no device has ifindex 0)
HOST_AUDIT_KEY = "host"  # in the reconciler's audit file


def node_name_of(cfg: Any) -> str:
    """The node's name: its cluster name (``node-1``), else ``cilia-node-<index>`` (as ``get pods``
    and flows name the single node)."""
    return str(cfg.node_name or f"cilia-node-{cfg.node_index}")


def default_node_labels(name: str) -> dict[str, str]:
    """What the kubelet puts on every node (the lab's nodes carry them too)."""
    return {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}


def node_manifest(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The stored Node object of a lab node."""
    meta = {"name": name, "labels": dict(sorted(labels.items()))}
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta}


def stored_node_labels(store: Store, name: str) -> dict[str, str]:
    """The node's labels: its stored Node object's, else the defaults."""
    rec = store.get(Kind.NODES.key("", name))
    if rec is None:
        return default_node_labels(name)
    labels = (rec.value.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


_TCP_ESTABLISHED, _TCP_LISTEN = "01", "0A"  # /proc/net/tcp socket states


def open_tcp_connections(addresses: Iterable[str], proc_tcp: Path = Path("/proc/net/tcp")
                         ) -> list[tuple[int, str, int, str, int]]:
    """The node's established IPv4 TCP connections on ``addresses`` (in this process's network
    namespace) as ``(direction, src, sport, dst, dport)`` of their opening packet: egress (1) when the
    node opened it, ingress (0) when a listener of the node accepted it."""
    mine = {str(a) for a in addresses}
    rows = []
    for line in proc_tcp.read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        (lh, lp), (rh, rp) = local.split(":"), remote.split(":")
        # /proc/net/tcp prints the address as the host-order u32 of the network-order bytes
        laddr = str(ipaddress.IPv4Address(int(lh, 16).to_bytes(4, "little")))
        rows.append((state, laddr, int(lp, 16), str(ipaddress.IPv4Address(int(rh, 16).to_bytes(4, "little"))),
                     int(rp, 16)))
    listening = {(a, port) for st, a, port, _, _ in rows if st == _TCP_LISTEN}
    out = []
    for st, laddr, lport, raddr, rport in rows:
        if st != _TCP_ESTABLISHED or laddr not in mine:
            continue
        if (laddr, lport) in listening or ("0.0.0.0", lport) in listening:
            out.append((0, raddr, rport, laddr, lport))
        else:
            out.append((1, laddr, lport, raddr, rport))
    return out


def adopt_open_connections(datapath: Any, addresses: Iterable[str]) -> int:
    """Conntrack entries of the host endpoint for the node's TCP connections opened before the host
    programs could track them (the agent's own etcd connections are opened first): without them a
    host policy that starts enforcing would drop their replies until the connections time out.
    Returns how many were written."""
    from cilia.datapath.maps.config import DEFAULT_CT_TCP_TIMEOUT_S
    from cilia.datapath.maps.ct import CtKey, CtValue

    ct_f_replied = 0x2  # cilia.h CT_F_REPLIED: past its opening, the full lifetime
    expires = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + DEFAULT_CT_TCP_TIMEOUT_S * 1_000_000_000
    conns = open_tcp_connections(addresses)
    for direction, src, sport, dst, dport in conns:
        k = CtKey(ep_id=HOST_ENDPOINT_ID, direction=direction, proto=socket.IPPROTO_TCP, family=4,
                  sport=socket.htons(sport), dport=socket.htons(dport))
        k.saddr[:4] = list(socket.inet_aton(src))
        k.daddr[:4] = list(socket.inet_aton(dst))
        datapath.ct.update(k, CtValue(expires_ns=expires, flags=ct_f_replied))  # its family's map
    return len(conns)


class HostEndpoint:
    """Keeps the kernel's host endpoint equal to the engine's host policy (an after-sync hook of
    the agent, under its lock) and the host programs attached to the node's lab devices."""

    def __init__(self, agent: Any, programs: Any, devices: Callable[[], set[int]], node_name: str) -> None:
        self.agent = agent
        self.programs = programs  # cilia.datapath.bpf.hostfw.HostPrograms
        self.devices = devices
        self.node_name = node_name
        self.labels: Labels | None = None
        self.applied: MapState | None = None
        self.enforcement = {"ingress": False, "egress": False}
        self.audit = False
        self.health: Any = None  # cilia.agent.health.HealthServer on the node's addresses

    def _flags(self) -> Any:
        from cilia.datapath.maps.endpoints import EndpointFlags

        f = EndpointFlags(0)
        if self.enforcement["ingress"]:
            f |= EndpointFlags.ENFORCE_INGRESS
        if self.enforcement["egress"]:
            f |= EndpointFlags.ENFORCE_EGRESS
        if self.audit:
            f |= EndpointFlags.AUDIT
        return f

    def sync(self) -> None:
        """Labels → identity 1 in the engine; its MapState, enforcement and audit → the kernel;
        the programs onto every lab device of the node."""
        from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo

        rec = self.agent.reconciler
        dp = self.agent.datapath
        labels = host_labels(stored_node_labels(rec.store, self.node_name))
        if labels != self.labels:
            rec.policy.add_identity(HOST_IDENTITY, labels)
            self.labels = labels
        ms = rec.policy.mapstate(HOST_IDENTITY)
        self.enforcement = rec.policy.enforcement(HOST_IDENTITY)
        self.audit = bool(rec.node_audit or rec.host_audit)
        prev = dp.endpoints.get(HOST_EP_IFINDEX)
        ready = prev.flags & EndpointFlags.POLICY_READY if prev is not None else EndpointFlags(0)
        want = EndpointInfo(HOST_EP_IFINDEX, HOST_ENDPOINT_ID, HOST_IDENTITY, self._flags() | ready)
        if prev != want:
            dp.endpoints.set(want)
        if self.applied is None:
            dp.set_policy(HOST_ENDPOINT_ID, ms)
            try:  # first sync: the programs track from now on; what is already open is adopted
                self.programs.sync(self.devices())
                n = adopt_open_connections(dp, [str(rec.gateway), *rec.host_addresses])
                log.info("host firewall: %d open TCP connection(s) of the node adopted into conntrack", n)
            except (OSError, ValueError) as e:
                log.warning("host firewall: open connections not adopted: %s", e)
        elif self.applied != ms:
            dp.apply_diff(HOST_ENDPOINT_ID, self.applied, ms)
        self.applied = ms
        self.programs.sync(self.devices())

    def attach_device(self, ifindex: int) -> None:
        """A new pod's host veth gets the host programs before the pod has an address."""
        self.programs.attach(ifindex)

    def describe(self) -> dict[str, Any]:
        """The host endpoint as ``cilia get endpoints`` lists it."""
        rec = self.agent.reconciler
        summary = rec.policy.summary(HOST_IDENTITY) if self.labels is not None else {}
        return {
            "id": HOST_ENDPOINT_ID, "pod": "", "host": True, "node": self.node_name, "ip": rec.gateway,
            "ifindex": HOST_EP_IFINDEX, "host_ifname": "", "netns": "", "identity": HOST_IDENTITY,
            "labels": (self.labels or Labels()).strings(), "state": "ready",
            "enforcement": dict(self.enforcement), "audit": self.audit,
            "policy": {k: v for k, v in summary.items() if k != "enforcement"},
            "policy_entries": len(self.applied or {}),
            "devices": sorted(self.programs.attached()),
        }  # fmt: skip

    def close(self) -> None:
        """The programs come off every device (the process's links go): the node's own traffic is
        not filtered while no agent runs."""
        if self.health is not None:
            self.health.close()
        self.programs.close()


def start(agent: Any, node: Any) -> HostEndpoint | None:
    """The node's host endpoint when its agent runs with the host firewall on the kernel datapath:
    programs loaded, hooked into pod creation and every reconcile step (None otherwise)."""
    cfg = agent.cfg
    if not cfg.host_firewall or node.host_devices is None:
        return None
    from cilia.datapath.bpf.hostfw import HostPrograms

    rec = agent.reconciler
    name = node_name_of(cfg)
    lab_devices = node.host_devices
    host = HostEndpoint(
        agent, HostPrograms(cfg.pin_root).open(),
        lambda: {ep.ifindex for ep in rec.endpoints} | lab_devices(), name,
    )  # fmt: skip
    from cilia.agent.health import HealthServer

    host.health = HealthServer([str(rec.gateway), *rec.host_addresses], name)
    rec.on_attach = host.attach_device
    agent.after_sync.insert(0, host.sync)  # before the proxies' hooks: the host's policy first
    agent.host_endpoint = host
    return host
