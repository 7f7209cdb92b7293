"""jobs carry a cancel request that the service running them polls

``stasis job cancel`` of a job that a service runs sets ``cancel_requested``; the
service sees it at its next tick and interrupts the job (nothing is committed).

Revision ID: 0004_jobs_cancel
Revises: 0003_jobs_repo_id
Create Date: 2025-07-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_jobs_cancel"
down_revision: str | Sequence[str] | None = "0003_jobs_repo_id"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cancel_requested")
