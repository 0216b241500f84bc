from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "identity"
    verbose_name = "Identity: DIDs, keys and verifiable credentials"

    def ready(self):
        # System checks: identity.W001 (status lists published under another SITE_URL).
        from identity import checks  # noqa: F401
