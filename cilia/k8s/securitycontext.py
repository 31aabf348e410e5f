"""The ``securityContext`` of a Pod and of its containers, checked before anything is stored.

What the API server refuses (pkg/apis/core/validation): ``runAsUser``/``runAsGroup`` outside
0..2147483647, ``allowPrivilegeEscalation: false`` together with ``privileged: true`` or with an
added ``CAP_SYS_ADMIN``; what its schema refuses: a value of the wrong type. And what the container
runtime refuses when it starts the container (containerd: "unknown capability"): a capability name
Linux does not have — the lab runs the commands, so ``apply`` and ``validate`` say it up front with
the field, instead of the pod failing to start. The lab (:mod:`cilia.lab.security`) applies what
passes here.
"""

from __future__ import annotations

from typing import Any

from cilia.k8s.source import FieldPath

MAX_ID = 2147483647  # Kubernetes: user and group ids are non-negative int32s
# Linux capabilities (linux/capability.h), lower case without CAP_
KNOWN_CAPS = frozenset({
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
    "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock",
    "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin",
    "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease",
    "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
    "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
})  # fmt: skip

Problem = tuple[FieldPath, str]


def capability_name(value: str) -> str | None:
    """``CAP_NET_ADMIN`` / ``NET_ADMIN`` / ``all`` → ``net_admin`` / ``all``; None if unknown."""
    c = value.lower().removeprefix("cap_")
    return c if c == "all" or c in KNOWN_CAPS else None


def _id_problems(ctx: dict[str, Any], where: FieldPath) -> list[Problem]:
    out: list[Problem] = []
    for key in ("runAsUser", "runAsGroup"):
        v = ctx.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            out.append(((*where, key), f'Invalid value: {v!r}: expected an integer'))
        elif not 0 <= v <= MAX_ID:
            out.append(((*where, key), f"Invalid value: {v}: must be between 0 and {MAX_ID}, inclusive"))
    return out


def pod_problems(ctx: Any, where: FieldPath) -> list[Problem]:
    """The pod-level ``securityContext`` (``spec.securityContext``)."""
    if ctx is None:
        return []
    if not isinstance(ctx, dict):
        return [(where, "Invalid value: expected an object (PodSecurityContext)")]
    return _id_problems(ctx, where)


def container_problems(ctx: Any, where: FieldPath) -> list[Problem]:
    """A container's ``securityContext``."""
    if ctx is None:
        return []
    if not isinstance(ctx, dict):
        return [(where, "Invalid value: expected an object (SecurityContext)")]
    out = _id_problems(ctx, where)
    for key in ("privileged", "allowPrivilegeEscalation"):
        v = ctx.get(key)
        if v is not None and not isinstance(v, bool):
            out.append(((*where, key), f"Invalid value: {v!r}: expected true or false"))
    caps = ctx.get("capabilities")
    added: list[str] = []
    if caps is not None and not isinstance(caps, dict):
        out.append(((*where, "capabilities"), "Invalid value: expected an object with add and drop lists"))
    elif isinstance(caps, dict):
        for key in ("add", "drop"):
            names = caps.get(key)
            if names is None:
                continue
            if not isinstance(names, list):
                out.append(((*where, "capabilities", key), "Invalid value: expected a list of capabilities"))
                continue
            for i, name in enumerate(names):
                path = (*where, "capabilities", key, i)
                if not isinstance(name, str):
                    out.append((path, f"Invalid value: {name!r}: expected a capability name"))
                elif capability_name(name) is None:
                    out.append((path, f'Unsupported value: "{name}": unknown capability (e.g. NET_ADMIN, '
                                      "CAP_NET_RAW; the container runtime would refuse to start it)"))
                elif key == "add":
                    added.append(name)
    if ctx.get("allowPrivilegeEscalation") is False:
        if ctx.get("privileged") is True:
            out.append(((*where, "allowPrivilegeEscalation"),
                        "Forbidden: cannot set `allowPrivilegeEscalation` to false and `privileged` to true"))
        if "CAP_SYS_ADMIN" in added:  # the API server compares the exact string
            out.append(((*where, "allowPrivilegeEscalation"),
                        "Forbidden: cannot set `allowPrivilegeEscalation` to false and "
                        "`capabilities.Add` CAP_SYS_ADMIN"))
    return out
