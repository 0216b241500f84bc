"""psycopg cursors for the ledger's own SQL: bulk writes and reads that need binary rows
(sealing, verification), and prepared statements for the hot reads (proofs, receipts).
identity.db has the same prepared-statement helper: ledger may import neither identity nor
the project package."""

from contextlib import contextmanager

from django.db import connection


def raw_cursor():
    """A psycopg cursor binding parameters server-side, on Django's connection (and so in
    its transaction), outside Django's cursor wrapper: for COPY, binary results and the
    bulk statements of sealing and verification. (Django's own cursors interpolate
    parameters into the SQL text, which for a batch of hashes costs more than the
    database work.) PostgreSQL only."""
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors:
        return psycopg.Cursor(connection.connection)


@contextmanager
def _prepared_cursor(binary: bool = False):
    """On PostgreSQL raw_cursor inside Django's cursor wrapper, so a fixed-text statement is
    prepared on the (persistent) connection and PostgreSQL stops parsing and planning it on
    every call (settings: DATABASE_PREPARE_THRESHOLD), and errors are Django's, a broken
    connection is noticed, and the statement is counted and logged like any other;
    elsewhere Django's cursor."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    cursor = raw_cursor()
    if binary:
        from psycopg.pq import Format

        cursor.format = Format.BINARY
    with connection._prepare_cursor(cursor) as cursor:
        yield cursor


def prepared_rows(sql: str, params: list, *, binary: bool = False) -> list[tuple]:
    """Rows of a hot, fixed-text query (see _prepared_cursor); binary: on PostgreSQL in
    binary (a bytea arrives as its bytes, not as hex text twice its length to decode)."""
    with _prepared_cursor(binary) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
