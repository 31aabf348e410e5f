"""What the Kubernetes API server validates in a ``networking.k8s.io/v1`` NetworkPolicy
(``pkg/apis/networking/validation``), plus the one thing Cilium's parser adds (semantics.md §6).
Paths are relative to ``spec``.
"""

from __future__ import annotations

from cilia.k8s import api
from cilia.k8s.labelsel import Finding, selector_findings
from cilia.k8s.names import K8S_PROTOCOLS, POLICY_TYPES, k8s_port_name_errors
from cilia.k8s.netaddr import parse_prefix
from cilia.k8s.source import FieldPath

_CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def _sub(base: FieldPath, findings: list[Finding]) -> list[Finding]:
    return [(base + p, m) for p, m in findings]


def _supported(values: tuple[str, ...]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def spec_findings(spec: api.NetworkPolicySpec) -> list[Finding]:
    """Every problem of a NetworkPolicy spec."""
    out: list[Finding] = []
    if spec.pod_selector is not None:
        out += _sub(("podSelector",), selector_findings(spec.pod_selector, cilium=False))
    for i, rule in enumerate(spec.ingress or ()):
        out += _rule_findings(("ingress", i), rule.ports, rule.from_, "from")
    for i, rule in enumerate(spec.egress or ()):
        out += _rule_findings(("egress", i), rule.ports, rule.to, "to")
    types = spec.policy_types or []
    if len(types) > 2:
        out.append((("policyTypes",), f"Too many: {len(types)}: must have at most 2 items"))
    for i, t in enumerate(types):
        if t not in POLICY_TYPES:
            out.append(
                (
                    ("policyTypes", i),
                    f'Unsupported value: "{t}": supported values: {_supported(POLICY_TYPES)}',
                )
            )
    return out


def _rule_findings(
    base: FieldPath,
    ports: list[api.NetworkPolicyPort] | None,
    peers: list[api.NetworkPolicyPeer] | None,
    key: str,
) -> list[Finding]:
    out: list[Finding] = []
    for j, port in enumerate(ports or ()):
        out += _sub((*base, "ports", j), _port_findings(port))
    for j, peer in enumerate(peers or ()):
        out += _sub((*base, key, j), _peer_findings(peer))
    return out


def _port_findings(p: api.NetworkPolicyPort) -> list[Finding]:
    out: list[Finding] = []
    if p.protocol is not None and p.protocol not in K8S_PROTOCOLS:
        out.append(
            (
                ("protocol",),
                f'Unsupported value: "{p.protocol}": supported values: {_supported(K8S_PROTOCOLS)}',
            )
        )
    port = p.port
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            out.append((("port",), f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
    elif isinstance(port, str):
        out += [(("port",), f'Invalid value: "{port}": {m}') for m in k8s_port_name_errors(port)]
    if p.end_port is not None:
        if port is None:
            out.append((("endPort",), "Required value: may not be specified when `port` is not specified"))
        elif isinstance(port, str):
            out.append((("endPort",), "Forbidden: may not be specified when `port` is non-numeric"))
        elif p.end_port < port:
            out.append(
                (("endPort",), f"Invalid value: {p.end_port}: must be greater than or equal to `port`")
            )
        if not 1 <= p.end_port <= 65535:
            out.append((("endPort",), f"Invalid value: {p.end_port}: must be between 1 and 65535, inclusive"))
    return out


def _peer_findings(peer: api.NetworkPolicyPeer) -> list[Finding]:
    out: list[Finding] = []
    kinds = sum(1 for v in (peer.pod_selector, peer.namespace_selector) if v is not None)
    if peer.ip_block is not None and kinds:
        out.append(((), "Forbidden: may not specify more than 1 peer type"))
    elif peer.ip_block is None and not kinds:
        out.append(((), "Required value: must specify a peer"))
    if peer.pod_selector is not None:
        out += _sub(("podSelector",), selector_findings(peer.pod_selector, cilium=False))
    if peer.namespace_selector is not None:
        out += _sub(("namespaceSelector",), selector_findings(peer.namespace_selector, cilium=False))
    if peer.ip_block is not None:
        out += _sub(("ipBlock",), _ip_block_findings(peer.ip_block))
    return out


def _ip_block_findings(block: api.IPBlock) -> list[Finding]:
    out: list[Finding] = []
    outer = parse_prefix(block.cidr) if block.cidr else None
    if not block.cidr:
        out.append((("cidr",), "Required value"))
    elif outer is None:
        out.append(
            (
                ("cidr",),
                f'Invalid value: "{block.cidr}": {_CIDR_MSG}',
            )
        )
    for k, exc in enumerate(block.except_ or ()):
        inner = parse_prefix(exc)
        if inner is None:
            out.append(
                (
                    ("except", k),
                    f'Invalid value: "{exc}": {_CIDR_MSG}',
                )
            )
        elif outer is not None and not (
            inner.version == outer.version and inner.subnet_of(outer) and inner.prefixlen > outer.prefixlen  # type: ignore[arg-type]
        ):
            out.append((("except", k), f'Invalid value: "{exc}": must be a strict subset of `cidr`'))
    return out
