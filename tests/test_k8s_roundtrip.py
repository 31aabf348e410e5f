"""Property: generated valid policies survive load → model → YAML → load unchanged."""

from __future__ import annotations

import io
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cilia.k8s import api
from cilia.k8s.loader import load_text, new_yaml
from cilia.k8s.names import ENTITIES
from cilia.k8s.validate import validate_result

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8).map(
    lambda s: "x" + s
)
label_values = st.one_of(st.just(""), names)
keys = st.one_of(names, names.map(lambda n: f"k8s:{n}"), names.map(lambda n: f"app.example.com/{n}"))
requirements = st.one_of(
    st.fixed_dictionaries(
        {
            "key": keys,
            "operator": st.sampled_from(["In", "NotIn"]),
            "values": st.lists(names, min_size=1, max_size=3),
        }
    ),
    st.fixed_dictionaries({"key": keys, "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
)
selectors = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(keys, label_values, max_size=3),
        "matchExpressions": st.lists(requirements, max_size=2),
    },
)
cidrs = st.builds(
    lambda a, b, bits: f"198.{18 + a}.{b}.0/{bits}",
    st.integers(0, 1),
    st.integers(0, 255),
    st.integers(24, 32),
)
ports = st.fixed_dictionaries(
    {"port": st.one_of(st.integers(0, 65535).map(str), st.sampled_from(["http", "dns-tcp"]))},
    optional={"protocol": st.sampled_from(["TCP", "UDP", "SCTP", "ANY"]), "endPort": st.integers(0, 65535)},
)
port_rules = st.fixed_dictionaries({"ports": st.lists(ports, min_size=1, max_size=4)})
icmps = st.fixed_dictionaries(
    {
        "fields": st.lists(
            st.fixed_dictionaries(
                {"type": st.one_of(st.integers(0, 255), st.just("EchoRequest"))},
                optional={"family": st.just("IPv4")},
            ),
            min_size=1,
            max_size=3,
        )
    }
)


def peer(prefix: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.fixed_dictionaries({f"{prefix}Endpoints": st.lists(selectors, max_size=2)}),
        st.fixed_dictionaries({f"{prefix}CIDR": st.lists(cidrs, min_size=1, max_size=2)}),
        st.fixed_dictionaries(
            {f"{prefix}CIDRSet": st.lists(st.fixed_dictionaries({"cidr": cidrs}), max_size=2)}
        ),
        st.fixed_dictionaries({f"{prefix}Entities": st.lists(st.sampled_from(ENTITIES), max_size=2)}),
        st.just({}),
    )


def section(prefix: str) -> st.SearchStrategy[dict[str, Any]]:
    extra = st.one_of(
        st.just({}),
        st.fixed_dictionaries({"toPorts": st.lists(port_rules, min_size=1, max_size=2)}),
        st.fixed_dictionaries({"icmps": st.lists(icmps, min_size=1, max_size=1)}),
    )
    return st.builds(lambda p, e: {**p, **e}, peer(prefix), extra)


rules = st.fixed_dictionaries(
    {"endpointSelector": selectors, "ingress": st.lists(section("from"), min_size=1, max_size=2)},
    optional={
        "egress": st.lists(section("to"), max_size=2),
        "egressDeny": st.lists(section("to"), max_size=2),
        "description": names,
        "enableDefaultDeny": st.fixed_dictionaries(
            {}, optional={"ingress": st.booleans(), "egress": st.booleans()}
        ),
    },
)
policies = st.builds(
    lambda name, spec: {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    },
    names,
    rules,
)


def dump(data: Any) -> str:
    out = io.StringIO()
    new_yaml().dump(data, out)
    return out.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies)
def test_valid_policies_round_trip(policy: dict[str, Any]) -> None:
    loaded = load_text(dump(policy), "gen.yaml")
    report = validate_result(loaded)
    assert report.errors == (), [str(e) for e in report.errors]
    [doc] = loaded.documents
    assert doc.data == policy
    model = api.CiliumNetworkPolicy.model_validate(doc.data)
    again = load_text(dump(model.to_yaml_obj()), "again.yaml")
    [doc2] = again.documents
    assert doc2.data == policy
    assert api.CiliumNetworkPolicy.model_validate(doc2.data) == model
