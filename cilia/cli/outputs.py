"""One ``-o`` vocabulary across commands: ``text`` and ``table`` both name the human format, and
``-o yaml`` is accepted wherever ``-o json`` is.

:func:`add_output_aliases` (applied by :mod:`cilia.cli.lazy` to every command with ``-o/--output``)
rewrites the value before the command parses it — ``table`` to ``text`` for a command whose human
format is called ``text`` and the other way round — and runs a command given ``-o yaml`` that only
knows JSON with ``-o json``, printing its JSON document(s) as YAML (a stream of JSON lines becomes
one YAML document each). A command that has its own ``yaml`` (``get``) is left alone.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

_WORDS = re.compile(r"[a-z]+")
_STREAMING = frozenset({"observe"})  # flows as they come: JSON lines, not one document to convert


def _accepted(param: Any) -> list[str]:
    desc = getattr(param, "type_descriptor", None)
    choices = getattr(desc, "choices", None) if desc is not None else None
    if choices:
        return [str(getattr(c, "value", c)) for c in choices]
    return _WORDS.findall((param.help or "").lower())


def _rewrite(args: list[str], opts: Sequence[str], aliases: dict[str, str]) -> tuple[list[str], bool]:
    """``args`` with each ``-o VALUE`` mapped through ``aliases``; whether ``yaml`` became ``json``."""
    out: list[str] = []
    yaml = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        value, prefix = None, ""
        if arg in opts and i + 1 < len(args):
            out.append(arg)
            i += 1
            value = args[i]
        else:
            for opt in opts:
                if opt.startswith("--") and arg.startswith(opt + "="):
                    prefix, value = opt + "=", arg[len(opt) + 1:]
                elif not opt.startswith("--") and arg.startswith(opt) and len(arg) > len(opt):
                    prefix, value = opt, arg[len(opt):]
        if value is None:
            out.append(arg)
        else:
            new = aliases.get(value, value)
            yaml = yaml or (value == "yaml" and new == "json")
            out.append(prefix + new)
        i += 1
    return out, yaml


def _as_yaml(text: str) -> str:
    """JSON text (one document, or one per line) as YAML; text that is not JSON is kept."""
    from cilia.cli.render import print_yaml

    try:
        docs = [json.loads(text)] if text.strip() else []
    except json.JSONDecodeError:
        try:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            return text
    out = io.StringIO()
    for i, doc in enumerate(docs):
        if i:
            out.write("---\n")
        print_yaml(doc, out)
    return out.getvalue()


def add_output_aliases(command: Any) -> None:
    """See the module docstring; recurses into a group's commands."""
    for sub in getattr(command, "commands", {}).values():
        add_output_aliases(sub)
    param = next((p for p in getattr(command, "params", ()) if p.name == "output"), None)
    if param is None or command.name in _STREAMING:
        return
    accepted = _accepted(param)
    aliases: dict[str, str] = {}
    if "text" in accepted and "table" not in accepted:
        aliases["table"] = "text"
    elif "table" in accepted and "text" not in accepted:
        aliases["text"] = "table"
    if "json" in accepted and "yaml" not in accepted:
        aliases["yaml"] = "json"
        param.help = (param.help or "").replace("json", "json | yaml", 1)
    if not aliases:
        return
    opts = [*param.opts, *param.secondary_opts]
    parse_args = command.parse_args
    state = {"yaml": False}  # this invocation asked for -o yaml (parsing comes before the callback)

    def parse_with_aliases(ctx: Any, args: list[str]) -> list[str]:
        args, state["yaml"] = _rewrite(list(args), opts, aliases)
        return parse_args(ctx, args)

    command.parse_args = parse_with_aliases
    if "yaml" not in aliases:
        return
    inner = command.callback

    @functools.wraps(inner)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not state["yaml"]:
            return inner(*args, **kwargs)
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured):
                return inner(*args, **kwargs)
        finally:
            sys.stdout.write(_as_yaml(captured.getvalue()))

    command.callback = run
