"""webhook deliveries: what receivers answered is forgotten, only their status codes stay

A failed delivery kept the first 200 characters of the receiver's answer (or the line a
non-HTTP service greeted with, quoted by h11) in `last_error`, and the deliveries API showed
it: a webhook aimed at an internal service read it. Those texts are cut back to what is
kept now: "answered <code>", or that the answer was not HTTP. There is nothing to restore on
downgrade.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

delivery = sa.table(
    "webhook_delivery",
    sa.column("last_status_code", sa.Integer()),
    sa.column("last_error", sa.Text()),
)
REDIRECT = "; redirects are not followed"


def upgrade() -> None:
    code = sa.cast(delivery.c.last_status_code, sa.String(8))
    op.execute(
        sa.update(delivery)
        .where(delivery.c.last_status_code.isnot(None), delivery.c.last_error.like("answered %"))
        .values(
            last_error=sa.case(
                (
                    delivery.c.last_error.like(f"answered % to %{REDIRECT}"),
                    "answered " + code + ", a redirect" + REDIRECT,
                ),
                else_="answered " + code,
            )
        )
    )
    for kind in ("RemoteProtocolError", "LocalProtocolError"):  # h11 quotes what it read
        op.execute(
            sa.update(delivery)
            .where(delivery.c.last_error.like(f"{kind}:%"))
            .values(last_error=f"{kind}: the answer was not HTTP/1.1")
        )


def downgrade() -> None:
    pass  # what receivers answered is gone
