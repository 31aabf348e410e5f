"""What ``cilia validate`` does once its options are parsed: validate (or ``--fix``) and print the
report. Imports no typer, so the command line's fast path (:mod:`cilia.cli.fastpath`) and the typer
command (:mod:`cilia.cli.commands.validate`) run the same code.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from cilia.cli.progress import analysing
from cilia.cli.render import plural, print_errors, print_json, print_warnings, print_yaml
from cilia.k8s.cilium_rules import Flags
from cilia.k8s.errors import Error, ValidationReport
from cilia.k8s.fix import fix_paths
from cilia.k8s.loader import LoadResult, load_paths, load_text
from cilia.k8s.validate import validate_result

EXIT_VALID, EXIT_INVALID, EXIT_BAD_INPUT = 0, 1, 2


def exit_code(report: ValidationReport) -> int:
    """0 valid, 1 invalid, 2 some input could not be read."""
    if report.unreadable:
        return EXIT_BAD_INPUT
    return EXIT_VALID if report.valid else EXIT_INVALID


def summary(report: ValidationReport) -> str:
    """The final line of the text output."""
    head = f"{plural(len(report.files), 'file')}, {plural(report.objects, 'object')}"
    if report.valid:
        return f"{head}: valid"
    return f"{head}: {plural(len(report.errors), 'error')}"


def show_report(report: ValidationReport, output: str) -> None:
    """Print a report in the chosen format: ``text`` (or ``table``), ``json``, ``yaml`` (warnings go
    to stderr)."""
    print_warnings(report.warnings)
    if output == "json":
        print_json(report.to_dict())
        return
    if output == "yaml":
        print_yaml(report.to_dict())
        return
    print_errors(report.errors)
    sys.stdout.write(summary(report) + "\n")


def run_fix(paths: list[str], write: bool, flags: Flags = Flags()) -> int:
    """Apply the corrections, print (or write) the result, and validate it."""
    try:
        results = fix_paths(list(paths), write=write)
    except Error as err:
        print_errors([err], sys.stderr)
        return EXIT_BAD_INPUT
    documents, errors, warnings, files, shown = [], [], [], [], []
    for res in results:
        loaded = load_text(res.text, res.file)
        documents += loaded.documents
        errors += loaded.errors
        warnings += loaded.warnings
        files.append(res.file)
        if loaded.documents or loaded.errors:  # not a file of skipped documents only (a CI workflow …)
            shown.append(res)
        if write:
            for change in res.changes:
                sys.stderr.write(f"{res.file}: {change.path}: {change.description}\n")
    if not write:
        sys.stdout.write("---\n".join(r.text if r.text.endswith("\n") else r.text + "\n" for r in shown))
    report = validate_result(
        LoadResult(tuple(files), tuple(documents), tuple(errors), tuple(warnings)), flags
    )
    if not report.valid:
        sys.stderr.write("the fixed manifests are still invalid:\n")
        print_errors(report.errors, sys.stderr)
    return exit_code(report)


def run_validate(
    filename: list[str], output: str = "text", fix: bool = False, write: bool = False,
    node_selector_labels: bool = False,
) -> int:
    """``cilia validate`` once its options are parsed (``--write`` needs ``--fix``: the caller checks);
    the exit status."""
    flags = Flags(node_selector_labels=node_selector_labels)
    if fix:
        return run_fix(filename, write, flags)
    loaded = load_paths(filename)
    with analysing(f"validating {len(loaded.documents)} objects", len(loaded.documents)):
        report = validate_result(loaded, flags)
    report = replace(report, skipped=loaded.skipped)  # listed in -o json too
    show_report(report, output)
    return exit_code(report)
