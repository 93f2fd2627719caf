"""catalogue: sites, racks, devices, tags and control paths

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "site",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site")),
        sa.UniqueConstraint("slug", name=op.f("uq_site_slug")),
    )
    op.create_table(
        "rack",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("height_u", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_rack_site_id_site"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rack")),
        sa.UniqueConstraint("site_id", "name", name=op.f("uq_rack_site_id")),
    )
    op.create_table(
        "device",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("rack_id", sa.Integer(), nullable=True),
        sa.Column("position_u", sa.Integer(), nullable=True),
        sa.Column("height_u", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("vendor", sa.String(100), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("serial", sa.String(100), nullable=False),
        sa.Column("asset_tag", sa.String(100), nullable=True),
        sa.Column("arch", sa.String(32), nullable=False),
        sa.Column("os", sa.String(32), nullable=False),
        sa.Column("os_version", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["device.id"],
            name=op.f("fk_device_parent_id_device"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["rack_id"], ["rack.id"], name=op.f("fk_device_rack_id_rack"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_device_site_id_site"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device")),
        sa.UniqueConstraint("asset_tag", name=op.f("uq_device_asset_tag")),
        sa.UniqueConstraint("name", name=op.f("uq_device_name")),
    )
    op.create_index(op.f("ix_device_kind"), "device", ["kind"])
    op.create_index(op.f("ix_device_parent_id"), "device", ["parent_id"])
    op.create_index(op.f("ix_device_serial"), "device", ["serial"])
    op.create_index("ix_device_rack_id_position_u", "device", ["rack_id", "position_u"])
    op.create_index("ix_device_site_id_name", "device", ["site_id", "name"])
    op.create_table(
        "control_path",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(128), nullable=True),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("via_device_id", sa.Integer(), nullable=True),
        sa.Column("outlets", JSON, nullable=True),
        sa.Column("domain", sa.String(128), nullable=True),
        sa.Column("options", JSON, nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
            name=op.f("fk_control_path_device_id_device"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["via_device_id"],
            ["device.id"],
            name=op.f("fk_control_path_via_device_id_device"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_path")),
    )
    op.create_index(op.f("ix_control_path_device_id"), "control_path", ["device_id"])
    op.create_index(op.f("ix_control_path_via_device_id"), "control_path", ["via_device_id"])
    op.create_table(
        "device_tag",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["device.id"],
            name=op.f("fk_device_tag_device_id_device"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", "tag", name=op.f("pk_device_tag")),
    )
    op.create_index("ix_device_tag_tag_device_id", "device_tag", ["tag", "device_id"])


def downgrade() -> None:
    op.drop_table("device_tag")
    op.drop_table("control_path")
    op.drop_table("device")
    op.drop_table("rack")
    op.drop_table("site")
