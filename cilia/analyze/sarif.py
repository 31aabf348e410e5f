"""``cilia lint -o sarif``: the findings as a SARIF 2.1.0 log, the format code-scanning services read
(GitHub's upload-sarif action among them).

One run, the tool ``cilia`` with the rules its results refer to (id, description, default level),
one result per finding located at file:line:column with a relative URI, and each finding's fix in
the message. Output is deterministic (golden files).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from cilia.analyze.findings import RULES, Finding, Severity

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _uri(file: str) -> str:
    """A relative URI for a file as given on the command line (``-`` is stdin)."""
    if file in ("", "-"):
        return "stdin"
    path = PurePosixPath(file.replace("\\", "/"))
    if path.is_absolute():  # an absolute path is a file: URI; a relative one stays relative to the run
        return "file://" + quote(str(path), safe="/._-~")
    return quote(str(path).removeprefix("./"), safe="/._-~")


def _result(finding: Finding, index: dict[str, int]) -> dict[str, Any]:
    text = f"{finding.policy}: {finding.message}" if finding.policy else finding.message
    region: dict[str, int] = {}
    if finding.line:
        region["startLine"] = finding.line
        if finding.column:
            region["startColumn"] = finding.column
    location: dict[str, Any] = {"artifactLocation": {"uri": _uri(finding.file)}}
    if region:
        location["region"] = region
    result: dict[str, Any] = {
        "ruleId": finding.rule,
        "ruleIndex": index[finding.rule],
        "level": _LEVEL[finding.severity],
        "message": {"text": f"{text}\nfix: {finding.fix}" if finding.fix else text},
        "locations": [{"physicalLocation": location}],
    }
    if finding.path:
        result["properties"] = {"field": finding.path}
    return result


def sarif_log(findings: list[Finding] | tuple[Finding, ...], version: str) -> dict[str, Any]:
    """The SARIF log of ``findings`` by cilia ``version``."""
    used = sorted({f.rule for f in findings})  # the rules the results refer to, in id order
    rules = [
        {
            "id": rule,
            "shortDescription": {"text": RULES[rule][1]},
            "defaultConfiguration": {"level": _LEVEL[RULES[rule][0]]},
        }
        for rule in used
    ]
    index = {rule: i for i, rule in enumerate(used)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "cilia",
                        "version": version,
                        "rules": rules,
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": [_result(f, index) for f in findings],
            }
        ],
    }
