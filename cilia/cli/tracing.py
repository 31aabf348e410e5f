"""What ``cilia trace`` does once its options are parsed: load the manifests, resolve both sides and
print each verdict with the rule that decided it. Imports no typer, so the command line's fast path
(:mod:`cilia.cli.fastpath`) and the typer command (:mod:`cilia.cli.commands.trace`) run the same code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cilia.analyze.peer_names import DEFAULT_NAMESPACE, LabelQuery, label_query, parse_port_query
from cilia.cli.analysing import EXIT_FAIL, EXIT_OK, fail, guarded, load, node_dns
from cilia.cli.render import print_json
from cilia.policy.resolve import AllowLocalhost, EnforcementMode

if TYPE_CHECKING:
    from cilia.policy.l7 import L7Request


def l7_request(
    method: str | None,
    path: str | None,
    host: str | None,
    headers: list[str] | None,
    sni: str | None,
    dns: str | None = None,
) -> L7Request | None:
    """The request the --http-*/--tls-sni/--dns-query options describe (None: none given); a
    header is ``NAME:VALUE`` (spaces after the colon are dropped)."""
    if not (method or path or host or headers or sni is not None or dns):
        return None
    parsed: dict[str, str] = {}
    for h in headers or ():
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise fail(f"--http-header {h!r}: expected NAME:VALUE")
        parsed[name.strip()] = value.strip()
    from cilia.policy.l7 import L7Request  # here: a trace without --http-*/--tls-sni/--dns-query needs none

    return L7Request(method or "", path or "", host or "", parsed, sni, dns)


def labels_of(
    labels: str | None, own_ns: str | None, namespace: str | None, all_namespaces: bool
) -> LabelQuery | None:
    """A --from-labels/--to-labels query in its namespace: --from-namespace/--to-namespace, else -n,
    else every namespace with -A, else default (as kubectl -l)."""
    if labels is None:
        if own_ns is not None:
            raise fail("--from-namespace/--to-namespace go with --from-labels/--to-labels")
        return None
    ns = own_ns or namespace or (None if all_namespaces else DEFAULT_NAMESPACE)
    return guarded(lambda: label_query(labels, ns))


class TraceArgs:
    """``cilia trace``'s options, as parsed (names and order as the typer command's parameters).
    A plain class: creating a dataclass this size costs ~1 ms at every start here (issue 15)."""

    def __init__(
        self,
        filename: list[str] | None = None,
        src: str | None = None,
        dst: str | None = None,
        port: str | None = None,
        from_labels: str | None = None,
        to_labels: str | None = None,
        from_namespace: str | None = None,
        to_namespace: str | None = None,
        namespace: str | None = None,
        all_namespaces: bool = False,
        output: str = "text",  # text | json
        enforcement_mode: EnforcementMode = EnforcementMode.DEFAULT,
        allow_localhost: AllowLocalhost = AllowLocalhost.ALWAYS,
        node_selector_labels: bool = False,
        local_node: str = "",
        state_dir: Path | None = None,
        no_state: bool = False,
        http_method: str | None = None,
        http_path: str | None = None,
        http_host: str | None = None,
        http_header: list[str] | None = None,
        tls_sni: str | None = None,
        dns_query: str | None = None,
    ) -> None:
        self.filename = filename if filename is not None else []
        self.src, self.dst, self.port = src, dst, port
        self.from_labels, self.to_labels = from_labels, to_labels
        self.from_namespace, self.to_namespace = from_namespace, to_namespace
        self.namespace, self.all_namespaces = namespace, all_namespaces
        self.output = output
        self.enforcement_mode, self.allow_localhost = enforcement_mode, allow_localhost
        self.node_selector_labels, self.local_node = node_selector_labels, local_node
        self.state_dir, self.no_state = state_dir, no_state
        self.http_method, self.http_path, self.http_host = http_method, http_path, http_host
        self.http_header, self.tls_sni, self.dns_query = http_header, tls_sni, dns_query


def run_trace(a: TraceArgs) -> int:
    """``cilia trace``: print the verdict(s); the exit status (0 allowed, 1 denied; bad input exits 2)."""
    from cilia.analyze.trace import render_text
    from cilia.analyze.trace_query import side_of, trace_between

    if a.namespace is not None and a.all_namespaces:
        raise fail("-n and -A contradict each other: give one")
    src_labels = labels_of(a.from_labels, a.from_namespace, a.namespace, a.all_namespaces)
    dst_labels = labels_of(a.to_labels, a.to_namespace, a.namespace, a.all_namespaces)
    port = a.port
    query = guarded(lambda: parse_port_query(port)) if port is not None else None
    request = l7_request(a.http_method, a.http_path, a.http_host, a.http_header, a.tls_sni, a.dns_query)
    analysis = load(
        a.filename,
        a.enforcement_mode,
        a.allow_localhost,
        node_dns(a.state_dir, a.no_state),
        a.node_selector_labels,
        a.local_node,
    )
    source = guarded(lambda: side_of(analysis, a.src, src_labels, a.namespace, "from"))
    dest = guarded(lambda: side_of(analysis, a.dst, dst_labels, a.namespace, "to"))
    if query is None:
        from cilia.analyze.every_port import every_port, render_every_port  # no --port: every port class

        answer = guarded(lambda: every_port(analysis, source, dest, request))
        if a.output == "json":
            print_json(answer.to_dict())
        else:
            sys.stdout.write(render_every_port(answer))
        return EXIT_OK if answer.allowed else EXIT_FAIL
    result = guarded(lambda: trace_between(analysis, source, dest, query, request))
    if a.output == "json":
        print_json(result.to_dict())
    else:
        sys.stdout.write(render_text(result))
    return EXIT_OK if result.allowed else EXIT_FAIL
