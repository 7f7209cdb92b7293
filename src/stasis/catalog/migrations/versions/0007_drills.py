"""drills: recovery drills are jobs of their own kind, and the newest drill of each VM
and group is kept

Jobs gain the kind ``drill``. The table ``drills`` holds, per VM and per group, the
newest drill that brought it up: its point, mode, whether every check passed, the
measured RTO and each check's outcome (``stasis status`` compares them with the
policy's ``rto`` and ``max_age``). Each drill's own record is its job.

Revision ID: 0007_drills
Revises: 0006_users_tenants_audit
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_drills"
down_revision: str | Sequence[str] | None = "0006_users_tenants_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = "kind IN ('backup', 'restore', 'verify', 'prune', 'gc', 'copy')"
NEW_KINDS = "kind IN ('backup', 'restore', 'verify', 'prune', 'gc', 'copy', 'drill')"


def _kinds(check: str) -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch.create_check_constraint("kind", check)


def upgrade() -> None:
    _kinds(NEW_KINDS)
    op.create_table(
        "drills",
        sa.Column("subject_kind", sa.String(8), nullable=False),  # vm | group
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("drill_id", sa.String(16), nullable=False),
        sa.Column("job", sa.Integer(), nullable=True),
        sa.Column("repo", sa.String(64), nullable=True),
        sa.Column("point", sa.String(64), nullable=False),
        sa.Column("point_name", sa.String(255), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("rto_s", sa.Float(), nullable=True),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy", sa.String(128), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("subject_kind", "subject", name="pk_drills"),
    )


def downgrade() -> None:
    op.drop_table("drills")
    op.execute("DELETE FROM jobs WHERE kind = 'drill'")
    _kinds(OLD_KINDS)
