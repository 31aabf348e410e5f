"""``cilia --help``: the command list, drawn as typer draws help, without typer's rich_utils.

typer's help renderer imports rich's markdown and syntax modules (markdown_it, pygments: about half of
what ``cilia --help`` would cost); the top-level help needs neither, so it is drawn here with rich's
console, panel and table only. Sub-command help stays typer's.
"""

from __future__ import annotations

from collections.abc import Sequence


def render(usage: str, help_text: str, commands: Sequence[tuple[str, str]]) -> None:
    """Print the usage line, the app's help, the ``-h/--help`` option and the commands to stdout."""
    from rich import box
    from rich.console import Console
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console()
    console.print(Padding(Text.assemble(("Usage: ", "yellow"), (usage, "bold")), 1), highlight=False)
    console.print(Padding(Text(help_text), (0, 1, 1, 1)), highlight=False)
    width = max(len(name) for name, _ in commands)
    options = Table(highlight=False, show_header=False, expand=True, box=None, pad_edge=False)
    options.add_column(style="bold cyan", no_wrap=True, width=width)
    options.add_column(ratio=10)
    options.add_row("-h, --help", "Show this message and exit.")
    console.print(Panel(options, title="Options", title_align="left", border_style="dim", box=box.ROUNDED))
    table = Table(highlight=False, show_header=False, expand=True, box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True, width=width)
    table.add_column(ratio=10)
    for name, text in commands:
        table.add_row(name, text)
    console.print(Panel(table, title="Commands", title_align="left", border_style="dim", box=box.ROUNDED))
