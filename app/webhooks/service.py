"""Webhooks: who may manage which, their rows and audit events, deliveries and redelivery."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import EventType
from app.audit.service import diff, stage
from app.context import RequestContext
from app.db import utcnow
from app.errors import FieldError, InUse, NotFound
from app.identity.models import Role
from app.inventory.models import Site
from app.inventory.refs import as_id
from app.urls import HIDDEN, redact_urls
from app.vault import Vault
from app.webhooks.destinations import Destinations, literal
from app.webhooks.models import Delivery, DeliveryStatus, Webhook, WebhookEvent, WebhookSite
from app.webhooks.schemas import DeliveryRead, WebhookCreate, WebhookRead, WebhookUpdate

API = "/api/v1"
NAME_LENGTH = 200  # audit_event.target_name: a longer URL is named by its start


# Scope -----------------------------------------------------------------------------------------


async def _site_rows(session: AsyncSession, ctx: RequestContext, refs: Sequence[str]) -> list[Site]:
    """The named sites (slug or id); one the caller cannot see reads as unknown."""
    visible = ctx.principal.visible_site_ids()
    found: dict[int, Site] = {}
    for ref in refs:
        site = await session.scalar(select(Site).where(Site.slug == ref))
        if site is None and (site_id := as_id(ref)) is not None:
            site = await session.get(Site, site_id)
        if site is None or (visible is not None and site.id not in visible):
            raise FieldError("sites", f"no site {ref!r}; list them with GET {API}/sites")
        found[site.id] = site
    return sorted(found.values(), key=lambda site: site.slug)


async def _scopes(session: AsyncSession, ids: Sequence[int]) -> dict[int, list[tuple[int, str]]]:
    """Each webhook's sites as (id, slug), for webhooks limited to some sites."""
    scopes: dict[int, list[tuple[int, str]]] = defaultdict(list)
    rows = await session.execute(
        select(WebhookSite.webhook_id, Site.id, Site.slug)
        .join(Site, Site.id == WebhookSite.site_id)
        .where(WebhookSite.webhook_id.in_(list(ids)))
        .order_by(Site.slug)
    )
    for webhook_id, site_id, slug in rows:
        scopes[webhook_id].append((site_id, slug))
    return scopes


def _require(
    ctx: RequestContext,
    sites: list[tuple[int, str]] | None,
    what: str,
    webhook: Webhook | None = None,
    name: str | None = None,
) -> None:
    """Admin of every site the webhook reports on; of all sites for an all-sites one."""
    target_id = webhook.id if webhook else None
    target_name = name or (_name(webhook.url) if webhook else None)
    if not sites:  # every site, or a scope whose sites were all deleted
        ctx.require(Role.ADMIN, None, what=what, target_type="webhook", target_id=target_id,
                    target_name=target_name)  # fmt: skip
        return
    for site_id, slug in sites:
        ctx.require(Role.ADMIN, site_id, what=what, target_type="webhook", target_id=target_id,
                    target_name=target_name, site=slug)  # fmt: skip


def _name(url: str) -> str:
    """How the audit names a webhook: its shown URL, cut to fit (the details hold it whole)."""
    shown = redact_urls(url)
    return shown if len(shown) <= NAME_LENGTH else shown[: NAME_LENGTH - 1] + "…"


def _check_destination(destinations: Destinations, url: str) -> None:
    """A URL naming a refused address is refused now; a name is checked at each delivery."""
    address = literal(httpx.URL(url).raw_host.decode("ascii"))
    refusal = destinations.refusal(address) if address is not None else None
    if refusal is not None:
        raise FieldError("url", str(refusal))


def _store_url(webhook: Webhook, vault: Vault, url: str) -> None:
    """The whole URL encrypted for delivery; the stored `url` is what may be shown."""
    query = urlsplit(url).query.split("&")
    if any(piece == HIDDEN or piece.partition("=")[2] == HIDDEN for piece in query):
        raise FieldError(
            "url",
            f"a value reads {HIDDEN}, as URLs are shown back; give the real value, or leave "
            "`url` out to keep the stored URL",
        )
    webhook.url = redact_urls(url)
    webhook.url_ciphertext = vault.encrypt(url)


# Reading ---------------------------------------------------------------------------------------


def to_read(webhook: Webhook, sites: list[tuple[int, str]]) -> WebhookRead:
    return WebhookRead(
        id=webhook.id,
        url=webhook.url,
        events=[WebhookEvent(event) for event in webhook.events],
        sites=None if webhook.all_sites else [slug for _, slug in sites],
        active=webhook.active,
        created_by=webhook.created_by,
        created_at=webhook.created_at,
        updated_at=webhook.updated_at,
    )


