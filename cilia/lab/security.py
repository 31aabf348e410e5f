"""How a container's command runs, from its ``securityContext``, as a container runtime runs it.

Without privileges asked for, a command runs as ``nobody`` (65534:65534, no supplementary groups),
with no capabilities (empty permitted, effective, inheritable, ambient and bounding sets) and
``no_new_privs`` set, so neither setuid binaries nor file capabilities give any back. What the
manifest asks for, container settings over the pod's:

* ``privileged: true``: root with every capability (as ``docker run --privileged``);
* ``runAsUser``/``runAsGroup``: that user/group; user 0 gets the container runtime's default
  capability set (containerd's), not all of them;
* ``capabilities.add`` / ``drop``: added to / removed from that set; for a non-root user the added
  ones become ambient capabilities, so the command can use them (Kubernetes puts them only in the
  bounding set, where a non-root process cannot: a departure, see docs/differences.md);
* ``allowPrivilegeEscalation: true``: no ``no_new_privs``.

The result is a ``setpriv`` (util-linux) command prefix; ``()`` for a privileged container.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cilia.k8s.securitycontext import KNOWN_CAPS  # one list: validate refuses what the lab cannot run
from cilia.lab.errors import LabError

NOBODY = 65534
# containerd's default capability set for a container (what `runAsUser: 0` keeps)
RUNTIME_DEFAULT_CAPS = (
    "chown", "dac_override", "fsetid", "fowner", "mknod", "net_raw", "setgid", "setuid", "setfcap",
    "setpcap", "net_bind_service", "sys_chroot", "kill", "audit_write",
)  # fmt: skip


@dataclass(frozen=True)
class RunAs:
    """The identity and privileges one container's command runs with."""

    uid: int = NOBODY
    gid: int = NOBODY
    privileged: bool = False
    caps: tuple[str, ...] = ()  # lower-case names without CAP_
    no_new_privs: bool = True

    def setpriv(self) -> tuple[str, ...]:
        """The ``setpriv … --`` prefix that applies it (empty: privileged, run as is)."""
        if self.privileged:
            return ()
        caps = ",".join(f"+{c}" for c in self.caps)
        args = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                f"--inh-caps=-all{',' + caps if caps and self.uid != 0 else ''}",
                f"--bounding-set=-all{',' + caps if caps else ''}"]
        if caps and self.uid != 0:
            args.append(f"--ambient-caps={caps}")
        if self.no_new_privs:
            args.append("--no-new-privs")
        # the kernel clears the parent-death signal when the user changes: set it again, so the
        # command still dies with the workload daemon that started it
        args += ["--pdeathsig=KILL"]
        return (*args, "--")

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "gid": self.gid, "privileged": self.privileged, "caps": list(self.caps),
                "noNewPrivs": self.no_new_privs}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> RunAs:
        if not d:
            return cls()
        return cls(int(d["uid"]), int(d["gid"]), bool(d["privileged"]), tuple(str(c) for c in d["caps"]),
                   bool(d["noNewPrivs"]))


def _cap(name: object, where: str) -> str:
    c = str(name).lower().removeprefix("cap_")
    if c != "all" and c not in KNOWN_CAPS:
        raise LabError(f"{where}: unknown capability {name!r}")
    return c


def _id(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFE:
        raise LabError(f"{where}: expected a user/group id 0..4294967294, got {value!r}")
    return value


def run_as(pod_ctx: Mapping[str, Any] | None, ctx: Mapping[str, Any] | None, where: str) -> RunAs:
    """The :class:`RunAs` of a container from the pod's and the container's ``securityContext``."""
    pod_ctx, ctx = pod_ctx or {}, ctx or {}
    if not isinstance(pod_ctx, Mapping) or not isinstance(ctx, Mapping):
        raise LabError(f"{where}: securityContext must be a mapping")
    if ctx.get("privileged") is True:
        return RunAs(0, 0, privileged=True, no_new_privs=False)
    uid = _id(ctx.get("runAsUser", pod_ctx.get("runAsUser")), f"{where}.runAsUser")
    gid = _id(ctx.get("runAsGroup", pod_ctx.get("runAsGroup")), f"{where}.runAsGroup")
    if uid is None:
        uid = NOBODY
    if gid is None:
        gid = 0 if uid == 0 else NOBODY
    capctx = ctx.get("capabilities") or {}
    if not isinstance(capctx, Mapping):
        raise LabError(f"{where}.capabilities must be a mapping with add/drop lists")
    add = [_cap(c, f"{where}.capabilities.add") for c in capctx.get("add") or ()]
    drop = [_cap(c, f"{where}.capabilities.drop") for c in capctx.get("drop") or ()]
    caps = list(RUNTIME_DEFAULT_CAPS) if uid == 0 else []
    if "all" in drop:
        caps = []
    caps = [c for c in caps if c not in drop]
    caps += [c for c in (sorted(KNOWN_CAPS) if "all" in add else add) if c not in caps]
    nnp = ctx.get("allowPrivilegeEscalation") is not True
    return RunAs(uid, gid, False, tuple(caps), nnp)
