"""Centrals own their work: a `central` row per running process, `owner_id` on tasks and
console sessions

A starting central used to end every active task and console session as `lost`, those of
another central still running them included. Each central now keeps a row with a heartbeat,
and tasks and console sessions name the central that runs them; only the work of a central
whose heartbeat has stopped is ended. Rows from before have no owner and count as ownerless
(their central is gone), as they did.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_TASK = sa.text("status IN ('queued', 'running')")
LIVE_CONSOLE = sa.text("status IN ('opening', 'open')")


def upgrade() -> None:
    op.create_table(
        "central",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("interval_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_central")),
    )
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("owner_id", sa.String(length=32), nullable=True))
        batch.create_index(
            "ix_task_active_owner",
            ["owner_id"],
            unique=False,
            sqlite_where=ACTIVE_TASK,
            postgresql_where=ACTIVE_TASK,
        )
    with op.batch_alter_table("console_session") as batch:
        batch.add_column(sa.Column("owner_id", sa.String(length=32), nullable=True))
        batch.create_index(
            "ix_console_session_live_owner",
            ["owner_id"],
            unique=False,
            sqlite_where=LIVE_CONSOLE,
            postgresql_where=LIVE_CONSOLE,
        )


def downgrade() -> None:
    with op.batch_alter_table("console_session") as batch:
        batch.drop_index("ix_console_session_live_owner")
        batch.drop_column("owner_id")
    with op.batch_alter_table("task") as batch:
        batch.drop_index("ix_task_active_owner")
        batch.drop_column("owner_id")
    op.drop_table("central")
