from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import device, error, ok, rack, site


def test_site_crud_by_slug_and_id(client: TestClient) -> None:
    created = site(client, "bj-dc1", timezone="Asia/Shanghai")
    assert ok(client.get("sites/bj-dc1"))["id"] == created["id"]
    assert ok(client.get(f"sites/{created['id']}"))["slug"] == "bj-dc1"
    updated = ok(client.patch("sites/bj-dc1", json={"name": "Beijing 1", "kind": "branch"}))
    assert (updated["name"], updated["kind"]) == ("Beijing 1", "branch")
    assert [s["slug"] for s in ok(client.get("sites"))] == ["bj-dc1"]
    ok(client.delete("sites/bj-dc1"), 204)
    error(client.get("sites/bj-dc1"), 404)


def test_site_input_errors(client: TestClient) -> None:
    site(client, "bj-dc1")
    assert "already exists" in error(
        client.post("sites", json={"slug": "bj-dc1", "name": "x"}), 409
    )
    assert "time zone" in error(
        client.post("sites", json={"slug": "x1", "name": "x", "timezone": "Mars/Base"}), 422
    )
    assert "slug" in error(client.post("sites", json={"slug": "Bad Slug", "name": "x"}), 422)
    assert "digits" in error(client.post("sites", json={"slug": "123", "name": "x"}), 422)
    assert "color: Extra inputs are not permitted" in error(
        client.post("sites", json={"slug": "x2", "name": "x", "color": 1}), 422
    )


def test_site_with_devices_cannot_be_deleted(client: TestClient) -> None:
    site(client)
    device(client, "web01")
    assert "1 devices" in error(client.delete("sites/bj-dc1"), 409)
    assert ok(client.get("sites/bj-dc1"))["slug"] == "bj-dc1"


def test_racks_are_named_per_site(client: TestClient) -> None:
    site(client, "bj-dc1")
    site(client, "sh-dc2")
    first = rack(client, "A01", "bj-dc1")
    rack(client, "A01", "sh-dc2")
    assert "exists at sites bj-dc1, sh-dc2" in error(client.get("racks/A01"), 400)
    assert ok(client.get("racks/A01", params={"site": "bj-dc1"}))["id"] == first["id"]
    assert ok(client.get(f"racks/{first['id']}"))["site"] == "bj-dc1"
    assert "already has a rack" in error(
        client.post("racks", json={"site": "bj-dc1", "name": "A01"}), 409
    )
    assert [r["site"] for r in ok(client.get("racks", params={"site": "sh-dc2"}))] == ["sh-dc2"]
    error(client.post("racks", json={"site": "nowhere", "name": "A02"}), 404)


def test_a_rack_name_fits_its_column(client: TestClient) -> None:
    """Rack names are 64 characters in the database; 65 to 128 was a 500 on PostgreSQL."""
    site(client, "bj-dc1")
    first = rack(client, "R" * 64)
    long = {"site": "bj-dc1", "name": "R" * 65}
    assert "at most 64 characters" in error(client.post("racks", json=long), 422)
    renamed = client.patch(f"racks/{first['id']}", json={"name": "S" * 65})
    assert "at most 64 characters" in error(renamed, 422)
    assert [r["name"] for r in ok(client.get("racks"))] == ["R" * 64]


def test_rack_cannot_shrink_below_its_devices(client: TestClient) -> None:
    site(client)
    rack(client, "A01", height_u=42)
    device(client, "db01", rack="A01", position_u=40, height_u=2)
    assert "up to U41" in error(client.patch("racks/A01", json={"height_u": 40}), 422)
    assert ok(client.patch("racks/A01", json={"height_u": 41}))["height_u"] == 41
    assert "holds 1 devices" in error(client.delete("racks/A01"), 409)
