"""Entry point of the ``cilia`` command.

Importing this module is cheap: the typer app (:mod:`cilia.cli.lazy`, also reachable as
``cilia.cli.main.app``) is built when first used, and each command module is imported only when one
of its commands runs. ``cilia``, ``cilia --help`` and ``cilia -h`` are answered from the command table
(:mod:`cilia.cli.registry`) without importing typer at all (``make bench-cli`` measures start-up).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing for `cilia --help`

if TYPE_CHECKING:
    from typing import Any

HELP_ARGS = ([], ["--help"], ["-h"])


def __getattr__(name: str) -> Any:
    if name == "app":
        from cilia.cli.lazy import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plain_help_wanted() -> bool:
    """typer would draw help without rich (TYPER_USE_RICH=0, or rich not installed)."""
    if os.environ.get("TYPER_USE_RICH", "").lower() in ("0", "false", "no", "off", "n", "f"):
        return True
    from importlib.util import find_spec  # whether rich is there, without importing it

    return find_spec("rich") is None


def main() -> None:
    """Run the CLI."""
    completing = "_CILIA_COMPLETE" in os.environ  # the shell asks typer for completions (cilia completion)
    if sys.argv[1:] in HELP_ARGS and not completing and not _plain_help_wanted():
        from cilia.cli import tophelp
        from cilia.cli.registry import COMMANDS, HELP

        prog = os.path.basename(sys.argv[0]) or "cilia"
        if prog.endswith(".py"):  # python -m cilia / python -m cilia.cli.main, as click names it
            prog = "python -m " + ("cilia" if prog == "__main__.py" else __name__)
        tophelp.render(f"{prog} [OPTIONS] COMMAND [ARGS]...", HELP, [(n, h) for n, _, h in COMMANDS])
        # No command at all is a usage error (exit 2), as click's no_args_is_help has it.
        raise SystemExit(2 if not sys.argv[1:] else 0)
    if not completing:
        from cilia.cli import fastpath

        code = fastpath.run(sys.argv[1:])  # validate, without typer (start-up)
        if code is not None:
            raise SystemExit(code)
    if sys.argv[1:2] == ["--version"]:  # `cilia --version [-o json]` is `cilia version [-o json]`
        sys.argv[1:2] = ["version"]
    if completing:
        from typer._completion_classes import completion_init

        completion_init()  # typer registers its shells only when an app has add_completion
    from cilia.cli.lazy import app

    if completing:  # named as the script names it, however this process was started
        app(prog_name="cilia", complete_var="_CILIA_COMPLETE")
    else:
        app()


if __name__ == "__main__":
    main()
