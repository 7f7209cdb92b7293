"""Alembic migrations of the catalog, applied by :meth:`stasis.catalog.Catalog.open`.

To add one after changing :mod:`stasis.catalog.models`, write a new file in
``versions/`` whose ``down_revision`` is the current head (``alembic revision``
with ``script_location`` pointing here makes the skeleton). Migrations must work
on SQLite (use ``op.batch_alter_table`` to alter a table) and on PostgreSQL. Then
set :data:`HEAD` to its revision (a test checks that it is the scripts' head).
"""

# The newest revision: a catalog holding it needs no migration (nor Alembic loaded).
HEAD = "0007_drills"
