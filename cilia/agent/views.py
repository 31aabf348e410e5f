"""What ``cilia get`` / ``describe`` show: rows built from the store and the agent's endpoints.

Pure functions of their inputs (store records, the agent's ``/v1/endpoints`` and
``/v1/identities`` answers), so the same views are used by the CLI and checked by golden files.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from cilia.k8s.l7checks import L4_ONLY_ANNOTATION
from cilia.store import Kind, Record

IMAGES_NOTE = (
    "note: images are not pulled; every TCP container port is served by cilia's built-in "
    "nginxdemos/hello-like server, every UDP port by an echo server"
)


@dataclass(frozen=True)
class Table:
    """Column headers and rows of strings, rendered kubectl-style."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def render(self) -> str:
        if not self.rows:
            return ""
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) for i, h in enumerate(self.headers)]
        lines = []
        for row in (self.headers, *self.rows):
            cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
            lines.append("   ".join(cells).rstrip())
        return "\n".join(lines) + "\n"


def _ns_col(all_namespaces: bool, namespace: str) -> tuple[str, ...]:
    return (namespace,) if all_namespaces else ()


def _labels_text(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "<none>"


def endpoints_by_pod(endpoints: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(e["pod"]): e for e in endpoints}


def pod_status(rec: Record, ep: dict[str, Any] | None, agent_up: bool) -> tuple[str, str]:
    """(STATUS, READY) of a pod: Running once its endpoint is ready."""
    n = len(((rec.value.get("spec") or {}).get("containers")) or []) or 1
    if not agent_up:
        return "Unknown", f"0/{n}"
    if ep is None:
        return "Pending", f"0/{n}"
    if ep.get("state") == "ready":
        return "Running", f"{n}/{n}"
    return str(ep.get("state", "Pending")).capitalize(), f"0/{n}"


def _pod_ips(ep: dict[str, Any], wide: bool) -> str:
    """The IP column: podIP; wide, every address of a dual-stack pod (kubectl's custom column of
    ``.status.podIPs[*].ip`` shows them so)."""
    return ",".join(a for a in (ep["ip"], ep.get("ip6", "")) if a) if wide else str(ep["ip"])


def pods_table(
    pods: Sequence[Record],
    endpoints: Iterable[dict[str, Any]],
    *,
    agent_up: bool,
    node: str,
    wide: bool = False,
    all_namespaces: bool = False,
) -> Table:
    eps = endpoints_by_pod(endpoints)
    headers = (
        *(("NAMESPACE",) if all_namespaces else ()),
        "NAME",
        "READY",
        "STATUS",
        "IP",
        "NODE",
        "IDENTITY",
    )
    if wide:
        headers += ("ENDPOINT", "LABELS")
    rows = []
    for rec in pods:
        ep = eps.get(f"{rec.key.namespace}/{rec.key.name}")
        status, ready = pod_status(rec, ep, agent_up)
        row = (
            *_ns_col(all_namespaces, rec.key.namespace),
            rec.key.name,
            ready,
            status,
            _pod_ips(ep, wide) if ep else "<none>",
            ep.get("node", node) if ep else "<none>",  # several nodes: the endpoint's own
            str(ep["identity"]) if ep else "<none>",
        )
        if wide:
            row += (
                str(ep["id"]) if ep else "<none>",
                _labels_text((rec.value.get("metadata") or {}).get("labels")),
            )
        rows.append(row)
    return Table(headers, tuple(rows))


def pod_objects(
    pods: Sequence[Record], endpoints: Iterable[dict[str, Any]], *, agent_up: bool, node: str
) -> list[dict[str, Any]]:
    """Pods as Kubernetes objects with a ``status`` filled in from the endpoint table."""
    eps = endpoints_by_pod(endpoints)
    out = []
    for rec in pods:
        obj = copy.deepcopy(rec.value)
        ep = eps.get(f"{rec.key.namespace}/{rec.key.name}")
        status, _ = pod_status(rec, ep, agent_up)
        st: dict[str, Any] = {"phase": status}
        if ep:
            st.update({"podIP": ep["ip"], "podIPs": [{"ip": a} for a in (ep["ip"], ep.get("ip6")) if a]})
            obj.setdefault("spec", {})["nodeName"] = ep.get("node", node)
            st["cilia"] = {
                "endpointID": ep["id"],
                "identity": ep["identity"],
                "identityLabels": ep["labels"],
                "interface": ep["host_ifname"],
                "netns": ep["netns"],
            }
        obj["status"] = st
        out.append(obj)
    return out


def deployments_table(
    deployments: Sequence[Record],
    pods: Sequence[Record],
    endpoints: Iterable[dict[str, Any]],
    *,
    all_namespaces: bool = False,
    wide: bool = False,
) -> Table:
    eps = endpoints_by_pod(endpoints)
    headers = (*(("NAMESPACE",) if all_namespaces else ()), "NAME", "READY", "UP-TO-DATE", "AVAILABLE")
    if wide:
        headers += ("SELECTOR",)
    rows = []
    for rec in deployments:
        spec = rec.value.get("spec") or {}
        want = int(spec.get("replicas", 1))
        owned = [
            p
            for p in pods
            if p.key.namespace == rec.key.namespace
            and ((p.value.get("metadata") or {}).get("annotations") or {}).get("cilia.io/owner")
            == f"Deployment/{rec.key.name}"
        ]
        ready = sum(
            1 for p in owned if (eps.get(f"{p.key.namespace}/{p.key.name}") or {}).get("state") == "ready"
        )
        row = (
            *_ns_col(all_namespaces, rec.key.namespace),
            rec.key.name,
            f"{ready}/{want}",
            str(len(owned)),
            str(ready),
        )
        if wide:
            row += (_labels_text((spec.get("selector") or {}).get("matchLabels")),)
        rows.append(row)
    return Table(headers, tuple(rows))


def services_table(services: Sequence[Record], *, all_namespaces: bool = False, wide: bool = False) -> Table:
    """kubectl's Service columns; ``wide`` also shows every ClusterIP of a dual-stack Service
    (``spec.clusterIPs``) and its IP families."""
    headers = (
        *(("NAMESPACE",) if all_namespaces else ()),
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        *(("CLUSTER-IPS", "IP-FAMILIES") if wide else ()),
        "PORT(S)",
        "SELECTOR",
    )
    rows = []
    for rec in services:
        spec = rec.value.get("spec") or {}
        ports = (
            ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
            or "<none>"
        )
        rows.append(
            (
                *_ns_col(all_namespaces, rec.key.namespace),
                rec.key.name,
                spec.get("type", "ClusterIP"),
                spec.get("clusterIP", "<none>"),
                *((",".join(spec.get("clusterIPs") or [spec.get("clusterIP") or "<none>"]),
                   ",".join(spec.get("ipFamilies") or []) or "<none>") if wide else ()),
                ports,
                _labels_text(spec.get("selector")),
            )
        )
    return Table(headers, tuple(rows))


def _selector_text(sel: dict[str, Any] | None) -> str:
    if sel is None:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        parts.append(
            f"{e.get('key')} {e.get('operator')} ({','.join(e.get('values') or [])})".replace(" ()", "")
        )
    return ",".join(parts) or "<all>"


def policy_sections(obj: dict[str, Any]) -> str:
    rules = ([obj["spec"]] if obj.get("spec") else []) + list(obj.get("specs") or [])
    if obj.get("kind") == "NetworkPolicy":
        return ",".join((obj.get("spec") or {}).get("policyTypes") or ["Ingress"])
    found = []
    for sec in ("ingress", "ingressDeny", "egress", "egressDeny"):
        if any(r.get(sec) is not None for r in rules):
            found.append(sec)
    return ",".join(found) or "<none>"


def policies_table(policies: Sequence[Record], *, all_namespaces: bool = False, wide: bool = False) -> Table:
    cluster = bool(policies) and not policies[0].key.kind.namespaced
    headers = (*(("NAMESPACE",) if all_namespaces and not cluster else ()), "NAME", "VALID", "SECTIONS")
    if wide:
        headers += ("SELECTOR",)
    rows = []
    for rec in policies:
        obj = rec.value
        spec = obj.get("spec") or {}
        sel = (
            spec.get("podSelector")
            if obj.get("kind") == "NetworkPolicy"
            else spec.get("endpointSelector", spec.get("nodeSelector"))
        )
        l4_only = ((obj.get("metadata") or {}).get("annotations") or {}).get(L4_ONLY_ANNOTATION) == "true"
        row = (
            *_ns_col(all_namespaces and not cluster, rec.key.namespace),
            rec.key.name,
            "True",
            policy_sections(obj) + (" (L7 rules at L4 only)" if l4_only else ""),
        )
        if wide:
            row += (_selector_text(sel),)
        rows.append(row)
    return Table(headers, tuple(rows))


def _enforcement_text(enf: dict[str, Any] | None, direction: str, audit: bool = False) -> str:
    """As ``cilium endpoint list``: an enforced direction under policy audit mode is
    ``Disabled (Audit)`` (policy is computed, drops are only reported)."""
    if not enf:
        return "unknown"
    if not enf.get(direction):
        return "Disabled"
    return "Disabled (Audit)" if audit else "Enabled"


def endpoints_table(
    endpoints: Iterable[dict[str, Any]], *, namespace: str | None, wide: bool = False
) -> Table:
    """``cilium endpoint list``'s shape."""
    headers = ("ENDPOINT", "POLICY (ingress)", "POLICY (egress)", "IDENTITY", "POD", "IPv4", "STATUS")
    if wide:
        headers += ("INTERFACE", "ENTRIES", "LABELS")
    rows = []
    for ep in sorted(endpoints, key=lambda e: e["id"]):
        host = bool(ep.get("host"))  # the node's host endpoint (cilia.agent.hostendpoint)
        if namespace is not None and not host and not str(ep["pod"]).startswith(f"{namespace}/"):
            continue
        enf = ep.get("enforcement")
        row = (
            str(ep["id"]),
            _enforcement_text(enf, "ingress", bool(ep.get("audit"))),
            _enforcement_text(enf, "egress", bool(ep.get("audit"))),
            str(ep["identity"]),
            f"host:{ep.get('node', '')}" if host else str(ep["pod"]),
            ep["ip"],
            ep.get("state", ""),
        )
        if wide:
            row += (
                ep.get("host_ifname", ""),
                str(ep.get("policy_entries", "")),
                ",".join(ep.get("labels", [])),
            )
        rows.append(row)
    return Table(headers, tuple(rows))


def nodes_table(nodes: Iterable[dict[str, Any]]) -> Table:
    """``kubectl get nodes --show-labels``'s NAME and LABELS of the lab's nodes."""
    rows = tuple((str(n["metadata"]["name"]), _labels_text((n.get("metadata") or {}).get("labels")))
                 for n in nodes)
    return Table(("NAME", "LABELS"), rows)


def identities_table(identities: Iterable[dict[str, Any]], *, wide: bool = False) -> Table:
    headers = ("ID", "LABELS") + (("ENDPOINTS",) if wide else ())
    rows = []
    for ident in identities:
        labels = ident.get("labels") or []
        for i, lb in enumerate(labels or [""]):
            first = i == 0
            row = (str(ident["id"]) if first else "", lb)
            if wide:
                row += (",".join(ident.get("endpoints") or []) if first else "",)
            rows.append(row)
    return Table(headers, tuple(rows))


def events_table(events: Iterable[dict[str, Any]]) -> Table:
    headers = ("TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE")
    rows = tuple(
        (e["type"], e["reason"], e["involved"], str(e.get("count", 1)), e["message"]) for e in events
    )
    return Table(headers, rows)


def _rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_object(e: dict[str, Any]) -> dict[str, Any]:
    """An agent event as a Kubernetes core/v1 Event object."""
    kind, _, rest = str(e["involved"]).partition("/")
    namespace, _, name = rest.rpartition("/")
    obj: dict[str, Any] = {"kind": kind, "name": name}
    if namespace:
        obj["namespace"] = namespace
    return {
        "apiVersion": "v1", "kind": "Event", "type": e["type"], "reason": e["reason"],
        "message": e["message"], "involvedObject": obj, "count": e.get("count", 1),
        "source": {"component": "cilia-agent"},
        "firstTimestamp": _rfc3339(e.get("first_timestamp", 0.0)),
        "lastTimestamp": _rfc3339(e.get("last_timestamp", 0.0)),
    }  # fmt: skip


def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": items}


def to_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


STORE_KINDS = {
    "pods": Kind.PODS, "deployments": Kind.DEPLOYMENTS, "services": Kind.SERVICES,
    "cnp": Kind.CNP, "ccnp": Kind.CCNP, "netpol": Kind.KNP, "namespaces": Kind.NAMESPACES,
}  # fmt: skip
