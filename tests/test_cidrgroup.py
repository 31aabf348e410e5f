"""CiliumCIDRGroup (cilium.io/v2 and v2alpha1): validation, the labels of prefix identities, offline
trace through cidrGroupRef / cidrGroupSelector (deny, allow with except, absent group), and the agent
moving a group's prefixes to new identities when the group changes, without the policy being
applied again (in-memory store, simulated datapath; the live version is test_cidrgroup_live.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cilia.agent import manifests
from cilia.analyze.cluster import analyse_paths
from cilia.analyze.peers import parse_port
from cilia.analyze.trace import trace
from cilia.identity.cidr import prefix_identity_labels
from cilia.k8s.validate import validate_paths
from cilia.store import Kind
from tests.helpers_analyze import check_golden, run_cli
from tests.test_agent_reconcile import Harness

CLIENT_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "client", "namespace": "default", "labels": {"app": "client"}},
    "spec": {"containers": [{"name": "c", "image": "curl"}]},
    "status": {"podIP": "198.18.0.10"},
}
SERVER_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "server", "namespace": "default", "labels": {"app": "server"}},
    "spec": {"containers": [{"name": "s", "image": "nginx", "ports": [{"containerPort": 80}]}]},
    "status": {"podIP": "198.18.0.11"},
}
CLIENT = {"matchLabels": {"app": "client"}}


def group(name: str, cidrs: list[str], labels: dict[str, str] | None = None,
          version: str = "cilium.io/v2") -> dict:
    meta: dict = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": version, "kind": "CiliumCIDRGroup", "metadata": meta,
            "spec": {"externalCIDRs": cidrs}}


def cnp(name: str, spec: dict) -> dict:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


WORLD_OK = cnp("world-ok", {"endpointSelector": CLIENT, "egress": [{"toEntities": ["world"]}]})


def write(tmp: Path, *docs: dict, name: str = "m.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump_all(docs))
    return path


def verdicts(tmp: Path, docs: list[dict], targets: list[str], src: str = "default/client") -> dict[str, bool]:
    analysis = analyse_paths([write(tmp, *docs)])
    return {t: trace(analysis, src, t, parse_port("80/TCP")).allowed for t in targets}


# --------------------------------------------------------------------------- validation


def test_both_api_versions_validate_and_v2alpha1_is_deprecated(tmp_path: Path) -> None:
    report = validate_paths([write(tmp_path, group("a", ["198.19.5.0/24"]),
                                   group("b", [], version="cilium.io/v2alpha1"))])
    assert report.valid, report.errors
    assert len(report.warnings) == 1
    assert "cilium.io/v2alpha1 CiliumCIDRGroup is deprecated; use cilium.io/v2 CiliumCIDRGroup" in (
        report.warnings[0])


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (group("g", ["198.19.5.1"]),
         [("spec.externalCIDRs[0]", 'Invalid value: "198.19.5.1": spec.externalCIDRs[0] in body must be '
           'of type cidr: "198.19.5.1" (write it as a prefix, e.g. /32)')]),
        (group("g", ["198.19.5.0/33"]),
         [("spec.externalCIDRs[0]", 'Invalid value: "198.19.5.0/33": spec.externalCIDRs[0] in body must '
           'be of type cidr: "198.19.5.0/33"')]),
        ({**group("g", []), "spec": {}}, [("spec.externalCIDRs", "Required value")]),
        ({**group("g", []), "spec": {"externalCIDRs": [], "except": []}},
         [("spec.except", 'unknown field "spec.except"')]),
        (group("Bad_Name", []),
         [("metadata.name", 'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of '
           "lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
           "character")]),
        (group("g", [], {"bad key!": "x"}),
         [("metadata.labels.bad key!", 'Invalid value: "bad key!": name part must consist of alphanumeric '
           "characters, '-', '_' or '.', and must start and end with an alphanumeric character")]),
        ({**group("g", []), "apiVersion": "cilium.io/v1"},
         [("apiVersion", 'no matches for kind "CiliumCIDRGroup" in version "cilium.io/v1"')]),
    ],
)
def test_invalid_groups(tmp_path: Path, doc: dict, expected: list[tuple[str, str]]) -> None:
    report = validate_paths([write(tmp_path, doc)])
    assert [(e.path, e.message) for e in report.errors] == expected


# --------------------------------------------------------------------------- prefix labels


def test_prefix_labels_merge_the_groups_of_containing_prefixes() -> None:
    got = prefix_identity_labels(
        ["198.19.0.0/16", "198.19.5.128/25", "0.0.0.0/0"],
        [("blocked", {"risk": "high"}, ["198.19.5.0/24"]), ("wide", {}, ["198.19.0.0/16"])],
    )
    assert {p: ls.strings() for p, ls in got.items()} == {
        "0.0.0.0/0": ["reserved:world="],
        # named by a policy and a group: both
        "198.19.0.0/16": ["cidr:198.19.0.0/16=", "cidrgroup:io.cilium.policy.cidrgroupname/wide=",
                          "reserved:world="],
        # a group's prefix inherits the cidr label (and groups) of the prefix around it
        "198.19.5.0/24": ["cidr:198.19.0.0/16=", "cidrgroup:io.cilium.policy.cidrgroupname/blocked=",
                          "cidrgroup:io.cilium.policy.cidrgroupname/wide=", "cidrgroup:risk=high",
                          "reserved:world="],
        # an except hole keeps its own cidr label and the groups around it
        "198.19.5.128/25": ["cidr:198.19.5.128/25=", "cidrgroup:io.cilium.policy.cidrgroupname/blocked=",
                            "cidrgroup:io.cilium.policy.cidrgroupname/wide=", "cidrgroup:risk=high",
                            "reserved:world="],
    }


# --------------------------------------------------------------------------- offline trace

TARGETS = ["198.19.5.10", "198.19.5.200", "198.19.6.1"]


def test_egress_deny_through_a_group_ref_denies_its_prefixes(tmp_path: Path) -> None:
    deny = cnp("deny-blocked", {"endpointSelector": CLIENT,
                                "egressDeny": [{"toCIDRSet": [{"cidrGroupRef": "blocked"}]}]})
    docs = [CLIENT_POD, WORLD_OK, group("blocked", ["198.19.5.0/24"]), deny]
    assert verdicts(tmp_path, docs, TARGETS) == {"198.19.5.10": False, "198.19.5.200": False,
                                                 "198.19.6.1": True}
    # the group's document may come anywhere (a group applied after the policy)
    assert verdicts(tmp_path, [CLIENT_POD, WORLD_OK, deny, group("blocked", ["198.19.5.0/24"])],
                    TARGETS) == {"198.19.5.10": False, "198.19.5.200": False, "198.19.6.1": True}


def test_a_group_that_does_not_exist_selects_nothing(tmp_path: Path) -> None:
    deny = cnp("deny-blocked", {"endpointSelector": CLIENT,
                                "egressDeny": [{"toCIDRSet": [{"cidrGroupRef": "blocked"}]}]})
    allow = cnp("allow-group", {"endpointSelector": CLIENT,
                                "egress": [{"toCIDRSet": [{"cidrGroupRef": "blocked"}]}]})
    assert verdicts(tmp_path, [CLIENT_POD, WORLD_OK, deny], TARGETS) == dict.fromkeys(TARGETS, True)
    assert verdicts(tmp_path, [CLIENT_POD, allow], TARGETS) == dict.fromkeys(TARGETS, False)


def test_allow_through_a_group_ref_with_an_except(tmp_path: Path) -> None:
    allow = cnp("allow-group", {"endpointSelector": CLIENT, "egress": [{"toCIDRSet": [
        {"cidrGroupRef": "partners", "except": ["198.19.5.128/25"]}]}]})
    docs = [CLIENT_POD, group("partners", ["198.19.5.0/24", "198.19.6.0/24"]), allow]
    assert verdicts(tmp_path, docs, TARGETS) == {"198.19.5.10": True, "198.19.5.200": False,
                                                 "198.19.6.1": True}


def test_group_selector_matches_the_groups_labels(tmp_path: Path) -> None:
    deny = cnp("deny-risky", {"endpointSelector": CLIENT, "egressDeny": [{"toCIDRSet": [
        {"cidrGroupSelector": {"matchLabels": {"risk": "high"}}}]}]})
    docs = [CLIENT_POD, WORLD_OK, group("a", ["198.19.5.0/24"], {"risk": "high"}),
            group("b", ["198.19.6.0/24"], {"risk": "low"}), deny]
    assert verdicts(tmp_path, docs, TARGETS) == {"198.19.5.10": False, "198.19.5.200": False,
                                                 "198.19.6.1": True}


def test_a_longer_policy_prefix_inside_a_group_stays_in_the_group(tmp_path: Path) -> None:
    """An allow naming 198.19.5.7/32 gives that host its own identity; it still carries the group's
    labels, so the group's deny still applies (no fail open through a more specific prefix)."""
    deny = cnp("deny-blocked", {"endpointSelector": CLIENT,
                                "egressDeny": [{"toCIDRSet": [{"cidrGroupRef": "blocked"}]}]})
    host = cnp("allow-host", {"endpointSelector": CLIENT, "egress": [{"toCIDR": ["198.19.5.7/32"]}]})
    docs = [CLIENT_POD, WORLD_OK, host, group("blocked", ["198.19.5.0/24"]), deny]
    assert verdicts(tmp_path, docs, ["198.19.5.7", "198.19.6.1"]) == {"198.19.5.7": False,
                                                                      "198.19.6.1": True}


