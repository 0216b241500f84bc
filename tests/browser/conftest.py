"""Playwright driving Debian's Chromium against the live server.

Playwright's sync API runs an event loop in the test thread; Django refuses ORM calls from
such a thread unless told otherwise, so this folder, and only this folder, allows it.
"""

import os
from pathlib import Path

import pytest

from consent_portal.duo import duo_terms_load
from tests.conftest import require_or_skip

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.getenv("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


# Module scope: Playwright keeps an event loop in the main thread while it runs, which
# would break asyncio.run() in tests collected after this folder.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        require_or_skip(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    from consent_portal.models import DuoTerm

    # live_server empties tables between tests, data migrations included.
    duo_terms_load(DuoTerm)
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name):
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    return take
