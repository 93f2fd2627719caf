"""site agents: enrolment (one-time join token), credential, and the link's state

A site with an enrolled agent is served by its agents only (docs/agents.md).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "site_agent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("join_hash", sa.String(length=64), nullable=True),
        sa.Column("join_expires_at", when, nullable=False),
        sa.Column("credential_hash", sa.String(length=64), nullable=True),
        sa.Column("joined_at", when, nullable=True),
        sa.Column("revoked_at", when, nullable=True),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("central_id", sa.String(length=32), nullable=True),
        sa.Column("connected_since", when, nullable=True),
        sa.Column("disconnected_at", when, nullable=True),
        sa.Column("last_seen", when, nullable=True),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.Column("consoles", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_site_agent_site_id_site"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site_agent")),
        sa.UniqueConstraint("site_id", "name", name=op.f("uq_site_agent_site_id")),
        sa.UniqueConstraint("join_hash", name=op.f("uq_site_agent_join_hash")),
        sa.UniqueConstraint("credential_hash", name=op.f("uq_site_agent_credential_hash")),
    )
    op.create_index(op.f("ix_site_agent_site_id"), "site_agent", ["site_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_site_agent_site_id"), table_name="site_agent")
    op.drop_table("site_agent")