def test_ingress_from_a_group(tmp_path: Path) -> None:
    allow = cnp("from-partners", {"endpointSelector": {"matchLabels": {"app": "server"}},
                                  "ingress": [{"fromCIDRSet": [{"cidrGroupRef": "partners"}]}]})
    analysis = analyse_paths([write(tmp_path, SERVER_POD, group("partners", ["198.19.7.0/24"]), allow)])
    port = parse_port("80/TCP")
    assert trace(analysis, "198.19.7.9", "default/server", port).allowed
    assert not trace(analysis, "198.19.8.9", "default/server", port).allowed


def test_trace_json_names_the_group_labels(tmp_path: Path) -> None:
    deny = cnp("deny-blocked", {"endpointSelector": CLIENT,
                                "egressDeny": [{"toCIDRSet": [{"cidrGroupRef": "blocked"}]}]})
    analysis = analyse_paths([write(tmp_path, CLIENT_POD, WORLD_OK, group("blocked", ["198.19.5.0/24"]),
                                    deny)])
    flow = trace(analysis, "default/client", "198.19.5.10", parse_port("80/TCP")).to_dict()["flows"][0]
    assert flow["to"]["labels"] == ["cidrgroup:io.cilium.policy.cidrgroupname/blocked=",
                                             "reserved:world="]


