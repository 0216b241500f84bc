from django.apps import AppConfig


class ConsentPortalConfig(AppConfig):
    name = "consent_portal"
    verbose_name = "Consent"

    def ready(self):
        from consent_portal import lookups  # noqa: F401  registers field__any
