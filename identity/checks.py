"""System checks of the identity app (registered in apps.IdentityConfig.ready).

identity.W001: the database holds status lists or credentials published under another
base URL than settings.SITE_URL. Credentials name their status list by its full address
({SITE_URL}/credentials/status/revocation) and our verifier reads only the lists published
under the current SITE_URL, so after a change of SITE_URL every credential issued before
it fails verification (fail closed: every custodian consent check denies).

A database check (Tags.database): Django runs it when it is given databases to check,
which `migrate` (the first step of `make run` and of a deployment) and
`manage.py check --database default` do; a plain `check` or `check --deploy` does not
touch the database. It makes two small queries (the two signed lists, and one credential's
status address) and stays silent when the tables are not there yet (before the first
migrate), when the SQLite file does not exist yet, or when the database cannot be reached
(other checks and the first request say so).
"""

import json
from contextlib import nullcontext
from pathlib import Path

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.db import DatabaseError, connections, transaction

from identity import vocabulary

W001 = "identity.W001"


def _sqlite_file_missing(connection) -> bool:
    # Connecting would create an empty database file as a side effect of a check.
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        return False
    return not Path(connection.settings_dict["NAME"]).exists()


def _published_bases(alias: str) -> dict[str, list[str]]:
    """{base URL: [what was published under it]} for the signed lists and one credential."""
    # Imported here: the checks module is imported at start-up, selectors (didkit) need not be.
    from identity.models import IssuedCredential, StatusList
    from identity.selectors import status_list_base_url

    found: dict[str, list[str]] = {}
    lists = (
        StatusList.objects.using(alias)
        .filter(number=1, purpose__in=vocabulary.STATUS_PURPOSES)
        .exclude(credential="")
        .values_list("purpose", "credential")
    )
    for purpose, text in lists:
        try:
            url = json.loads(text).get("id")
        except (ValueError, AttributeError):
            continue  # not our concern here: verification refuses such a list
        base = status_list_base_url(url, purpose)
        if base is not None:
            found.setdefault(base, []).append(f"the {purpose} status list")
    # One credential, by the unique index on status_index (random, so any one): a sample
    # that, after a change of SITE_URL, names the old address unless the credentials were
    # re-issued. Only its status address is read.
    url = (
        IssuedCredential.objects.using(alias)
        .order_by("status_index")
        .values_list("document__credentialStatus__statusListCredential", flat=True)
        .first()
    )
    base = status_list_base_url(url, vocabulary.REVOCATION)
    if base is not None:
        found.setdefault(base, []).append("issued credentials")
    return found


@register(Tags.database)
def status_lists_under_site_url(app_configs=None, databases=None, **kwargs):
    """identity.W001: credentials or status lists published under another SITE_URL."""
    if not databases:
        return []
    site_url = settings.SITE_URL
    warnings = []
    for alias in databases:
        connection = connections[alias]
        try:
            if _sqlite_file_missing(connection):
                continue
            # Inside a transaction (a test), a failing query must not spoil it.
            guard = transaction.atomic(using=alias) if connection.in_atomic_block else nullcontext()
            with guard:
                found = _published_bases(alias)
        except DatabaseError:
            continue  # no tables yet (before migrate), or no database to ask
        for base, what in sorted(found.items()):
            if base == site_url:
                continue
            named = " and ".join([", ".join(what[:-1]), what[-1]] if len(what) > 1 else what)
            warnings.append(Warning(
                f"{named[0].upper()}{named[1:]} in the database"
                f" {'were' if len(what) > 1 or what == ['issued credentials'] else 'was'}"
                f" published under {base},"
                f" but SITE_URL is {site_url}. Credentials name their status list by its full"
                f" address, so those credentials no longer verify here and custodian consent"
                f" checks on them deny (reasons credential_not_verified, status_list_foreign).",
                hint=(
                    f"If this portal still answers at {base}, set SITE_URL={base} again."
                    f" If the move to {site_url} is meant, re-sign the status lists under it"
                    f" (identity.services.status_list_sign for each purpose) and re-issue the"
                    f" credentials; until then they do not verify."
                ),
                obj=f"database {alias!r}",
                id=W001,
            ))
    return warnings
