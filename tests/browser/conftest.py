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
    # bypass_csp: the tests inject axe-core as a script tag, which the portal's own CSP
    # (no inline script) rightly refuses; the pages' own resources are not affected.
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900},
                                  bypass_csp=True)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name):
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    return take


# axe-core from npm (tests/browser/node, pinned in its package-lock.json), injected from disk.
AXE = Path(__file__).resolve().parent / "node" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
def look(page):
    """Screenshots of the current page at a phone's width (390 px) and at 1280 px, and
    axe-core's WCAG 2.1 A/AA check at each: returns the violations, which a test asserts empty."""
    if not AXE.exists():
        require_or_skip(f"axe-core is not installed at {AXE} (npm ci --prefix tests/browser/node)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name):
        found = []
        for width in (390, 1280):
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
            if not page.evaluate("() => !!window.axe"):
                page.add_script_tag(path=str(AXE))
            result = page.evaluate(
                """() => axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"""
            )
            found += [f"{width}px {v['id']}: {v['help']} ({len(v['nodes'])} nodes: "
                      f"{[n['target'] for n in v['nodes']][:3]})" for v in result["violations"]]
        page.set_viewport_size({"width": 1280, "height": 900})
        return found

    return take
