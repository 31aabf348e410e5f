"""The address-only pod runtime: pods get an address but no network namespace. The agent's policy
pipeline runs unchanged while verdicts come from the simulated datapath: ``--datapath sim`` nodes
(development without root) and the root-free state-sequence tests. (The network-namespace runtime
over :mod:`cilia.lab` is composed by the ``cilia agent`` command.)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from cilia.agent.desired import PodKey
from cilia.agent.interfaces import BeforeAddress, RuntimePod
from cilia.store.files import write_json

log = logging.getLogger(__name__)


class AddressOnlyRuntime:
    """Pods with an address from ``allocate(owner)`` (released with ``release(owner)``), no
    namespace. Records live in a JSON file (0600, atomic) so a restart adopts them like real pods; a
    file that cannot be read is kept aside as ``<name>.corrupt`` with a warning and the runtime starts
    with no pods (the reconciler then creates the store's pods again)."""

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
        self.recovered: str | None = None  # why the saved pods were unreadable, if they were
        if path.exists():
            try:
                self._load()
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                self._pods.clear()
                self.recovered = f"{path}: {type(e).__name__}: {e}"
                aside = path.with_name(path.name + ".corrupt")
                os.replace(path, aside)
                log.warning("simulated pods unreadable (%s); kept as %s, starting without pods",
                            self.recovered, aside)

    def _load(self) -> None:
        rows = json.loads(self.path.read_text() or "[]")
        if not isinstance(rows, list):
            raise TypeError(f"expected a list of pods, got {type(rows).__name__}")
        for d in rows:
            ns, sep, name = str(d["pod"]).partition("/")
            if not sep:
                raise ValueError(f"pod {d['pod']!r} is not NAMESPACE/NAME")
            rp = RuntimePod(PodKey(ns, name), str(IPv4Address(d["ip"])), int(d["ifindex"]),
                            str(d["host_ifname"]), str(d["netns"]))
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
