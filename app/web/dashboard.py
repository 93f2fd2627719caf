"""The dashboard's composition: every page router, under `/`, beside the API."""

from __future__ import annotations

from fastapi import FastAPI

from app.web import consoles, device_list, jobs, login, overview


def install_dashboard(app: FastAPI) -> None:
    for module in (login, overview, consoles, device_list, jobs):
        app.include_router(module.router)
