"""Hot-query helpers: prepared statements on PostgreSQL (consent_portal uses them too, as it
may import identity; ledger keeps a copy of its own, since the apps may not import each
other), and the status-list ETag joins that identity's hot queries share."""

from contextlib import contextmanager

from django.db import connection

from identity import vocabulary
from identity.models import StatusList


@contextmanager
def _prepared_cursor():
    """On PostgreSQL a psycopg cursor that binds parameters server-side, so a fixed-text
    statement is prepared on the (persistent) connection and PostgreSQL stops parsing and
    planning it on every call (settings: DATABASE_PREPARE_THRESHOLD); elsewhere Django's
    cursor. Either way the cursor is Django's wrapper: errors are Django's, a broken
    connection is noticed, and the statement is counted and logged like any other."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = psycopg.Cursor(connection.connection)
    with connection._prepare_cursor(raw) as cursor:
        yield cursor


def prepared_rows(sql: str, params: list) -> list[tuple]:
    """Rows of a hot, fixed-text query (see _prepared_cursor)."""
    with _prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def prepared_execute(sql: str, params: list) -> int:
    """Runs a hot, fixed-text write (see _prepared_cursor); the number of rows it touched.
    A large parameter (a credential's JSON) travels as a bound value, not as SQL text."""
    with _prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def status_etag_joins() -> tuple[str, list]:
    """LEFT JOINs adding our two signed status lists as `r` (revocation) and `s`
    (suspension), so a query can select r.etag and s.etag, and their parameters. Every
    warm verification and issuance reads those ETags in the same query as the keys."""
    lists = StatusList._meta.db_table
    joins = " ".join(
        f"LEFT JOIN {lists} {alias} ON {alias}.purpose = %s AND {alias}.number = 1 AND {alias}.etag <> ''"
        for alias in ("r", "s")
    )
    return joins, list(vocabulary.STATUS_PURPOSES)


def status_etags(values) -> dict[str, str]:
    """{purpose: ETag} from the r.etag, s.etag columns, leaving out a list not signed yet."""
    return {purpose: etag for purpose, etag in zip(vocabulary.STATUS_PURPOSES, values, strict=True) if etag}
