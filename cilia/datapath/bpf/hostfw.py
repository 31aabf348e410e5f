"""The host firewall's kernel side: ``host.c`` built, loaded beside the datapath, attached by tcx links.

The object shares every map with the pod datapath by pinned name (same ``pin_root``): the host
endpoint is the entry of the endpoints map under :data:`HOST_EP_IFINDEX` (0, which no device has),
its policy lives in the policy map under :data:`HOST_ENDPOINT_ID` like any endpoint's, and events,
conntrack and metrics are the datapath's. :class:`cilia.datapath.bpf.sync.Datapath` writes both.

Attachment is a tcx link per device and direction, placed *before* every other tcx program of the
device (``BPF_F_BEFORE``), so the host check runs ahead of the pod datapath, which it hands the
packet on to (TCX_NEXT). The links are held by the agent's process and deliberately not pinned:
when the agent exits or crashes the kernel drops them and the node's own traffic is no longer
filtered — a crashed agent can never leave a lab node unreachable from the machine (the pods'
datapath, pinned, keeps enforcing). ``cilia down`` removes the endpoint entry and its policy.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from cilia.datapath.bpf import build, libbpf, tcx
from cilia.datapath.bpf.libbpf import BpfObject
from cilia.datapath.errors import DatapathError

HOST_EP_IFINDEX = 0  # key of the host endpoint in the endpoints map (host.c)
HOST_ENDPOINT_ID = 0xFEFF  # below the guard-only devices' ids, never a pod's (cilia.agent.endpoints)
SOURCE = "host.c"
PROGRAMS = ("host_ingress", "host_egress")


class HostFirewallError(DatapathError, RuntimeError):
    """The host firewall could not be built, loaded or attached."""


def object_path(src_dir: Path = build.SRC_DIR, out_dir: Path | None = None) -> Path:
    """The compiled host firewall object (compiled when its sources changed)."""
    try:
        return build.build(src_dir, out_dir, main=SOURCE)
    except build.BuildError as e:
        raise HostFirewallError(str(e)) from e


class HostPrograms:
    """The loaded host firewall programs and the devices they are attached to (by this process)."""

    def __init__(self, pin_root: str) -> None:
        self.pin_root = pin_root
        self._obj: BpfObject | None = None
        self._progs: dict[str, int] = {}
        self._links: dict[int, tuple[int, int]] = {}  # ifindex -> (ingress link fd, egress link fd)

    def open(self) -> HostPrograms:
        """Load the object, reusing the datapath's pinned maps (load the datapath first)."""
        if self._obj is not None:
            return self
        path = str(object_path())
        obj = BpfObject(path, pin_root=self.pin_root)
        try:
            obj.load()
            self._progs = {name: obj.program_fd(name) for name in PROGRAMS}
        except libbpf.BpfError as e:
            obj.close()
            raise HostFirewallError(f"load host firewall {path} (pins under {self.pin_root}): {e}") from e
        self._obj = obj
        return self

    def attached(self) -> set[int]:
        return set(self._links)

    def attach(self, ifindex: int) -> None:
        """Put the host programs first on the device (both directions); idempotent."""
        if ifindex in self._links:
            return
        self.open()
        ing = tcx.link_create(self._progs["host_ingress"], ifindex, tcx.BPF_TCX_INGRESS, tcx.BPF_F_BEFORE)
        try:
            eg = tcx.link_create(self._progs["host_egress"], ifindex, tcx.BPF_TCX_EGRESS, tcx.BPF_F_BEFORE)
        except libbpf.BpfError:
            os.close(ing)
            raise
        self._links[ifindex] = (ing, eg)

    def detach(self, ifindex: int) -> None:
        """Drop the device's links (the kernel detaches the programs; a vanished device is fine)."""
        fds = self._links.pop(ifindex, None)
        for fd in fds or ():
            try:
                os.close(fd)
            except OSError as e:
                if e.errno != errno.EBADF:
                    raise

    def sync(self, devices: set[int]) -> None:
        """Attached exactly to ``devices``."""
        for ifx in self.attached() - devices:
            self.detach(ifx)
        for ifx in sorted(devices - self.attached()):
            self.attach(ifx)

    def close(self) -> None:
        for ifx in list(self._links):
            self.detach(ifx)
        if self._obj is not None:
            self._obj.close()
            self._obj = None
