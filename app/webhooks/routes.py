"""HTTP routes of webhooks: manage them (admin over their sites), list and redeliver deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status

from app.deps import SessionDep, VaultDep
from app.identity.auth import Ctx
from app.inventory.refs import MAX_ID
from app.webhooks import service
from app.webhooks.destinations import Destinations
from app.webhooks.models import DeliveryStatus
from app.webhooks.schemas import (
    DeliveryPage,
    DeliveryRead,
    WebhookCreate,
    WebhookRead,
    WebhookUpdate,
)

router = APIRouter(tags=["webhooks"])


def _destinations(request: Request) -> Destinations:
    destinations: Destinations = request.app.state.webhook_destinations
    return destinations


DestinationsDep = Annotated[Destinations, Depends(_destinations)]
WebhookId = Annotated[int, Path(ge=1, le=MAX_ID)]
DeliveryId = Annotated[str, Path(min_length=1, max_length=32)]


@router.get("/webhooks")
async def list_webhooks(session: SessionDep, ctx: Ctx) -> list[WebhookRead]:
    """The webhooks the caller may manage; the secret reads as `"set"`."""
    return await service.listing(session, ctx)


@router.post("/webhooks", status_code=status.HTTP_201_CREATED)
async def create_webhook(
    session: SessionDep,
    ctx: Ctx,
    vault: VaultDep,
    destinations: DestinationsDep,
    body: WebhookCreate,
) -> WebhookRead:
    """Subscribe a receiver to events at some sites (or every site: `sites: null`)."""
    return await service.create(session, ctx, vault, destinations, body)


@router.get("/webhooks/{webhook_id}")
async def get_webhook(session: SessionDep, ctx: Ctx, webhook_id: WebhookId) -> WebhookRead:
    webhook, sites = await service.get(session, ctx, webhook_id)
    return service.to_read(webhook, sites)


@router.patch("/webhooks/{webhook_id}")
async def update_webhook(
    session: SessionDep,
    ctx: Ctx,
    vault: VaultDep,
    destinations: DestinationsDep,
    webhook_id: WebhookId,
    body: WebhookUpdate,
) -> WebhookRead:
    """Change the URL, rotate the secret, the events, the sites, or switch it off."""
    webhook, sites = await service.get(session, ctx, webhook_id, "changing webhooks")
    return await service.update(session, ctx, vault, destinations, webhook, sites, body)


@router.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(session: SessionDep, ctx: Ctx, webhook_id: WebhookId) -> None:
    """Remove the webhook and its deliveries (pending ones are not sent)."""
    webhook, sites = await service.get(session, ctx, webhook_id, "deleting webhooks")
    await service.remove(session, ctx, webhook, sites)


@router.get("/webhooks/{webhook_id}/deliveries")
async def list_deliveries(
    session: SessionDep,
    ctx: Ctx,
    webhook_id: WebhookId,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(max_length=32, description="last delivery id seen")] = None,
) -> DeliveryPage:
    """Newest first: event, status, attempts, the receiver's last answer or error."""
    webhook, _ = await service.get(session, ctx, webhook_id, "reading webhook deliveries")
    rows = await service.deliveries(session, webhook, status=status_, limit=limit, before=before)
    return DeliveryPage(items=[service.delivery_read(row) for row in rows])


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
)
async def redeliver(
    session: SessionDep, ctx: Ctx, webhook_id: WebhookId, delivery_id: DeliveryId
) -> DeliveryRead:
    """Send a delivery's body again, as a new delivery (202: the sender takes it from here)."""
    webhook, sites = await service.get(session, ctx, webhook_id, "redelivering webhooks")
    return await service.redeliver(session, ctx, webhook, sites, delivery_id)
