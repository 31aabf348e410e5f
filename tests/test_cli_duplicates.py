"""Documents that name the same object (issue 15 item 1): as with ``kubectl apply -f``, the later one
replaces the earlier in every analysis command and in ``apply``, with a warning naming both places;
``lint`` reports it as CL016."""

from __future__ import annotations

import json

from cilia.agent import manifests
from cilia.k8s.duplicates import find_duplicates, latest_documents, object_key
from cilia.k8s.loader import load_text
from cilia.store import open_store
from cilia.store.keys import key_for_object
from tests.conftest import REPO
from tests.helpers_analyze import check_golden, run_cli

D = "tests/inputs/duplicates/"
WEB = ["-f", D + "web.yaml"]
POLICIES = ["-f", D + "a-policy.yaml", "-f", D + "b-policy.yaml"]
POLICY_WARNING = (
    f"warning: {D}b-policy.yaml:1: CiliumNetworkPolicy default/web-policy replaces the one at "
    f"{D}a-policy.yaml:1 (the later document of the same kind, namespace and name wins, "
    "as with kubectl apply)"
)
TRACE = ["--from", "entity:world", "--to", "deployment:default/web", "--port", "80"]


def test_trace_uses_the_later_policy() -> None:
    """The issue's example: [world] then [cluster] under one name — Cilium keeps [cluster]: DENIED."""
    rc, out, err = run_cli(["trace", *WEB, *POLICIES, *TRACE])
    assert rc == 1 and "verdict: DENIED" in out
    assert err.splitlines() == [POLICY_WARNING]
    # In the other order the [world] policy is the later one: ALLOWED.
    rc, out, err = run_cli(["trace", *WEB, "-f", D + "b-policy.yaml", "-f", D + "a-policy.yaml", *TRACE])
    assert rc == 0 and "verdict: ALLOWED" in out
    assert "a-policy.yaml:1: CiliumNetworkPolicy default/web-policy replaces the one at" in err


def test_validate_and_verify_warn() -> None:
    rc, out, err = run_cli(["validate", *WEB, *POLICIES])
    assert rc == 0 and out.endswith("valid\n") and err.splitlines() == [POLICY_WARNING]
    rc, out, err = run_cli(["validate", *WEB, *POLICIES, "-o", "json"])
    assert rc == 0 and json.loads(out)["valid"] and err.splitlines() == [POLICY_WARNING]
    expect = REPO / D / "expect.yaml"
    rc, out, err = run_cli(["verify", *WEB, *POLICIES, "--expect", str(expect)])
    assert rc == 0, out + err
    assert POLICY_WARNING in err.splitlines()


def test_connectivity_lists_a_pod_given_twice_once() -> None:
    rc, out, err = run_cli(["connectivity", *WEB, *POLICIES, "-f", D + "client-twice.yaml", "-o", "json"])
    assert rc == 0
    assert err.splitlines() == [
        POLICY_WARNING,
        f"warning: {D}client-twice.yaml:8: Pod default/client replaces the one at {D}client-twice.yaml:2 "
        "(the later document of the same kind, namespace and name wins, as with kubectl apply)",
    ]
    pods = [p for g in json.loads(out)["groups"] for p in g["pods"]]
    assert sorted(pods) == ["default/client", "default/web-d2hfvb7hxz-28xc7"]


def test_lint_reports_cl016_golden() -> None:
    args = ["lint", *WEB, *POLICIES, "-f", D + "client-twice.yaml"]
    rc, out, err = run_cli(args)
    assert rc == 1 and err == ""
    check_golden("lint", "duplicates.txt", out)
    rc, out, _ = run_cli([*args, "-o", "json"])
    check_golden("lint", "duplicates.json", out)
    found = {(f["rule"], f["file"], f["line"]) for f in json.loads(out)["findings"]}
    assert ("CL016", D + "a-policy.yaml", 4) in found
    assert ("CL016", D + "client-twice.yaml", 4) in found
    # The replaced policy's own semantic findings are not reported: only the kept one has rules.
    assert not any(r != "CL016" and file.endswith("a-policy.yaml") for r, file, _ in found)


def test_apply_stores_the_later_document_and_warns() -> None:
    store = open_store(backend="memory")
    outcome = manifests.apply(store, [str(REPO / D / "a-policy.yaml"), str(REPO / D / "b-policy.yaml")])
    assert outcome.ok
    assert any("CiliumNetworkPolicy default/web-policy replaces the one at" in w for w in outcome.warnings)
    stored = store.get(key_for_object({"kind": "CiliumNetworkPolicy", "metadata": {"name": "web-policy"}}))
    assert stored is not None
    assert stored.value["spec"]["ingress"] == [{"fromEntities": ["cluster"]}]


def _docs(text: str) -> list:
    return list(load_text(text).documents)


def test_object_identity() -> None:
    docs = _docs(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n---\n"
        "apiVersion: cilium.io/v2alpha1\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: default}\n"
        "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: other}\n"
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n---\n"
        "apiVersion: example.com/v1\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n---\n"
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: p, namespace: a}\n"
        "---\napiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: p}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {namespace: default}\n"
    )
    assert object_key(docs[0]) == ("cilium.io", "CiliumNetworkPolicy", "default", "p")
    assert object_key(docs[3]) == ("networking.k8s.io", "NetworkPolicy", "default", "p")
    assert object_key(docs[5]) == ("cilium.io", "CiliumClusterwideNetworkPolicy", "", "p")
    assert object_key(docs[7]) is None  # no name: the validator's business
    pairs = [(d.earlier.index, d.later.index) for d in find_duplicates(docs)]
    assert pairs == [(0, 1), (5, 6)]  # version differs, same group: one object; other groups are not
    assert [d.index for d in latest_documents(docs)] == [1, 2, 3, 4, 6, 7]