def _audited(read: WebhookRead) -> dict[str, Any]:
    return read.model_dump(mode="json", exclude={"secret", "created_at", "updated_at"})


def _site_of(sites: list[tuple[int, str]] | None) -> str | None:
    """The audit event's site: set when the webhook reports on exactly one."""
    return sites[0][1] if sites and len(sites) == 1 else None


async def listing(session: AsyncSession, ctx: RequestContext) -> list[WebhookRead]:
    """Every webhook for an admin of all sites; a site admin sees those within their sites."""
    principal = ctx.principal
    if not principal.allows(Role.ADMIN, None):
        mine = {site for role, site in principal.grants if role is Role.ADMIN and site is not None}
        if not mine:
            ctx.require(Role.ADMIN, None, what="listing webhooks")
    else:
        mine = None
    webhooks = list(await session.scalars(select(Webhook).order_by(Webhook.id)))
    scopes = await _scopes(session, [webhook.id for webhook in webhooks])
    return [
        to_read(webhook, scopes[webhook.id])
        for webhook in webhooks
        if mine is None
        or (
            not webhook.all_sites
            and scopes[webhook.id]
            and {site_id for site_id, _ in scopes[webhook.id]} <= mine
        )
    ]


async def get(
    session: AsyncSession, ctx: RequestContext, webhook_id: int, what: str = "managing webhooks"
) -> tuple[Webhook, list[tuple[int, str]]]:
    """A webhook the caller may manage; one reporting on any site the caller cannot see (or
    on every site, to a caller who cannot see them all) looks missing, word for word."""
    missing = f"no webhook {webhook_id}; list them with GET {API}/webhooks"
    webhook = await session.get(Webhook, webhook_id)
    if webhook is None:
        raise NotFound(missing)
    sites = [] if webhook.all_sites else (await _scopes(session, [webhook.id]))[webhook.id]
    visible = ctx.principal.visible_site_ids()
    if visible is not None and (not sites or any(site not in visible for site, _ in sites)):
        raise ctx.hidden(Role.ADMIN, missing, what=what, target_type="webhook",
                         target_id=webhook.id, target_name=webhook.url)  # fmt: skip
    _require(ctx, sites, what, webhook)
    return webhook, sites


# Changing --------------------------------------------------------------------------------------


async def create(
    session: AsyncSession,
    ctx: RequestContext,
    vault: Vault,
    destinations: Destinations,
    data: WebhookCreate,
) -> WebhookRead:
    rows = await _site_rows(session, ctx, data.sites) if data.sites is not None else None
    sites = [(site.id, site.slug) for site in rows] if rows is not None else None
    _require(ctx, sites, "creating webhooks", name=_name(data.url))
    _check_destination(destinations, data.url)
    webhook = Webhook(
        secret_ciphertext=vault.encrypt(data.secret.get_secret_value()),
        events=sorted({event.value for event in data.events}),
        all_sites=sites is None,
        active=data.active,
        created_by=ctx.principal.actor.name,
    )
    _store_url(webhook, vault, data.url)
    session.add(webhook)
    await session.flush()
    for site_id, _ in sites or []:
        session.add(WebhookSite(webhook_id=webhook.id, site_id=site_id))
    await session.flush()
    read = to_read(webhook, sites or [])
    stage(
        session,
        ctx.event(
            EventType.WEBHOOK_CREATED,
            target_type="webhook",
            target_id=webhook.id,
            target_name=_name(webhook.url),
            site=_site_of(sites),
            details={"after": _audited(read)},
        ),
    )
    return read


async def update(
    session: AsyncSession,
    ctx: RequestContext,
    vault: Vault,
    destinations: Destinations,
    webhook: Webhook,
    sites: list[tuple[int, str]],
    data: WebhookUpdate,
) -> WebhookRead:
    """Merge the given fields; a new scope needs admin over it as well as over the old one."""
    before = to_read(webhook, sites)
    changes = data.model_dump(exclude_unset=True)
    if "sites" in changes:
        rows = await _site_rows(session, ctx, data.sites) if data.sites is not None else None
        new_sites = [(site.id, site.slug) for site in rows] if rows is not None else None
        _require(ctx, new_sites, "widening a webhook's sites", webhook)
        await session.execute(delete(WebhookSite).where(WebhookSite.webhook_id == webhook.id))
        for site_id, _ in new_sites or []:
            session.add(WebhookSite(webhook_id=webhook.id, site_id=site_id))
        webhook.all_sites = new_sites is None
        sites = new_sites or []
    url_changed = data.url is not None and vault.decrypt(webhook.url_ciphertext) != data.url
    if data.url is not None:
        _check_destination(destinations, data.url)
        _store_url(webhook, vault, data.url)
    if data.secret is not None:
        webhook.secret_ciphertext = vault.encrypt(data.secret.get_secret_value())
    if data.events is not None:
        webhook.events = sorted({event.value for event in data.events})
    if data.active is not None:
        webhook.active = data.active
    webhook.updated_at = utcnow()
    await session.flush()
    after = to_read(webhook, sites)
    details = diff(_audited(before), _audited(after))
    if data.secret is not None:
        details["secret_rotated"] = True
    if url_changed and before.url == after.url:
        details["url_query_changed"] = True  # what changed is hidden in both versions
    stage(
        session,
        ctx.event(
            EventType.WEBHOOK_UPDATED,
            target_type="webhook",
            target_id=webhook.id,
            target_name=_name(webhook.url),
            site=_site_of(None if webhook.all_sites else sites),
            details=details,
        ),
    )
    return after


