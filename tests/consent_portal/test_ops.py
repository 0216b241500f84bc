"""What operators watch: /healthz, /readyz, /metrics, request ids."""

import json
import logging
import re
import uuid
from datetime import timedelta

from django.test import Client
from django.utils import timezone

from ledger import services as ledger_services
from ledger.models import Entry


def test_healthz_is_alive_without_touching_the_database(db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "alive"}
    assert "no-store" in response["Cache-Control"]


def test_readyz_names_what_is_not_ready(db):
    ready = Client().get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    entry = ledger_services.entry_append(kind="test.entry", payload={"n": 1})
    Entry.objects.filter(pk=entry.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    stuck = Client().get("/readyz")
    assert stuck.status_code == 503 and stuck["Retry-After"] == "10"
    assert "is the worker running?" in stuck.json()["checks"]["sealing"]
    ledger_services.ledger_seal_pending()
    assert Client().get("/readyz").status_code == 200


def test_metrics_report_checks_ledger_and_responses_to_this_host_or_the_token(db, settings, custodian_and_token):
    api = Client(HTTP_AUTHORIZATION=f"Bearer {custodian_and_token[1]}")
    api.post("/api/v1/consent-checks", {"sample": "x", "study": "y", "purpose": "DUO:0000006"},
             content_type="application/json")
    ledger_services.entry_append(kind="test.entry", payload={"n": 1})
    body = Client().get("/metrics").content.decode()
    assert 'consent_checks_total{decision="deny",kind="single"}' in body
    assert re.search(r"^ledger_pending_entries [1-9]", body, re.M) and "ledger_sealing_lag_seconds" in body
    assert "django_http_responses_total_by_status_total" in body
    settings.METRICS_TOKEN = "metrics-secret-123"
    assert Client().get("/metrics").status_code == 403
    assert Client(HTTP_AUTHORIZATION="Bearer metrics-secret-123").get("/metrics").status_code == 200
    settings.METRICS_TOKEN = ""
    assert Client(REMOTE_ADDR="192.0.2.7").get("/metrics").status_code == 403
    # Through a proxy on this host every request looks local: a forwarded one is refused.
    assert Client(HTTP_X_FORWARDED_FOR="198.51.100.4").get("/metrics").status_code == 403


def test_every_answer_carries_a_request_id_and_log_lines_name_it(db):
    response = Client().get("/healthz")
    request_id = response["X-Request-ID"]
    assert uuid.UUID(request_id)
    given = str(uuid.uuid4())
    assert Client(HTTP_X_REQUEST_ID=given).get("/healthz")["X-Request-ID"] == given  # a caller's UUID is kept
    made = Client(HTTP_X_REQUEST_ID="not a uuid\nforged log line").get("/healthz")["X-Request-ID"]
    assert uuid.UUID(made) and "forged" not in made
    # The configured JSON formatter writes one JSON object per line, request id included.
    from django.conf import settings
    from django_guid import set_guid
    from pythonjsonlogger.json import JsonFormatter

    spec = dict(settings.LOGGING["formatters"]["json"])
    spec.pop("()")
    formatter = JsonFormatter(fmt=spec["format"], rename_fields=spec["rename_fields"])
    handler = logging.getLogger().handlers[0]
    set_guid(given)
    record = logging.LogRecord("consent_portal", logging.WARNING, __file__, 1, "broker paused", None, None)
    for log_filter in handler.filters:
        log_filter.filter(record)
    line = json.loads(formatter.format(record))
    assert line["message"] == "broker paused" and line["level"] == "WARNING" and line["request_id"]
