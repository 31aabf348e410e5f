"""What the lab runs: a pod's containers, ports and commands, read from a Pod manifest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cilia.lab.errors import LabError
from cilia.lab.security import RunAs, run_as


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"  # TCP | UDP (SCTP ports are accepted and not served)


@dataclass(frozen=True)
class Container:
    name: str
    ports: tuple[ContainerPort, ...] = ()
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    security: RunAs = field(default_factory=RunAs)  # securityContext: unprivileged by default

    @property
    def argv(self) -> tuple[str, ...]:
        """The local command this container runs; empty for a built-in workload."""
        return self.command + self.args


@dataclass(frozen=True)
class PodSpec:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[Container, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any], default_namespace: str = "default") -> PodSpec:
        """Read a Pod object (``metadata`` + ``spec.containers``) as Kubernetes writes it."""
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise LabError("pod manifest has no metadata.name")
        containers = []
        pod_ctx = (obj.get("spec") or {}).get("securityContext")
        for i, c in enumerate((obj.get("spec") or {}).get("containers") or []):
            ports = tuple(
                ContainerPort(int(p["containerPort"]), str(p.get("protocol", "TCP")).upper())
                for p in c.get("ports") or []
            )
            containers.append(
                Container(
                    name=str(c.get("name", "")),
                    ports=ports,
                    command=tuple(str(x) for x in c.get("command") or ()),
                    args=tuple(str(x) for x in c.get("args") or ()),
                    security=run_as(pod_ctx, c.get("securityContext"),
                                    f"pod {name}: spec.containers[{i}].securityContext"),
                )
            )
        return cls(
            namespace=str(meta.get("namespace") or default_namespace),
            name=str(name),
            labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            containers=tuple(containers),
        )

    def served_ports(self, protocol: str) -> tuple[int, ...]:
        """Ports of ``protocol`` that built-in workloads serve (containers without a command)."""
        return tuple(
            sorted({p.port for c in self.containers if not c.argv for p in c.ports if p.protocol == protocol})
        )

    def commands(self) -> tuple[tuple[str, ...], ...]:
        return tuple(c.argv for c in self.containers if c.argv)

    def command_privileges(self) -> tuple[tuple[str, ...], ...]:
        """For each of :meth:`commands`, the ``setpriv`` prefix it runs under (its securityContext)."""
        return tuple(c.security.setpriv() for c in self.containers if c.argv)
