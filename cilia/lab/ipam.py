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


def _owner_name(owner: str) -> str:
    # "ns/pod" -> "owner-ns_pod": store names cannot hold "/", Kubernetes names cannot hold "_".
    return "owner-" + owner.replace("/", "_")


class Ipam:
    """Address allocation for one node, persisted in the store.

    Keys (kind ``ipam``): ``<address>`` -> owner, ``owner-<ns>_<pod>`` -> address, and
    ``cursor-node<i>`` -> the last address handed out. Each allocation is one transaction that
    creates the first two and moves the cursor, so it costs a few key reads, not a scan.
    """

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

    def lookup(self, owner: str) -> IPv4Address | None:
        rec = self.store.get(Kind.IPAM.key("", _owner_name(owner)))
        return IPv4Address(rec.value["ip"]) if rec else None

    def allocate(self, owner: str) -> IPv4Address:
        """The owner's address: its existing one, or the next free one after the last handed out."""
        owner_key = Kind.IPAM.key("", _owner_name(owner))
        for _ in range(20):
            existing = self.lookup(owner)
            if existing is not None:
                return existing
            cursor = self.store.get(self._cursor_key)
            last = int(cursor.value["last"]) if cursor else int(self.gateway)
            ip = self._next_free(last)
            key = Kind.IPAM.key("", str(ip))
            try:
                self.store.txn(
                    [
                        Expect(key, 0),
                        Expect(owner_key, 0),
                        Expect(self._cursor_key, cursor.mod_revision if cursor else 0),
                        Put(key, {"owner": owner, "node": self.node_index}),
                        Put(owner_key, {"ip": str(ip)}),
                        Put(self._cursor_key, {"last": int(ip)}),
                    ]
                )
                return ip
            except ConflictError:
                continue  # another writer allocated meanwhile
        raise LabError(f"IPAM for {self.cidr}: could not allocate for {owner} (too much contention)")

    def _next_free(self, last: int) -> IPv4Address:
        first, end = int(self.gateway) + 1, int(self.cidr.broadcast_address)  # end is exclusive
        size = end - first
        start = max(last + 1, first)
        for i in range(size):
            ip = IPv4Address(first + (start - first + i) % size)
            if self.store.get(Kind.IPAM.key("", str(ip))) is None:
                return ip
        raise IpamExhaustedError(f"IPAM: no free address left in {self.cidr}")

    def release(self, ip: IPv4Address) -> None:
        rec = self.store.get(Kind.IPAM.key("", str(ip)))
        if rec is not None:
            self.release_owner(str(rec.value["owner"]))

    def release_owner(self, owner: str) -> None:
        ip = self.lookup(owner)
        if ip is not None:
            self.store.txn([Delete(Kind.IPAM.key("", str(ip)), True),
                            Delete(Kind.IPAM.key("", _owner_name(owner)), True)])