# --------------------------------------------------------------------------- agent


def _apply(node: Harness, tmp: Path, *docs: dict, name: str) -> None:
    out = manifests.apply(node.store, [str(write(tmp, *docs, name=name))])
    assert out.ok, out.report.errors
    node.pump()


def test_agent_group_changes_take_effect_without_reapplying_the_policy(tmp_path: Path) -> None:
    node = Harness(tmp_path)
    client = {**CLIENT_POD}
    client.pop("status")
    _apply(node, tmp_path, client, WORLD_OK, name="client.yaml")
    _apply(node, tmp_path, cnp("deny-blocked", {"endpointSelector": CLIENT, "egressDeny": [
        {"toCIDRSet": [{"cidrGroupRef": "blocked", "except": ["198.19.5.128/25"]}]}]}), name="deny.yaml")
    ip = node.ep("client").ip
    # no group yet: the reference selects nothing
    assert [node.allowed(ip, t)[0] for t in TARGETS] == [True, True, True]

    _apply(node, tmp_path, group("blocked", ["198.19.5.0/24"]), name="g1.yaml")
    assert [node.allowed(ip, t) for t in TARGETS] == [(False, 181), (True, 0), (True, 0)]
    ident = node.datapath.prefixes["198.19.5.0/24"]
    assert node.rec.allocator.lookup(ident).strings() == [
        "cidrgroup:io.cilium.policy.cidrgroupname/blocked=", "reserved:world="]

    # the group changes: its prefixes move, the policy is not touched
    _apply(node, tmp_path, group("blocked", ["198.19.6.0/24"]), name="g2.yaml")
    assert [node.allowed(ip, t) for t in TARGETS] == [(True, 0), (True, 0), (False, 181)]
    assert "198.19.5.0/24" not in node.datapath.prefixes

    # the group goes: nothing is denied, and its identities are released
    node.store.delete(Kind.CIDR_GROUPS.key("", "blocked"))
    node.pump()
    assert [node.allowed(ip, t)[0] for t in TARGETS] == [True, True, True]
    assert not any("cidrgroup" in s for ls in node.rec.allocator.identities().values() for s in ls.strings())

    # a restarted agent rebuilds the group's identities from the store
    _apply(node, tmp_path, group("blocked", ["198.19.5.0/24"]), name="g3.yaml")
    node.restart()
    assert [node.allowed(ip, t) for t in TARGETS] == [(False, 181), (True, 0), (True, 0)]


