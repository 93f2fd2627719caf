"""Imports every ORM module, so that `Base.metadata` is complete for alembic and tests."""

from __future__ import annotations


def load_all() -> None:
    import app.audit.models
    import app.centrals.models
    import app.consoles.models
    import app.fleetlink.models
    import app.identity.models
    import app.inventory.models
    import app.jobs.models
    import app.virtualization.models
    import app.webhooks.models  # noqa: F401
