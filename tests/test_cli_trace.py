"""``cilia trace``: golden text/json per seed scenario, exit codes, bad input."""

from __future__ import annotations

import json

import pytest

from tests.helpers_analyze import check_golden, files_args, run_cli

CASES = [
    # (golden name, scenario, from, to, port, exit code)
    ("no-policy-a-to-b", "no-policy", "deployment:default/app-a", "deployment:default/app-b", "80/TCP", 0),
    ("deny-a-to-b", "deny", "deployment:default/app-a", "deployment:default/app-b", "80/TCP", 1),
    ("deny-a-to-world", "deny", "deployment:default/app-a", "entity:world", "443/TCP", 0),
    ("story-b-to-frontend", "story", "deployment:default/app-b", "default/app-a-frontend", "80/TCP", 0),
    (
        "story-b-to-frontend-8080",
        "story",
        "deployment:default/app-b",
        "default/app-a-frontend",
        "8080/TCP",
        1,
    ),
    ("story-frontend-to-b", "story", "default/app-a-frontend", "deployment:default/app-b", "80/TCP", 1),
    ("story-host-to-frontend", "story", "entity:host", "default/app-a-frontend", "22/TCP", 0),
    ("intended-frontend-to-b", "intended", "default/app-a-frontend", "deployment:default/app-b", "80/TCP", 0),
    ("intended-frontend-dns", "intended", "default/app-a-frontend", "198.19.0.53", "53/UDP", 1),
    ("prod-backend-to-db", "prod", "deployment:prod/backend", "deployment:prod/database", "5432/TCP", 0),
    ("prod-backend-to-db-ping", "prod", "deployment:prod/backend", "deployment:prod/database", "8/ICMP", 1),
]


@pytest.mark.parametrize(("name", "scenario", "src", "dst", "port", "code"), CASES)
def test_trace_golden(name: str, scenario: str, src: str, dst: str, port: str, code: int) -> None:
    args = ["trace", *files_args(scenario), "--from", src, "--to", dst, "--port", port]
    rc, out, err = run_cli(args)
    assert (rc, err) == (code, "")
    check_golden("trace", f"{name}.txt", out)
    rc, out, err = run_cli([*args, "-o", "json"])
    assert (rc, err) == (code, "")
    data = json.loads(out)
    assert data["allowed"] is (code == 0)
    check_golden("trace", f"{name}.json", out)


def test_trace_options_change_the_verdict() -> None:
    base = ["trace", *files_args("no-policy"), "--from", "deployment:default/app-a", "--to", "entity:world"]
    assert run_cli([*base, "--port", "80/TCP"])[0] == 0
    assert run_cli([*base, "--port", "80/TCP", "--enforcement-mode", "always"])[0] == 1
    host = ["trace", *files_args("story"), "--from", "entity:host", "--to", "default/app-a-frontend"]
    assert run_cli([*host, "--port", "22/TCP"])[0] == 0
    rc, out, _ = run_cli([*host, "--port", "22/TCP", "--allow-localhost", "policy"])
    assert rc == 1 and "DENIED (133 Policy denied)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "default/nope", "--to", "entity:world", "--port", "80/TCP"], "no pod default/nope"),
        (["--from", "default/app-a", "--to", "entity:world", "--port", "80/TCP"], "is ambiguous"),
        (["--from", "entity:world", "--to", "entity:cluster", "--port", "80/TCP"], "unknown entity"),
        (["--from", "entity:world", "--to", "entity:host", "--port", "80/GRE"], "unknown protocol"),
        (["--from", "deployment:default/app-c", "--to", "entity:host", "--port", "80"], "no Deployment"),
    ],
)
def test_trace_bad_peers_exit_2(args: list[str], message: str) -> None:
    rc, out, err = run_cli(["trace", *files_args("story"), *args])
    assert rc == 2 and out == "" and message in err


def test_trace_refuses_invalid_manifests() -> None:
    rc, out, err = run_cli(
        [
            "trace",
            "-f",
            "examples/seed/deny-a-to-b.yaml",
            "--from",
            "entity:world",
            "--to",
            "entity:host",
            "--port",
            "80/TCP",
        ]
    )
    assert rc == 2 and out == ""
    assert 'examples/seed/deny-a-to-b.yaml:10:3: spec.deny: unknown field "spec.deny"' in err
    rc, _, err = run_cli(
        ["trace", "-f", "no/such/file.yaml", "--from", "entity:world", "--to", "entity:host", "--port", "80"]
    )
    assert rc == 2 and "no such file or directory" in err
