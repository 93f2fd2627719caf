"""ORM models of the catalogue."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from agents.protocol import PathKind as PathKind  # the agent's vocabulary, re-exported
from app.db import Base, EnumText, JSONType, UTCDateTime, utcnow


class SiteKind(StrEnum):
    DATACENTER = "datacenter"
    BRANCH = "branch"


class DeviceKind(StrEnum):
    SERVER = "server"
    NETWORK = "network"
    STORAGE = "storage"
    PDU = "pdu"
    KVM_SWITCH = "kvm_switch"
    CONSOLE_SERVER = "console_server"
    HYPERVISOR = "hypervisor"
    VM = "vm"


class DeviceStatus(StrEnum):
    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    DECOMMISSIONED = "decommissioned"


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Site(Timestamped, Base):
    """A data center or branch office; the unit of agent binding and access scope."""

    __tablename__ = "site"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[SiteKind] = mapped_column(EnumText(SiteKind, 16))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    address: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    require_ticket: Mapped[bool] = mapped_column(Boolean, default=False)
    poll_seconds: Mapped[int] = mapped_column(Integer, default=300, server_default="300")  # 0: off
    # How often the health poll reads each device's sensors; 0: off.
    health_seconds: Mapped[int] = mapped_column(Integer, default=600, server_default="600")


class Rack(Timestamped, Base):
    """A rack at a site; names are unique within their site."""

    __tablename__ = "rack"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(64))
    height_u: Mapped[int] = mapped_column(Integer, default=42)
    description: Mapped[str] = mapped_column(Text, default="")

    site: Mapped[Site] = relationship(lazy="raise")


class Device(Timestamped, Base):
    """Anything Rackhand catalogues: servers, switches, PDUs, console servers, hosts and VMs."""

    __tablename__ = "device"
    __table_args__ = (
        Index("ix_device_site_id_name", "site_id", "name"),
        Index("ix_device_rack_id_position_u", "rack_id", "position_u"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[DeviceKind] = mapped_column(EnumText(DeviceKind, 32), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id", ondelete="RESTRICT"))
    rack_id: Mapped[int | None] = mapped_column(ForeignKey("rack.id", ondelete="RESTRICT"))
    position_u: Mapped[int | None] = mapped_column(Integer)
    height_u: Mapped[int] = mapped_column(Integer, default=1)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("device.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[DeviceStatus] = mapped_column(
        EnumText(DeviceStatus, 16), default=DeviceStatus.ACTIVE
    )
    vendor: Mapped[str] = mapped_column(String(100), default="")
    model: Mapped[str] = mapped_column(String(100), default="")
    serial: Mapped[str] = mapped_column(String(100), default="", index=True)
    asset_tag: Mapped[str | None] = mapped_column(String(100), unique=True)
    arch: Mapped[str] = mapped_column(String(32), default="")
    os: Mapped[str] = mapped_column(String(32), default="")
    os_version: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    site: Mapped[Site] = relationship(lazy="raise")
    rack: Mapped[Rack | None] = relationship(lazy="raise")
    parent: Mapped[Device | None] = relationship(remote_side=[id], lazy="raise")
    tags: Mapped[list[DeviceTag]] = relationship(
        lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )
    paths: Mapped[list[ControlPath]] = relationship(
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        foreign_keys="ControlPath.device_id",
        order_by="(ControlPath.priority, ControlPath.id)",
    )


class PowerStatus(Base):
    """The last known power state of a device, kept apart so polls never touch the device row."""

    __tablename__ = "power_status"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16))  # on | off | unknown
    reachable: Mapped[bool] = mapped_column(Boolean)
    path: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last answer from it
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last state change


class HealthStatus(Base):
    """The last hardware health verdict of a device, from its sensors (a poll or a person's
    read), kept apart like `PowerStatus`. A device never read has no row: `unknown`."""

    __tablename__ = "health_status"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True
    )
    health: Mapped[str] = mapped_column(String(16), index=True)  # ok | warning | critical | unknown
    reasons: Mapped[list[str]] = mapped_column(JSONType, default=list)  # each sensor not ok
    path: Mapped[str | None] = mapped_column(String(16))  # the path kind that answered
    message: Mapped[str] = mapped_column(Text, default="")  # why `unknown`, or why stale
    misses: Mapped[int] = mapped_column(Integer, default=0)  # failed reads in a row
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last verdict change


class DeviceTag(Base):
    """One tag of a device; a table rather than a JSON list so tag filters use an index."""

    __tablename__ = "device_tag"
    __table_args__ = (Index("ix_device_tag_tag_device_id", "tag", "device_id"),)

    device_id: Mapped[int] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class ControlPath(Timestamped, Base):
    """One way to reach a device for power, boot or console, tried in priority order."""

    __tablename__ = "control_path"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"), index=True)
    kind: Mapped[PathKind] = mapped_column(EnumText(PathKind, 16))
    priority: Mapped[int] = mapped_column(Integer, default=10)
    address: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str | None] = mapped_column(String(128))
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    via_device_id: Mapped[int | None] = mapped_column(
        ForeignKey("device.id", ondelete="RESTRICT"), index=True
    )
    outlets: Mapped[list[int] | None] = mapped_column(JSONType)
    domain: Mapped[str | None] = mapped_column(String(128))
    options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    via: Mapped[Device | None] = relationship(foreign_keys=[via_device_id], lazy="raise")
