"""``cilia validate`` without typer: the most frequent CI command, started often (issue 15 item 2).

:func:`run` reads the command line ``validate`` takes in its common forms — ``-f/--filename``,
``-o/--output``, ``--fix``, ``--write``, ``--enable-node-selector-labels``, ``-R``, ``--exclude``,
``--strict``, as ``--opt VALUE``, ``--opt=VALUE`` or ``-fVALUE`` — and runs
:func:`cilia.cli.validating.run_validate` as the typer command would. Anything else (``-h``, a
mistake, an unknown option, a missing ``-f``, ``--write`` without ``--fix``) returns ``None``: typer then
parses the line and gives its usual help or usage error. tests/test_cli_fastpath.py checks that both
paths print and exit alike.
"""

from __future__ import annotations

from collections.abc import Sequence

_VALUED = {"-f": "filename", "--filename": "filename", "-o": "output", "--output": "output",
           "--exclude": "exclude"}
_FLAGS = {"--fix": "fix", "--write": "write", "--enable-node-selector-labels": "node_selector_labels",
          "-R": "recursive", "--recursive": "recursive", "--strict": "strict"}
_OUTPUTS = {"text": "text", "table": "text", "json": "json", "yaml": "yaml"}


def parse_validate(args: Sequence[str]) -> dict[str, object] | None:
    """The options of ``cilia validate ARGS``, or ``None`` when typer should parse them."""
    got: dict[str, object] = {"filename": [], "exclude": [], "output": "text"}
    i = 0
    while i < len(args):
        arg = args[i]
        name, value = arg, None
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
        elif arg[:2] in ("-f", "-o") and len(arg) > 2:
            name, value = arg[:2], arg[2:]
        if name in _FLAGS and value is None:
            got[_FLAGS[name]] = True
        elif name in _VALUED:
            if value is None:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            key = _VALUED[name]
            if key == "output":
                if value not in _OUTPUTS:
                    return None
                got["output"] = _OUTPUTS[value]
            else:
                got[key].append(value)  # type: ignore[attr-defined]
        else:
            return None  # -h, a positional argument, an unknown option: typer's to answer
        i += 1
    if not got["filename"] or (got.get("write") and not got.get("fix")):
        return None
    return got


def run(argv: Sequence[str]) -> int | None:
    """The exit status of ``cilia ARGV`` when the fast path answers it, else ``None``."""
    if not argv or argv[0] != "validate":
        return None
    got = parse_validate(argv[1:])
    if got is None:
        return None
    from cilia.cli.reading import reading
    from cilia.cli.validating import run_validate

    with reading(bool(got.get("recursive")), list(got["exclude"]), bool(got.get("strict"))):  # type: ignore[call-overload]
        return run_validate(
            list(got["filename"]),  # type: ignore[call-overload]
            str(got["output"]),
            bool(got.get("fix")),
            bool(got.get("write")),
            bool(got.get("node_selector_labels")),
        )
