"""A real browser for the e2e tests: the system Chromium (Debian package) driven by Playwright for Python,
headless, with an empty profile, no network beyond loopback. Screenshots go to artifacts/e2e/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "artifacts" / "e2e"


def browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: run ./install.sh --test"
    if not os.access(CHROMIUM, os.X_OK):
        return "chromium is not installed: run ./install.sh --test (scripts/install.d/40-chromium.sh)"
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A browser context on an empty user-data-dir; every request it makes is listed in `.requests`."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1400, "height": 900}, device_scale_factor=1)
        context.set_default_timeout(60_000)
        context.requests = []  # type: ignore[attr-defined]
        context.on("request", lambda r: context.requests.append((r.method, r.url, r.post_data)))
        errors: list[str] = []
        context.on("weberror", lambda e: errors.append(str(e.error)))
        try:
            yield context
        finally:
            context.close()
        assert not errors, f"uncaught errors in the pages: {errors}"


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
