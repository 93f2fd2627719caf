"""webhook URLs: kept encrypted with the service key, shown with query values as ***

A receiver's URL may carry its token in the query (`?token=…`); it was stored, answered and
logged in clear. The whole URL is now encrypted like the webhook's secret, and `url` keeps
the form that may be shown. Existing rows need the service key: `rackhand serve` passes its
vault; plain `alembic upgrade` loads it from the RACKHAND_* settings.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from app.config import Settings
from app.urls import redact_urls
from app.vault import Vault, load_vault

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

webhook = sa.table(
    "webhook",
    sa.column("id", sa.Integer()),
    sa.column("url", sa.Text()),
    sa.column("url_ciphertext", sa.LargeBinary()),
    sa.column("secret_ciphertext", sa.LargeBinary()),
)


def _vault() -> Vault:
    given = context.config.attributes.get("vault")
    return given if isinstance(given, Vault) else load_vault(Settings())


def upgrade() -> None:
    with op.batch_alter_table("webhook") as batch:
        batch.add_column(sa.Column("url_ciphertext", sa.LargeBinary(), nullable=True))
        batch.alter_column(
            "url", existing_type=sa.String(length=2048), type_=sa.Text(), existing_nullable=False
        )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(webhook.c.id, webhook.c.url, webhook.c.secret_ciphertext)
    ).all()
    if rows:
        vault = _vault()
        for webhook_id, url, secret in rows:
            vault.decrypt(secret)  # a wrong key fails here, before anything is written with it
            connection.execute(
                sa.update(webhook)
                .where(webhook.c.id == webhook_id)
                .values(url=redact_urls(url), url_ciphertext=vault.encrypt(url))
            )
    with op.batch_alter_table("webhook") as batch:
        batch.alter_column("url_ciphertext", existing_type=sa.LargeBinary(), nullable=False)


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(webhook.c.id, webhook.c.url_ciphertext)).all()
    if rows:
        vault = _vault()
        for webhook_id, ciphertext in rows:
            connection.execute(
                sa.update(webhook)
                .where(webhook.c.id == webhook_id)
                .values(url=vault.decrypt(ciphertext))
            )
    with op.batch_alter_table("webhook") as batch:
        batch.drop_column("url_ciphertext")
        batch.alter_column(
            "url", existing_type=sa.Text(), type_=sa.String(length=2048), existing_nullable=False
        )
