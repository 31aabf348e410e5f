"""``cilia world add|list|exec|delete``: test hosts outside the cluster (198.19.0.0/16), reached by
pods through the node; removed by ``cilia down``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cilia.cli.common import (
    ExecArgs,
    OutputStrOpt,
    RunDirOpt,
    StateDirOpt,
    console,
    exec_and_exit,
    exec_command,
    fail,
    node_config,
    open_node_store,
    print_listing,
)
from cilia.lab.errors import LabError
from cilia.lab.node_setup import make_lab
from cilia.lab.world import World, WorldHost, WorldPort
from cilia.store import Store


def _world(state_dir: Path | None, run_dir: Path | None) -> tuple[World, Store]:
    cfg = node_config(state_dir, run_dir)
    if cfg.datapath == "sim":
        raise fail("this node runs with --datapath sim: there is no network to put world hosts on")
    store = open_node_store(cfg)
    return World(make_lab(cfg, store)), store


def _row(h: WorldHost) -> dict[str, object]:
    return {"name": h.name, "ip": h.ip, "ports": [str(p) for p in h.ports], "netns": h.netns,
            "link": h.host_ifname}


def register(app: typer.Typer) -> None:
    world_app = typer.Typer(help="World hosts: servers and clients outside the cluster (198.19.0.0/16).",
                            no_args_is_help=True)
    app.add_typer(world_app, name="world")

    @world_app.command("add")
    def add_cmd(
        name: Annotated[str, typer.Argument(help="Host name (lower-case letters, digits, '-').")],
        ip: Annotated[str, typer.Option("--ip", help="Address in 198.19.0.0/16.")],
        port: Annotated[list[str] | None, typer.Option(
            "--port", help="Serve PORT/PROTO (PROTO is TCP or UDP, default TCP), repeatable.")] = None,
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        output: OutputStrOpt = "text",
    ) -> None:
        """Create a world host; TCP ports answer HTTP like the pods' built-in server, UDP ports echo."""
        world, store = _world(state_dir, run_dir)
        try:
            host = world.add(name, ip, [WorldPort.parse(p) for p in port or ()])
        except LabError as e:
            raise fail(str(e)) from e
        finally:
            store.close()
        if output == "json":
            print(json.dumps(_row(host), sort_keys=True))
        else:
            ports = ", ".join(str(p) for p in host.ports) or "no ports"
            console.print(f"world host {host.name} at {host.ip} ({ports})")

    @world_app.command("list")
    def list_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        output: OutputStrOpt = "text",
    ) -> None:
        """List the world hosts."""
        world, store = _world(state_dir, run_dir)
        try:
            hosts = world.list()
        finally:
            store.close()
        print_listing(output, {"items": [_row(h) for h in hosts]}, [
            f"{'NAME':<20} {'IP':<16} PORTS",
            *(f"{h.name:<20} {h.ip:<16} {','.join(str(p) for p in h.ports) or '-'}" for h in hosts),
        ])

    @world_app.command("delete")
    def delete_cmd(
        names: Annotated[list[str], typer.Argument(help="Host names.")],
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Delete world hosts (their namespace, link, route and servers)."""
        world, store = _world(state_dir, run_dir)
        try:
            for name in names:
                world.delete(name)
                console.print(f"world host {name} deleted")
        except LabError as e:
            raise fail(str(e)) from e
        finally:
            store.close()

    @world_app.command("exec", context_settings={"allow_interspersed_args": False})
    def exec_cmd(
        name: Annotated[str, typer.Argument(help="World host name.")],
        command: ExecArgs,
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Run a command as the world host (in its network namespace); its exit code is passed through."""
        command = exec_command(command, "cilia world exec NAME -- CMD [ARGS…]")
        world, store = _world(state_dir, run_dir)
        store.close()
        try:
            exec_and_exit(lambda argv: world.exec(name, argv), command)
        except LabError as e:
            raise fail(str(e)) from e
