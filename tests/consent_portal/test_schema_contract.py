"""The OpenAPI schema is the contract: schemathesis generates requests from it (bounded) and
fails on any 5xx, or on any response whose status, content type or body the schema does not
document."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings as hypothesis_settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from consent_portal.wsgi import application

schema = schemathesis.from_wsgi("/api/v1/schema/", application)


@pytest.fixture
def same_connection():
    """schemathesis calls the WSGI app directly, which fires request_started/finished and so
    Django's close_old_connections: on PostgreSQL that closed the test's connection mid-test
    (its transaction is the test's). Django's own test client disconnects it the same way."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token(purposes, same_connection):
    from consent_portal import services

    _, token = services.custodian_create(name="Contract lab")
    return token


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@schema.parametrize()
@hypothesis_settings(max_examples=50, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))
def test_every_answer_is_in_the_schema(case, token):
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call()
    case.validate_response(response, checks=(not_a_server_error, status_code_conformance,
                                             response_schema_conformance))
