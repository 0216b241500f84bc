from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView

from consent_portal import errors, ethics_views, ops, portal_views
from consent_portal.api import views as api_views
from identity import api as identity_api
from ledger import converters  # noqa: F401 (registers <id:...>)

urlpatterns = [
    path("", portal_views.home, name="home"),
    path("signup/", portal_views.sign_up, name="signup"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("portal/", portal_views.overview, name="portal-overview"),
    path("portal/donation-code/", portal_views.donation_code, name="portal-donation-code"),
    path("portal/consents/", portal_views.consents, name="portal-consents"),
    path("portal/consents/grant/<slug:slug>/", portal_views.consent_grant, name="portal-consent-grant"),
    path(
        "portal/consents/<id:consent_id>/<str:action>/",
        portal_views.consent_change,
        name="portal-consent-change",
    ),
    path("portal/history/", portal_views.history, name="portal-history"),
    path("portal/history/<uuid:event_id>/receipt.json", portal_views.history_receipt, name="portal-history-receipt"),
    path("portal/credentials/", portal_views.credentials, name="portal-credentials"),
    path(
        "portal/credentials/<uuid:credential_uuid>.json",
        portal_views.credential_download,
        name="portal-credential-download",
    ),
    path("portal/keys/", portal_views.keys, name="portal-keys"),
    path("portal/keys/challenge", portal_views.key_challenge, name="portal-key-challenge"),
    path("portal/keys/register", portal_views.key_register, name="portal-key-register"),
    path("portal/keys/retire", portal_views.key_retire, name="portal-key-retire"),
    path("portal/keys/did.json", portal_views.did_document, name="portal-did-document"),
    path("portal/decisions/challenge", portal_views.decision_challenge, name="portal-decision-challenge"),
    path("portal/requests/", portal_views.requests_list, name="portal-requests"),
    path("portal/requests/<id:request_id>/answer/", portal_views.request_answer, name="portal-request-answer"),
    path("portal/withdraw/", portal_views.withdraw, name="portal-withdraw"),
    path("portal/withdraw/confirm", portal_views.withdraw_confirm, name="portal-withdraw-confirm"),
    path("portal/withdraw/challenge", portal_views.withdrawal_challenge, name="portal-withdrawal-challenge"),
    path("portal/rejoin/", portal_views.rejoin, name="portal-rejoin"),
    path("portal/rejoin/challenge", portal_views.rejoin_challenge, name="portal-rejoin-challenge"),
    path("portal/erase/", portal_views.erase, name="portal-erase"),
    path("portal/consents/<id:consent_id>/fhir.json", portal_views.consent_fhir, name="portal-consent-fhir"),
    path("ethics/", ethics_views.dashboard, name="ethics-dashboard"),
    path("ethics/uses/<id:use_id>/decide/", ethics_views.use_decide, name="ethics-use-decide"),
    path("ethics/entries/<id:index>/receipt.json", ethics_views.entry_receipt, name="ethics-entry-receipt"),
    path("api/v1/consent-checks", api_views.ConsentCheckView.as_view(), name="api-consent-check"),
    path(
        "api/v1/consent-checks/<uuid:check_id>",
        api_views.ConsentCheckDetailView.as_view(),
        name="api-consent-check-detail",
    ),
    path("api/v1/consent-checks/bulk", api_views.BulkConsentCheckView.as_view(), name="api-consent-check-bulk"),
    path("api/v1/credentials/verify", identity_api.CredentialVerifyView.as_view(), name="api-credentials-verify"),
    path("api/v1/me", api_views.MeView.as_view(), name="api-me"),
    path("api/v1/enrolments", api_views.EnrolmentView.as_view(), name="api-enrolments"),
    path("api/v1/samples", api_views.SampleView.as_view(), name="api-samples"),
    path("api/v1/studies", api_views.StudyView.as_view(), name="api-studies"),
    path("api/v1/withdrawals", api_views.WithdrawalFeedView.as_view(), name="api-withdrawals"),
    path(
        "api/v1/withdrawals/<id:seq>/confirm",
        api_views.WithdrawalConfirmView.as_view(),
        name="api-withdrawal-confirm",
    ),
    path(
        "api/v1/consents/<uuid:credential_uuid>/fhir",
        api_views.ConsentFhirView.as_view(),
        name="api-consent-fhir",
    ),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/ledger/", include("ledger.urls")),
    path("credentials/", include("identity.urls")),
    path("admin/", admin.site.urls),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
    # Last: any other API path is a JSON 404, DEBUG or not.
    re_path(r"^(?:api|credentials)/(?P<rest>.*)$", errors.api_not_found),
]

# Errors speak JSON to programs (/api/, /credentials/) and show pages of our own to people.
handler400 = "consent_portal.errors.bad_request"
handler403 = "consent_portal.errors.permission_denied"
handler404 = "consent_portal.errors.page_not_found"
handler500 = "consent_portal.errors.server_error"
