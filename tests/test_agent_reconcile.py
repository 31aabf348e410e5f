"""State-sequence tests of the agent's reconcile steps (apply → relabel → delete → restart), against
the in-memory store, the address-only pod runtime and the simulated node datapath. No root needed.

Each step asserts the resulting MapStates and ipcache as whole structures, and packets are decided
by :mod:`cilia.datapath.sim` (the kernel lookup mirrored in Python).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cilia.agent import manifests
from cilia.agent.datapaths import SimNodeDatapath
from cilia.agent.desired import PodKey
from cilia.agent.endpoints import EndpointTable
from cilia.agent.events import EventLog
from cilia.agent.reconcile import Reconciler
from cilia.agent.runtime import AddressOnlyRuntime
from cilia.datapath.dualstack import host_prefixes
from cilia.lab.ipam import Ipam
from cilia.policy.types import Direction
from cilia.store import Kind, Store, open_store
from tests.conftest import SEED

TCP = 6
ING, EGR = int(Direction.INGRESS), int(Direction.EGRESS)
A_ID, B_ID, FRONTEND_ID = 256, 257, 258

ALLOW_ANY_IN = ((0, ING, 0, 0, 0), False, ("reserved allow-any-ingress",))
ALLOW_ANY_OUT = ((0, EGR, 0, 0, 0), False, ("reserved allow-any-egress",))
LOCALHOST = ((1, ING, 0, 0, 0), False, ("reserved allow-localhost-ingress",))
DENY_B = ((B_ID, EGR, 0, 0, 0), True, ("CiliumNetworkPolicy default/deny-app-a-to-app-b egressDeny[0]",))
DEFAULT_ALLOW_OUT = ((0, EGR, 0, 0, 0), False, ("reserved default-allow-egress",))


class CountingRuntime(AddressOnlyRuntime):
    """The address-only runtime, counting creations (recovery must not recreate pods)."""

    created = 0

    def create(self, manifest, before_address):  # type: ignore[no-untyped-def]
        type(self).created += 1
        return super().create(manifest, before_address)


class Harness:
    """One node: store + runtime + datapath survive :meth:`restart`, the reconciler does not."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store: Store = open_store(backend="memory")
        self.datapath = SimNodeDatapath()
        CountingRuntime.created = 0
        ipam = Ipam(self.store, 0)
        self.runtime = CountingRuntime(tmp / "pods.json", ipam.allocate, ipam.release_owner, ipam.gateway)
        self.events = EventLog(tmp / "events.jsonl")
        self.restart()

    def restart(self) -> None:
        self.rec = Reconciler(
            self.store,
            self.runtime,
            self.datapath,
            endpoints=EndpointTable(self.tmp / "endpoints.json"),
            events=self.events,
        )
        rev = self.rec.start()
        self.watch = self.store.watch(rev + 1)
        self.pump()

    def pump(self) -> None:
        """Deliver store events until the node is quiet (the agent's own writes come back too)."""
        for _ in range(10):
            evs = self.watch.drain()
            if not evs:
                return
            self.rec.handle(evs)
        raise AssertionError("reconcile did not settle")

    def apply(self, *files: str, fix: bool = False) -> manifests.ApplyOutcome:
        out = manifests.apply(self.store, [str(SEED / f) for f in files], fix=fix)
        self.pump()
        return out

    def label(self, pod: str, **labels: str) -> None:
        key = Kind.PODS.key("default", pod)
        self.store.update(
            key,
            lambda o: {**o, "metadata": {**o["metadata"], "labels": {**o["metadata"]["labels"], **labels}}},
        )
        self.pump()

    def ep(self, prefix: str, ns: str = "default"):  # type: ignore[no-untyped-def]
        found = [e for e in self.rec.endpoints if e.pod.namespace == ns and e.pod.name.startswith(prefix)]
        assert found, prefix
        return found[0] if len(found) == 1 else sorted(found, key=lambda e: e.pod.name)

    def policy(self, eid: int) -> list[tuple]:
        return sorted(
            (tuple(k), e.deny, tuple(sorted(r.describe() for r in e.rules)))
            for k, e in self.datapath.policies[eid].items()
        )

    def allowed(self, src_ip: str, dst_ip: str, port: int = 80) -> tuple[bool, int]:
        ips = {e.ip: e.id for e in self.rec.endpoints}
        v = self.datapath.flow(ips, src_ip, dst_ip, TCP, port)
        return v.allowed, int(v.reason)


