"""Peers as kubectl users name them, on top of the PEER forms of :mod:`cilia.analyze.peers`.

* ``TYPE/NAME`` with a resource type as kubectl spells it — ``pod/`` (``po/``, ``pods/``),
  ``deploy/`` (``deployment/``, ``deployments/``), ``svc/`` (``service/``), ``sts/``
  (``statefulset/``) and ``ds/`` (``daemonset/``) — in the namespace of ``-n`` (default
  ``default``). A resource type wins over a namespace of the same name (``pod/x`` is never the pod
  ``x`` of a namespace ``pod``).
* A bare ``NAME`` is a pod in the namespace of ``-n``; ``deployment:NAME`` and ``svc:NAME`` take that
  namespace too. ``NAMESPACE/POD`` and the other PEER forms are unchanged.
* ``sts/NAME`` and ``ds/NAME`` stand for the pods a StatefulSet or DaemonSet of the manifests makes
  (:mod:`cilia.k8s.objects`); without the object, for listed pods named as it names them
  (``NAME-0``, ``NAME-1``, … or ``NAME-xxxxx``, as ``kubectl get pods -o yaml`` gives them).
* Label queries (``--from-labels app=x,team=y``, as ``cilium policy trace -s`` takes labels and
  ``kubectl -l`` selects pods): every pod whose labels match, in one namespace or all of them.
  Each requirement is ``KEY=VALUE`` (``==`` too), ``KEY!=VALUE``, ``KEY`` (exists) or ``!KEY``;
  a key may carry a Cilium source prefix (``k8s:app=x``; none means any source), so the namespace
  and service-account labels of an identity (``io.kubernetes.pod.namespace``) match as well.
"""

from __future__ import annotations

import ipaddress
import re

from cilia.analyze.cluster import Analysis
from cilia.analyze.flow import EndKind, FlowEnd
from cilia.analyze.peers import PeerError, PortSpec, parse_port, parse_proto
from cilia.identity.podlabels import DEFAULT_SERVICE_ACCOUNT, pod_identity_labels
from cilia.identity.selector import Operator, Requirement, Selector, SelectorError, extended_key
from cilia.k8s.frozen import frozen
from cilia.policy.types import Proto

DEFAULT_NAMESPACE = "default"

# kubectl's resource names and short names -> the kind a peer stands for
RESOURCE_TYPES: dict[str, str] = {
    "po": "pod",
    "pod": "pod",
    "pods": "pod",
    "deploy": "deployment",
    "deployment": "deployment",
    "deployments": "deployment",
    "svc": "service",
    "service": "service",
    "services": "service",
    "sts": "statefulset",
    "statefulset": "statefulset",
    "statefulsets": "statefulset",
    "ds": "daemonset",
    "daemonset": "daemonset",
    "daemonsets": "daemonset",
}


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def canonical_peer(text: str, namespace: str | None = None) -> str:
    """``text`` as a PEER argument of :mod:`cilia.analyze.peers` (kubectl forms rewritten with the
    namespace of ``-n``). StatefulSet and DaemonSet names are resolved by :func:`resolve_peer`."""
    raw = text.strip()
    ns = namespace or DEFAULT_NAMESPACE
    head, slash, rest = raw.partition("/")
    kind = RESOURCE_TYPES.get(head.lower()) if slash and ":" not in head else None
    if kind is not None:
        if not rest or "/" in rest:
            raise PeerError(f"bad peer {text!r}: expected {head}/NAME (the namespace comes from -n)")
        if kind == "pod":
            return f"{ns}/{rest}"
        if kind == "deployment":
            return f"deployment:{ns}/{rest}"
        if kind == "service":
            return f"svc:{ns}/{rest}"
        return f"{kind}:{ns}/{rest}"
    prefix, colon, name = raw.partition(":")
    if colon and prefix in ("deployment", "deploy", "svc", "service") and "/" not in name and namespace:
        return f"{prefix}:{ns}/{name}"
    if not slash and not colon and raw and not _is_address(raw):
        return f"{ns}/{raw}"
    return raw


def is_kubectl_form(text: str) -> bool:
    """Is ``text`` a ``TYPE/NAME`` peer (``pod/x``, ``deploy/x``, …)?"""
    head, slash, _ = text.strip().partition("/")
    return bool(slash) and ":" not in head and head.lower() in RESOURCE_TYPES


def expectation_peer(text: str, namespace: str | None) -> str:
    """A ``from``/``to`` of ``cilia verify``'s expectations as a PEER argument: kubectl forms and,
    with ``-n``, bare names in that namespace (other forms unchanged, so reports quote them as
    written)."""
    if namespace is None and not is_kubectl_form(text):
        return text
    return canonical_peer(text, namespace)


