"""Apply-time safety of host policies: a host policy that would cut a node's agent from its store.

With the host firewall on, a host policy with an egress section puts the node's own egress in
default deny; on a cluster (``cilia up --nodes N``) each node's agent reaches the lab's etcd over the
node's underlay, so such a policy can silently stop a node from ever learning of the next change
(including the fix). Cilium's docs warn about exactly this (``kube-apiserver``, etcd) and suggest
audit mode first; cilia refuses the apply instead, unless ``--force-host-policy``.

The check asks the same policy engine the agent runs (:class:`cilia.agent.policystate.PolicyState`
with the host firewall on), for every node of the lab with its stored labels, over the host
policies as they would be after the apply: is egress to each etcd endpoint (TCP) allowed? The
etcd address is an external one (not a pod, not a node), so it is the world or a CIDR identity of
its own, which is how the datapath sees it. Replies need no rule (conntrack). The agent's REST API
is a unix socket and its metrics listen on loopback: no host policy reaches them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from cilia.agent.cluster import member_configs
from cilia.agent.config import AgentConfig
from cilia.agent.desired import PolicyKey, parse_policy
from cilia.agent.hostendpoint import HOST_IDENTITY, node_name_of, stored_node_labels
from cilia.agent.policystate import PolicyState
from cilia.datapath.sim import policy_lookup
from cilia.identity.cidr import cidr_identity_labels
from cilia.identity.nodelabels import host_labels
from cilia.identity.reserved import RESERVED_LABELS
from cilia.policy.types import Direction, Proto
from cilia.store import Kind, ObjectKey, Store

FORCE_FLAG = "--force-host-policy"
STORE_IDENTITY = 0x1000001  # a local (CIDR) identity for the store's address in this check only


def store_endpoints(cfg: AgentConfig) -> list[tuple[str, int]]:
    """The (address, port) pairs of the store the agents reach over the network (loopback and a
    local SQLite file are out of any host policy's reach)."""
    out = []
    for ep in cfg.etcd_endpoint_list if cfg.store == "etcd" else []:
        host, _, port = ep.rpartition(":")
        try:
            addr = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            continue
        if not addr.is_loopback:
            out.append((str(addr), int(port)))
    return out


def node_names(cfg: AgentConfig) -> list[str]:
    """The lab's nodes set up with ``cfg``: each cluster member's name, else the one node's."""
    members = member_configs(cfg)
    return [m.node_name for m in members] if members else [node_name_of(cfg)]


def store_lockouts(store: Store, cfg: AgentConfig, applying: Mapping[ObjectKey, dict[str, Any]]) -> list[str]:
    """Why the host policies after this apply would cut some node's agent from its store (one
    message per node and store endpoint; empty: safe, or the host firewall is off)."""
    endpoints = store_endpoints(cfg)
    if not cfg.host_firewall or not endpoints:
        return []
    ccnps = {r.key: r.value for r in store.list(Kind.CCNP)}
    ccnps.update({k: v for k, v in applying.items() if k.kind is Kind.CCNP})
    host_policies = {k: v for k, v in ccnps.items() if "nodeSelector" in (v.get("spec") or {})
                     or any("nodeSelector" in s for s in v.get("specs") or [])}
    if not host_policies:
        return []
    st = PolicyState(enforcement_mode=cfg.enforcement_mode, host_firewall=True, cluster=cfg.cluster)
    for rid, lbls in RESERVED_LABELS.items():
        st.add_identity(int(rid), lbls)
    for key, obj in sorted(host_policies.items()):
        st.set_policy(PolicyKey("CiliumClusterwideNetworkPolicy", "", key.name), parse_policy(obj))
    out = []
    for name in node_names(cfg):
        st.add_identity(HOST_IDENTITY, host_labels(stored_node_labels(store, name)))
        for addr, port in endpoints:
            st.add_identity(STORE_IDENTITY, cidr_identity_labels(f"{addr}/32"))
            v = policy_lookup(st.mapstate(HOST_IDENTITY), STORE_IDENTITY, Direction.EGRESS, Proto.TCP, port)
            if not v.allowed:
                out.append(
                    f"node {name}: its agent could no longer reach its store (etcd at {addr}:{port}/TCP is "
                    f"denied by the node's host egress policy); the node would miss every later change, "
                    f"the fix included. Allow it (e.g. egress toCIDR {addr}/32 on port {port}), try the "
                    f"policy in audit mode first, or apply with {FORCE_FLAG}"
                )
    return out
