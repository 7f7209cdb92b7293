"""jobs and services name their repository by id, not by URL

A repository is one repository wherever it is mounted or whatever URL opens it:
the points index already keys it by the id from its config. Jobs and services
written before this revision hold the URL; those whose URL the catalog knows (in
``repositories``) get the id, the others keep what they hold (nothing is guessed).

Revision ID: 0003_jobs_repo_id
Revises: 0002_points_jobs_policies
Create Date: 2025-07-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_jobs_repo_id"
down_revision: str | Sequence[str] | None = "0002_points_jobs_policies"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("jobs", "services"):
        op.execute(
            f"UPDATE {table} SET repo = (SELECT r.id FROM repositories r WHERE r.url = "
            f"{table}.repo) WHERE repo IN (SELECT url FROM repositories)"
        )


def downgrade() -> None:
    for table in ("jobs", "services"):
        op.execute(
            f"UPDATE {table} SET repo = (SELECT r.url FROM repositories r WHERE r.id = "
            f"{table}.repo) WHERE repo IN (SELECT id FROM repositories)"
        )
