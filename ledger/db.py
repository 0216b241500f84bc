"""Prepared statements on PostgreSQL for the ledger's hot reads (proofs, receipts). The same
helper as identity.db's: ledger may import neither identity nor the project package."""

from contextlib import contextmanager

from django.db import connection


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
