"""points are indexed per repository; repositories carry the name they are served under

A copy keeps a point's id at the destination, so the index holds one row per
(repository, point) rather than one per point: the primary key becomes
``(repo, id)``. Rows already there keep their repository. ``repositories.name`` is
the config name the service last served a repository under (status finds a
policy's sites by it); None until a service names it.

Revision ID: 0005_points_per_repository
Revises: 0004_jobs_cancel
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_points_per_repository"
down_revision: str | Sequence[str] | None = "0004_jobs_cancel"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("repositories") as batch:
        batch.add_column(sa.Column("name", sa.String(length=64), nullable=True))
    with op.batch_alter_table("points", recreate="always") as batch:
        batch.drop_constraint("pk_points", type_="primary")
        batch.create_primary_key("pk_points", ["repo", "id"])


def downgrade() -> None:
    # One row per point again: a point indexed in several repositories keeps the row
    # of the repository that sorts first.
    op.execute("DELETE FROM points WHERE EXISTS (SELECT 1 FROM points p WHERE p.id = "
               "points.id AND p.repo < points.repo)")
    with op.batch_alter_table("points", recreate="always") as batch:
        batch.drop_constraint("pk_points", type_="primary")
        batch.create_primary_key("pk_points", ["id"])
    with op.batch_alter_table("repositories") as batch:
        batch.drop_column("name")
