"""Identity-relevant label filter (§2.4) and pod endpoint labels (§2.3)."""

from __future__ import annotations

import pytest

from cilia.identity.labelfilter import LabelFilter, LabelFilterError
from cilia.identity.labels import Label, Labels
from cilia.identity.podlabels import pod_identity_labels, sanitized_pod_labels


@pytest.mark.parametrize(
    ("label", "kept"),
    [
        ("k8s:app=web", True),  # no pattern matches: kept (the default config is not an allowlist)
        ("k8s:io.kubernetes.pod.namespace=default", True),  # include longer than `io.kubernetes` exclude
        ("k8s:io.kubernetes.pod.name=web-1", False),
        ("k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default", True),
        ("k8s:io.cilium.k8s.policy.serviceaccount=default", True),  # no exclude matches
        ("k8s:io.cilium.k8s.policy.cluster=default", True),
        ("k8s:app.kubernetes.io/name=web", True),
        ("k8s:kubernetes.io/hostname=node1", False),
        ("k8s:pod-template-hash=abc123", False),
        ("k8s:pod-template-generation=1", False),
        ("k8s:controller-revision-hash=1", False),
        ("k8s:controller-uid=1", False),
        ("k8s:statefulset.kubernetes.io/pod-name=db-0", False),
        ("k8s:apps.kubernetes.io/pod-index=0", False),
        ("k8s:batch.kubernetes.io/job-completion-index=0", False),
        ("k8s:batch.kubernetes.io/controller-uid=1", False),
        ("k8s:failure-domain.beta.kubernetes.io/zone=a", False),
        ("k8s:k8s.io/foo=x", False),
        ("k8s:annotation.foo=x", False),
        ("k8s:etcd_node=x", False),
        ("k8s:my.kubernetes.io=x", True),  # excludes are anchored at the start of the key
        ("reserved:host=", True),
        ("k8s:tier=db", True),
    ],
)
def test_default_filter(label: str, kept: bool) -> None:
    from cilia.identity.labels import parse_label

    assert LabelFilter().is_relevant(parse_label(label)) is kept


def test_extra_include_makes_an_allowlist() -> None:
    f = LabelFilter(["k8s:app"])
    assert f.is_relevant(Label("k8s", "app", "x"))
    assert not f.is_relevant(Label("k8s", "tier", "x"))
    assert f.is_relevant(Label("k8s", "io.kubernetes.pod.namespace", "x"))
    assert f.is_relevant(Label("reserved", "host"))
    # the pattern is source-restricted
    assert not f.is_relevant(Label("container", "app", "x"))


def test_extra_exclude_only() -> None:
    f = LabelFilter(["!tier"])
    assert not f.is_relevant(Label("k8s", "tier", "x"))
    assert f.is_relevant(Label("k8s", "app", "x"))


def test_bad_pattern() -> None:
    with pytest.raises(LabelFilterError, match="empty prefix"):
        LabelFilter(["k8s:!"])
    with pytest.raises(LabelFilterError, match="unterminated"):
        LabelFilter(["(oops"])


def test_split() -> None:
    keep, info = LabelFilter().split(
        [
            Label("k8s", "app", "a"),
            Label("k8s", "pod-template-hash", "h"),
            Label("k8s", "io.kubernetes.pod.name", "p"),
        ]
    )
    assert keep == Labels([Label("k8s", "app", "a")])
    assert info == Labels(
        [Label("k8s", "pod-template-hash", "h"), Label("k8s", "io.kubernetes.pod.name", "p")]
    )


def test_sanitized_pod_labels() -> None:
    assert sanitized_pod_labels(
        {"app": "web", "io.cilium.k8s.policy.cluster": "forged", "io.cilium.k8s.x": "y"},
        "prod",
        {"team": "a", "kubernetes.io/metadata.name": "prod"},
        service_account="web-sa",
        cluster="c1",
    ) == {
        "app": "web",
        "io.cilium.k8s.namespace.labels.team": "a",
        "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": "prod",
        "io.kubernetes.pod.namespace": "prod",
        "io.cilium.k8s.policy.serviceaccount": "web-sa",
        "io.cilium.k8s.policy.cluster": "c1",
    }


def test_pod_identity_labels_seed_pod() -> None:
    labels = pod_identity_labels({"app": "app-a", "pod-template-hash": "5d7f"}, "default")
    assert labels.strings() == [
        "k8s:app=app-a",
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
        "k8s:io.cilium.k8s.policy.cluster=default",
        "k8s:io.kubernetes.pod.namespace=default",
    ]


def test_pod_identity_labels_no_service_account_and_explicit_namespace_labels() -> None:
    labels = pod_identity_labels({"app": "x"}, "ns1", namespace_labels={}, service_account="")
    assert labels.strings() == [
        "k8s:app=x",
        "k8s:io.cilium.k8s.policy.cluster=default",
        "k8s:io.kubernetes.pod.namespace=ns1",
    ]


def test_pods_differing_only_in_excluded_labels_share_labels() -> None:
    a = pod_identity_labels({"app": "x", "pod-template-hash": "1"}, "d")
    b = pod_identity_labels({"app": "x", "pod-template-hash": "2"}, "d")
    assert a == b