@pytest.fixture
def node(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_deployments_become_endpoints_with_identities_and_ipcache(node: Harness) -> None:
    node.apply("app-a.yaml", "app-b.yaml")
    eps = [(str(e.pod), e.ip, e.identity, e.id) for e in node.rec.endpoints]
    assert eps == [
        ("default/app-a-flwmvdl9w9-96snb", "198.18.0.2", A_ID, 1),
        ("default/app-a-flwmvdl9w9-ttf4s", "198.18.0.3", A_ID, 2),
        ("default/app-b-27g9r8vthz-7wk8v", "198.18.0.4", B_ID, 3),
        ("default/app-b-27g9r8vthz-fmw96", "198.18.0.5", B_ID, 4),
    ]
    assert node.datapath.prefixes == {
        "198.18.0.1/32": 1,
        "198.18.0.2/32": A_ID,
        "198.18.0.3/32": A_ID,
        "198.18.0.4/32": B_ID,
        "198.18.0.5/32": B_ID,
        # each address's IPv6 twin (cilia.datapath.dualstack)
        "2001:2::c612:1/128": 1,
        "2001:2::c612:2/128": A_ID,
        "2001:2::c612:3/128": A_ID,
        "2001:2::c612:4/128": B_ID,
        "2001:2::c612:5/128": B_ID,
    }
    for eid in (1, 2, 3, 4):
        assert node.policy(eid) == sorted([ALLOW_ANY_IN, ALLOW_ANY_OUT, LOCALHOST])
    assert node.datapath.endpoints == {
        100001: (1, A_ID),
        100002: (2, A_ID),
        100003: (3, B_ID),
        100004: (4, B_ID),
    }


def test_seed_story_sequence(node: Harness) -> None:
    node.apply("app-a.yaml", "app-b.yaml")
    a0, a1 = node.ep("app-a")
    b0, _ = node.ep("app-b")
    assert node.allowed(a0.ip, b0.ip) == (True, 0)

    # The tutorial's deny as Cilium reads it: app-a -> app-b cut (181), everything else open.
    node.apply("deny-a-to-b-fixed.yaml")
    assert node.policy(a0.id) == sorted([ALLOW_ANY_IN, DEFAULT_ALLOW_OUT, LOCALHOST, DENY_B])
    assert node.policy(b0.id) == sorted([ALLOW_ANY_IN, ALLOW_ANY_OUT, LOCALHOST])
    assert node.allowed(a0.ip, b0.ip) == (False, 181)
    assert node.allowed(b0.ip, a0.ip) == (True, 0)

    # Relabel one app-a pod: a new identity; peers learn it before its address moves.
    node.datapath.log.clear()
    node.label(a0.pod.name, access="frontend")
    a0 = node.ep(a0.pod.name)
    assert a0.identity == FRONTEND_ID
    assert node.datapath.prefixes[f"{a0.ip}/32"] == FRONTEND_ID
    # One ordered datapath update: the pod's own entries and its address move together.
    assert node.datapath.log == [("update_identity", *host_prefixes(a0.ip), str(FRONTEND_ID), str(a0.id))]
    assert node.allowed(a0.ip, b0.ip) == (False, 181)  # still app=app-a: the deny still applies

    # The tutorial's second policy: an ingress rule INTO the frontend pod from app-b on 80/TCP.
    node.apply("allow-frontend-to-b.yaml")
    allow_in = (
        (B_ID, ING, TCP, 80, 16),
        False,
        ("CiliumNetworkPolicy default/allow-frontend-to-app-b ingress[0]",),
    )
    assert node.policy(a0.id) == sorted([DEFAULT_ALLOW_OUT, LOCALHOST, DENY_B, allow_in])
    assert node.allowed(b0.ip, a0.ip, 80) == (True, 0)
    assert node.allowed(b0.ip, a0.ip, 8080) == (False, 133)  # default deny into the frontend pod
    assert node.allowed(a1.ip, a0.ip, 80) == (False, 133)
    assert node.allowed(a0.ip, b0.ip, 80) == (False, 181)  # the tutorial's claim does not hold

    # Remove the deny, add the intended egress allow: frontend -> app-b:80 only.
    node.store.delete(Kind.CNP.key("default", "deny-app-a-to-app-b"))
    node.apply("allow-frontend-egress-to-b.yaml")
    assert node.allowed(a0.ip, b0.ip, 80) == (True, 0)
    assert node.allowed(a0.ip, b0.ip, 443) == (False, 133)
    assert node.allowed(a1.ip, b0.ip, 80) == (True, 0)  # other app-a pods: no policy at all

    kinds = [e.reason for e in node.events.events()]
    assert kinds.count("Started") == 4 and "Relabelled" in kinds and "PolicyApplied" in kinds


def test_deleted_pod_is_replaced_with_new_name_and_address(node: Harness) -> None:
    node.apply("app-a.yaml")
    a0, a1 = node.ep("app-a")
    node.store.delete(Kind.PODS.key("default", a0.pod.name))
    node.pump()
    names = sorted(e.pod.name for e in node.rec.endpoints)
    assert len(names) == 2 and a1.pod.name in names and a0.pod.name not in names
    new = next(e for e in node.rec.endpoints if e.pod.name != a1.pod.name)
    assert new.pod.name.startswith("app-a-flwmvdl9w9-") and new.ip not in (a0.ip, a1.ip)
    assert f"{a0.ip}/32" not in node.datapath.prefixes
    assert a0.id not in node.datapath.policies or a0.id == new.id


def test_scale_and_delete_deployment(node: Harness) -> None:
    node.apply("app-a.yaml")
    key = Kind.DEPLOYMENTS.key("default", "app-a")
    node.store.update(key, lambda o: {**o, "spec": {**o["spec"], "replicas": 3}})
    node.pump()
    assert len(node.rec.endpoints) == 3
    node.store.update(key, lambda o: {**o, "spec": {**o["spec"], "replicas": 1}})
    node.pump()
    assert len(node.rec.endpoints) == 1
    node.store.delete(key)
    node.pump()
    assert len(node.rec.endpoints) == 0 and node.store.list(Kind.PODS) == []
    assert node.datapath.prefixes == dict.fromkeys(host_prefixes("198.18.0.1"), 1)
    # The identity is released with its last pod.
    assert A_ID not in node.rec.allocator.identities() and node.store.list(Kind.IDENTITIES) == []


def test_restart_adopts_endpoints_and_identities_without_recreating(node: Harness) -> None:
    node.apply("app-a.yaml", "app-b.yaml", "deny-a-to-b-fixed.yaml")
    a0, _ = node.ep("app-a")
    node.label(a0.pod.name, access="frontend")
    before_eps = [(str(e.pod), e.id, e.ip, e.identity) for e in node.rec.endpoints]
    before_maps = {eid: node.policy(eid) for eid in node.datapath.policies}
    created = CountingRuntime.created
    node.restart()
    assert [(str(e.pod), e.id, e.ip, e.identity) for e in node.rec.endpoints] == before_eps
    assert {eid: node.policy(eid) for eid in node.datapath.policies} == before_maps
    assert CountingRuntime.created == created
    assert sorted(int(r.value["id"]) for r in node.store.list(Kind.IDENTITIES)) == [A_ID, B_ID, FRONTEND_ID]
    # And the restarted reconciler keeps working incrementally.
    node.apply("allow-frontend-to-b.yaml")
    b0, _ = node.ep("app-b")
    assert node.allowed(b0.ip, node.ep(a0.pod.name).ip, 80) == (True, 0)


def test_restart_after_changes_while_down(node: Harness) -> None:
    node.apply("app-a.yaml")
    node.watch.close()
    manifests.apply(node.store, [str(SEED / "app-b.yaml"), str(SEED / "deny-a-to-b-fixed.yaml")])
    node.store.delete(Kind.DEPLOYMENTS.key("default", "app-a"))
    node.restart()
    assert sorted(e.pod.name.split("-")[1] for e in node.rec.endpoints) == ["b", "b"]
    # app-a's identity was restored, then released once no pod used it; app-b got the next number.
    assert sorted(node.datapath.prefixes.values()) == [1, 1, B_ID, B_ID, B_ID, B_ID]  # /32s and IPv6 twins
    assert sorted(int(r.value["id"]) for r in node.store.list(Kind.IDENTITIES)) == [B_ID]
    b0, _ = node.ep("app-b")
    assert node.policy(b0.id) == sorted([ALLOW_ANY_IN, ALLOW_ANY_OUT, LOCALHOST])


def test_namespace_label_change_reidentifies_its_pods(node: Harness) -> None:
    node.apply("prod-backend-to-database.yaml")
    backend = node.ep("backend", "prod")
    db = node.ep("database", "prod")
    assert node.allowed(backend[0].ip, db.ip, 5432) == (True, 0)
    assert node.allowed(backend[0].ip, db.ip, 80) == (False, 133)
    assert node.allowed(db.ip, backend[0].ip, 80) == (True, 0)
    node.store.update(
        Kind.NAMESPACES.key("", "prod"),
        lambda o: {**o, "metadata": {**o["metadata"], "labels": {"env": "production"}}},
    )
    node.pump()
    env = "k8s:io.cilium.k8s.namespace.labels.env=production"
    assert all(env in e.labels for e in node.rec.endpoints)
    in_use = {n for n, lbls in node.rec.allocator.identities().items() if n > 255}
    assert in_use == {e.identity for e in node.rec.endpoints} and len(in_use) == 2
    assert all(env in node.rec.allocator.lookup(n).strings() for n in in_use)
    # Numbers can be reused (smallest free), so check the datapath by address, not by number.
    assert {p: i for p, i in node.datapath.prefixes.items() if i > 255} == {
        p: e.identity for e in node.rec.endpoints for p in host_prefixes(e.ip)
    }
    assert node.allowed(backend[0].ip, db.ip, 5432) == (True, 0)


def test_policy_change_touches_only_selected_endpoints(node: Harness) -> None:
    node.apply("app-a.yaml", "app-b.yaml")
    node.datapath.log.clear()
    node.apply("allow-frontend-to-b.yaml")  # selects nobody yet (no pod has access=frontend)
    assert [op for op in node.datapath.log if op[0] in ("apply_diff", "set_policy")] == []
    node.apply("deny-a-to-b-fixed.yaml")
    touched = {int(op[1]) for op in node.datapath.log if op[0] in ("apply_diff", "set_policy")}
    assert touched == {e.id for e in node.ep("app-a")}


def test_invalid_stored_object_is_reported_not_fatal(node: Harness) -> None:
    node.store.put(Kind.CNP.key("default", "broken"), {"kind": "CiliumNetworkPolicy", "spec": {"bogus": 1}})
    node.pump()
    node.apply("app-a.yaml")
    assert len(node.rec.endpoints) == 2
    assert any(e.reason == "InvalidObject" and e.type == "Warning" for e in node.events.events())


def test_pod_object_created_by_the_controller(node: Harness) -> None:
    node.apply("app-a.yaml")
    pods = node.store.list(Kind.PODS)
    meta = pods[0].value["metadata"]
    assert meta["annotations"]["cilia.io/owner"] == "Deployment/app-a"
    assert meta["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "app-a"}]
    assert meta["labels"] == {"app": "app-a", "pod-template-hash": "flwmvdl9w9"}
    assert pods[0].value["spec"]["containers"][0]["ports"] == [{"containerPort": 80}]
    assert PodKey("default", pods[0].key.name) in node.rec.desired.pods


EGRESS_TO_CIDR = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: to-world-hosts, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: app-a}}
  egress:
  - toCIDRSet:
    - cidr: 198.19.0.0/16
      except: [198.19.9.0/24]
