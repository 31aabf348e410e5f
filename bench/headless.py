"""Headless Chromium (Debian's ``chromium``) for the html page's browser test and benchmark: load a
page from a file, dump its DOM after the scripts ran, or take a screenshot. Offline: no name resolves
(``--host-resolver-rules``) and background services are off; the page's Content-Security-Policy
forbids fetching anything anyway. As root Chromium needs ``--no-sandbox``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
STATUS = re.compile(r'<div id="cilia-status"([^>]*)>')
ATTR = re.compile(r'data-([a-z-]+)="([^"]*)"')


def find_chromium() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _args(browser: str, profile: str, size: str) -> list[str]:
    args = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        f"--window-size={size}",
        "--hide-scrollbars",
        "--virtual-time-budget=10000",
    ]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


def _run(args: list[str], timeout: float) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(
    page: Path, fragment: str = "", png: Path | None = None, size: str = "1400,1000", timeout: float = 60
) -> str:
    """The page's DOM after its scripts ran (``fragment``: a ``#…`` for the page's URL); ``png``: also
    a screenshot of it as drawn in a ``size`` window (one browser run for both)."""
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium")
    shot = [f"--screenshot={png}"] if png is not None else []
    with tempfile.TemporaryDirectory(prefix="cilia-chromium-") as profile:
        url = page.resolve().as_uri() + fragment
        dom = _run([*_args(browser, profile, size), *shot, "--dump-dom", url], timeout)
    if png is not None and (not png.exists() or png.stat().st_size == 0):
        raise RuntimeError(f"no screenshot written to {png}")
    return dom


def status_of(dom: str) -> dict[str, str]:
    """The page's ``#cilia-status`` attributes (what its first render drew)."""
    found = STATUS.search(dom)
    if found is None:
        raise ValueError("no #cilia-status element in the page")
    return dict(ATTR.findall(found.group(1)))
