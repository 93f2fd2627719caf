"""The dashboard's composition: every page router, under `/`, beside the API."""

from __future__ import annotations

from fastapi import FastAPI

from app.web import (
    admin,
    audit,
    consoles,
    device_guests,
    device_health,
    device_list,
    device_page,
    jobs,
    login,
    overview,
    sites,
)

PAGES = (login, overview, device_list, device_page, device_guests, device_health, sites, jobs,
         consoles, audit, admin)  # fmt: skip


def install_dashboard(app: FastAPI) -> None:
    for module in PAGES:
        app.include_router(module.router)