"""


def test_cidr_policies_get_cidr_identities_in_the_ipcache(node: Harness, tmp_path: Path) -> None:
    node.apply("app-a.yaml")
    a0, _ = node.ep("app-a")
    f = tmp_path / "cidr.yaml"
    f.write_text(EGRESS_TO_CIDR)
    manifests.apply(node.store, [str(f)])
    node.pump()
    local = {p: i for p, i in node.datapath.prefixes.items() if i >= 1 << 24}
    assert sorted(local) == ["198.19.0.0/16", "198.19.9.0/24"]
    assert node.rec.allocator.lookup(local["198.19.0.0/16"]).strings() == [
        "cidr:198.19.0.0/16=",
        "reserved:world=",
    ]
    assert node.allowed(a0.ip, "198.19.1.1") == (True, 0)
    assert node.allowed(a0.ip, "198.19.9.1") == (False, 133)  # the except
    # world, not in the set: an unassigned lab address (anything outside the lab's ranges is the
    # address guard's drop, 250, whatever the policy says)
    assert node.allowed(a0.ip, "198.18.250.1") == (False, 133)
    assert node.allowed(a0.ip, "8.8.8.8") == (False, 250)
    node.store.delete(Kind.CNP.key("default", "to-world-hosts"))
    node.pump()
    assert [i for i in node.datapath.prefixes.values() if i >= 1 << 24] == []
    assert all(i < 1 << 24 for i in node.rec.allocator.identities())
    assert node.allowed(a0.ip, "198.18.250.1") == (True, 0)
    assert node.allowed(a0.ip, "8.8.8.8") == (False, 250)


TO_SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: external-db, namespace: default}
spec:
  ports: [{port: 5432, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: external-db, namespace: default}
subsets:
- addresses: [{ip: 198.19.7.7}]
  ports: [{port: 5432, protocol: TCP}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: to-external-db, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: app-a}}
  egress:
  - toServices:
    - k8sService: {serviceName: external-db, namespace: default}
"""


