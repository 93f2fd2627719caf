"""One central per data folder: a second one refuses to start and names the first."""

from __future__ import annotations

import os
import subprocess

import pytest
from fastapi.testclient import TestClient

from app.centrals.folder import DataFolderInUse
from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_PASSWORD, SERVICE_KEY
from tests.live import RACKHAND, free_port


def test_a_second_central_on_the_same_data_folder_refuses_to_start(settings: Settings) -> None:
    quiet = settings.model_copy(update={"poll_power": False})
    with TestClient(create_app(quiet)):
        with (
            pytest.raises(
                DataFolderInUse, match=rf"another Rackhand central \(pid {os.getpid()}\)"
            ),
            TestClient(create_app(quiet)),
        ):
            pass  # pragma: no cover
        elsewhere = quiet.model_copy(update={"data_dir": quiet.data_dir / "other"})
        with TestClient(create_app(elsewhere)) as beside:  # another folder: a peer, welcome
            assert beside.get("/api/v1/readyz").status_code == 200
    with TestClient(create_app(quiet)) as again:  # the lock ends with the central
        assert again.get("/api/v1/readyz").status_code == 200


def test_rackhand_serve_refuses_a_data_folder_in_use_before_it_migrates(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"poll_power": False}))):
        folder = str(settings.data_dir)
        command = [RACKHAND, "serve", "--port", str(free_port()), "--data-dir", folder,
                   "--database-url", settings.database_url]  # fmt: skip
        env = os.environ | {
            "RACKHAND_SECRET_KEY": SERVICE_KEY,
            "RACKHAND_ADMIN_PASSWORD": ADMIN_PASSWORD,
        }
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert (
        f"another Rackhand central (pid {os.getpid()}) is using the data folder" in refused.stderr
    )
    assert "--data-dir" in refused.stderr
