"""Alembic's environment for the catalog: migrate the connection Stasis hands over.

:meth:`stasis.catalog.Catalog.open` passes its open connection in
``config.attributes["connection"]``; run by the ``alembic`` tool instead, the
database is ``sqlalchemy.url`` of the configuration.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from stasis.catalog.models import Base


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url to the catalog's URL")
    engine = create_engine(url)
    with engine.begin() as conn:
        _migrate(conn)


if context.is_offline_mode():
    raise SystemExit("the catalog is migrated online only")
run()