# --------------------------------------------------------------------------- cidrgroup:NAME peers


def test_a_group_peer_stands_for_every_identity_of_its_addresses(tmp_path: Path) -> None:
    deny = cnp("deny-blocked", {"endpointSelector": CLIENT, "egressDeny": [
        {"toCIDRSet": [{"cidrGroupRef": "blocked", "except": ["198.19.5.128/25"]}]}]})
    analysis = analyse_paths([write(tmp_path, CLIENT_POD, WORLD_OK, group("blocked", ["198.19.5.0/24"]),
                                    deny)])
    result = trace(analysis, "default/client", "cidrgroup:blocked", parse_port("80/TCP"))
    assert [(f.dst.name, f.allowed) for f in result.flows] == [
        ("198.19.5.0/24 (cidrgroup blocked)", False), ("198.19.5.128/25 (cidrgroup blocked)", True)]
    assert not result.allowed


def test_verify_a_group_peer(tmp_path: Path) -> None:
    deny = cnp("deny-blocked", {"endpointSelector": CLIENT,
                                "egressDeny": [{"toCIDRSet": [{"cidrGroupRef": "blocked"}]}]})
    manifests = write(tmp_path, CLIENT_POD, WORLD_OK, group("blocked", ["198.19.5.0/24", "198.19.6.0/24"]),
                      deny)
    expect = tmp_path / "expect.yaml"
    expect.write_text("expectations:\n"
                      "- {from: default/client, to: cidrgroup:blocked, port: 443, expect: deny}\n"
                      "- {from: default/client, to: cidrgroup:missing, port: 443, expect: deny}\n")
    code, _, err = run_cli(["verify", "-f", str(manifests), "--expect", str(expect)])
    assert code == 2 and "no CiliumCIDRGroup missing in the manifests (groups: blocked)" in err
    expect.write_text(
        "expectations:\n- {from: default/client, to: cidrgroup:blocked, port: 443, expect: deny}\n")
    code, out, _ = run_cli(["verify", "-f", str(manifests), "--expect", str(expect)])
    assert code == 0, out


# --------------------------------------------------------------------------- learned fqdn addresses


