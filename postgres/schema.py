"""The sink's schema, versioned: created or migrated on every start, idempotently.

``jobpulse_schema`` holds one row, the version: the number of :data:`MIGRATIONS` applied.
:func:`migrate` applies the missing ones in one transaction, under an advisory lock, so two
sinks starting at once migrate once. A database whose version is newer than this jobpulse
knows is refused (an older sink must not write a table it does not understand).

Tables are created in the first schema of the connection's ``search_path`` (``public`` by
default; a URL may choose another: ``?options=-csearch_path%3Dmine``).

Version 1, the table ``offers``: one row per offer id, never deleted —

=====================  ================  ================================================
column                 type              content
=====================  ================  ================================================
``id``                 text, key         the offer id
``category``           text              as the dataflow counted it (null: never opened)
``continent``          text              as the dataflow counted it
``latitude``           double            of the offer
``longitude``          double
``profession_id``      bigint
``name``               text
``contract_type``      text
``published_at``       timestamptz       the offer's ``published_at``
``opened_at``          timestamptz       event time of the upsert that opened it
``closed_at``          timestamptz       event time of the delete; null while open
``source_partition``   int               offers record of the newest applied row
``source_offset``      bigint
``source_timestamp``   timestamptz       its order time
``version``            bigint            its version (:mod:`jobpulse.offer_row`)
``updated_at``         timestamptz       when the sink last changed the row
=====================  ================  ================================================

The index ``offers_open_cells`` serves the breakdown query, ``SELECT category, continent,
count(*) FROM offers WHERE closed_at IS NULL GROUP BY 1, 2``, as an index-only scan of the
open rows alone (measured in ``docs/postgres.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobpulse.errors import JobpulseError

if TYPE_CHECKING:
    import psycopg

#: Key of the advisory lock held while migrating (any constant unlikely to clash).
MIGRATION_LOCK = 0x6A6F6270756C7365  # "jobpulse"

#: Migration *n* (1-based) takes the schema from version n - 1 to n. Append only: a released
#: migration never changes (databases that applied it would not see the change).
MIGRATIONS: tuple[str, ...] = (
    # 1: the offers table and the breakdown's index.
    """
    CREATE TABLE offers (
        id               text PRIMARY KEY,
        category         text,
        continent        text,
        latitude         double precision,
        longitude        double precision,
        profession_id    bigint,
        name             text,
        contract_type    text,
        published_at     timestamptz,
        opened_at        timestamptz,
        closed_at        timestamptz,
        source_partition integer NOT NULL,
        source_offset    bigint NOT NULL,
        source_timestamp timestamptz NOT NULL,
        version          bigint NOT NULL,
        updated_at       timestamptz NOT NULL
    );
    CREATE INDEX offers_open_cells ON offers (category, continent) WHERE closed_at IS NULL;
    """,
)

#: The schema version this jobpulse writes.
VERSION = len(MIGRATIONS)


class SchemaTooNew(JobpulseError):
    """The database was migrated by a newer jobpulse."""


def migrate(conn: psycopg.Connection) -> tuple[int, int]:
    """Bring the schema to :data:`VERSION`; return (version found, version now).

    Commits (one transaction); idempotent; safe when several sinks start at once.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS jobpulse_schema ("
            " one boolean PRIMARY KEY DEFAULT true CHECK (one),"
            " version integer NOT NULL)"
        )
        row = conn.execute("SELECT version FROM jobpulse_schema").fetchone()
        found = row[0] if row is not None else 0
        if found > VERSION:
            raise SchemaTooNew(
                f"the PostgreSQL schema is at version {found}, newer than this jobpulse knows "
                f"({VERSION}): run a newer jobpulse"
            )
        for migration in MIGRATIONS[found:]:
            conn.execute(migration)
        conn.execute(
            "INSERT INTO jobpulse_schema (version) VALUES (%s) "
            "ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            (VERSION,),
        )
    return found, VERSION
