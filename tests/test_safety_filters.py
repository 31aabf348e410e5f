"""Flow filter values from the command line end in clean errors, never tracebacks."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cilia.cli.main import app
from cilia.observe.filters import FilterError, FlowFilter, parse_duration_ns


@pytest.mark.parametrize("port", ["²", "٣", "1_0", " 80", "80\n", "65536", "-1", "0x50", ""])
def test_bad_ports_are_filter_errors(port: str) -> None:
    with pytest.raises(FilterError, match="--port"):
        FlowFilter.build(ports=[port])


def test_good_ports() -> None:
    assert FlowFilter.build(ports=["0", "80", 65535]).ports == (0, 80, 65535)


@pytest.mark.parametrize("text", ["٣s", "1x", "", "5 m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(FilterError):
        parse_duration_ns(text)


def test_observe_port_superscript_is_a_clean_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(app, ["observe", "--port", "²", "--state-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--port" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
