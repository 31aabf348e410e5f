"""``cilia completion bash|zsh|fish``: the shell script that completes cilia's commands and options.

The script calls ``cilia`` back with ``_CILIA_COMPLETE`` set; typer answers from the command table
(:mod:`cilia.cli.lazy`), importing only the module of the command being completed.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

COMPLETE_VAR = "_CILIA_COMPLETE"


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion_script(shell: Shell, prog_name: str = "cilia") -> str:
    """The completion script for ``shell``."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=prog_name, complete_var=COMPLETE_VAR, shell=str(shell))


def register(app: typer.Typer) -> None:
    @app.command("completion")
    def completion_cmd(
        shell: Annotated[
            Shell, typer.Argument(metavar="SHELL", help="bash | zsh | fish.", show_default=False)
        ],
    ) -> None:
        """Print the shell completion script for bash, zsh or fish.

        Examples:
          source <(cilia completion bash)                      # this shell; add it to ~/.bashrc
          cilia completion zsh > "${fpath[1]}/_cilia"          # zsh, for new shells
          cilia completion fish > ~/.config/fish/completions/cilia.fish
        """
        sys.stdout.write(completion_script(shell).rstrip("\n") + "\n")
