"""BIG TCP through the datapath on real packets: with the pods' devices as the lab makes them
(192 KiB GSO/GRO, cilia.lab.bigtcp), a bulk transfer's packets cross the source's program and the
host-routed redirect as packets larger than 64 KiB, conntrack counts them whole, and every byte
arrives; with the kernel's 64 KiB limits no packet is larger."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers_bpf import private_datapath
from helpers_netns import GATEWAY, routed_pods

from cilia.datapath.maps.ct import CtEntry
from cilia.lab import bigtcp
from cilia.policy.types import Direction, Entry, Key, RuleRef

pytestmark = pytest.mark.root

ING, EG, TCP, PORT = int(Direction.INGRESS), int(Direction.EGRESS), 6, 7070
FRONT, BACK = 1001, 1002
EPS = {FRONT: 31, BACK: 32}
MIB = 1 << 20
REF = frozenset({RuleRef("CiliumNetworkPolicy", "default", "bulk", "ingress", 0)})

# counts what it receives on each connection and answers the count
SERVER = ("import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind((sys.argv[1],7070));s.listen()\n"
          "while True:\n c,_=s.accept();n=0\n while (d:=c.recv(1<<20)):\n  n+=len(d)\n"
          " c.sendall(str(n).encode());c.close()\n")
CLIENT = ("import socket,sys\nc=socket.create_connection((sys.argv[1],7070),2);c.settimeout(10)\n"
          "b=bytes(1<<20)\nfor _ in range(int(sys.argv[2])): c.sendall(b)\n"
          "c.shutdown(socket.SHUT_WR);print(c.recv(100).decode())\n")


def test_big_packets_cross_the_program_whole(tmp_path: Path) -> None:
    with routed_pods(2, first_host=233) as (front, back), private_datapath(tmp_path) as dp:
        dp.upsert_ipcache(f"{GATEWAY}/32", 1)
        for pod, ident in ((front, FRONT), (back, BACK)):
            dp.upsert_ipcache(f"{pod.ip}/32", ident)
            dp.attach(pod.ifindex, EPS[ident], ident)
        dp.set_policy(EPS[FRONT], {Key(0, EG, 0, 0, 0): Entry(False, REF)})
        dp.set_policy(EPS[BACK], {Key(FRONT, ING, TCP, PORT, 16): Entry(False, REF)})
        back.spawn("python3", "-c", SERVER, back.ip)

        def bulk(size: int, mib: int = 32) -> CtEntry:
            for pod in (front, back):
                bigtcp.set_max_sizes("eth0", size, pod.netns)
                bigtcp.set_max_sizes(pod.host_if, size)
            dp.ct.flush()
            for _ in range(50):  # the server may still be starting
                out = front.run("python3", "-c", CLIENT, back.ip, str(mib))
                if out.returncode == 0:
                    break
                time.sleep(0.1)
            assert out.stdout.strip() == str(mib * MIB), out.stderr
            # the connection's entry on front's egress: the data direction's packets and bytes (the
            # tries refused while the server started have entries of their own, of a packet or two)
            return max((e for e in dp.ct.dump(EPS[FRONT]) if e.dport == PORT), key=lambda e: e.bytes)

        big = bulk(bigtcp.BIG_TCP_MAX_SIZE)
        assert big.bytes >= 32 * MIB and big.bytes / big.packets > 64 * 1024, big
        small = bulk(bigtcp.DEFAULT_MAX_SIZE)
        assert small.bytes >= 32 * MIB and small.bytes / small.packets <= 64 * 1024, small
        assert big.packets < small.packets
