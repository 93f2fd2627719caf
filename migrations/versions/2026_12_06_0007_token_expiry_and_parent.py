"""API tokens: every token expires; a token made with another one is its child

Tokens could be made without an expiry, and a token made with another token outlived it
(a one-hour token minted a ten-year one that survived its revocation). Tokens without an
expiry now expire one year after this migration runs; `parent_id` ties a token to the API
token it was made with, so it is revoked with it and never outlives it. Downgrading keeps
the expiries set here (which tokens had none is not recorded).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from app.db import UTCDateTime, utcnow

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX_LIFETIME = timedelta(days=365)

api_token = sa.table(
    "api_token",
    sa.column("id", sa.Integer()),
    sa.column("expires_at", UTCDateTime()),
)


def upgrade() -> None:
    op.execute(
        sa.update(api_token)
        .where(api_token.c.expires_at.is_(None))
        .values(expires_at=utcnow() + MAX_LIFETIME)
    )
    with op.batch_alter_table("api_token") as batch:
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_api_token_parent_id_api_token"),
            "api_token",
            ["parent_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index(batch.f("ix_api_token_parent_id"), ["parent_id"], unique=False)
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_token") as batch:
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch.drop_index(batch.f("ix_api_token_parent_id"))
        batch.drop_constraint(batch.f("fk_api_token_parent_id_api_token"), type_="foreignkey")
        batch.drop_column("parent_id")
