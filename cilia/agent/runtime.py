"""The address-only pod runtime: pods get an address but no network namespace. The agent's policy
pipeline runs unchanged while verdicts come from the simulated datapath: ``--datapath sim`` nodes
(development without root) and the root-free state-sequence tests. (The network-namespace runtime
over :mod:`cilia.lab` is composed by the ``cilia agent`` command.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cilia.agent.desired import PodKey
from cilia.agent.interfaces import BeforeAddress, RuntimePod
from cilia.store.files import write_json


class AddressOnlyRuntime:
    """Pods with an address from ``allocate(owner)`` (released with ``release(owner)``), no
    namespace. Records live in a JSON file so a restart adopts them like real pods."""

    def __init__(
        self,
        path: Path,
        allocate: Callable[[str], IPv4Address],
        release: Callable[[str], None],
        gateway: IPv4Address,
    ) -> None:
        self.path = path
        self._allocate = allocate
        self._release = release
        self._gateway = gateway
        self._pods: dict[PodKey, RuntimePod] = {}
        if path.exists():
            for d in json.loads(path.read_text() or "[]"):
                ns, _, name = d["pod"].partition("/")
                rp = RuntimePod(PodKey(ns, name), d["ip"], d["ifindex"], d["host_ifname"], d["netns"])
                self._pods[rp.pod] = rp

    def _save(self) -> None:
        rows = [{"pod": str(p.pod), "ip": p.ip, "ifindex": p.ifindex, "host_ifname": p.host_ifname,
                 "netns": p.netns} for p in self._pods.values()]
        write_json(self.path, rows, indent=1)

    def existing(self) -> dict[PodKey, RuntimePod]:
        return dict(self._pods)

    def create(self, manifest: dict[str, Any], before_address: BeforeAddress) -> RuntimePod:
        meta = manifest.get("metadata") or {}
        pk = PodKey(str(meta.get("namespace") or "default"), str(meta["name"]))
        ip = self._allocate(str(pk))
        # A stable pseudo ifindex per address: unique on the node, never a real interface.
        ifindex = 100_000 + int(ip) - int(self._gateway)
        rp = RuntimePod(pk, str(ip), ifindex, "", "")
        before_address(rp)
        self._pods[pk] = rp
        self._save()
        return rp

    def delete(self, pod: PodKey) -> None:
        if self._pods.pop(pod, None) is not None:
            self._release(str(pod))
            self._save()

    def teardown(self) -> None:
        for pk in list(self._pods):
            self.delete(pk)
        self.path.unlink(missing_ok=True)
