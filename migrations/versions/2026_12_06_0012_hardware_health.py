"""hardware health: each device's last verdict from its sensors, and each site's poll interval

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.add_column(
        "site",
        sa.Column("health_seconds", sa.Integer(), server_default="600", nullable=False),
    )
    op.create_table(
        "health_status",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("health", sa.String(length=16), nullable=False),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("path", sa.String(length=16), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("misses", sa.Integer(), nullable=False),
        sa.Column("checked_at", when, nullable=False),
        sa.Column("changed_at", when, nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
            name=op.f("fk_health_status_device_id_device"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_health_status")),
    )
    op.create_index(op.f("ix_health_status_health"), "health_status", ["health"])


def downgrade() -> None:
    op.drop_index(op.f("ix_health_status_health"), table_name="health_status")
    op.drop_table("health_status")
    op.drop_column("site", "health_seconds")
