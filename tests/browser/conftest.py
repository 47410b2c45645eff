"""Browser tests run against the same local stack as the integration tests, in Debian's Chromium
(`make install` installs it) driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.integration.conftest import ops, stack

__all__ = ["browser", "ops", "stack"]

CHROMIUM = os.environ.get("PITBOSS_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240 - once per module, before the browser starts
        pytest.fail(f"Chromium not found at {CHROMIUM}: `make install` installs Debian's chromium")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        await b.close()
