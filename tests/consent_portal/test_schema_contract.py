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
def token(purposes):
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
