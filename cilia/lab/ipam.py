"""Pod addresses: node i owns 198.18.<16·i>.0/20; its first address is every veth's gateway.

Allocations live in the store (kind ``ipam``, one key per address) so a restart keeps them and
two writers cannot take the same address. Like Kubernetes' host-local IPAM, allocation moves
round-robin past the last address handed out, so a replacement pod gets a new address.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from cilia.lab.errors import IpamExhaustedError, LabError
from cilia.store import ConflictError, Delete, Expect, Kind, Put, Store

LAB_RANGE = IPv4Network("198.18.0.0/15")
NODES = 15  # 198.18.240.0/20 is infrastructure


def pod_cidr(node_index: int) -> IPv4Network:
    if not 0 <= node_index < NODES:
        raise LabError(f"node index {node_index} out of range 0..{NODES - 1}")
    return IPv4Network(f"198.18.{16 * node_index}.0/20")


def gateway(node_index: int) -> IPv4Address:
    return pod_cidr(node_index).network_address + 1


class Ipam:
    """Address allocation for one node, persisted in the store."""

    def __init__(self, store: Store, node_index: int = 0) -> None:
        self.store = store
        self.node_index = node_index
        self.cidr = pod_cidr(node_index)
        self.gateway = gateway(node_index)
        self._cursor_key = Kind.IPAM.key("", f"cursor-node{node_index}")

    def allocations(self) -> dict[IPv4Address, str]:
        """Address -> owner (``ns/pod``) for this node."""
        out = {}
        for rec in self.store.list(Kind.IPAM):
            if rec.key.name[0].isdigit() and IPv4Address(rec.key.name) in self.cidr:
                out[IPv4Address(rec.key.name)] = str(rec.value["owner"])
        return out

    def allocate(self, owner: str) -> IPv4Address:
        """The owner's address: its existing one, or the next free one after the last handed out."""
        for _ in range(20):
            taken = self.allocations()
            for ip, who in taken.items():
                if who == owner:
                    return ip
            cursor = self.store.get(self._cursor_key)
            last = int(cursor.value["last"]) if cursor else int(self.gateway)
            ip = self._next_free(last, set(taken))
            key = Kind.IPAM.key("", str(ip))
            try:
                self.store.txn(
                    [
                        Expect(key, 0),
                        Expect(self._cursor_key, cursor.mod_revision if cursor else 0),
                        Put(key, {"owner": owner, "node": self.node_index}),
                        Put(self._cursor_key, {"last": int(ip)}),
                    ]
                )
                return ip
            except ConflictError:
                continue  # another writer allocated meanwhile
        raise LabError(f"IPAM for {self.cidr}: could not allocate for {owner} (too much contention)")

    def _next_free(self, last: int, taken: set[IPv4Address]) -> IPv4Address:
        first, end = int(self.gateway) + 1, int(self.cidr.broadcast_address)  # end is exclusive
        size = end - first
        start = max(last + 1, first)
        for i in range(size):
            ip = IPv4Address(first + (start - first + i) % size)
            if ip not in taken:
                return ip
        raise IpamExhaustedError(f"IPAM: no free address left in {self.cidr}")

    def release(self, ip: IPv4Address) -> None:
        self.store.delete(Kind.IPAM.key("", str(ip)), missing_ok=True)

    def release_owner(self, owner: str) -> None:
        self.store.txn([Delete(Kind.IPAM.key("", str(ip)), True) for ip, who in self.allocations().items()
                        if who == owner])
