"""The portal's Content-Security-Policy is enforced here (no bypass, unlike the pages the
axe tests inject into) and breaks nothing: signing up and creating a key in the browser,
which runs the portal's own script, work, and Chromium reports no violation."""

import pytest
from playwright.sync_api import expect

from consent_portal.duo import duo_terms_load
from consent_portal.models import DuoTerm
from tests.browser.test_identity_keys import sign_up_and_hold_a_key

pytestmark = pytest.mark.browser


def test_the_key_flow_runs_under_the_portals_csp(browser, live_server):
    duo_terms_load(DuoTerm)
    context = browser.new_context(base_url=live_server.url)
    page = context.new_page()
    violations = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    try:
        response = page.goto("/login/")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        sign_up_and_hold_a_key(page, "csp-holder")
        expect(page.get_by_test_id("did")).to_contain_text("did:key:zDn")
        # An inline script, as an injected one would be, is refused.
        with pytest.raises(Exception, match="Content Security Policy"):
            page.add_script_tag(content="window.injected = true")
        assert violations and all("inline" in v or "Content Security Policy" in v for v in violations)
        violations.clear()
        page.goto("/portal/consents/")
        page.goto("/portal/keys/")
        expect(page.get_by_test_id("did-qr").locator("svg")).to_be_visible()
        assert violations == []
    finally:
        context.close()


def test_error_pages_are_the_portals_own_and_accessible(page, look, participant):
    response = page.goto("/no-such-page/")
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("Page not found")
    assert look("error-404") == []
    page.goto("/login/")
    page.fill("#id_username", participant.user.username)
    page.fill("#id_password", "a long test password 1")
    page.click("button[type=submit]")
    response = page.goto("/ethics/")
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("You cannot open this page")
    assert look("error-403") == []
