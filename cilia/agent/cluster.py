"""One node of several: the agent's part in the cluster (``cilia up --nodes N``).

The desired state is shared in etcd. Each agent joins with its node record on a lease
(:func:`cilia.store.nodes.join`), takes identities from the :class:`ClusterAllocator` (same labels,
same number on every node), runs only the pods scheduled to it (:func:`node_for`), publishes its
pods' address → identity on its lease, and mirrors the other nodes' entries (and their underlay
addresses as ``remote-node``) into its own ipcache. A packet between nodes is then decided twice,
as in Cilium: the source's egress policy on the source node, the destination's ingress policy on
the destination node, each with the peer's identity from its own ipcache. One node, elected with
a key on its lease (:mod:`cilia.agent.leader`), runs the Deployment controller for the cluster.
Pods other nodes published are Service backends here too (the client's node translates, as
Cilium's kube-proxy replacement does), re-synced whenever those entries change.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from cilia.agent.client import AgentAPIError, AgentClient, AgentUnavailable
from cilia.agent.config import AgentConfig
from cilia.agent.desired import PodKey
from cilia.agent.errors import AgentError
from cilia.agent.leader import LeaderElection
from cilia.datapath.dualstack import host_prefixes
from cilia.identity.allocator import IdentityEvent
from cilia.identity.cluster_allocator import ClusterAllocator
from cilia.store import Store, StoreError, open_store
from cilia.store.nodes import DEFAULT_TTL, ClusterView, IPCacheChange, NodeInfo, NodeRegistration, join

log = logging.getLogger("cilia.agent")
GC_INTERVAL_S = 60.0  # identity garbage collection rounds (any node may run them)
_NODE_NAME = re.compile(r"\A(?:cilia-)?node-([0-9]+)\Z")  # \Z: "$" takes "node-1\n"; ASCII digits


class SchedulingError(AgentError, ValueError):
    """A pod names a node (``spec.nodeName``) that is not one of the cluster's."""


def node_name(index: int) -> str:
    """The name node ``index`` registers under (its network namespace is ``cilia-<name>``)."""
    return f"node-{index}"


