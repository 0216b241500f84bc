"""Logins: throttled and locked out by django-axes, for every kind of account (participants,
committee members, the admin), and no demo account in production.

AxesStandaloneBackend refuses a login without its request (Django's test client and code
that checks a password directly call authenticate() without one): those are not guesses
over HTTP, so they are passed to the next backend unthrottled.
"""

from axes.backends import AxesStandaloneBackend
from django.conf import settings


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or behind PROXY_COUNT proxies the address that
    many entries from the right of X-Forwarded-For (each proxy appends what it saw), so a
    client cannot choose its own by sending the header."""
    count = settings.PROXY_COUNT
    if count > 0:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR", "")


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
