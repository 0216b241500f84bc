"""The least a recorded consent check can cost, served beside the real one (bench only).

POST /bench/floor-check takes the same body as POST /api/v1/consent-checks, behind the same
token authentication, and does only what any check that answers from the database and keeps
an audit record must do: the one query that reads the sample, study, approval and consents
(selectors.check_facts) and the one statement that writes the check with its ledger entry
(services._check_record, whose commit asks for a seal). No decision rule, no credential
evidence, no receipt, an empty evidence object. Its rate against GET /api/v1/me bounds what
the real check can reach on this machine.

Served only by bench.consent.run, through bench.consent.settings; never part of the portal.
"""

from django.urls import path
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.views import APIView

from consent_portal import selectors, services
from consent_portal.api.serializers import ConsentCheckRequest
from consent_portal.models import ConsentCheck
from consent_portal.urls import urlpatterns as portal_urlpatterns


class FloorCheckView(APIView):
    def post(self, request):
        question = ConsentCheckRequest(data=request.data)
        question.is_valid(raise_exception=True)
        asked = question.validated_data
        facts = selectors.check_facts(custodian_id=request.user.pk, **asked)
        check = ConsentCheck(
            custodian=request.user, sample_identifier=asked["sample"], study_identifier=asked["study"],
            purpose_id=asked["purpose"], decision=ConsentCheck.DENY, reasons=[], evidence={},
            created_at=timezone.now(),
        )
        services._check_record(check, payload={
            "type": "consent.check", "check": str(check.id), "custodian": request.user.pk,
            "sample": facts.sample_id, "study": asked["study"], "purpose": asked["purpose"],
            "decision": check.decision, "reasons": [], "credential": None, "at": check.created_at.isoformat(),
        })
        return Response({"check": str(check.id), "consents_read": len(facts.consents)})


# The portal's URLs, then the floor: every real path resolves as it does in the portal.
urlpatterns = [*portal_urlpatterns, path("bench/floor-check", FloorCheckView.as_view())]
