"""What a node datapath does beyond policy and the ipcache (which every one does).

The kernel datapath has every capability; the simulated one implements every call of the agent's
``NodeDatapath`` protocol but only records what it cannot do, and says so here, so that the agent
starts no proxy or reader thread for it.
"""

from __future__ import annotations

from enum import StrEnum


class Capability(StrEnum):
    EVENTS = "events"  # flow events (drops, verdicts) through read_events
    CONNTRACK = "conntrack"  # a connection table (conntrack_gc, conntrack_peers)
    SERVICES = "services"  # ClusterIP translation (sync_services)
    DNS_REDIRECT = "dns-redirect"  # DNS queries redirected to the node's proxy (set_dns_redirect, …)
    # policy entries' proxy ports send connections to the node's transparent listeners
    # (cilia.proxy.transparent); the DNS proxy then listens transparently too
    PROXY_REDIRECT = "proxy-redirect"
    AUDIT = "audit"  # policy audit mode enforced per endpoint (set_audit)


ALL = frozenset(Capability)
