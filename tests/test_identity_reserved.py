"""Reserved identities, entities (§3.1, §3.2) and CIDR labels/selectors (§3.3)."""

from __future__ import annotations

import pytest

from cilia.identity.cidr import (
    CIDRError,
    cidr_identity_labels,
    cidr_label,
    cidr_rule_selector,
    cidr_selectors,
)
from cilia.identity.labels import Label, Labels
from cilia.identity.podlabels import pod_identity_labels
from cilia.identity.reserved import (
    ENTITIES,
    RESERVED_LABELS,
    ReservedIdentity,
    UnknownEntityError,
    entity_selectors,
)
from cilia.identity.selector import Selector


def test_reserved_identities_table() -> None:
    assert {int(k): v.strings() for k, v in RESERVED_LABELS.items()} == {
        1: ["reserved:host="],
        2: ["reserved:world="],
        3: ["reserved:unmanaged="],
        4: ["reserved:health="],
        5: ["reserved:init="],
        6: ["reserved:remote-node="],
        7: ["reserved:kube-apiserver=", "reserved:remote-node="],
        8: ["reserved:ingress="],
        9: ["reserved:world-ipv4="],
        10: ["reserved:world-ipv6="],
        11: ["reserved:overlay-to-encrypt="],
    }
    assert ReservedIdentity.WORLD_IPV4.label_name == "world-ipv4"


POD = pod_identity_labels({"app": "a"}, "default")
POD_OTHER_CLUSTER = pod_identity_labels({"app": "a"}, "default", cluster="other")
CIDR_ID = cidr_identity_labels("198.19.1.0/24")
IDENTITIES = {
    "host": RESERVED_LABELS[ReservedIdentity.HOST],
    "world": RESERVED_LABELS[ReservedIdentity.WORLD],
    "world-ipv4": RESERVED_LABELS[ReservedIdentity.WORLD_IPV4],
    "world-ipv6": RESERVED_LABELS[ReservedIdentity.WORLD_IPV6],
    "unmanaged": RESERVED_LABELS[ReservedIdentity.UNMANAGED],
    "health": RESERVED_LABELS[ReservedIdentity.HEALTH],
    "init": RESERVED_LABELS[ReservedIdentity.INIT],
    "remote-node": RESERVED_LABELS[ReservedIdentity.REMOTE_NODE],
    "kube-apiserver": RESERVED_LABELS[ReservedIdentity.KUBE_APISERVER],
    "ingress": RESERVED_LABELS[ReservedIdentity.INGRESS],
    "pod": POD,
    "pod-other-cluster": POD_OTHER_CLUSTER,
    "cidr": CIDR_ID,
}


def selected(entity: str) -> set[str]:
    sels = entity_selectors(entity)
    return {name for name, lbls in IDENTITIES.items() if any(s.matches(lbls) for s in sels)}


@pytest.mark.parametrize(
    ("entity", "expected"),
    [
        ("all", set(IDENTITIES)),
        ("world", {"world", "world-ipv4", "world-ipv6", "cidr"}),
        ("world-ipv4", {"world-ipv4"}),
        ("world-ipv6", {"world-ipv6"}),
        (
            "cluster",
            {"host", "remote-node", "init", "ingress", "health", "unmanaged", "kube-apiserver", "pod"},
        ),
        ("host", {"host"}),
        ("remote-node", {"remote-node", "kube-apiserver"}),  # the apiserver identity is a remote node too
        ("kube-apiserver", {"kube-apiserver"}),
        ("health", {"health"}),
        ("init", {"init"}),
        ("ingress", {"ingress"}),
        ("unmanaged", {"unmanaged"}),
        ("none", set()),
    ],
)
def test_entities(entity: str, expected: set[str]) -> None:
    assert selected(entity) == expected


def test_every_entity_is_mapped_and_unknown_fails() -> None:
    for e in ENTITIES:
        assert entity_selectors(e)
    with pytest.raises(UnknownEntityError, match="unsupported entity: everything"):
        entity_selectors("everything")


def test_cluster_entity_uses_cluster_name() -> None:
    sels = entity_selectors("cluster", cluster="other")
    assert any(s.matches(POD_OTHER_CLUSTER) for s in sels)
    assert not any(s.matches(POD) for s in sels)


# ---------------------------------------------------------------------- CIDR


