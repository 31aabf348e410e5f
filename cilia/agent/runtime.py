"""Pod runtimes for the agent: the lab (network namespaces, real workloads) and an address-only
runtime for nodes without a kernel datapath (``--datapath sim``) and for root-free tests.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from cilia.agent.desired import PodKey
from cilia.agent.interfaces import BeforeAddress, RuntimePod
from cilia.lab.errors import PodNotFoundError
from cilia.lab.ipam import Ipam
from cilia.lab.node import Lab
from cilia.lab.node import Pod as LabPod
from cilia.store import Store


def _runtime_pod(p: LabPod) -> RuntimePod:
    return RuntimePod(PodKey(p.namespace, p.name), p.ip, p.host_ifindex, p.host_ifname, p.netns)


class LabRuntime:
    """:class:`cilia.agent.interfaces.PodRuntime` over :class:`cilia.lab.node.Lab`."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def existing(self) -> dict[PodKey, RuntimePod]:
        pods = {PodKey(p.namespace, p.name): _runtime_pod(p) for p in self.lab.list_pods()}
        if pods and not self.lab.workloads.running():
            self.lab.restore_workloads()  # the workload daemon died with the machine's last agent
        return pods

    def create(self, manifest: dict[str, Any], before_address: BeforeAddress) -> RuntimePod:
        return _runtime_pod(self.lab.create_pod(manifest, lambda p: before_address(_runtime_pod(p))))

    def delete(self, pod: PodKey) -> None:
        with contextlib.suppress(PodNotFoundError):  # already gone: deleting is idempotent
            self.lab.delete_pod(pod.namespace, pod.name)

    def teardown(self) -> None:
        self.lab.teardown()


class AddressOnlyRuntime:
    """Pods that get an address (the lab's IPAM) but no namespace: the agent's policy pipeline
    runs unchanged while enforcement happens in the simulated datapath. Records live in a JSON
    file so a restart adopts them like the lab's pods."""

    def __init__(self, store: Store, path: Path, node_index: int = 0) -> None:
        self.ipam = Ipam(store, node_index)
        self.path = path
        self._pods: dict[PodKey, RuntimePod] = {}
        if path.exists():
            for d in json.loads(path.read_text() or "[]"):
                ns, _, name = d["pod"].partition("/")
                rp = RuntimePod(PodKey(ns, name), d["ip"], d["ifindex"], d["host_ifname"], d["netns"])
                self._pods[rp.pod] = rp

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        rows = [{"pod": str(p.pod), "ip": p.ip, "ifindex": p.ifindex, "host_ifname": p.host_ifname,
                 "netns": p.netns} for p in self._pods.values()]
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, self.path)

    def existing(self) -> dict[PodKey, RuntimePod]:
        return dict(self._pods)

    def create(self, manifest: dict[str, Any], before_address: BeforeAddress) -> RuntimePod:
        meta = manifest.get("metadata") or {}
        pk = PodKey(str(meta.get("namespace") or "default"), str(meta["name"]))
        ip = self.ipam.allocate(str(pk))
        # A stable pseudo ifindex per address: unique on the node, never a real interface.
        ifindex = 100_000 + int(ip) - int(self.ipam.gateway)
        rp = RuntimePod(pk, str(ip), ifindex, "", "")
        before_address(rp)
        self._pods[pk] = rp
        self._save()
        return rp

    def delete(self, pod: PodKey) -> None:
        if self._pods.pop(pod, None) is not None:
            self.ipam.release_owner(str(pod))
            self._save()

    def teardown(self) -> None:
        for pk in list(self._pods):
            self.delete(pk)
        self.path.unlink(missing_ok=True)