async def remove(
    session: AsyncSession, ctx: RequestContext, webhook: Webhook, sites: list[tuple[int, str]]
) -> None:
    """The webhook and its deliveries, pending ones included: nothing more is sent."""
    before = to_read(webhook, sites)
    await session.execute(delete(Delivery).where(Delivery.webhook_id == webhook.id))
    await session.delete(webhook)
    await session.flush()
    stage(
        session,
        ctx.event(
            EventType.WEBHOOK_DELETED,
            target_type="webhook",
            target_id=before.id,
            target_name=_name(before.url),
            site=_site_of(None if before.sites is None else sites),
            details={"before": _audited(before)},
        ),
    )


# Deliveries ------------------------------------------------------------------------------------


def delivery_read(delivery: Delivery) -> DeliveryRead:
    return DeliveryRead(
        id=delivery.id,
        webhook=delivery.webhook_id,
        event=delivery.event,
        subject=delivery.subject,
        status=delivery.status,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        redelivery_of=delivery.redelivery_of,
        created_at=delivery.created_at,
        last_attempt_at=delivery.last_attempt_at,
        next_attempt_at=delivery.next_attempt_at
        if delivery.status is DeliveryStatus.PENDING
        else None,
        delivered_at=delivery.delivered_at,
    )


async def deliveries(
    session: AsyncSession,
    webhook: Webhook,
    *,
    status: DeliveryStatus | None,
    limit: int,
    before: str | None,
) -> list[Delivery]:
    """Newest first; `before` is the last delivery id seen."""
    query = select(Delivery).where(Delivery.webhook_id == webhook.id)
    if status is not None:
        query = query.where(Delivery.status == status)
    if before is not None:
        anchor = await session.get(Delivery, before[:32])
        if anchor is not None:
            query = query.where(Delivery.created_at <= anchor.created_at, Delivery.id != anchor.id)
    order = (Delivery.created_at.desc(), Delivery.id.desc())
    return list(await session.scalars(query.order_by(*order).limit(limit)))


def new_delivery(
    webhook_id: int, event: WebhookEvent, subject: str, payload: str, **fields: Any
) -> Delivery:
    """A delivery due now; the sender picks it up once the transaction that wrote it commits."""
    now = utcnow()
    return Delivery(
        id=uuid.uuid4().hex,
        webhook_id=webhook_id,
        event=event,
        subject=subject,
        payload=payload,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        **fields,
    )


async def redeliver(
    session: AsyncSession,
    ctx: RequestContext,
    webhook: Webhook,
    sites: list[tuple[int, str]],
    delivery_id: str,
) -> DeliveryRead:
    """The same body again as a new delivery (a new id, so the receiver handles it again)."""
    original = await session.get(Delivery, delivery_id[:32])
    if original is None or original.webhook_id != webhook.id:
        raise NotFound(
            f"no delivery {delivery_id!r} of webhook {webhook.id}; "
            f"list them with GET {API}/webhooks/{webhook.id}/deliveries"
        )
    if not webhook.active:
        raise InUse(f"webhook {webhook.id} is inactive; PATCH it with active: true first")
    copy = new_delivery(
        webhook.id, original.event, original.subject, original.payload, redelivery_of=original.id
    )
    session.add(copy)
    await session.flush()
    stage(
        session,
        ctx.event(
            EventType.WEBHOOK_REDELIVERED,
            target_type="webhook",
            target_id=webhook.id,
            target_name=_name(webhook.url),
            site=_site_of(None if webhook.all_sites else sites),
            details={
                "event": original.event.value,
                "subject": original.subject,
                "delivery": original.id,
                "redelivery": copy.id,
            },
        ),
    )
    return delivery_read(copy)
