# Mounted by the project at credentials/ (vocabulary.PUBLIC_PREFIX): the URLs credentials
# name are built from SITE_URL and that prefix.
from django.urls import path

from identity import views

app_name = "identity"

urlpatterns = [
    path("status/<str:purpose>", views.status_list, name="status-list"),
    path("contexts/consent/v1", views.consent_context, name="consent-context"),
]
