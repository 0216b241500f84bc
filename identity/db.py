"""Hot-query helpers identity uses (prepared_rows also serves consent_portal, which may
import identity)."""

from django.db import connection

from identity import vocabulary
from identity.models import StatusList


def prepared_rows(sql: str, params: list) -> list[tuple]:
    """Rows of a hot, fixed-text query. On PostgreSQL through a psycopg cursor that binds
    parameters server-side, so the statement is prepared on the (persistent) connection and
    PostgreSQL stops planning it on every call (settings: DATABASE_PREPARE_THRESHOLD);
    elsewhere through Django's cursor. Either way the cursor is Django's wrapper: errors are
    Django's, a broken connection is noticed, and the query is counted and logged like any
    other."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors:
        raw = psycopg.Cursor(connection.connection)
    with connection._prepare_cursor(raw) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


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
