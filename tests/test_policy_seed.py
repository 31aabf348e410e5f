"""The seed tutorial's story offline, end to end: YAML -> translate -> engine -> datapath sim."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import SEED

from cilia.datapath.sim import Datapath, SimEndpoint
from cilia.identity.allocator import LocalAllocator
from cilia.identity.podlabels import pod_identity_labels
from cilia.k8s import api
from cilia.k8s.record import ValidationError
from cilia.policy.engine import PolicyEngine
from cilia.policy.resolve import DEFAULT_ALLOW
from cilia.policy.translate import translate
from cilia.policy.types import Direction, DropReason, Key, MatchType, RuleRef

TCP = 6
IP = {
    "a1": "198.18.0.10",
    "a2": "198.18.0.11",
    "b1": "198.18.0.20",
    "b2": "198.18.0.21",
    "front": "198.18.0.30",
    "backend": "198.18.1.10",
    "database": "198.18.1.20",
    "other": "198.18.1.30",
}
POD_LABELS = {
    "a1": {"app": "app-a"},
    "a2": {"app": "app-a"},
    "b1": {"app": "app-b"},
    "b2": {"app": "app-b"},
    "front": {"app": "app-a", "access": "frontend"},
}
WORLD_IP = "198.19.0.1"


def policies(path: Path) -> list:
    out = []
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
            out.append(api.CiliumNetworkPolicy.model_validate(doc))
    return out


def cnp_ref(name: str, section: str = "", index: int = -1, ns: str = "default") -> RuleRef:
    return RuleRef("CiliumNetworkPolicy", ns, name, section, index)


class Node:
    """Pods of the tutorial on one node: allocator + engine + datapath sim kept in sync."""

    def __init__(self, pods: dict[str, tuple[str, dict[str, str]]]) -> None:
        self.alloc = LocalAllocator()
        self.engine = PolicyEngine(identities=self.alloc.identities())
        self.dp = Datapath()
        self.ids: dict[str, int] = {}
        for name, (ns, labels) in pods.items():
            self.set_pod(name, ns, labels)

    def set_pod(self, name: str, ns: str, labels: dict[str, str]) -> None:
        ident = self.alloc.allocate(pod_identity_labels(labels, ns))
        self.engine.add_identity(ident, self.alloc.lookup(ident))
        self.engine.add_endpoint(ident)
        self.ids[name] = ident
        self.dp.upsert_endpoint(SimEndpoint(len(self.ids), IP[name], ident, name=name))
        self.sync()

    def apply(self, path: Path) -> None:
        for obj in policies(path):
            self.engine.apply_rules(translate(obj))
        self.sync()

    def sync(self) -> None:
        for ep in self.dp.endpoints.values():
            ep.identity = self.ids[ep.name]
            ep.policy = self.engine.policy(ep.identity).map_state
            self.dp.ipcache.upsert(ep.ip, ep.identity)

    def flow(self, src: str, dst: str, port: int = 80, proto: int = TCP):
        return self.dp.flow(IP.get(src, src), IP.get(dst, dst), proto, port)


@pytest.fixture
def node() -> Node:
    return Node({name: ("default", labels) for name, labels in POD_LABELS.items()})


def test_the_tutorials_deny_is_not_a_cilium_field() -> None:
    with pytest.raises(ValidationError, match="deny"):
        policies(SEED / "deny-a-to-b.yaml")


def test_no_policy_everything_allowed(node: Node) -> None:
    for src in POD_LABELS:
        for dst in POD_LABELS:
            v = node.flow(src, dst)
            assert (
                v.allowed and v.egress.match_type is MatchType.ALL and v.ingress.match_type is MatchType.ALL
            )


def test_corrected_deny_cuts_only_app_a_to_app_b(node: Node) -> None:
    node.apply(SEED / "deny-a-to-b-fixed.yaml")
    v = node.flow("a1", "b1")
    assert not v.allowed and v.ingress is None
    assert v.egress.reason is DropReason.POLICY_DENY
    assert v.egress.key == Key(node.ids["b1"], Direction.EGRESS, 0, 0, 0)
    assert v.egress.entry.rules == {cnp_ref("deny-app-a-to-app-b", "egressDeny", 0)}
    assert node.flow("front", "b2", 443).egress.reason is DropReason.POLICY_DENY  # also app=app-a
    # Everything else stays allowed: egress default deny is off for this policy.
    other = node.flow("a1", WORLD_IP)
    assert other.allowed and other.egress.entry.rules == {DEFAULT_ALLOW[Direction.EGRESS]}
    assert node.flow("a1", "a2").allowed
    assert node.flow("b1", "a1").allowed
    pol = node.engine.policy(node.ids["a1"])
    assert pol.enforced == (False, True) and pol.default_deny_by == ((), ())


def test_second_policy_admits_app_b_into_the_frontend_pod_on_80_only(node: Node) -> None:
    node.apply(SEED / "deny-a-to-b-fixed.yaml")
    node.apply(SEED / "allow-frontend-to-b.yaml")
    ok = node.flow("b1", "front", 80)
    assert ok.allowed
    assert ok.ingress.match_type is MatchType.L3_L4
    assert ok.ingress.entry.rules == {cnp_ref("allow-frontend-to-app-b", "ingress", 0)}
    dropped = node.flow("b1", "front", 81)
    assert not dropped.allowed and dropped.ingress.reason is DropReason.POLICY_DENIED
    pol = node.engine.policy(node.ids["front"])
    assert pol.default_deny_by[Direction.INGRESS] == (cnp_ref("allow-frontend-to-app-b"),)
    # app-a pods without the label are not selected: their ingress is open.
    assert node.flow("b1", "a1", 81).allowed
    # The frontend pod's egress still has the deny towards app-b.
    assert node.flow("front", "b1").egress.reason is DropReason.POLICY_DENY


def test_relabelled_pod_changes_identity_and_policy(node: Node) -> None:
    node.apply(SEED / "deny-a-to-b-fixed.yaml")
    node.apply(SEED / "allow-frontend-to-b.yaml")
    assert node.flow("b1", "a2", 81).allowed
    before = node.ids["a2"]
    node.set_pod(
        "a2", "default", {"app": "app-a", "access": "frontend"}
    )  # kubectl label pod … access=frontend
    assert node.ids["a2"] == node.ids["front"] != before
    assert node.flow("b1", "a2", 80).allowed
    assert node.flow("b1", "a2", 81).ingress.reason is DropReason.POLICY_DENIED


def test_prod_backend_only_talks_to_database_on_5432() -> None:
    node = Node(
        {
            "backend": ("prod", {"role": "backend"}),
            "database": ("prod", {"role": "database"}),
            "other": ("dev", {"role": "database"}),
        }
    )
    node.apply(SEED / "prod-backend-to-database.yaml")
    ok = node.flow("backend", "database", 5432)
    assert ok.allowed
    assert ok.egress.entry.rules == {cnp_ref("backend-to-database", "egress", 0, ns="prod")}
    assert node.flow("backend", "database", 80).egress.reason is DropReason.POLICY_DENIED
    # role=database in another namespace is not selected by the namespaced peer selector.
    assert node.flow("backend", "other", 5432).egress.reason is DropReason.POLICY_DENIED
    assert node.flow("backend", WORLD_IP, 443).egress.reason is DropReason.POLICY_DENIED
    assert node.flow("database", "backend", 80).allowed
