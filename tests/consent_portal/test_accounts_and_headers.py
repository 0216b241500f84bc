"""Accounts resist guessing, and every response carries the headers a health-data portal
needs: throttled, locked-out logins for every kind of account (django-axes), a stronger
password rule, no demo way in with DEBUG off, CSP, Permissions-Policy, no-store."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from consent_portal import demo, services

PASSWORD = "a long test password 1"


def login(client, username, password, url="/login/"):
    return client.post(url, {"username": username, "password": password})


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_guessing_a_password_locks_the_account_even_for_the_right_one(db, settings, make_participant, url):
    settings.AXES_FAILURE_LIMIT = 5
    if url == "/admin/login/":
        get_user_model().objects.create_superuser(username="root", password=PASSWORD)
        username = "root"
    else:
        username = make_participant("guessed").user.username
    client = Client()
    for n in range(4):
        assert login(client, username, f"wrong guess {n}", url).status_code == 200
    # The fifth failure locks the account; then even the right password is refused.
    assert login(client, username, "wrong guess 5", url).status_code == 429
    locked = login(client, username, PASSWORD, url)
    assert locked.status_code == 429 and b"Too many attempts" in locked.content
    assert "_auth_user_id" not in client.session
    # The owner, from their own address, still gets in: a guesser elsewhere cannot lock
    # an account (the committee's, the admin's) out.
    other = Client(REMOTE_ADDR="192.0.2.9")
    assert login(other, username, PASSWORD, url).status_code == 302


def test_behind_proxies_the_client_address_is_taken_from_the_right(db, settings, make_participant):
    settings.AXES_FAILURE_LIMIT = 3
    settings.PROXY_COUNT = 1
    make_participant("proxied")
    # Every request reaches us from the proxy (127.0.0.1); it appends the client's address.
    guesser = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="spoofed-by-client, 198.51.100.4")
    for _ in range(3):
        login(guesser, "proxied", "wrong")
    assert login(guesser, "proxied", PASSWORD).status_code == 429
    owner = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.8")
    assert login(owner, "proxied", PASSWORD).status_code == 302


def test_a_success_resets_the_count(db, settings, make_participant):
    settings.AXES_FAILURE_LIMIT = 3
    participant = make_participant("forgetful")
    client = Client()
    for _ in range(2):
        login(client, "forgetful", "wrong")
    assert login(client, "forgetful", "a long test password 1").status_code == 302
    client.logout()
    for _ in range(2):
        login(client, "forgetful", "wrong")
    assert login(client, "forgetful", "a long test password 1").status_code == 302
    assert participant.user.is_active


def test_sign_up_refuses_a_short_password(db):
    response = Client().post("/signup/", {"username": "shorty", "password1": "eleven-char",
                                          "password2": "eleven-char"})
    assert response.status_code == 200 and b"at least 12 characters" in response.content
    assert not get_user_model().objects.filter(username="shorty").exists()


def test_no_demo_way_in_once_debug_is_off(db, settings):
    demo.demo_load()
    api = Client(HTTP_AUTHORIZATION=f"Bearer {demo.DEMO_CUSTODIAN_TOKEN}")
    question = {"sample": "S-0001", "study": "diabetes-genomics-2026", "purpose": "DUO:0000006"}
    assert api.post("/api/v1/consent-checks", question, content_type="application/json").status_code == 200
    settings.DEMO_ALLOWED = False  # what DEBUG=false sets at start-up
    assert api.post("/api/v1/consent-checks", question, content_type="application/json").status_code == 401
    refused = login(Client(), "ethics", demo.DEMO_PASSWORDS["ethics"])
    assert refused.status_code in (200, 429) and "_auth_user_id" not in refused.client.session


def test_every_page_has_csp_and_permissions_policy_and_personal_ones_no_store(participant, custodian_and_token):
    anonymous = Client()
    page = anonymous.get("/login/")
    csp = page["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "camera=()" in page["Permissions-Policy"] and "geolocation=()" in page["Permissions-Policy"]
    client = Client()
    client.force_login(participant.user)
    for path in ("/portal/", "/portal/consents/", "/portal/history/", "/portal/credentials/"):
        response = client.get(path)
        assert response.status_code == 200 and "no-store" in response["Cache-Control"], path
    api = Client(HTTP_AUTHORIZATION=f"Bearer {custodian_and_token[1]}")
    check = api.post("/api/v1/consent-checks", {"sample": "x", "study": "y", "purpose": "DUO:0000006"},
                     content_type="application/json")
    assert "no-store" in check["Cache-Control"]
    # Public documents keep their own caching (status lists are fetched by every verifier).
    status = anonymous.get("/credentials/status/revocation")
    assert status.status_code == 200 and "no-store" not in status["Cache-Control"]
