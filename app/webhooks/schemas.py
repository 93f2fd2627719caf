"""Webhook requests and answers (docs/webhooks.md)."""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv6Address
from typing import Annotated, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator, BaseModel, Field, SecretStr, StringConstraints

from app.inventory.schemas import Ref, Schema
from app.urls import redact_urls
from app.webhooks.destinations import literal
from app.webhooks.models import DeliveryStatus, WebhookEvent

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """This machine by name or address, in any form (`::ffff:127.0.0.1`, `127.1`)."""
    if host.lower() in LOOPBACK_NAMES or host.lower().endswith(".localhost"):
        return True
    address = literal(host)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


def _receiver_url(value: str) -> str:
    """https anywhere, plain http only to this machine (as agents refuse ws:// off loopback)."""
    try:
        parts = urlsplit(value)
        port = parts.port
        httpx.URL(value)  # the parser that delivers it must read the same URL
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(redact_urls(f"is not a valid URL ({exc})")) from exc
    if parts.scheme not in ("https", "http"):
        raise ValueError("must be an https:// URL (http:// only to localhost)")
    host = parts.hostname
    if not host:
        raise ValueError("must name a host, as in https://tickets.example.com/hooks/rackhand")
    if parts.scheme == "http" and not is_loopback(host):
        raise ValueError(
            "must use https:// (plain http:// is refused except to localhost / 127.0.0.1 / ::1)"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry a user or password; the signature authenticates us")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    if port == 0:
        raise ValueError("port 0 is not a port")
    return value


ReceiverUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048, pattern=r"^[\x21-\x7e]+$"),
    AfterValidator(_receiver_url),
]
HookSecret = Annotated[
    SecretStr,
    Field(
        min_length=16, max_length=256, description="at least 16 characters (openssl rand -hex 32)"
    ),
]
Events = Annotated[list[WebhookEvent], Field(min_length=1, max_length=len(WebhookEvent))]
Sites = Annotated[list[Ref], Field(min_length=1, max_length=1000)]


class WebhookCreate(Schema):
    url: ReceiverUrl
    secret: HookSecret
    events: Events
    sites: Sites | None = None  # None: every site (needs admin of every site)
    active: bool = True


class WebhookUpdate(Schema):
    """Fields left out stay; `sites: null` widens the scope to every site."""

    url: ReceiverUrl | None = None
    secret: HookSecret | None = None
    events: Events | None = None
    sites: Sites | None = None
    active: bool | None = None


class WebhookRead(BaseModel):
    id: int
    url: str
    secret: Literal["set"] = "set"
    events: list[WebhookEvent]
    sites: list[str] | None
    active: bool
    created_by: str
    created_at: datetime
    updated_at: datetime


class DeliveryRead(BaseModel):
    id: str
    webhook: int
    event: WebhookEvent
    subject: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    redelivery_of: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryRead]