@pytest.mark.parametrize(
    ("prefix", "dual", "labels"),
    [
        ("10.0.0.0/8", False, ["cidr:10.0.0.0/8=", "reserved:world="]),
        ("10.1.2.3/8", False, ["cidr:10.0.0.0/8=", "reserved:world="]),  # masked
        ("10.1.2.3", False, ["cidr:10.1.2.3/32=", "reserved:world="]),  # bare IP: /32
        ("0.0.0.0/0", False, ["reserved:world="]),
        ("::/0", False, ["reserved:world="]),
        ("10.0.0.0/8", True, ["cidr:10.0.0.0/8=", "reserved:world-ipv4="]),
        ("2001:db8::/32", True, ["cidr:2001-db8--0/32=", "reserved:world-ipv6="]),
        ("::1", False, ["cidr:0--1/128=", "reserved:world="]),
        ("::/0", True, ["reserved:world-ipv6="]),
    ],
)
def test_cidr_identity_labels(prefix: str, dual: bool, labels: list[str]) -> None:
    assert cidr_identity_labels(prefix, dual_stack=dual).strings() == labels


def test_cidr_bad_prefix() -> None:
    with pytest.raises(CIDRError, match="unable to parse CIDR"):
        cidr_label("10.0.0.0/33")


def test_to_cidr_selectors() -> None:
    assert [str(s) for s in cidr_selectors(["10.0.0.0/8", "2001:db8::/32"])] == [
        "cidr:10.0.0.0/8=",
        "cidr:2001-db8--0/32=",
    ]
    assert [str(s) for s in cidr_selectors(["0.0.0.0/0"])] == ["cidr:0.0.0.0/0=", "reserved:world="]
    assert [str(s) for s in cidr_selectors(["0.0.0.0/0", "::/0"], dual_stack=True)] == [
        "cidr:0.0.0.0/0=",
        "cidr:0--0/0=",
        "reserved:world=",
        "reserved:world-ipv4=",
        "reserved:world-ipv6=",
    ]


def test_to_cidr_selects_contained_cidr_identities_only() -> None:
    (sel,) = cidr_selectors(["198.19.0.0/16"])
    assert sel.matches(cidr_identity_labels("198.19.1.0/24"))
    assert sel.matches(cidr_identity_labels("198.19.0.0/16"))
    assert not sel.matches(cidr_identity_labels("198.18.0.0/15"))  # broader
    assert not sel.matches(RESERVED_LABELS[ReservedIdentity.WORLD])
    assert not sel.matches(POD)


def test_cidr_set_with_except() -> None:
    sel = cidr_rule_selector("198.19.0.0/16", ["198.19.5.0/24"])
    assert str(sel) == "cidr:198.19.0.0/16, !cidr:198.19.5.0/24"
    assert sel is not None
    assert sel.matches(cidr_identity_labels("198.19.6.1/32"))
    assert not sel.matches(cidr_identity_labels("198.19.5.1/32"))
    assert not sel.matches(cidr_identity_labels("198.19.5.0/24"))
    assert sel.matches(cidr_identity_labels("198.19.0.0/16"))


def test_cidr_set_all_is_world() -> None:
    sel = cidr_rule_selector("0.0.0.0/0", ["10.0.0.0/8"])
    assert str(sel) == "!cidr:10.0.0.0/8, reserved:world"
    assert sel is not None
    assert sel.matches(RESERVED_LABELS[ReservedIdentity.WORLD])
    assert sel.matches(cidr_identity_labels("198.19.0.1"))
    assert not sel.matches(cidr_identity_labels("10.1.0.0/16"))
    dual = cidr_rule_selector("::/0", dual_stack=True)
    assert str(dual) == "reserved:world-ipv6"


def test_cidr_group_ref_and_none() -> None:
    assert str(cidr_rule_selector(None, group_ref="grp")) == "cidrgroup:io.cilium.policy.cidrgroupname/grp"
    assert cidr_rule_selector(None) is None
    gsel = Selector.from_match({"cidrgroup.team": "a"})
    assert (
        str(cidr_rule_selector(None, ["10.0.0.0/8"], group_selector=gsel))
        == "!cidr:10.0.0.0/8, cidrgroup:team=a"
    )


def test_ipv6_except() -> None:
    sel = cidr_rule_selector("2001:db8::/32", ["2001:db8:1::/48"])
    assert sel is not None
    assert sel.matches(cidr_identity_labels("2001:db8:2::1"))
    assert not sel.matches(cidr_identity_labels("2001:db8:1::1"))
    assert Labels([Label("cidr", "2001-db8-2--1/128")]) == Labels.parse(["cidr:2001-db8-2--1/128"])