def resolve_peer(analysis: Analysis, text: str, namespace: str | None = None) -> list[FlowEnd]:
    """The flow ends a peer argument stands for (kubectl forms included)."""
    return analysis.resolve(canonical_peer(text, namespace))


# --------------------------------------------------------------------------- ports


_PORT_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"  # compiled at first use (re's cache), not at import


@frozen
class PortQuery:
    """A ``--port`` argument: a number (``spec``) or a container port name (``name``, with an
    optional protocol)."""

    text: str
    spec: PortSpec | None = None
    name: str = ""
    proto: Proto | None = None


def parse_port_query(text: str) -> PortQuery:
    """``80/TCP``, ``80``, ``8/ICMP``, or a port name: ``http``, ``dns/UDP``."""
    raw = text.strip()
    head, sep, proto = raw.partition("/")
    if head.isdigit():
        return PortQuery(raw, parse_port(raw))
    name = head.lower()
    if not name or len(name) > 15 or not re.fullmatch(_PORT_NAME, name) or not re.search("[a-z]", name):
        raise PeerError(
            f"bad port {text!r}: expected a number like 80/TCP or a container port name like http"
        )
    return PortQuery(raw, None, name, parse_proto(proto) if sep else None)


# --------------------------------------------------------------------------- labels


@frozen
class LabelQuery:
    """Pods chosen by labels: ``selector`` over identity labels, in ``namespace`` (None: every one)."""

    text: str
    selector: Selector
    namespace: str | None

    def describe(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "every namespace"
        return f"pods with labels {self.text} in {where}"


def parse_labels(text: str) -> Selector:
    """``app=x,team=y`` (``=``/``==``/``!=``, ``KEY``, ``!KEY``; keys may have a source prefix)."""
    reqs: list[Requirement] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise PeerError(f"bad labels {text!r}: an empty requirement (expected KEY=VALUE,KEY=VALUE)")
        try:
            if "!=" in part:
                key, _, value = part.partition("!=")
                reqs.append(Requirement(extended_key(key.strip()), Operator.NOT_IN, (value.strip(),)))
            elif "=" in part:
                key, _, value = part.replace("==", "=", 1).partition("=")
                reqs.append(Requirement.equals(extended_key(key.strip()), value.strip()))
            elif part.startswith("!"):
                reqs.append(Requirement.does_not_exist(extended_key(part[1:].strip())))
            else:
                reqs.append(Requirement.exists(extended_key(part)))
        except SelectorError as exc:
            raise PeerError(f"bad labels {text!r}: {exc}") from None
        if not reqs[-1].label_key:
            raise PeerError(f"bad labels {text!r}: {part!r} has no key")
    return Selector(tuple(reqs))


def label_query(text: str, namespace: str | None) -> LabelQuery:
    return LabelQuery(text, parse_labels(text), namespace)


def resolve_labels(analysis: Analysis, query: LabelQuery) -> list[FlowEnd]:
    """The pods a label query selects; when none does, a new pod with exactly these labels in the
    query's namespace, as ``cilium policy trace -s`` decides for labels (only for ``KEY=VALUE``
    requirements in one namespace: anything else is an error naming the query)."""
    ns = query.namespace
    found = [
        ep
        for ep in analysis.endpoints
        if (ns is None or ep.pod.namespace == ns) and query.selector.matches(ep.labels)
    ]
    if found:
        return [analysis.pod_end(ep) for ep in found]
    new = _new_pod(analysis, query)
    if new is None:
        hint = "" if ns is not None else " (a new pod's labels need a namespace: -n or --from/--to-namespace)"
        raise PeerError(f"no {query.describe()} in the manifests{hint}")
    return [new]


def _new_pod(analysis: Analysis, query: LabelQuery) -> FlowEnd | None:
    """A flow end for a pod that does not exist yet: the identity a pod with the query's labels
    would have in its namespace (None: the query is not a plain set of labels, or the policies were
    already computed without this identity)."""
    ns = query.namespace
    wanted: dict[str, str] = {}
    for r in query.selector.requirements:
        if r.operator is not Operator.IN or len(r.values) != 1 or r.source not in ("any", "k8s"):
            return None
        wanted[r.label_key] = r.values[0]
    if ns is None or not wanted:
        return None
    ns_labels = next((n.label_map for n in analysis.cluster.namespaces if n.name == ns), None)
    labels = pod_identity_labels(wanted, ns, ns_labels, DEFAULT_SERVICE_ACCOUNT, analysis.cluster_name)
    if not query.selector.matches(labels):
        return None  # a label the identity does not keep (the label filter drops it)
    identity = analysis.allocator.by_labels(labels)
    if identity is None:
        if "oracle" in vars(analysis):
            return None  # the policies were resolved for the identities known then
        identity = analysis.allocator.allocate(labels)
    return FlowEnd(f"{ns}/{{{query.text}}} (new pod)", EndKind.POD, identity, labels, namespace=ns)
