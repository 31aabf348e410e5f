"""Readable help for every command: value names ``PATH``, ``TEXT``, ``[text|json]`` and nothing for a
flag (instead of typer's ``<list[str]>`` and ``<bool>``), ``KIND NAME`` in usage lines, and code spans
written as 'x' rather than raw RST/Markdown backticks.

:func:`tidy_help` is applied by :mod:`cilia.cli.lazy` to each command it loads (and to the commands of
a command group); an explicit ``metavar`` is kept.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Any, get_args

_NAMES: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}
_PATH_OPTIONS = frozenset({"filename", "against", "expect"})
_CODE = re.compile(r"``([^`]+)``|`([^`]+)`")


def plain_code(text: str | None) -> str | None:
    """``text`` with RST/Markdown code spans (````x````, ```x```) written as 'x': help is plain text."""
    if not text:
        return text
    return _CODE.sub(lambda m: f"'{m.group(1) or m.group(2)}'", text)


def _choice(value: Any) -> str:
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


def value_name(param: Any) -> str | None:
    """What the help shows for the value of ``param`` (``None``: it takes none)."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    argument = getattr(param, "param_type_name", "") == "argument"
    if param.metavar and not argument:  # an argument's metavar is its name, shown beside it already
        return str(param.metavar)
    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return None
    annotation = desc.annotation
    if desc.is_list:
        annotation = (get_args(annotation) or (str,))[0]
    if desc.is_choice and desc.choices is not None:
        name = "[" + "|".join(_choice(c) for c in desc.choices) + "]"
    elif param.name in _PATH_OPTIONS or desc.is_path:
        name = "PATH"
    else:
        name = _NAMES.get(annotation, (param.name or "value").upper())
    if argument and not desc.is_choice:
        return "..." if desc.is_list else None
    return name + ("..." if desc.is_list and argument else "")


def tidy_help(command: Any) -> None:
    """Give every parameter of ``command`` (and of its sub-commands) a readable value name."""
    command.help = plain_code(command.help)
    if getattr(command, "short_help", None):
        command.short_help = plain_code(command.short_help)
    for param in getattr(command, "params", ()):
        if getattr(param, "help", None):
            param.help = plain_code(param.help)
        if getattr(param, "param_type_name", "") == "argument":
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()  # usage: KIND NAME, not {kind} {name}
            elif param.metavar.startswith("[") and param.metavar.endswith("]"):
                param.metavar = param.metavar[1:-1]  # typer brackets an optional argument itself
        if hasattr(param, "display_type_rich"):
            shown = value_name(param)
            param.display_type_rich = lambda ctx, shown=shown: shown
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)
    make_help_option = getattr(command, "get_help_option", None)
    if make_help_option is not None and not getattr(make_help_option, "_tidy", False):

        def help_option(ctx: Any) -> Any:
            option = make_help_option(ctx)
            if option is not None:
                option.display_type_rich = lambda ctx: None  # -h/--help is a flag
            return option

        help_option._tidy = True  # type: ignore[attr-defined]
        command.get_help_option = help_option
