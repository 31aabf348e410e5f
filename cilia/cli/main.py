"""Entry point of the ``cilia`` command.

Each module in :mod:`cilia.cli.commands` defines ``register(app: typer.Typer) -> None`` and is
discovered here, so command modules can be added without touching this file.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from cilia.cli import commands

app = typer.Typer(
    name="cilia",
    help="Identity-based network policy for Linux workloads (Cilium semantics, eBPF datapath).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_all() -> None:
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    main()
