"""Fixtures shared by the whole suite: factories for the consent domain, and the switch
between in-process Celery (most tests) and a real broker (tests marked `services`)."""

import os

import pytest

from consent_portal import demo, services
from consent_portal.celery import app as celery_app
from consent_portal.models import Purpose

IN_CI = os.getenv("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _celery_in_process(request):
    """Run tasks in-process unless the test drives a real worker through a real broker."""
    eager = request.node.get_closest_marker("services") is None
    saved = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = eager
    yield
    celery_app.conf.task_always_eager = saved


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    # Verified proofs and the last issuance state (identity), final receipts, hash tiles
    # and the log's verifier key (ledger) are remembered per process; a test must not see another test's,
    # whose rows were rolled back.
    from identity import selectors as identity_selectors
    from ledger import keys as ledger_keys
    from ledger import selectors as ledger_selectors

    from consent_portal import selectors as consent_selectors
    from identity import services as identity_services

    caches = (identity_selectors._verified_proofs, ledger_selectors._final_receipts,
              ledger_selectors._tile_levels, ledger_keys._verifier_keys)
    for cache in caches:
        cache.clear()
    identity_services._last_issuance = None
    consent_selectors._duo_permissions = (0.0, frozenset())
    from ledger import tasks as ledger_tasks

    ledger_tasks._broker_down_until = 0.0  # a broker failure in one test pauses no other
    yield
    for cache in caches:
        cache.clear()
    identity_services._last_issuance = None


@pytest.fixture
def purposes(db):
    demo.purposes_load()
    return {p.slug: p for p in Purpose.objects.all()}


@pytest.fixture
def make_participant(db):
    counter = iter(range(1, 10_000))

    def make(username=None):
        return services.participant_sign_up(
            username=username or f"participant{next(counter)}", password="a long test password 1"
        )

    return make


@pytest.fixture
def participant(make_participant):
    return make_participant("alice")


@pytest.fixture
def custodian_and_token(db):
    return services.custodian_create(name="Test biobank")


@pytest.fixture
def approved_study(db):
    study = services.study_submit(
        identifier="hmb-study",
        title="A health research study",
        institution="Test University",
        commercial=False,
        uses=[{"permission": "DUO:0000006"}],
    )
    for use in study.uses.all():
        services.study_use_decide(use_id=use.pk, approve=True, member=None)
    return study


@pytest.fixture
def ethics_member(db):
    return services.ethics_member_create(username="ethics1", password="a long test password 2")


def require_or_skip(reason: str):
    """A missing service is a skip on a laptop and a failure in CI."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)
