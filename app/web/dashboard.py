"""The dashboard's composition: every page router, under `/`, beside the API."""

from __future__ import annotations

from fastapi import FastAPI

from app.web import admin, audit, consoles, device_list, device_page, jobs, login, overview, sites


def install_dashboard(app: FastAPI) -> None:
    for module in (login, overview, device_list, device_page, sites, jobs, consoles, audit, admin):
        app.include_router(module.router)
