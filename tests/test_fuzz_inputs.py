"""Fuzzing what enters cilia from users (hypothesis, bounded: max_examples and a deadline per target,
well under 30 s in all): the YAML loader and validator, names and labels, label selectors, CIDRs,
flow filters, the agent API's request bodies and the pods' HTTP request heads. Whatever the input,
each raises only its own error type (never a traceback), and what it accepts is what Kubernetes or
Go would accept."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cilia.agent import api as agent_api
from cilia.k8s import api, names
from cilia.k8s.labelsel import selector_findings
from cilia.k8s.loader import load_text
from cilia.k8s.netaddr import cidr_problem, parse_prefix
from cilia.k8s.validate import validate_result
from cilia.lab.httpwire import BadRequest, escape, parse_head
from cilia.observe.filters import (
    FilterError,
    FlowFilter,
    LabelMatch,
    PodMatch,
    parse_duration_ns,
    parse_time_ns,
)

# the deadline catches pathological inputs, not a busy machine (CI shares 2 cores with the lab)
FUZZ = settings(max_examples=100, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SLOW = settings(FUZZ, max_examples=40)  # whole manifests through the loader and validator

# Strings that stress the edges: name characters, separators, controls, non-ASCII digits, newlines.
ALPHABET = st.sampled_from([*"abz09-._/:=*\n\t \x00\x1b²٣éA", "::", "/", "ffff", "10.", "app"])
EDGY = st.lists(ALPHABET, max_size=12).map("".join) | st.text(max_size=20)

KEYS = st.sampled_from(
    ["apiVersion", "kind", "metadata", "name", "namespace", "labels", "annotations", "spec", "specs",
     "endpointSelector", "matchLabels", "matchExpressions", "key", "operator", "values", "ingress",
     "egress", "egressDeny", "fromEndpoints", "toEndpoints", "toCIDR", "toCIDRSet", "cidr", "except",
     "toPorts", "ports", "port", "protocol", "containers", "containerPort", "selector", "template",
     "replicas", "podSelector", "ipBlock", "from", "to", "generateName", "toFQDNs", "matchName"]
)  # fmt: skip
KINDS = st.sampled_from(
    ["Pod", "Namespace", "Deployment", "Service", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy",
     "NetworkPolicy", "Endpoints", "ConfigMap"]
)  # fmt: skip
VERSIONS = {"Deployment": "apps/v1", "CiliumNetworkPolicy": "cilium.io/v2",
            "CiliumClusterwideNetworkPolicy": "cilium.io/v2", "NetworkPolicy": "networking.k8s.io/v1"}
SCALARS = st.none() | st.booleans() | st.integers(-70000, 70000) | st.floats(allow_nan=True) | EDGY
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS | EDGY, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(KINDS)
    meta = draw(st.dictionaries(st.sampled_from(["name", "namespace", "labels", "generateName"]), VALUES,
                                max_size=3))
    if draw(st.booleans()):
        meta["name"] = draw(EDGY)
    doc = {"apiVersion": VERSIONS.get(kind, "v1"), "kind": kind, "metadata": meta}
    doc.update(draw(st.dictionaries(KEYS, VALUES, max_size=3)))
    return doc


@FUZZ_SLOW
@given(st.lists(manifests(), min_size=1, max_size=3))
def test_loader_and_validator_never_raise(docs: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump_all(docs, allow_unicode=True)
    report = validate_result(load_text(text, "fuzz.yaml"))
    for e in report.errors:
        assert "\n" not in str(e) and "\x1b" not in str(e)  # escaped for the terminal
    if report.valid:  # accepted names are Kubernetes names (kinds cilia ignores are not read at all)
        for doc in docs:
            if doc["kind"] == "ConfigMap":
                continue
            name = doc["metadata"].get("name")
            if isinstance(name, str) and name:
                assert names.object_name_errors(doc["kind"], name) == []
            ns = doc["metadata"].get("namespace")
            cluster_scoped = doc["kind"] in ("Namespace", "CiliumClusterwideNetworkPolicy")
            if isinstance(ns, str) and ns and not cluster_scoped:
                assert names.namespace_errors(ns) == []


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_loader_takes_any_text(text: str) -> None:
    validate_result(load_text(text, "fuzz.yaml"))


SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@FUZZ
@given(EDGY)
def test_names_agree_with_the_kubernetes_patterns(value: str) -> None:
    # fullmatch is what Go's anchored patterns mean; the module's \A…\Z must agree with it
    assert names.is_dns1123_subdomain(value) == (len(value) <= 253 and bool(SUBDOMAIN.fullmatch(value)))
    assert names.is_dns1123_label(value) == (len(value) <= 63 and bool(LABEL.fullmatch(value)))
    assert (names.label_value_errors(value) == []) == (
        len(value) <= 63 and bool(re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value))
    )
    names.qualified_name_errors(value)
    names.labels_errors({value: value})
    names.annotations_errors({value: value})


SELECTORS = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(EDGY, EDGY, max_size=3),
        "matchExpressions": st.lists(
            st.fixed_dictionaries(
                {"key": EDGY, "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "in"])},
                optional={"values": st.lists(EDGY, max_size=3)},
            ),
            max_size=3,
        ),
    },
)


@FUZZ
@given(SELECTORS)
def test_label_selectors(raw: dict[str, Any]) -> None:
    from cilia.identity.selector import Selector, SelectorError

    sel = api.LabelSelector.model_validate(raw)
    for cilium in (True, False):
        selector_findings(sel, cilium=cilium)
    with contextlib.suppress(SelectorError):
        Selector.from_api(sel)


CIDRISH = st.one_of(
    EDGY,
    st.ip_addresses().map(str),
    st.builds(lambda a, b, s: f"{a}/{b}{s}", st.ip_addresses(), st.integers(-1, 130),
              st.sampled_from(["", "\n", " ", "0", "/1"])),
)


@FUZZ
@given(CIDRISH)
def test_cidrs(text: str) -> None:
    net = parse_prefix(text)
    problem = cidr_problem(text)
    if net is not None:
        assert problem is None
        assert "\n" not in text and " " not in text
        addr, _, bits = text.partition("/")
        assert ipaddress.ip_address(addr) and 0 <= int(bits) <= net.max_prefixlen
    from cilia.analyze.lintraw import _mapped_v4

    v4 = _mapped_v4(text)
    if v4 is not None:
        assert ipaddress.ip_network(v4).version == 4


@FUZZ
@given(
    st.lists(EDGY, max_size=2),
    st.lists(EDGY, max_size=2),
    st.lists(EDGY | st.integers(-5, 70000), max_size=2),
    st.lists(EDGY, max_size=2), st.lists(EDGY, max_size=2), st.lists(EDGY, max_size=2),
)
def test_flow_filters(verdicts: list[str], pods: list[str], ports: list[Any], labels: list[str],
                      protocols: list[str], times: list[str]) -> None:
    for build in (
        lambda: FlowFilter.build(verdicts=verdicts, from_pods=pods, ports=ports, from_labels=labels,
                                 protocols=protocols),
        lambda: [parse_duration_ns(t) for t in times],
        lambda: [parse_time_ns(t, 10**18) for t in times],
        lambda: [PodMatch.parse(p) for p in pods],
        lambda: [LabelMatch.parse(lb) for lb in labels],
    ):
        with contextlib.suppress(FilterError):
            build()


BODIES = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda d: yaml.safe_dump(d, default_flow_style=True).encode(),
        st.dictionaries(st.sampled_from(["revision", "timeout", "node", "namespaces", "x"]), VALUES,
                        max_size=3),
    ),
    st.sampled_from([b'{"timeout": NaN}', b'{"timeout": -Infinity}', b'{"revision": 1e400}', b"[]", b"null"]),
)


@FUZZ
@given(BODIES)
def test_api_bodies(raw: bytes) -> None:
    for model in (agent_api.WaitRequest, agent_api.AuditRequest):
        try:
            parsed = agent_api._parse(model, raw)
        except agent_api._BadRequest:
            continue
        if isinstance(parsed, agent_api.WaitRequest):
            assert parsed.revision >= 0 and 0 <= parsed.timeout < float("inf")
        else:
            assert all(names.namespace_errors(ns) == [] for ns in parsed.namespaces)


HEAD_LINES = st.sampled_from(
    ["GET / HTTP/1.1", "POST /p HTTP/1.0", "GET / HTTP/1.9", "Host: x", "Content-Length: 5",
     "Content-Length: 1_0", "Transfer-Encoding: chunked", " folded", "User-Agent: \x1b[31m",
     "Connection: close"]
)  # fmt: skip


@FUZZ
@given(st.lists(HEAD_LINES | EDGY, min_size=1, max_size=5), st.binary(max_size=40))
def test_http_heads(lines: list[str], tail: bytes) -> None:
    for head in (("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"), tail + b"\r\n\r\n"):
        try:
            req = parse_head(head, 1024)
        except BadRequest:
            continue
        assert req.version in ("HTTP/1.0", "HTTP/1.1") and 0 <= req.content_length <= 1024
    logged = escape(head.decode("latin-1"))
    assert all(0x20 <= ord(c) < 0x7F for c in logged)