def node_for(pod: PodKey, manifest: Mapping[str, Any], nodes: int) -> int:
    """The node index a pod runs on: ``spec.nodeName`` (``node-<i>``) if set, else a hash of
    ``namespace/name`` over ``nodes`` nodes (deterministic: every agent agrees without talking)."""
    wanted = str(((manifest.get("spec") or {}).get("nodeName")) or "")
    if wanted:
        m = _NODE_NAME.match(wanted)
        if m is None or not 0 <= int(m.group(1)) < nodes:
            raise SchedulingError(f"pod {pod}: nodeName {wanted!r} is not node-0..node-{nodes - 1}")
        return int(m.group(1))
    digest = hashlib.sha256(f"{pod.namespace}/{pod.name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(1, nodes)


def _pod_key(pod: str) -> PodKey:
    """``ns/name`` as published with an address."""
    namespace, _, name = pod.partition("/")
    return PodKey(namespace, name)


def node_netns_name(index: int) -> str:
    return f"cilia-node-{index}"  # as cilia.lab.nodes_lab names it


def member_config(base: AgentConfig, index: int) -> AgentConfig:
    """Node ``index``'s settings under the cluster's: its own state, run and bpffs directories,
    its name and network namespace (``/sys/fs/bpf/cilia/v1`` → ``/sys/fs/bpf/cilia/node-<i>/v1``)."""
    name = node_name(index)
    pins = base.pin_root.rstrip("/")
    root = pins[: -len("/v1")] if pins.endswith("/v1") else pins
    return replace(base, state_dir=base.state_dir / "nodes" / name, run_dir=base.run_dir / "nodes" / name,
                   node_index=index, node_name=name, netns=node_netns_name(index),
                   pin_root=f"{root}/{name}/v1")


def member_configs(base: AgentConfig) -> list[AgentConfig]:
    """Every node's settings if ``base`` is a cluster's (``cilia up --nodes N``), else none."""
    if base.cluster_size < 1 or base.node_name:
        return []
    return [member_config(base, i) for i in range(base.cluster_size)]


def member_endpoints(base: AgentConfig) -> list[dict[str, Any]]:
    """Every node's endpoints, each with its ``node``; raises :class:`AgentUnavailable` if no
    node's agent answers (a node that does not answer is left out)."""
    out: list[dict[str, Any]] = []
    answered = 0
    last: Exception | None = None
    for m in member_configs(base):
        try:
            eps = AgentClient(m.socket_path).endpoints()
        except (AgentUnavailable, AgentAPIError) as e:
            last = e
            continue
        answered += 1
        out += [{**ep, "node": m.node_name} for ep in eps]
    if not answered:
        raise last if last is not None else AgentUnavailable(base.run_dir, "the cluster has no nodes")
    return out


LAB_ETCD_HOST = "198.18.254.254"  # where the lab's etcd listens (cilia.lab.nodes_lab.BRIDGE_ADDRESS)


def etcd_client_tls(cfg: AgentConfig) -> tuple[str, str, str] | None:
    """(CA, client certificate, key) for the lab's etcd, which speaks mutual TLS only: its
    certificates are in ``<cluster state dir>/etcd/pki`` (cilia.lab.etcd_pki). None for an etcd
    given with ``--etcd-endpoints`` (no lab PKI beside the settings), which is dialled as it is."""
    eps = cfg.etcd_endpoint_list
    if not eps or not all(e.startswith(LAB_ETCD_HOST + ":") for e in eps):
        return None
    base = cfg.state_dir.parent.parent if cfg.node_name else cfg.state_dir  # nodes/<name> of a member
    pki = base / "etcd" / "pki"
    if not (pki / "ca.crt").exists():
        return None
    return str(pki / "ca.crt"), str(pki / "client.crt"), str(pki / "client.key")


def open_agent_store(cfg: AgentConfig) -> Store:
    """The node's store: SQLite in its state directory, or the cluster's etcd (the lab's over
    mutual TLS)."""
    if cfg.store == "etcd":
        tls = etcd_client_tls(cfg)
        if tls is None:
            return open_store(backend="etcd", endpoints=cfg.etcd_endpoint_list)
        from cilia.store.etcd import open_etcd_store  # etcd3aio only when asked for

        return open_etcd_store(cfg.etcd_endpoint_list, tls=tls)
    return open_store(cfg.state_dir)


class _AgentThreadAllocator:
    """The cluster allocator as the reconciler sees it: identity events from the allocator's watch
    thread (identities other nodes allocated) are queued and delivered under the agent's lock
    (:meth:`ClusterMember.drain`), so policy state only ever changes on one thread at a time.
    Events of the agent's own allocations are delivered at once, as the reconciler expects."""

    def __init__(self, inner: ClusterAllocator) -> None:
        self._inner = inner
        self.pending: deque[tuple[Callable[[IdentityEvent], None], IdentityEvent]] = deque()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def subscribe(self, callback: Callable[[IdentityEvent], None], replay: bool = True) -> Callable[[], None]:
        watcher = self._inner._thread

        def deliver(ev: IdentityEvent) -> None:
            if threading.current_thread() is watcher:
                self.pending.append((callback, ev))
            else:
                callback(ev)

        return self._inner.subscribe(deliver, replay)


class ClusterMember:
    """This node's registration, identity allocator and view of the other nodes."""

    def __init__(self, cfg: AgentConfig, store: Store) -> None:
        if not cfg.node_name or cfg.cluster_size < 1:
            raise SchedulingError("a cluster node needs a node name and the cluster size")
        self.cfg = cfg
        self.store = store
        self.info = NodeInfo.lab(cfg.node_name, cfg.node_index)
        self.registration: NodeRegistration = join(store.backend, self.info)
        self.allocator = ClusterAllocator(store, cfg.node_name, self.registration.lease)
        self._facade = _AgentThreadAllocator(self.allocator)
        self.election = LeaderElection(store.backend, cfg.node_name, self.registration.lease,
                                       on_elected=self._elected)
        self._halt_election: Callable[[], None] | None = None
        self._published_version = -1  # the reconciler's endpoints_version last published
        self.view: ClusterView | None = None
        self._agent: Any = None
        self._halt: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._maintainer = threading.Thread(target=self._maintain, name="cilia-cluster-member", daemon=True)

    def schedule(self, pod: PodKey, manifest: Mapping[str, Any]) -> bool:
        """Whether ``pod`` runs on this node (a pod naming an unknown node runs nowhere)."""
        try:
            return node_for(pod, manifest, self.cfg.cluster_size) == self.cfg.node_index
        except SchedulingError as e:
            log.warning("%s", e)
            return False

    def reconciler_options(self) -> dict[str, Any]:
        """What the agent's reconciler takes to be one node of the cluster."""
        return {"allocator": self._facade, "schedule": self.schedule, "on_synced": self.publish,
                "controller": self.election.is_leader}

    def attach(self, agent: Any) -> None:
        """Start mirroring the other nodes into ``agent``'s ipcache (before ``agent.run``)."""
        self._agent = agent
        self.view = ClusterView(self.store.backend, local_node=self.cfg.node_name)
        remote = self.view.ipcache()
        # Each address's /32 and its IPv6 twin's /128 (the twin is computed, never published).
        agent.reconciler.remote_ipcache = {
            p: e.identity for ip, e in remote.items() for p in host_prefixes(ip)}
        agent.reconciler.remote_pods = {_pod_key(e.pod): ip for ip, e in remote.items() if e.pod}
        self._halt = self.view.follow(self._on_changes, step=0.2)
        self.election.check()  # before the agent starts: a leader runs the controller in start()
        self._halt_election = self.election.follow(step=1.0)
        self._maintainer.start()

    def _elected(self) -> None:
        """This node became the Deployment controller: converge every Deployment (an agent
        not started yet does so in its start())."""
        agent = self._agent
        if agent is None or not getattr(agent, "_ready", False):
            return
        with agent._lock:
            agent.reconciler.run_controller()

    def publish(self, force: bool = False) -> None:
        """Make this node's published entries equal to its endpoints (called after each sync;
        compared only when the endpoint table changed since, or when ``force``)."""
        if self._agent is None:
            return
        self.drain()
        version = self._agent.reconciler.endpoints_version
        if version == self._published_version and not force:
            return
        want = {e.ip: (e.identity, str(e.pod)) for e in self._agent.reconciler.endpoints}
        have = self.registration.published()
        changed = [(ip, ident, pod) for ip, (ident, pod) in sorted(want.items())
                   if ip not in have or (have[ip].identity, have[ip].pod) != (ident, pod)]
        if changed:
            self.registration.publish_many(changed)
        for ip in sorted(have.keys() - want.keys()):
            self.registration.withdraw(ip)
        self._published_version = version

    def _on_changes(self, changes: list[IPCacheChange]) -> None:
        agent = self._agent
        # Identities first: a remote address must not map to an identity the policy does not know.
        self.allocator.sync(2.0)
        with agent._lock:
            self.drain()
            rec = agent.reconciler
            pods_moved = False
            for c in changes:
                for prefix in host_prefixes(c.ip):  # its /32 and its IPv6 twin's /128
                    if c.new is not None:
                        rec.remote_ipcache[prefix] = c.new.identity
                        rec.datapath.upsert_ipcache(prefix, c.new.identity)
                    elif rec.remote_ipcache.pop(prefix, None) is not None:
                        rec.datapath.delete_ipcache(prefix)
                if c.old is not None and c.old.pod and rec.remote_pods.get(_pod_key(c.old.pod)) == c.ip:
                    del rec.remote_pods[_pod_key(c.old.pod)]
                    pods_moved = True
                if c.new is not None and c.new.pod:
                    rec.remote_pods[_pod_key(c.new.pod)] = c.ip
                    pods_moved = True
            # Service backends on other nodes: after the ipcache, so policy knows the backend.
            if pods_moved:
                rec.sync_services()
        log.info("cluster ipcache: %d change(s) from other nodes", len(changes))

    def drain(self) -> None:
        """Deliver the identity events other nodes caused and update the endpoints they affect
        (call with the agent's lock held)."""
        if not self._facade.pending:
            return
        while self._facade.pending:
            callback, ev = self._facade.pending.popleft()
            callback(ev)
        rec = self._agent.reconciler
        rec._sync_policies(rec.policy.take_affected())

    def _maintain(self) -> None:
        """Rejoin after the node's lease was lost (etcd unreachable longer than its TTL), and run
        identity garbage collection rounds."""
        next_gc = time.monotonic() + GC_INTERVAL_S
        while not self._stop.wait(1.0):
            try:
                if not self.registration.lease.alive:
                    self.rejoin()
                if time.monotonic() >= next_gc:
                    next_gc = time.monotonic() + GC_INTERVAL_S
                    gone = self.allocator.collect_garbage()
                    if gone:
                        log.info("identities no node uses any more, deleted: %s", gone)
            except StoreError as e:
                log.warning("cluster membership: %s (retrying)", e)

    def rejoin(self) -> None:
        """A new lease: references, node record and endpoints again. An identity collected
        meanwhile got a new number; endpoints using it move to that number."""
        lease = self.store.backend.grant_lease(DEFAULT_TTL)
        agent = self._agent
        with agent._lock:
            moved = self.allocator.relink(lease)
            self.registration.rejoin(lease)
            self.election.relink(lease)
            rec = agent.reconciler
            for ep in list(rec.endpoints):
                if ep.identity in moved:
                    rec.datapath.attach(ep.ifindex, ep.id, moved[ep.identity])
                    rec.endpoints.update(ep.pod, identity=moved[ep.identity])
            if moved:
                rec.resync()
            self.publish(force=True)
        log.warning("node lease was lost: rejoined (identities renumbered: %s)", moved or "none")

    def nodes(self) -> dict[str, NodeInfo]:
        return self.view.nodes() if self.view is not None else {}

    def close(self) -> None:
        """Stop following (the node's entries stay on its lease until it expires or is revoked)."""
        self._stop.set()
        if self._maintainer.is_alive():
            self._maintainer.join(5)
        if self._halt_election is not None:
            self._halt_election()
        with contextlib.suppress(StoreError):
            self.election.resign()  # a stopping agent hands the controller over at once
        if self._halt is not None:
            self._halt()
        self.allocator.close()
