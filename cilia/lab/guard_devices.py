"""The kernel's address guard on the lab's devices that are not pods: world hosts and a node's underlay.

A pod's host veth carries the datapath, whose guard (``bpf/guard.h``) drops every packet from or to
an address outside the lab's ranges with its own drop reason (250, Destination outside the lab). A
world host's node-side veth (``ciliaw…``) and, on a cluster node, the node's underlay interface
(``cilia-ul`` in the node's namespace) get the same programs as *guard-only* devices: registered
without the enforcement flags and with an empty policy, so the guard applies and policy does not —
world hosts keep reaching pods and serving them exactly as before, but nothing they (or the node
over its underlay) send leaves the lab's addresses, and ``cilia observe`` shows each such drop.

The agent does this at each runtime check (at its start and every ``RUNTIME_CHECK_S``): it attaches
to every world host the lab's records name, and forgets (detaches) a device whose host was deleted.
Guard-only devices take endpoint ids from :data:`cilia.agent.endpoints.GUARD_ENDPOINT_IDS`, which no
pod gets, so a restarted agent tells them apart in the pinned endpoints map.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from cilia.agent.endpoints import GUARD_ENDPOINT_IDS
from cilia.identity.reserved import ReservedIdentity
from cilia.lab.node import Lab
from cilia.lab.nodes_lab import UNDERLAY_IF
from cilia.lab.world import World

if TYPE_CHECKING:  # the kernel datapath loads libbpf: imported where it is used
    from cilia.datapath.bpf.sync import Datapath

log = logging.getLogger(__name__)


def _ifindex(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def lab_guard_devices(lab: Lab, underlay: bool) -> dict[int, tuple[str, int]]:
    """ifindex → (device name, identity of what is behind it) for the node's world hosts and, if
    ``underlay``, the node's underlay interface. Only devices that exist under their recorded name."""
    want: dict[int, tuple[str, int]] = {}
    for host in World(lab).list():
        if _ifindex(host.host_ifname) == host.host_ifindex:
            want[host.host_ifindex] = (host.host_ifname, int(ReservedIdentity.WORLD))
    if underlay:
        ul = _ifindex(UNDERLAY_IF)
        if ul is not None:
            want[ul] = (UNDERLAY_IF, int(ReservedIdentity.REMOTE_NODE))
    return want


class GuardDevices:
    """Keeps the datapath's guard-only devices equal to ``devices()`` (see the module's docstring)."""

    def __init__(self, datapath: Datapath, devices: Callable[[], dict[int, tuple[str, int]]]) -> None:
        self.datapath = datapath
        self.devices = devices
        self._attached: set[int] = set()  # attached by this process (a restart re-attaches: new programs)
        self._error = ""

    def sync(self) -> None:
        """Attach the wanted devices, detach the others; a failure is logged once, never raised (the
        nftables guard and the lab's routes still hold)."""
        try:
            self._sync()
            self._error = ""
        except OSError as e:
            if str(e) != self._error:
                log.warning("the datapath's guard on world hosts / the underlay is incomplete: %s", e)
            self._error = str(e)

    def _sync(self) -> None:
        from cilia.datapath.maps.endpoints import EndpointFlags

        dp = self.datapath
        have = {ifx: eid for ifx, eid in dp.endpoint_ids().items() if eid in GUARD_ENDPOINT_IDS}
        want = self.devices()
        for ifx, eid in have.items():
            if ifx not in want:
                with contextlib.suppress(OSError):  # the device went with its host: only the entry is left
                    dp.detach(ifx)
                dp.endpoints.delete(ifx)
                dp.remove_policy(eid)
                self._attached.discard(ifx)
        used = {eid for ifx, eid in have.items() if ifx in want}
        free = (eid for eid in GUARD_ENDPOINT_IDS if eid not in used)
        for ifx, (name, identity) in sorted(want.items()):
            if ifx in have and ifx in self._attached:
                continue
            eid = have.get(ifx) or next(free)
            # the empty policy first, so that the device is ready from its first packet: attached
            # before it, the node's first packets on its underlay (an MLD report, a reply to the
            # agent's store connection) were "policy not ready" drops that no policy decided
            dp.set_policy(eid, {})
            dp.attach(ifx, eid, identity, flags=EndpointFlags(0))  # no ENFORCE_*: the guard only
            self._attached.add(ifx)
            log.info("datapath guard on %s (ifindex %d, endpoint %d)", name, ifx, eid)
