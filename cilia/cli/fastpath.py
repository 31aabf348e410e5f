"""``cilia validate`` and ``cilia trace`` without typer: the commands started most often, from CI and
by hand (issue 15 item 2). Importing typer (and through it pydantic's adapters) costs more than
either command's own work on a small input.

:func:`run` reads the command line of these commands in their usual forms — every option each takes,
as ``--opt VALUE``, ``--opt=VALUE`` or ``-oVALUE`` (short options) — and runs
:func:`cilia.cli.validating.run_validate` or :func:`cilia.cli.tracing.run_trace`, the code the typer
commands run. Anything else (``-h``, a positional argument, an unknown option, a value that is not one
of an option's choices or looks like an option, a namespace that is not a DNS label, a missing ``-f``,
``--write`` without ``--fix``, ``-o yaml`` for trace) returns ``None``: typer then parses the line and
gives its usual answer. tests/test_cli_fastpath.py checks that both paths print and exit alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

# ``-R``, ``--exclude``, ``--strict``: every command with -f has them (cilia.cli.fileselect)
_READING = {"-R": ("recursive", "flag"), "--recursive": ("recursive", "flag"), "--strict": ("strict", "flag"),
            "--exclude": ("exclude", "multi")}


class _Spec:
    """One command's options: name -> (parameter, kind), kind ``flag``, ``value`` (the last one
    given counts, as click) or ``multi``; ``checks`` turn a value into the parameter's or ``None``
    (typer's to refuse). A plain class: a dataclass costs ~1 ms to create at every start here."""

    __slots__ = ("checks", "options")

    def __init__(
        self, options: dict[str, tuple[str, str]], checks: dict[str, Callable[[str], object]]
    ) -> None:
        self.options = options
        self.checks = checks


def _choices(table: dict[str, object]) -> Callable[[str], object]:
    return lambda value: table.get(value)


def _namespace(value: str) -> str | None:
    from cilia.k8s.names import namespace_errors

    return None if namespace_errors(value) else value  # typer's callback refuses it, with its message


def _takes_value(spec: _Spec, name: str) -> bool:
    return name in spec.options and spec.options[name][1] != "flag"


def parse(args: Sequence[str], spec: _Spec) -> dict[str, object] | None:
    """The parameters ``args`` give, or ``None`` when typer should parse them."""
    got: dict[str, object] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        name, value = arg, None
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
        elif len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and _takes_value(spec, arg[:2]):
            name, value = arg[:2], arg[2:]
        if name not in spec.options:
            return None  # -h, a positional argument, an unknown option, -An: typer's to answer
        param, kind = spec.options[name]
        if kind == "flag":
            if value is not None:
                return None
            got[param] = True
            i += 1
            continue
        if value is None:
            if i + 1 >= len(args):
                return None
            i += 1
            value = args[i]
            if value.startswith("-") and value != "-":
                return None  # an option's value that looks like an option: as typer decides
        if param in spec.checks:
            checked = spec.checks[param](value)
            if checked is None:
                return None
            value = checked  # type: ignore[assignment]
        if kind == "multi":
            got.setdefault(param, []).append(value)  # type: ignore[union-attr]
        else:
            got[param] = value
        i += 1
    return got


_OUTPUT_TEXT_JSON: dict[str, object] = {"text": "text", "table": "text", "json": "json"}
VALIDATE = _Spec(
    {"-f": ("filename", "multi"), "--filename": ("filename", "multi"), "-o": ("output", "value"),
     "--output": ("output", "value"), "--fix": ("fix", "flag"), "--write": ("write", "flag"),
     "--enable-node-selector-labels": ("node_selector_labels", "flag"), **_READING},
    {"output": _choices({**_OUTPUT_TEXT_JSON, "yaml": "yaml"})},
)


def _trace_spec() -> _Spec:
    from cilia.policy.resolve import AllowLocalhost, EnforcementMode

    value = {
        "--from": "src", "--to": "dst", "--port": "port", "--from-labels": "from_labels",
        "--to-labels": "to_labels", "--from-namespace": "from_namespace", "--to-namespace": "to_namespace",
        "-n": "namespace", "--namespace": "namespace", "-o": "output", "--output": "output",
        "--enforcement-mode": "enforcement_mode", "--allow-localhost": "allow_localhost",
        "--node": "local_node", "--state-dir": "state_dir", "--http-method": "http_method",
        "--http-path": "http_path", "--http-host": "http_host", "--tls-sni": "tls_sni",
        "--dns-query": "dns_query",
    }
    options = {name: (param, "value") for name, param in value.items()}
    options |= {"-f": ("filename", "multi"), "--filename": ("filename", "multi"),
                "--http-header": ("http_header", "multi"), "-A": ("all_namespaces", "flag"),
                "--all-namespaces": ("all_namespaces", "flag"),
                "--enable-node-selector-labels": ("node_selector_labels", "flag"),
                "--no-state": ("no_state", "flag"), **_READING}
    checks: dict[str, Callable[[str], object]] = {
        "output": _choices(_OUTPUT_TEXT_JSON),  # -o yaml: typer's (its JSON shown as YAML)
        "enforcement_mode": _choices({m.value: m for m in EnforcementMode}),
        "allow_localhost": _choices({m.value: m for m in AllowLocalhost}),
        "namespace": _namespace, "from_namespace": _namespace, "to_namespace": _namespace,
        "state_dir": Path,
    }
    return _Spec(options, checks)


def _reading_opts(got: dict[str, object]) -> tuple[bool, list[str], bool]:
    return bool(got.pop("recursive", False)), list(got.pop("exclude", [])), bool(got.pop("strict", False))  # type: ignore[call-overload]


def _validate(args: Sequence[str]) -> int | None:
    got = parse(args, VALIDATE)
    if got is None or not got.get("filename") or (got.get("write") and not got.get("fix")):
        return None
    from cilia.cli.reading import reading
    from cilia.cli.validating import run_validate

    with reading(*_reading_opts(got)):
        return run_validate(
            list(got["filename"]),  # type: ignore[call-overload]
            str(got.get("output", "text")),
            bool(got.get("fix")),
            bool(got.get("write")),
            bool(got.get("node_selector_labels")),
        )


def _trace(args: Sequence[str]) -> int | None:
    got = parse(args, _trace_spec())
    if got is None or not got.get("filename"):
        return None  # no -f: typer names the missing option
    from cilia.cli.reading import reading
    from cilia.cli.tracing import TraceArgs, run_trace

    with reading(*_reading_opts(got)):
        return run_trace(TraceArgs(**got))  # type: ignore[arg-type]


_NO_PLUGINS = "PYDANTIC_DISABLE_PLUGINS"
_COMMANDS: dict[str, Callable[[Sequence[str]], int | None]] = {"validate": _validate, "trace": _trace}


def run(argv: Sequence[str]) -> int | None:
    """The exit status of ``cilia ARGV`` when the fast path answers it, else ``None``."""
    command = _COMMANDS.get(argv[0]) if argv else None
    if command is None:
        return None
    # No pydantic plugins (unless the user names some): cilia's models use none, and looking for them
    # reads every installed distribution's metadata at the first model built (~20 ms here, a third of
    # Python's own start-up). Restored after, so calling run() in a process leaves it as it was.
    saved = os.environ.get(_NO_PLUGINS)
    os.environ[_NO_PLUGINS] = saved if saved is not None else "__all__"
    try:
        return command(argv[1:])
    except SystemExit as done:  # bad input found while running: exit 2 with the problems on stderr
        return done.code if isinstance(done.code, int) else 1
    finally:
        if saved is None:
            del os.environ[_NO_PLUGINS]
