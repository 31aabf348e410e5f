"""The ``cilia`` typer app, whose command modules are imported when one of their commands is used.

:class:`LazyGroup` is the top-level group: looking a command up imports the module that registers it
(:mod:`cilia.cli.registry`); while the group's own help is drawn, commands not imported yet are listed
from the table; ``commands`` (the full mapping) imports every module. A command module missing from
the table still works — it is imported whenever the command list is needed.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from cilia.cli import commands, tophelp
from cilia.cli.examples import add_examples
from cilia.cli.fileselect import add_file_selection
from cilia.cli.helpstyle import tidy_help
from cilia.cli.outputs import add_output_aliases
from cilia.cli.registry import COMMANDS, HELP, command_modules, module_of


def load_module(name: str) -> dict[str, Any]:
    """Import one command module and return the click commands it registers, by name."""
    module = importlib.import_module(f"{commands.__name__}.{name}")
    register = getattr(module, "register", None)
    if register is None:
        return {}
    sub = typer.Typer()
    register(sub)
    found = dict(typer.main.get_group(sub).commands)
    for name, command in found.items():
        add_file_selection(command)  # -R, --exclude, --strict wherever -f reads manifests
        tidy_help(command)  # PATH, TEXT, [text|json] rather than <list[str]>, <bool>
        add_examples(command, name)
        add_output_aliases(command)  # -o text = -o table; -o yaml wherever -o json
    return found


class LazyGroup(TyperGroup):
    """The top-level group; see the module docstring."""

    def __init__(self, **attrs: Any) -> None:
        self._listing = False
        self._loaded: set[str] = set()
        super().__init__(**attrs)

    @property  # type: ignore[override]
    def commands(self) -> dict[str, Any]:
        for module in dict.fromkeys([*(m for _, m, _ in COMMANDS), *command_modules()]):
            self._load(module)
        return self._commands

    @commands.setter
    def commands(self, value: dict[str, Any]) -> None:
        self._commands = dict(value)

    def _load(self, module: str) -> None:
        if module not in self._loaded:
            self._loaded.add(module)
            for name, cmd in load_module(module).items():
                self._commands.setdefault(name, cmd)

    def _load_unlisted(self) -> None:
        """Import the modules the table does not know (it is stale; tests/test_cli_lazy.py says so)."""
        known = {module for _, module, _ in COMMANDS}
        for module in command_modules():
            if module not in known:
                self._load(module)

    def list_commands(self, ctx: Any) -> list[str]:
        self._load_unlisted()
        names = [name for name, _, _ in COMMANDS]
        return names + [n for n in self._commands if n not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self._commands:
            return self._commands[cmd_name]
        module = module_of(cmd_name)
        if module is None:
            self._load_unlisted()
            return self._commands.get(cmd_name)
        if self._listing:  # only the name and the help line are shown: no import
            return TyperCommand(cmd_name, help=next(h for n, _, h in COMMANDS if n == cmd_name))
        self._load(module)
        return self._commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            if typer.core.HAS_RICH and self.rich_markup_mode is not None:
                # typer's renderer would import rich.markdown and pygments for a list of commands
                found = [(n, self.get_command(ctx, n)) for n in self.list_commands(ctx)]
                visible = [(n, c) for n, c in found if c is not None and not c.hidden]
                shown = [(n, (c.short_help or c.help or "").split("\n\n")[0]) for n, c in visible]
                usage = " ".join([ctx.command_path, *self.collect_usage_pieces(ctx)])
                tophelp.render(usage, self.help or "", shown)
            else:
                super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="cilia",
    cls=LazyGroup,
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from cilia.cli.commands.version import version_text

        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit (as cilia version).",
        ),
    ] = False,
) -> None:
    # A Typer with no command of its own needs a callback to become a group; the commands come lazily.
    pass
