"""DNS between the two redirect paths, on crafted packets (root, BPF_PROG_TEST_RUN): a DNS entry with
a proxy port keeps the destination-rewriting DNS path while the endpoint has a DNS redirect (the
DNS proxy is not transparent), and takes the generic proxy redirect otherwise — with nothing
listening on the proxy port, it is dropped (fail closed) rather than sent to the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_bpf import LO, private_datapath, run
from helpers_packets import UDP, frame

from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.policy.types import Direction, DropReason, Entry, Key, RuleRef

pytestmark = pytest.mark.root

EP, EP_ID, SERVER_ID = 7, 1001, 1002
LOCAL, SERVER = "198.18.1.20", "198.19.0.53"
PROXY_PORT = 15997  # nothing listens there on this machine's loopback (checked below)
RULES = frozenset({RuleRef("CiliumNetworkPolicy", "default", "dns", "egress", 0)})


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[Datapath]:
    with private_datapath(tmp_path) as d:
        d.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
        d.upsert_ipcache(f"{SERVER}/32", SERVER_ID)
        d.set_policy(EP, {Key(SERVER_ID, int(Direction.EGRESS), UDP, 53, 16):
                          Entry(False, RULES, PROXY_PORT)})
        yield d


def _nothing_listens() -> bool:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("0.0.0.0", PROXY_PORT))
    except OSError:
        return False
    finally:
        s.close()
    return True


def test_dns_redirect_map_keeps_the_rewriting_path(dp: Datapath) -> None:
    dp.set_dns_redirect(EP, ("198.18.0.1", 10053))
    passed, events = run(dp, "from_container", frame(LOCAL, SERVER, UDP, sport=5100, dport=53))
    assert passed and [(e.allowed, e.redirected, e.dport) for e in events] == [(True, False, 53)]
    assert dp.dns_origin((LOCAL, 5100), ("198.18.0.1", 10053)) == (SERVER, 53)


def test_without_it_the_generic_redirect_fails_closed(dp: Datapath) -> None:
    if not _nothing_listens():
        pytest.skip(f"something listens on UDP {PROXY_PORT} here")
    passed, events = run(dp, "from_container", frame(LOCAL, SERVER, UDP, sport=5101, dport=53))
    assert not passed
    assert [(e.allowed, e.redirected, e.proxy_port, e.reason) for e in events] == [
        (True, True, PROXY_PORT, DropReason.NONE), (False, False, 0, DropReason.PROXY_LOOKUP_FAILED)]
    assert dp.dns_origin((LOCAL, 5101), ("198.18.0.1", 10053)) is None
    counts = dp.metrics_map.counts()
    assert counts[("egress", "dropped", "Proxy lookup failed")] == 1
    assert ("egress", "forwarded", "") not in counts  # neither forwarded nor redirected