def test_a_learned_fqdn_address_inside_a_group_keeps_the_groups_deny(tmp_path: Path) -> None:
    """A toFQDNs allow gives a learned address an identity of its own; it inherits the labels of the
    group around it (Cilium's parent-prefix labels), so the group's deny still wins — on the node,
    for a group applied before or after the name was learned, and offline."""
    from cilia.agent.fqdn import learn
    from cilia.analyze.learned import NodeDns
    from tests.helpers_fqdn import CLIENT as FQDN_CLIENT
    from tests.helpers_fqdn import Node as FqdnNode
    from tests.helpers_fqdn import policy

    api = "198.19.5.5"
    allow = policy({"matchName": "api.example.com"})
    deny = cnp("deny-blocked", {"endpointSelector": CLIENT,
                                "egressDeny": [{"toCIDRSet": [{"cidrGroupRef": "blocked"}]}]})
    node = FqdnNode(tmp_path / "node")
    node.apply(FQDN_CLIENT, allow, deny)
    learn(node.rec, node.state, "api.example.com", {api: 60})
    assert node.allowed(api)  # no group yet
    node.apply(group("blocked", ["198.19.5.0/24"]))
    assert "cidrgroup:io.cilium.policy.cidrgroupname/blocked=" in (node.labels(api) or [])
    assert not node.allowed(api)

    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all([FQDN_CLIENT, allow, deny, group("blocked",
                                                                                        ["198.19.5.0/24"])]))
    analysis = analyse_paths([tmp_path / "m.yaml"], dns=NodeDns(tmp_path / "node", now=1010))
    assert analysis.labels_of(analysis.learned[api][1]).strings() == node.labels(api)
    assert not trace(analysis, "default/client", "fqdn:api.example.com", parse_port("80/TCP")).allowed

    node.store.delete(Kind.CIDR_GROUPS.key("", "blocked"))
    node.apply()
    assert node.allowed(api)


# --------------------------------------------------------------------------- connectivity


def test_connectivity_has_a_column_per_group_identity(tmp_path: Path) -> None:
    deny = cnp("deny-blocked", {"endpointSelector": CLIENT, "egressDeny": [
        {"toCIDRSet": [{"cidrGroupRef": "blocked", "except": ["198.19.5.128/25"]}]}]})
    manifests = write(tmp_path, CLIENT_POD, WORLD_OK, group("blocked", ["198.19.5.0/24"]), deny)
    code, text, _ = run_cli(["connectivity", "-f", str(manifests)])
    assert code == 0
    check_golden("connectivity", "cidrgroup.txt", text)
    _, out, _ = run_cli(["connectivity", "-f", str(manifests), "-o", "json"])
    allowed = json.loads(out)["allowed"]["other"]["default/client"]
    assert "198.19.5.0/24 (cidrgroup blocked)" not in allowed
    assert "198.19.5.128/25 (cidrgroup blocked)" in allowed and "world" in allowed


# --------------------------------------------------------------------------- lint


def test_lint_warns_about_a_group_no_manifest_defines(tmp_path: Path) -> None:
    from cilia.analyze.lint import lint_paths

    deny = cnp("deny-blocked", {"endpointSelector": CLIENT, "enableDefaultDeny": {"egress": False},
                                "egressDeny": [{"toCIDRSet": [{"cidrGroupRef": "blokced"},
                                                              {"cidrGroupRef": "blocked"}]}]})
    allow = cnp("allow-risky", {"endpointSelector": CLIENT, "egress": [{"toCIDRSet": [
        {"cidrGroupSelector": {"matchLabels": {"risk": "low"}}},
        {"cidrGroupSelector": {"matchLabels": {"risk": "high"}}}]}]})
    report = lint_paths([write(tmp_path, CLIENT_POD, group("blocked", ["198.19.5.0/24"], {"risk": "high"}),
                               deny, allow)])
    found = [(f.path, f.message.split(":")[0]) for f in report.findings if f.rule == "CL015"]
    assert found == [
        ("spec.egressDeny[0].toCIDRSet[0].cidrGroupRef", 'cidrGroupRef "blokced" matches no CiliumCIDRGroup '
         "in these manifests (groups"),
        ("spec.egress[0].toCIDRSet[0].cidrGroupSelector", "cidrGroupSelector matches no CiliumCIDRGroup in "
         "these manifests (groups"),
    ]
