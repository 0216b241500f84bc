from django.apps import AppConfig


class ConsentPortalConfig(AppConfig):
    name = "consent_portal"
    verbose_name = "Consent"
