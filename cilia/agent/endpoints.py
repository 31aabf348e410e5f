"""The endpoint table: one endpoint per local pod (numeric id, address, interfaces, identity).

Persisted as JSON in the state directory on every change, so a restarted agent adopts the pods that
still exist (same endpoint ids, same addresses) instead of recreating them. A file that cannot be
read (truncated by a crash, edited by hand) never stops the agent: it is kept aside as
``endpoints.json.corrupt``, the table starts empty with :attr:`EndpointTable.recovered` set, and the
reconciler rebuilds it from the store, the runtime's pods and the endpoint ids in the pinned maps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cilia.agent.desired import PodKey
from cilia.agent.errors import AgentError
from cilia.agent.interfaces import NodeDatapath
from cilia.store.files import write_private

log = logging.getLogger(__name__)

MAX_ENDPOINT_ID = 0xFFFF
# the top ids are the lab's guard-only devices' (world hosts, a node's underlay: cilia.lab.guard_devices)
GUARD_ENDPOINT_IDS = range(0xFF00, MAX_ENDPOINT_ID + 1)


@dataclass(frozen=True)
class Endpoint:
    """A pod as the datapath knows it. ``identity`` 0 means not yet identified."""

    id: int
    pod: PodKey
    ip: str
    ifindex: int
    host_ifname: str
    netns: str
    identity: int = 0
    labels: tuple[str, ...] = ()  # identity labels, ``source:key=value``
    state: str = "ready"  # creating | ready | failed
    ip6: str = ""  # the IPv6 address of a dual-stack pod

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id, "pod": str(self.pod), "ip": self.ip, "ifindex": self.ifindex,
            "host_ifname": self.host_ifname, "netns": self.netns, "identity": self.identity,
            "labels": list(self.labels), "state": self.state,
        }  # fmt: skip
        if self.ip6:
            out["ip6"] = self.ip6
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Endpoint:
        ns, _, name = str(data["pod"]).partition("/")
        return cls(
            id=int(data["id"]), pod=PodKey(ns, name), ip=str(data["ip"]), ifindex=int(data["ifindex"]),
            host_ifname=str(data["host_ifname"]), netns=str(data["netns"]),
            identity=int(data.get("identity", 0)), labels=tuple(data.get("labels", ())),
            state=str(data.get("state", "ready")), ip6=str(data.get("ip6", "")),
        )  # fmt: skip


class EndpointTableFullError(AgentError, RuntimeError):
    """Every endpoint id is taken."""


class EndpointTable:
    """Endpoints by id and by pod, with smallest-free id allocation and optional persistence."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._by_id: dict[int, Endpoint] = {}
        self._by_pod: dict[PodKey, int] = {}
        self.recovered: str | None = None  # why the saved table was unreadable, if it was
        self._deferring = 0
        self._dirty = False
        # each endpoint's JSON row, kept with the (frozen) Endpoint it was made from: a save after
        # one endpoint changed serializes that one, not all of them (500 pods: most of a relabel)
        self._rows: dict[int, tuple[Endpoint, str]] = {}
        if path is not None and path.exists():
            try:
                self._load(path)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                self._by_id.clear()
                self._by_pod.clear()
                self.recovered = f"{path}: {type(e).__name__}: {e}"
                aside = path.with_name(path.name + ".corrupt")
                os.replace(path, aside)
                log.warning("endpoint table unreadable (%s); kept as %s, rebuilding it from the store, "
                            "the pods and the pinned maps", self.recovered, aside)

    def _load(self, path: Path) -> None:
        items = json.loads(path.read_text() or "[]")
        if not isinstance(items, list):
            raise TypeError(f"expected a list of endpoints, got {type(items).__name__}")
        for item in items:
            ep = Endpoint.from_json(item)
            if not 0 < ep.id <= MAX_ENDPOINT_ID or ep.id in self._by_id or ep.pod in self._by_pod:
                raise ValueError(f"endpoint {ep.id} ({ep.pod}): id out of range or duplicated")
            self._by_id[ep.id] = ep
            self._by_pod[ep.pod] = ep.id

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(sorted(self._by_id.values(), key=lambda e: e.id))

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, pod: PodKey) -> Endpoint | None:
        eid = self._by_pod.get(pod)
        return self._by_id.get(eid) if eid is not None else None

    def by_id(self, eid: int) -> Endpoint | None:
        return self._by_id.get(eid)

    def by_ip(self) -> dict[str, Endpoint]:
        return {e.ip: e for e in self._by_id.values()}

    def new_id(self) -> int:
        for eid in range(1, GUARD_ENDPOINT_IDS.start):
            if eid not in self._by_id:
                return eid
        raise EndpointTableFullError(f"all {GUARD_ENDPOINT_IDS.start - 1} endpoint ids are in use")

    def put(self, ep: Endpoint) -> None:
        old = self._by_pod.get(ep.pod)
        if old is not None and old != ep.id:
            self._by_id.pop(old, None)
        self._by_id[ep.id] = ep
        self._by_pod[ep.pod] = ep.id
        self.save()

    def update(self, pod: PodKey, **changes: Any) -> Endpoint:
        ep = self.get(pod)
        if ep is None:
            raise KeyError(str(pod))
        new = replace(ep, **changes)
        self.put(new)
        return new

    def remove(self, pod: PodKey) -> Endpoint | None:
        eid = self._by_pod.pop(pod, None)
        ep = self._by_id.pop(eid, None) if eid is not None else None
        self.save()
        return ep

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Save once when the block ends instead of on every change (each save is fsynced: a
        restart that adopts N pods writes the table once, not N times)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if not self._deferring and self._dirty:
                self.save()

    def save(self) -> None:
        if self.path is None:
            return
        if self._deferring:
            self._dirty = True
            return
        self._dirty = False
        # Compact and unsorted: this runs on every endpoint change, with hundreds of endpoints.
        rows: dict[int, tuple[Endpoint, str]] = {}
        for e in self._by_id.values():
            row = self._rows.get(e.id)
            if row is None or row[0] is not e:
                row = (e, json.dumps(e.to_json(), separators=(",", ":")))
            rows[e.id] = row
        self._rows = rows
        write_private(self.path, "[" + ",".join(r for _, r in rows.values()) + "]")


def pinned_endpoint_ids(datapath: NodeDatapath) -> dict[int, int]:
    """ifindex → endpoint id as the node datapath's endpoints map holds them (pinned maps outlive the
    agent); empty if the map cannot be read."""
    try:
        return datapath.endpoint_ids()
    except OSError:
        return {}