def test_to_services_of_a_selectorless_service_follow_its_endpoints(node: Harness, tmp_path: Path) -> None:
    node.apply("app-a.yaml")
    a0, _ = node.ep("app-a")
    f = tmp_path / "svc.yaml"
    f.write_text(TO_SERVICES)
    out = manifests.apply(node.store, [str(f)])
    assert out.ok, [str(e) for e in out.report.errors]
    node.pump()
    assert node.datapath.prefixes.get("198.19.7.7/32", 0) >= 1 << 24
    assert node.allowed(a0.ip, "198.19.7.7", 5432) == (True, 0)
    assert node.allowed(a0.ip, "198.19.7.8", 5432) == (False, 133)
    # The backends move: the policy follows them.
    node.store.update(
        Kind.ENDPOINTS.key("default", "external-db"),
        lambda o: {**o, "subsets": [{"addresses": [{"ip": "198.19.7.8"}]}]},
    )
    node.pump()
    assert node.allowed(a0.ip, "198.19.7.8", 5432) == (True, 0)
    assert node.allowed(a0.ip, "198.19.7.7", 5432) == (False, 133)
    assert "198.19.7.7/32" not in node.datapath.prefixes


class FailingOnceRuntime(CountingRuntime):
    """Fails the first creation after the datapath hook ran (as a netlink error after attach would)."""

    failed = False

    def create(self, manifest, before_address):  # type: ignore[no-untyped-def]
        if not type(self).failed:
            type(self).failed = True

            def hook_then_fail(rpod):  # type: ignore[no-untyped-def]
                before_address(rpod)
                raise OSError("netlink: device busy")

            try:
                return super().create(manifest, hook_then_fail)
            finally:
                pod = manifest["metadata"]
                self.delete(PodKey(pod.get("namespace", "default"), pod["name"]))
        return super().create(manifest, before_address)


