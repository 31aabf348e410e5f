"""Where a node keeps its state and how its agent is configured.

One agent runs per node. Its durable state (the store, endpoint table, logs) lives in the state
directory (``/var/lib/cilia``, ``--state-dir`` / ``CILIA_STATE_DIR``); its run-time files (the REST
socket, the pid file) in the run directory (``/run/cilia``, ``CILIA_RUN_DIR``). Tests give every
agent a private pair of directories.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from cilia.agent.errors import AgentError
from cilia.store.files import write_json

DEFAULT_STATE_DIR = Path("/var/lib/cilia")
DEFAULT_RUN_DIR = Path("/run/cilia")
DEFAULT_PIN_ROOT = "/sys/fs/bpf/cilia/v1"
SOCKET_NAME = "cilia.sock"
PID_NAME = "agent.pid"

ENFORCEMENT_MODES = ("default", "always", "never")
# Cilium's tofqdns-min-ttl: the least time (s) an address learned from a DNS answer stays allowed.
# Cilium 1.18 defaults to 0 (the DNS server's TTL is honoured); env CILIA_TOFQDNS_MIN_TTL.
DEFAULT_TOFQDNS_MIN_TTL = 0
MIN_TTL_ENV = "CILIA_TOFQDNS_MIN_TTL"
ALLOW_LOCALHOST = ("always", "policy")


class ConfigError(AgentError, ValueError):
    """An agent setting has a value the agent cannot use."""


@dataclass(frozen=True)
class AgentConfig:
    """Settings of one node agent. Build it with :meth:`resolve` so that flags override the
    environment, which overrides the defaults."""

    state_dir: Path = DEFAULT_STATE_DIR
    run_dir: Path = DEFAULT_RUN_DIR
    node_index: int = 0
    enforcement_mode: str = "default"
    allow_localhost: str = "always"
    cluster: str = "default"
    datapath: str = "bpf"  # bpf | sim (sim: no kernel enforcement, for development without root)
    pin_root: str = DEFAULT_PIN_ROOT  # bpffs directory of this node's maps (env CILIA_PIN_ROOT)
    metrics_addr: str = ""  # host:port for Prometheus metrics ("" = not served)
    # Several nodes (cilia up --nodes N): the shared etcd store, this node's name, how many nodes
    # pods are spread over, and the network namespace the agent runs in ("" = this one).
    store: str = "sqlite"  # sqlite | etcd
    etcd_endpoints: str = ""  # host:port,host:port
    node_name: str = ""
    cluster_size: int = 0
    netns: str = ""
    tofqdns_min_ttl: int = DEFAULT_TOFQDNS_MIN_TTL
    # Cilium's enable-host-firewall: host policies (CCNP nodeSelector) enforced on the node's own
    # traffic on its lab devices (cilia.agent.hostendpoint)
    host_firewall: bool = False

    def __post_init__(self) -> None:
        if self.enforcement_mode not in ENFORCEMENT_MODES:
            raise ConfigError(f"enforcement mode {self.enforcement_mode!r}: use one of {ENFORCEMENT_MODES}")
        if self.allow_localhost not in ALLOW_LOCALHOST:
            raise ConfigError(f"allow-localhost {self.allow_localhost!r}: use one of {ALLOW_LOCALHOST}")
        if not 0 <= self.node_index <= 14:
            raise ConfigError(f"node index {self.node_index}: must be 0..14 (one /20 of 198.18.0.0/16 each)")
        if self.datapath not in ("bpf", "sim"):
            raise ConfigError(f"datapath {self.datapath!r}: use bpf or sim")
        if self.store not in ("sqlite", "etcd"):
            raise ConfigError(f"store {self.store!r}: use sqlite or etcd")
        if self.store == "etcd" and not self.etcd_endpoints:
            raise ConfigError("the etcd store needs endpoints (host:port,...)")
        if self.tofqdns_min_ttl < 0:
            raise ConfigError(f"tofqdns-min-ttl {self.tofqdns_min_ttl}: must be 0 or more seconds")

    @classmethod
    def resolve(
        cls, state_dir: str | Path | None = None, run_dir: str | Path | None = None, **overrides: object
    ) -> AgentConfig:
        """Flags, then ``CILIA_STATE_DIR`` / ``CILIA_RUN_DIR`` / ``CILIA_TOFQDNS_MIN_TTL``, then the
        defaults."""
        sd = Path(state_dir or os.environ.get("CILIA_STATE_DIR") or DEFAULT_STATE_DIR)
        rd = Path(run_dir or os.environ.get("CILIA_RUN_DIR") or DEFAULT_RUN_DIR)
        pins = os.environ.get("CILIA_PIN_ROOT") or DEFAULT_PIN_ROOT
        cfg = cls(state_dir=sd.absolute(), run_dir=rd.absolute(), pin_root=pins,
                  tofqdns_min_ttl=_env_min_ttl(DEFAULT_TOFQDNS_MIN_TTL))
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(cfg, **given) if given else cfg  # type: ignore[arg-type]

    @property
    def socket_path(self) -> Path:
        return self.run_dir / SOCKET_NAME

    @property
    def pid_path(self) -> Path:
        return self.run_dir / PID_NAME

    @property
    def log_path(self) -> Path:
        return self.state_dir / "agent.log"

    @property
    def store_path(self) -> Path:
        return self.state_dir / "store.db"

    @property
    def endpoints_path(self) -> Path:
        return self.state_dir / "endpoints.json"

    def save(self) -> None:
        """Record the settings the node runs with, for later commands (``down``, ``exec``)."""
        data = {"datapath": self.datapath, "pin_root": self.pin_root, "node_index": self.node_index,
                "enforcement_mode": self.enforcement_mode, "allow_localhost": self.allow_localhost,
                "metrics_addr": self.metrics_addr, "store": self.store,
                "etcd_endpoints": self.etcd_endpoints, "node_name": self.node_name,
                "cluster_size": self.cluster_size, "netns": self.netns,
                "tofqdns_min_ttl": self.tofqdns_min_ttl, "host_firewall": self.host_firewall}
        write_json(self.settings_path, data, indent=1, sort_keys=True)

    def with_saved(self) -> AgentConfig:
        """These settings with the ones the node was last started with (if it was), so that
        ``cilia up`` without flags restarts the node as it was."""
        try:
            data = json.loads(self.settings_path.read_text())
        except (FileNotFoundError, ValueError):
            return self
        known = {k: v for k, v in data.items() if k in self.__dataclass_fields__}
        if os.environ.get("CILIA_PIN_ROOT"):
            known.pop("pin_root", None)  # an explicit environment wins over the saved setting
        if os.environ.get(MIN_TTL_ENV):
            known.pop("tofqdns_min_ttl", None)
        return replace(self, **known)

    @property
    def etcd_endpoint_list(self) -> list[str]:
        return [e.strip() for e in self.etcd_endpoints.split(",") if e.strip()]

    @property
    def settings_path(self) -> Path:
        return self.state_dir / "node.json"

    @property
    def events_path(self) -> Path:
        return self.state_dir / "events.jsonl"

    @property
    def lab_run_dir(self) -> Path:
        return self.run_dir / "lab"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def datapath_state_dir(self) -> Path:
        return self.state_dir / "datapath"

    @property
    def sim_pods_path(self) -> Path:
        return self.state_dir / "sim-pods.json"


def _env_min_ttl(default: int) -> int:
    text = os.environ.get(MIN_TTL_ENV, "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise ConfigError(f"{MIN_TTL_ENV}={text!r}: expected a number of seconds")
    return int(text)
