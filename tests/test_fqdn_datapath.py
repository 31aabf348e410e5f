"""The datapath's DNS redirection on crafted packets (root, BPF_PROG_TEST_RUN): allowed queries of
an endpoint with a redirect are recorded for the proxy (policy decided on the server first), denied
ones and endpoints without a redirect are not, and the proxy's answer counts as the server's reply;
the same over TCP, for every packet of the connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_bpf import LO, private_datapath, run
from helpers_packets import ACK, SYN, TCP, UDP, frame

from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.policy.types import Direction, Entry, Key, RuleRef

pytestmark = pytest.mark.root

EP, EP_ID, SERVER_ID = 7, 1001, 1002
LOCAL, SERVER, OTHER = "198.18.1.20", "198.19.0.53", "198.19.0.54"
PROXY = ("198.18.0.1", 10053)
ALLOW = Entry(False, frozenset({RuleRef("CiliumNetworkPolicy", "default", "dns", "egress", 0)}))


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[Datapath]:
    with private_datapath(tmp_path) as d:
        d.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
        d.upsert_ipcache(f"{SERVER}/32", SERVER_ID)
        d.set_policy(EP, {Key(SERVER_ID, int(Direction.EGRESS), UDP, 53, 16): ALLOW,
                          Key(SERVER_ID, int(Direction.EGRESS), TCP, 53, 16): ALLOW})
        yield d


def test_allowed_queries_are_redirected_and_answered_as_the_server(dp: Datapath) -> None:
    dp.set_dns_redirect(EP, PROXY)
    assert dp.dns.redirects() == {EP: PROXY}
    passed, events = run(dp, "from_container", frame(LOCAL, SERVER, UDP, sport=5000, dport=53))
    assert passed and [(e.allowed, e.dst, e.dport) for e in events] == [(True, SERVER, 53)]
    assert dp.dns_origin((LOCAL, 5000), PROXY) == (SERVER, 53)
    # the proxy's answer becomes the server's reply before conntrack: no policy verdict needed
    assert run(dp, "to_container", frame(PROXY[0], LOCAL, UDP, sport=PROXY[1], dport=5000)) == (True, [])
    # an answer from the proxy that no query asked for is just traffic from the node, and denied
    passed, events = run(dp, "to_container", frame(PROXY[0], LOCAL, UDP, sport=PROXY[1], dport=5001))
    assert not passed and [(e.src, e.sport) for e in events] == [(PROXY[0], PROXY[1])]


def test_denied_queries_and_endpoints_without_redirect_are_left_alone(dp: Datapath) -> None:
    dp.set_dns_redirect(EP, PROXY)
    assert not run(dp, "from_container", frame(LOCAL, OTHER, UDP, sport=5002, dport=53))[0]
    assert dp.dns_origin((LOCAL, 5002), PROXY) is None
    dp.set_dns_redirect(EP, None)
    assert dp.dns.redirects() == {}
    assert run(dp, "from_container", frame(LOCAL, SERVER, UDP, sport=5003, dport=53))[0]
    assert dp.dns_origin((LOCAL, 5003), PROXY) is None


def test_tcp_queries_are_redirected_packet_by_packet(dp: Datapath) -> None:
    dp.set_dns_redirect(EP, PROXY)
    passed, events = run(dp, "from_container", frame(LOCAL, SERVER, TCP, sport=5100, dport=53, tcp_flags=SYN))
    assert passed and [(e.allowed, e.proto, e.dst, e.dport) for e in events] == [(True, TCP, SERVER, 53)]
    assert (dp.dns_origin((LOCAL, 5100), PROXY, TCP), dp.dns_origin((LOCAL, 5100), PROXY, UDP)) == (
        (SERVER, 53), None)
    # the proxy's SYN-ACK and data come back as the server's replies; the pod's next segments pass too
    syn_ack = frame(PROXY[0], LOCAL, TCP, sport=PROXY[1], dport=5100, tcp_flags=SYN | ACK)
    assert run(dp, "to_container", syn_ack) == (True, [])
    ack = frame(LOCAL, SERVER, TCP, sport=5100, dport=53, tcp_flags=ACK)
    data_back = frame(PROXY[0], LOCAL, TCP, sport=PROXY[1], dport=5100, tcp_flags=ACK)
    assert run(dp, "from_container", ack) == (True, []) and run(dp, "to_container", data_back) == (True, [])
