"""What proxies report to the agent's flow sink (``cilia observe`` turns them into flows)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DnsRecord:
    """One DNS message the proxy handled for a pod: its query (``response`` False) or the answer
    sent back (True). ``refused``: the pod's DNS rules do not allow the name, the proxy answered
    REFUSED itself (a drop). ``query`` is lower case without the trailing dot."""

    time_ns: int  # wall clock
    response: bool
    client: tuple[str, int]
    server: tuple[str, int]
    proto: int  # 17 UDP | 6 TCP
    client_identity: int
    server_identity: int
    query: str
    qtype: int = 1
    ips: tuple[str, ...] = ()
    ttl: int = 0  # the smallest TTL of the answer's records
    rcode: int = 0
    refused: bool = False
    latency_ns: int = 0  # query to answer (responses)
