"""groups: stored groups of VMs captured at one instant

Revision ID: 0001_groups
Revises:
Create Date: 2025-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_groups"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEVELS = "('crash', 'filesystem', 'application')"


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("name_globs", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("consistency", sa.String(length=16), nullable=False),
        sa.Column("require", sa.String(length=16), nullable=True),
        sa.Column("hooks", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"consistency IN {LEVELS}", name=op.f("ck_groups_consistency_level")),
        sa.CheckConstraint(f"require IS NULL OR require IN {LEVELS}",
                           name=op.f("ck_groups_require_level")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_groups_name")),
    )


def downgrade() -> None:
    op.drop_table("groups")
