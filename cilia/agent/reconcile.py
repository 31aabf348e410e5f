"""The node's reconcile loop, as a chain of small steps (Felix's calculator graph):

    store events ─► desired state ─► Deployment controller (pod objects back into the store)
                                  ─► identities (pod labels → allocator)
                                  ─► policy (rules + identities → MapState per identity)
                                  ─► endpoints (pods ↔ runtime; datapath attach before address)
                                  ─► datapath (MapState diffs per endpoint; ipcache pod IP → identity)

Each batch of store events is folded into the desired state, then the steps run in an order that
never opens traffic both the old and the new state deny: peers learn a new identity before any
packet carries it; a pod's identity moves in the datapath before its old identity is released.
:meth:`Reconciler.start` reconciles against what already exists (restart recovery: pods found on
the system are adopted, not recreated).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from cilia.agent.cidrgroups import sync_prefix_identities
from cilia.agent.desired import (
    ChangeKind,
    DesiredState,
    ObjectError,
    PodKey,
    PolicyKey,
    deployment_ops,
    owner_of,
)
from cilia.agent.endpoints import Endpoint, EndpointTable, pinned_endpoint_ids
from cilia.agent.events import EventLog
from cilia.agent.fqdn import FqdnState, sync_redirects
from cilia.agent.interfaces import NodeDatapath, PodRuntime, RuntimePod
from cilia.agent.policydelay import PolicyDelay
from cilia.agent.policystate import PolicyState
from cilia.agent.services import TABLE_NAME, ServiceLB
from cilia.datapath.dualstack import host_prefixes
from cilia.identity.allocator import EventKind, IdentityAllocator, IdentityEvent, LocalAllocator
from cilia.identity.labels import Labels
from cilia.identity.podlabels import DEFAULT_SERVICE_ACCOUNT, pod_identity_labels
from cilia.identity.reserved import ReservedIdentity
from cilia.k8s.objects import Pod, Policy
from cilia.policy.engine import service_infos
from cilia.policy.mapstate import MapState
from cilia.policy.translate import AUDIT_ANNOTATION, ServiceInfo
from cilia.store import Delete, Event, EventType, Kind, Put, Record, Store, StoreError
from cilia.store import identities as stored_ids
from cilia.store.files import write_private

log = logging.getLogger("cilia.agent")

HOST_PREFIX_LEN = 32
AUDIT_FILE = "audit.json"  # {"node": bool, "namespaces": [...]}, written by `cilia audit` and the agent


class Reconciler:
    """Keeps one node's pods, identities and kernel maps equal to the store's desired state."""

    def __init__(
        self,
        store: Store,
        runtime: PodRuntime,
        datapath: NodeDatapath,
        *,
        endpoints: EndpointTable | None = None,
        events: EventLog | None = None,
        gateway: str = "198.18.0.1",
        cluster: str = "default",
        enforcement_mode: str = "default",
        allow_localhost: str = "always",
        allocator: IdentityAllocator | None = None,
        schedule: Callable[[PodKey, dict[str, Any]], bool] | None = None,
        on_synced: Callable[[], None] | None = None,
        controller: Callable[[], bool] | None = None,
        host_firewall: bool = False,
    ) -> None:
        """Several nodes: ``allocator`` is the cluster's (identities already shared, not persisted
        here), ``schedule(pod, manifest)`` says whether a pod runs on this node, ``on_synced``
        runs after each reconcile step (publishing this node's endpoints), and ``controller()``
        whether this node runs the Deployment controller now (:mod:`cilia.agent.leader`; a single
        node always does)."""
        self.store = store
        self.runtime = runtime
        self.datapath = datapath
        self.endpoints = endpoints if endpoints is not None else EndpointTable()
        self.events = events
        self.gateway = gateway
        self.cluster = cluster
        self.desired = DesiredState()
        self._shared_identities = allocator is not None
        self.allocator: IdentityAllocator = allocator if allocator is not None else LocalAllocator()
        self.schedule = schedule
        # pod -> (its spec.nodeName, runs here): every batch looks at every desired pod without a
        # local endpoint, which on a node of several is most of the cluster's pods.
        self._placement: dict[PodKey, tuple[str, bool]] = {}
        self.on_synced = on_synced
        self.controller = controller
        self.remote_ipcache: dict[str, int] = {}  # other nodes' addresses (prefix -> identity)
        self.remote_pods: dict[PodKey, str] = {}  # pods on other nodes -> address (Service backends)
        self.endpoints_version = 0  # counts changes of the endpoint table (what a node publishes)
        self.policy = PolicyState(
            enforcement_mode=enforcement_mode, allow_localhost=allow_localhost, cluster=cluster,
            host_firewall=host_firewall,
        )
        # the node's own addresses besides the gateway (a cluster node's underlay): identity host
        self.host_addresses: list[str] = []
        # called with a device's ifindex right after the pod datapath is attached to it (the host
        # firewall's programs go on before the pod has an address: cilia.agent.hostendpoint)
        self.on_attach: Callable[[int], None] | None = None
        # called with this node's hostNetwork pods after each convergence (they get no endpoint:
        # they are the node; cilia.agent.hostpods serves their ports)
        self.on_host_pods: Callable[[dict[PodKey, Pod]], None] | None = None
        self._restoring = False
        self.allocator.subscribe(self._on_identity, replay=True)
        self.applied: dict[int, MapState] = {}  # endpoint id -> MapState in the datapath
        self.cidr_identities: dict[str, int] = {}  # prefix -> CIDR identity (in the ipcache)
        self.cidr_labels: dict[str, Labels] = {}  # prefix -> the labels of its CIDR identity
        table = self.endpoints.path.with_name(TABLE_NAME) if self.endpoints.path is not None else None
        self.services = ServiceLB(store, table)  # ClusterIPs and the datapath's service table
        self.fqdn = FqdnState()  # addresses the DNS proxy learned (toFQDNs)
        self.policy_delay = PolicyDelay()  # cilium_policy_implementation_delay (cilia.agent.policydelay)
        self.revision = 0  # store revision reconciled so far
        # (created, to create) by the current or last pass that creates pods, one step per pod: what
        # `cilia up` shows while the agent starts (read by the API without the lock: one tuple)
        self.pods_progress: tuple[int, int] = (0, 0)
        # Policy audit mode: the node switch and namespaces from `cilia audit`, and the namespaces
        # whose Namespace object carries the cilia.io/audit annotation.
        self.audit_path = (
            self.endpoints.path.with_name(AUDIT_FILE) if self.endpoints.path is not None else None
        )
        self.node_audit = False
        self.host_audit = False  # the host endpoint's own audit mode (cilia audit --host)
        self.audit_namespaces: frozenset[str] = frozenset()
        self.annotated_namespaces: set[str] = set()

    # ------------------------------------------------------------------ identities

    def _on_identity(self, ev: IdentityEvent) -> None:
        if ev.kind is EventKind.ADDED:
            self.policy.add_identity(ev.identity, ev.labels)
            if ev.identity > max(ReservedIdentity) and not self._restoring and not self._shared_identities:
                self._persist_identity(ev.identity, ev.labels)
        else:
            self.policy.remove_identity(ev.identity)
            if ev.identity > max(ReservedIdentity) and not self._shared_identities:
                self._forget_identity(ev.identity, ev.labels)

    def _persist_identity(self, n: int, labels: Labels) -> None:
        value = {"id": n, "labels": labels.strings()}
        ops = [Put(stored_ids.id_key(n), value), Put(stored_ids.labels_key(labels.strings()), value)]
        self.store.txn(ops)

    def _forget_identity(self, n: int, labels: Labels) -> None:
        self.store.txn(
            [Delete(stored_ids.id_key(n), True), Delete(stored_ids.labels_key(labels.strings()), True)]
        )

    def identity_labels(self, pod: Pod) -> Labels:
        return pod_identity_labels(
            pod.label_map, pod.namespace, self.desired.namespace_labels(pod.namespace),
            pod.service_account or DEFAULT_SERVICE_ACCOUNT, self.cluster,
        )  # fmt: skip

    # ------------------------------------------------------------------ start / recovery

    def start(self) -> int:
        """Build state from a store snapshot, adopt what exists on the node, and bring the
        datapath fully in sync. Returns the revision to watch from (exclusive)."""
        snap = self.store.snapshot()
        self._load_audit()
        restored: dict[int, Labels] = {}
        for rec in snap.records:
            if rec.key.kind is Kind.IDENTITIES:
                if self._shared_identities:
                    continue  # the cluster allocator keeps them
                restored[int(rec.value["id"])] = Labels.parse(rec.value["labels"])
            else:
                self._fold(_as_event(rec, snap.revision))
        self._restoring = True  # they are in the store already
        try:
            if not self._shared_identities and isinstance(self.allocator, LocalAllocator):
                self.allocator.restore(restored)
        finally:
            self._restoring = False
        self.policy.set_services(self._service_infos())
        self.policy.engine.set_secrets(self.desired.secret_values())
        self.policy.set_audit_namespaces(self.audit_namespaces | self.annotated_namespaces)
        for key, pol in sorted(self.desired.policies.items()):
            self._set_policy(key, pol)

        self._sync_cidr_identities(initial=True)
        existing = self.runtime.existing()
        adopted: dict[PodKey, tuple[RuntimePod, Labels, int]] = {}
        for pk, rpod in sorted(existing.items()):
            pod = self._mine(pk)
            if pod is None:
                self._emit("Normal", "Removed", f"Pod/{pk}", "pod no longer desired; deleted on restart")
                old_ep = self.endpoints.get(pk)
                if old_ep is not None:
                    self.datapath.detach(old_ep.ifindex)
                    self.datapath.remove_policy(old_ep.id)
                self.runtime.delete(pk)
                continue
            labels = self.identity_labels(pod)
            adopted[pk] = (rpod, labels, self.allocator.allocate(labels))
        # The restored references were only placeholders: drop them so unused identities go.
        for labels in restored.values():
            self.allocator.release(labels)
        self.endpoints_version += 1
        with self.endpoints.deferred():  # one fsynced save of the table for every adopted pod
            for ep in list(self.endpoints):
                if ep.pod not in adopted:
                    self.endpoints.remove(ep.pod)
            # A table rebuilt after its file was unreadable takes each pod's id from the pinned maps,
            # so the policy the kernel enforces for it stays in place.
            recovered = self.endpoints.recovered
            pinned = pinned_endpoint_ids(self.datapath) if recovered else {}
            if recovered:
                self._emit("Warning", "EndpointsRecovered", "Node", f"endpoint table rebuilt: {recovered}")
                for pk, (rpod, _, _) in adopted.items():  # ids from the pinned maps first, new ids after
                    eid = pinned.get(rpod.ifindex, 0)
                    if eid and self.endpoints.by_id(eid) is None and self.endpoints.get(pk) is None:
                        self.endpoints.put(Endpoint(eid, pk, rpod.ip, rpod.ifindex, rpod.host_ifname,
                                                    rpod.netns, ip6=rpod.ip6))
            for pk, (rpod, labels, ident) in adopted.items():
                old = self.endpoints.get(pk)
                eid = old.id if old is not None and old.ifindex == rpod.ifindex else self.endpoints.new_id()
                ep = Endpoint(
                    eid, pk, rpod.ip, rpod.ifindex, rpod.host_ifname, rpod.netns, ident,
                    tuple(labels.strings()), ip6=rpod.ip6,
                )
                self.endpoints.put(ep)
                # Re-attach (atomic replace); the pinned policy keeps enforcing until the full sync below.
                self.datapath.attach(rpod.ifindex, eid, ident)
                for ip in filter(None, (rpod.ip, rpod.ip6)):
                    self.datapath.set_local_endpoint(ip, rpod.ifindex)
                if self.on_attach is not None:
                    self.on_attach(rpod.ifindex)
                self._set_endpoint_audit(eid)  # attach resets the endpoint's flags
        self.policy.set_cluster_ports(self.desired.pods.values())
        self.policy.take_affected()
        self._sync_policies(None)  # full sync of every endpoint against what the kernel holds
        self._sync_ipcache()
        self.revision = snap.revision
        self._converge_pods()
        self.sync_services()
        sync_redirects(self, self.fqdn)
        self._synced()
        return snap.revision

    # ------------------------------------------------------------------ event batches

    def handle(self, events: Iterable[Event]) -> None:
        """Fold a batch of store events in and reconcile everything they touch."""
        started = self.policy_delay.clock()
        policy_kinds: set[str] = set()
        touched_pods: set[PodKey] = set()
        touched_deployments: set[PodKey] = set()
        relabel_all_in: set[str] = set()
        services_changed = False
        policies_changed = False
        groups_changed = False
        secrets_changed = False
        last = self.revision
        for ev in events:
            last = max(last, ev.revision)
            what = self._fold(ev)
            if what is None:
                continue
            kind, key = what
            if kind is ChangeKind.POD:
                touched_pods.add(key)
                pod = self.desired.pods.get(key)
                if pod is None or self.endpoints.get(key) is None:  # a pod came or went
                    owner = owner_of(pod) if pod is not None else owner_of_deleted(ev)
                    if owner is not None:
                        touched_deployments.add(owner)
            elif kind is ChangeKind.DEPLOYMENT:
                touched_deployments.add(key)
            elif kind is ChangeKind.NAMESPACE:
                relabel_all_in.add(key)
            elif kind is ChangeKind.SERVICE:
                services_changed = True
            elif kind is ChangeKind.CIDR_GROUP:
                groups_changed = True
            elif kind is ChangeKind.SECRET:
                secrets_changed = True
            elif kind is ChangeKind.POLICY:
                policies_changed = True
                policy_kinds.add(key.kind)
                pol = self.desired.policies.get(key)
                if pol is None:
                    self.policy.delete_policy(key)
                    self._emit("Normal", "PolicyDeleted", str(key), "policy removed from the node")
                else:
                    self._set_policy(key, pol)
        if services_changed:
            self.policy.set_services(self._service_infos())
        if secrets_changed:  # headerMatches secret references resolve to the stored values
            self.policy.engine.set_secrets(self.desired.secret_values())
        if relabel_all_in:  # a Namespace's cilia.io/audit annotation may have changed
            self.policy.set_audit_namespaces(self.audit_namespaces | self.annotated_namespaces)
        if policies_changed or services_changed or groups_changed:
            self._sync_cidr_identities()
        for pk in self.desired.pods:
            if pk.namespace in relabel_all_in:
                touched_pods.add(pk)
        if touched_pods:
            self.policy.set_cluster_ports(self.desired.pods.values())
        self._converge_pods(touched_pods, touched_deployments)
        self._sync_policies(self.policy.take_affected())
        if services_changed or touched_pods:
            self.sync_services()
        if policies_changed or touched_pods:
            sync_redirects(self, self.fqdn)
        if policy_kinds:  # the changed policies are in the datapath now
            self.policy_delay.record(policy_kinds, started)
        self.revision = last
        self._synced()

    def resync(self) -> None:
        """Full datapath sync of every endpoint and the ipcache (after a failed update: the
        datapath left the endpoint fail-closed, this brings it back), after creating the desired
        pods a failed batch left without an endpoint."""
        self._converge_pods()
        self.applied.clear()
        self._sync_policies(None)
        self._sync_ipcache()
        self.services.applied = None
        self.sync_services()
        sync_redirects(self, self.fqdn)  # pods the resync created need their DNS redirect too
        self._synced()

    def sync_services(self) -> bool:
        """The datapath's service table from the Services, local endpoints and other nodes' pods."""
        return self.services.sync(self.desired, self.endpoints, self.datapath, self.remote_pods)

    def run_controller(self) -> None:
        """The Deployment controller over every Deployment (a node just elected controller: what
        changed while there was none is converged now)."""
        self._converge_pods(set(), None)
        self._synced()

    def check_runtime(self) -> int:
        """Kubelet's self-healing: pods whose namespace or interface disappeared behind the agent's
        back are cleaned up and created again (same name, from the store). Returns how many."""
        existing = self.runtime.existing()
        gone = [ep for ep in self.endpoints if ep.pod not in existing]
        for ep in gone:
            why = "its namespace or interface disappeared; recreating"
            self._emit("Warning", "PodVanished", f"Pod/{ep.pod}", why)
            self.allocator.release(self._delete_endpoint(ep))
        if gone:
            self._sync_policies(self.policy.take_affected())
            self._converge_pods(set(), set())  # creates the desired pods that have no endpoint
            self._synced()
        return len(gone)

    def _fold(self, ev: Event) -> tuple[ChangeKind, Any] | None:
        try:
            what = self.desired.apply(ev)
        except ObjectError as e:
            self._emit("Warning", "InvalidObject", str(ev.key), str(e))
            return None
        if ev.key.kind is Kind.NAMESPACES:
            annotations = ((ev.value or {}).get("metadata") or {}).get("annotations") or {}
            on = (
                ev.type is EventType.PUT
                and str(annotations.get(AUDIT_ANNOTATION, "")).strip().lower() == "true"
            )
            (self.annotated_namespaces.add if on else self.annotated_namespaces.discard)(ev.key.name)
        return what

    # ------------------------------------------------------------------ audit mode

    def _load_audit(self) -> None:
        if self.audit_path is None:
            return
        try:
            data = json.loads(self.audit_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            self._emit("Warning", "AuditSettings", str(self.audit_path), f"unreadable, audit mode off: {e}")
            return
        self.node_audit = bool(data.get("node", False))
        self.host_audit = bool(data.get("host", False))
        self.audit_namespaces = frozenset(data.get("namespaces", ()))

    def _set_endpoint_audit(self, endpoint_id: int) -> None:
        self.datapath.set_audit(endpoint_id, self.node_audit)

    def set_audit(self, node: bool, namespaces: Iterable[str] = (), host: bool = False) -> dict[str, Any]:
        """Node audit mode (every endpoint's datapath audit flag) and the namespaces whose policies
        are audited; persisted in the state directory, so a restarted agent keeps them."""
        self.node_audit = bool(node)
        self.audit_namespaces = frozenset(namespaces)
        self.host_audit = bool(host)  # the host endpoint takes it at its next sync (hostendpoint)
        settings = {"node": self.node_audit, "namespaces": sorted(self.audit_namespaces)}
        if self.host_audit:  # only when on: the settings' shape is unchanged without the host firewall
            settings["host"] = True
        if self.audit_path is not None:
            write_private(self.audit_path, json.dumps(settings, indent=1) + "\n")
        self.policy.set_audit_namespaces(self.audit_namespaces | self.annotated_namespaces)
        self._sync_policies(self.policy.take_affected())
        for ep in self.endpoints:
            self._set_endpoint_audit(ep.id)
        namespaces_text = ", ".join(self.audit_namespaces) or "-"
        self._emit(
            "Normal",
            "AuditMode",
            "Node",
            f"node audit {'on' if node else 'off'}; namespaces {namespaces_text}",
        )
        return settings

    def _set_policy(self, key: PolicyKey, pol: Policy) -> None:
        try:
            self.policy.set_policy(key, pol)
        except Exception as e:  # a policy cilia cannot translate must not stop the node
            self._emit("Warning", "PolicyFailed", str(key), f"{type(e).__name__}: {e}")
            log.exception("policy %s", key)
            return
        self._emit("Normal", "PolicyApplied", str(key), "policy translated and applied")

    # ------------------------------------------------------------------ pods ↔ endpoints

    def _converge_pods(
        self, touched: set[PodKey] | None = None, deployments: set[PodKey] | None = None
    ) -> None:
        # The controller looks only at Deployments whose object or pods came or went (all at start),
        # and runs on one node of several only.
        in_charge = self.controller is None or self.controller()
        ops = (
            deployment_ops(self.desired, self.store.revision, deployments)
            if in_charge and (deployments is None or deployments)
            else []
        )
        if ops:
            try:
                self.store.txn(ops)  # the new pod objects come back as events
            except StoreError as e:
                self._emit("Warning", "ControllerFailed", "Deployment", str(e))
        if touched is None:
            keys = set(self.desired.pods) | {e.pod for e in self.endpoints}
        elif self.schedule is None:  # what the batch touched, and pods still without an endpoint
            keys = touched | {k for k in self.desired.pods if self.endpoints.get(k) is None}
        else:
            # Every desired pod was placed when it came (or at start): only this node's are walked.
            keys = touched | {k for k, (_, here) in self._placement.items()
                              if here and self.endpoints.get(k) is None and k in self.desired.pods}
        releases: list[Labels] = []
        ordered = sorted(keys)
        creating = sum(  # _mine remembers each pod's placement: the loop below asks it again for free
            1 for pk in ordered
            if (p := self._mine(pk)) is not None and not p.host_network and self.endpoints.get(pk) is None
        )
        if creating:  # kept after: how the last pass that created pods went
            self.pods_progress = (0, creating)
        for pk in ordered:
            pod = self._mine(pk)
            ep = self.endpoints.get(pk)
            if pod is None and ep is not None:
                releases.append(self._delete_endpoint(ep))
            elif pod is not None and ep is None and not pod.host_network:
                self._create_endpoint(pk, pod)  # a pod that failed counts too: its attempt is over
                self.pods_progress = (self.pods_progress[0] + 1, creating)
            elif pod is not None and ep is not None:
                old = self._relabel(ep, pod)
                if old is not None:
                    releases.append(old)
        if self.on_host_pods is not None:
            self.on_host_pods({k: p for k, p in self.desired.pods.items()
                               if p.host_network and self._mine(k) is not None})
        if releases:
            for labels in releases:
                self.allocator.release(labels)
            self._sync_policies(self.policy.take_affected())

    def _create_endpoint(self, pk: PodKey, pod: Pod) -> None:
        labels = self.identity_labels(pod)
        ident = self.allocator.allocate(labels)
        # Peers learn the new identity before the pod exists.
        self._sync_policies(self.policy.take_affected())
        eid = self.endpoints.new_id()
        ms = self.policy.mapstate(ident, pod)

        hooked: list[RuntimePod] = []

        def before_address(rpod: RuntimePod) -> None:
            hooked.append(rpod)
            self.datapath.attach(rpod.ifindex, eid, ident)
            if self.on_attach is not None:
                self.on_attach(rpod.ifindex)
            self._set_endpoint_audit(eid)
            self.datapath.set_policy(eid, ms)
            for prefix in host_prefixes(rpod.ip):  # its /32 and its IPv6 twin's /128
                self.datapath.upsert_ipcache(prefix, ident)
            for ip in filter(None, (rpod.ip, rpod.ip6)):  # host routing finds it without a fib lookup
                self.datapath.set_local_endpoint(ip, rpod.ifindex)

        try:
            rpod = self.runtime.create(self.desired.raw_pods[pk], before_address)
        except Exception as e:  # any failure (lab, datapath hook) leaves this pod out, not the node
            # The runtime removed what it created; remove what the hook put in the datapath.
            for r in hooked:
                self._undo_attach(r, eid)
            self.allocator.release(labels)
            self._emit("Warning", "FailedCreatePod", f"Pod/{pk}", f"{type(e).__name__}: {e}")
            log.exception("create pod %s", pk)
            return
        self.applied[eid] = ms
        self.endpoints_version += 1
        self.endpoints.put(
            Endpoint(
                eid, pk, rpod.ip, rpod.ifindex, rpod.host_ifname, rpod.netns, ident, tuple(labels.strings()),
                ip6=rpod.ip6,
            )
        )
        self._emit("Normal", "Started", f"Pod/{pk}", f"endpoint {eid}, {rpod.ip}, identity {ident}")

    def _undo_attach(self, rpod: RuntimePod, eid: int) -> None:
        """Best effort: forget what a failed pod creation put into the datapath."""
        # Each step on its own: the creation's error is the one reported, whatever fails here.
        for prefix in host_prefixes(rpod.ip):
            with contextlib.suppress(Exception):  # why: see above
                self.datapath.delete_ipcache(prefix)
        with contextlib.suppress(Exception):  # why: see above
            self.datapath.remove_policy(eid)
        with contextlib.suppress(Exception):  # why: see above
            self.datapath.detach(rpod.ifindex)

    def _relabel(self, ep: Endpoint, pod: Pod) -> Labels | None:
        """Move the endpoint to the identity of its current labels. Returns None: the old
        identity is released here, once the ordered datapath update moved the endpoint off it."""
        labels = self.identity_labels(pod)
        if tuple(labels.strings()) == ep.labels:
            return None
        old_labels = Labels.parse(ep.labels)
        ident = self.allocator.allocate(labels)
        # The old identity goes after the datapath update (off the path to enforcement: its store
        # delete is an fsynced commit, and the entries it leaves behind name an identity no local
        # address has any more; the caller's policy sync removes them).
        affected = self.policy.take_affected()
        diffs = {}
        for other in self.endpoints:
            if other.id == ep.id or affected is None or other.identity in affected:
                other_pod = self.desired.pods.get(other.pod)
                if other_pod is None:
                    continue
                new_ident = ident if other.id == ep.id else other.identity
                new_ms = self.policy.mapstate(new_ident, other_pod)
                old_ms = self.applied.get(other.id)
                if old_ms is None or old_ms != new_ms:
                    diffs[other.id] = (old_ms if old_ms is not None else MapState(), new_ms)
        # Peers' new entries first, then the pod's address and endpoint move, then stale entries go.
        self.datapath.update_identity(host_prefixes(ep.ip), ident, diffs, endpoint_id=ep.id)
        for eid, (_, new_ms) in diffs.items():
            self.applied[eid] = new_ms
        self.allocator.release(old_labels)
        self.endpoints.update(ep.pod, identity=ident, labels=tuple(labels.strings()))
        self.endpoints_version += 1
        self._emit("Normal", "Relabelled", f"Pod/{ep.pod}", f"identity {ep.identity} → {ident}")
        return None

    def _delete_endpoint(self, ep: Endpoint) -> Labels:
        for prefix in host_prefixes(ep.ip):
            self.datapath.delete_ipcache(prefix)
        try:
            # Deleting the veth drops its filters; detach first so no program outlives its endpoint.
            self.datapath.detach(ep.ifindex)
            self.runtime.delete(ep.pod)
        finally:
            self.datapath.remove_policy(ep.id)
            self.applied.pop(ep.id, None)
            self.endpoints.remove(ep.pod)
            self.endpoints_version += 1
        self._emit("Normal", "Killing", f"Pod/{ep.pod}", f"endpoint {ep.id} removed")
        return Labels.parse(ep.labels)

    # ------------------------------------------------------------------ datapath sync

    def sync_affected_policies(self) -> None:
        """Bring the endpoints whose policy changed identities affected in sync (the DNS proxy's
        learned addresses gaining or losing fqdn identities)."""
        self._sync_policies(self.policy.take_affected())

    def claim_stored_identities(self) -> None:
        """Give the local allocator the identity numbers the store holds (as :meth:`start` will),
        without writing them again, so that an identity allocated before the start does not take a
        number the store gives another label set."""
        if not isinstance(self.allocator, LocalAllocator):
            return
        self._restoring = True
        try:
            self.allocator.restore({int(r.value["id"]): Labels.parse(r.value["labels"])
                                    for r in self.store.list(Kind.IDENTITIES)})
        finally:
            self._restoring = False

    def _sync_policies(self, identities: set[int] | None) -> None:
        """Bring each endpoint whose identity's policy may have changed (None: all) in sync."""
        for ep in list(self.endpoints):
            if identities is not None and ep.identity not in identities:
                continue
            pod = self.desired.pods.get(ep.pod)
            if pod is None:
                continue
            new = self.policy.mapstate(ep.identity, pod)
            old = self.applied.get(ep.id)
            if old == new:
                continue
            if old is None:
                self.datapath.set_policy(ep.id, new)
            else:
                self.datapath.apply_diff(ep.id, old, new)
            self.applied[ep.id] = new

    def _sync_cidr_identities(self, initial: bool = False) -> None:
        """One CIDR identity (and ipcache entry) per prefix the policies name or a CIDR group lists
        (:mod:`cilia.agent.cidrgroups`)."""
        sync_prefix_identities(self, initial)

    def _sync_ipcache(self) -> None:
        want = dict(self.remote_ipcache)
        want.update({p: e.identity for e in self.endpoints for p in host_prefixes(e.ip)})
        want.update(self.cidr_identities)
        want.update(self.fqdn.ipcache())
        for addr in (str(self.gateway), *self.host_addresses):
            want.update({p: int(ReservedIdentity.HOST) for p in host_prefixes(addr)})
        self.datapath.sync_ipcache(want)

    def _service_infos(self) -> list[ServiceInfo]:
        services = [s for _, s in sorted(self.desired.services.items())]
        return service_infos(services, self.desired.service_endpoints)

    # ------------------------------------------------------------------ misc

    def _mine(self, pk: PodKey) -> Pod | None:
        """The desired pod if it runs on this node (every pod on a single node)."""
        pod = self.desired.pods.get(pk)
        if pod is None:
            self._placement.pop(pk, None)
            return None
        if self.schedule is None:
            return pod
        raw = self.desired.raw_pods.get(pk) or {}
        wanted = str((raw.get("spec") or {}).get("nodeName") or "")
        placed = self._placement.get(pk)
        if placed is None or placed[0] != wanted:
            placed = (wanted, self.schedule(pk, raw))
            self._placement[pk] = placed
        return pod if placed[1] else None

    def _synced(self) -> None:
        if self.on_synced is not None:
            self.on_synced()

    def _emit(self, type_: str, reason: str, involved: str, message: str) -> None:
        log.info("%s %s %s: %s", type_, reason, involved, message)
        if self.events is not None:
            self.events.emit(type_, reason, involved, message)


def owner_of_deleted(ev: Event) -> PodKey | None:
    """The Deployment of a pod from its last stored object (the pod is gone from the state)."""
    annotations = (ev.value.get("metadata") or {}).get("annotations") or {}
    owner = annotations.get("cilia.io/owner", "")
    return PodKey(ev.key.namespace, owner.split("/", 1)[1]) if owner.startswith("Deployment/") else None


def _as_event(rec: Record, revision: int) -> Event:
    return Event(EventType.PUT, rec.key, rec.value, revision)
