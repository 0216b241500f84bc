"""Logins: throttled and locked out by django-axes, for every kind of account (participants,
committee members, the admin), and no demo account in production.

AxesStandaloneBackend refuses a login without its request (Django's test client and code
that checks a password directly call authenticate() without one): those are not guesses
over HTTP, so they are passed to the next backend unthrottled.
"""

from axes.backends import AxesStandaloneBackend
from django.conf import settings


class ThrottledLoginBackend(AxesStandaloneBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        if not settings.DEMO_ALLOWED:
            from consent_portal import demo

            if demo.DEMO_PASSWORDS.get(username) == password:
                # The demo's passwords are published in the README: never a way in once
                # DEBUG is off, even where load_demo ran before.
                from axes.exceptions import AxesBackendPermissionDenied

                raise AxesBackendPermissionDenied("demo accounts are disabled when DEBUG is false")
        return super().authenticate(request, username=username, password=password, **kwargs)
