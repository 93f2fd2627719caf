"""The engine: a failed statement's error names its SQL, never the values bound to it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.config import Settings
from app.db import make_engine

MARKER = "rh_secret-value-that-must-not-be-logged"


async def _failing_insert(url: str) -> IntegrityError:
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:  # audit_head's only row is id 1: a duplicate
            await connection.execute(
                text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :hash)"),
                {"hash": MARKER},
            )
    except IntegrityError as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError("the insert should have failed")


def test_a_failed_statement_does_not_show_its_parameters(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    exc = asyncio.run(_failing_insert(settings.database_url))
    logging.getLogger("app.main").error("unhandled error", exc_info=exc)
    assert "INSERT INTO audit_head" in str(exc)
    assert MARKER not in str(exc)
    assert MARKER not in repr(exc)
    assert MARKER not in caplog.text
    assert "parameters hidden" in str(exc)
