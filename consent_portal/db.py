"""Database helpers the apps share (identity, ledger and consent_portal): kept here, in the
project package, so that neither app depends on the other for them."""

from django.db import connection


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