def test_failed_pod_creation_leaves_nothing_and_is_retried(tmp_path: Path) -> None:
    node = Harness(tmp_path)
    ipam = Ipam(node.store, 0)
    FailingOnceRuntime.failed = False
    node.runtime = FailingOnceRuntime(
        tmp_path / "pods2.json", ipam.allocate, ipam.release_owner, ipam.gateway
    )
    node.restart()
    node.apply("app-b.yaml")
    warnings = [e for e in node.events.events() if e.type == "Warning"]
    assert [(e.reason, e.message) for e in warnings] == [("FailedCreatePod", "OSError: netlink: device busy")]
    # The next batch retries the pod that has no endpoint yet.
    node.store.put(Kind.NAMESPACES.key("", "other"), {"kind": "Namespace", "metadata": {"name": "other"}})
    node.pump()
    assert len(node.rec.endpoints) == 2
    assert sorted(node.datapath.prefixes) == sorted(
        [*host_prefixes("198.18.0.1"), *(p for e in node.rec.endpoints for p in host_prefixes(e.ip))]
    )
    assert sorted(node.datapath.policies) == sorted(e.id for e in node.rec.endpoints)
    assert sorted(i for i, _ in node.datapath.endpoints.values()) == sorted(e.id for e in node.rec.endpoints)


def test_a_pod_that_vanished_from_the_system_is_recreated(node: Harness) -> None:
    node.apply("app-a.yaml")
    a0, _ = node.ep("app-a")
    created = CountingRuntime.created
    del node.runtime._pods[a0.pod]  # its namespace is gone, behind the agent's back
    assert node.rec.check_runtime() == 1
    again = node.ep(a0.pod.name)
    assert (again.identity, again.id) == (a0.identity, a0.id) and CountingRuntime.created == created + 1
    assert a0.pod in node.runtime.existing() and node.datapath.prefixes.get(f"{again.ip}/32") == a0.identity
    assert node.rec.check_runtime() == 0
    assert [e.reason for e in node.events.events() if e.type == "Warning"] == ["PodVanished"]
