from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import device, error, ok, rack, site


def _fleet(client: TestClient) -> None:
    site(client, "bj-dc1")
    site(client, "sh-br12", kind="branch")
    rack(client, "A01", "bj-dc1")
    for n in range(1, 13):
        device(
            client,
            f"web{n:02d}",
            rack="A01",
            position_u=n,
            tags=["web", "prod" if n <= 8 else "staging"],
        )
    device(client, "db01", serial="J30XYZ", vendor="Lenovo", model="SR650", tags=["db", "prod"])
    device(client, "br-srv01", site="sh-br12", tags=["prod"])
    device(client, "pdu-a1", kind="pdu")


def _names(client: TestClient, **params: object) -> list[str]:
    return [d["name"] for d in ok(client.get("devices", params=params))["items"]]


def test_device_read_shape_and_addressing(client: TestClient) -> None:
    site(client)
    rack(client)
    created = device(
        client,
        "web01",
        rack="A01",
        position_u=10,
        vendor="Lenovo",
        model="SR650",
        serial="J30ABC",
        arch="x86_64",
        os="linux",
        tags=["web", "web", "prod"],
        attributes={"owner": "team-a", "cores": 64},
    )
    assert created["tags"] == ["prod", "web"]
    assert created["site"] == "bj-dc1"
    assert created["rack"] == "A01"
    assert created["paths"] == []
    assert ok(client.get(f"devices/{created['id']}"))["name"] == "web01"
    assert ok(client.get("devices/web01"))["attributes"] == {"owner": "team-a", "cores": 64}
    huge = client.patch("devices/web01", json={"attributes": {"big": [10**30]}})
    assert "64 bits" in error(huge, 422)
    floats = ok(client.patch("devices/web01", json={"attributes": {"x": 1e20, "y": 0.1}}))
    assert floats["attributes"] == {"x": 1e20, "y": 0.1}
    assert ok(client.get("audit/verify"))["ok"] is True


def test_filters_combine(client: TestClient) -> None:
    _fleet(client)
    assert _names(client, select="web[01-03],db1") == ["web01", "web02", "web03"]
    assert _names(client, select="web[01-12]", tag=["staging"]) == [
        "web09",
        "web10",
        "web11",
        "web12",
    ]
    assert _names(client, tag=["prod", "db"]) == ["db01"]
    assert _names(client, site="sh-br12") == ["br-srv01"]
    assert _names(client, kind="pdu") == ["pdu-a1"]
    assert _names(client, rack="A01", select="web1[0-2]") == ["web10", "web11", "web12"]
    assert _names(client, q="j30x") == ["db01"]
    assert _names(client, q="sr6") == ["db01"]
    assert _names(client, q="100%") == []
    assert _names(client, status="maintenance") == []
    assert _names(client, select="web[01-03]!web02") == ["web01", "web03"]


def test_selector_errors_say_what_to_fix(client: TestClient) -> None:
    _fleet(client)
    assert "not a valid node range" in error(
        client.get("devices", params={"select": "web[01-"}), 422
    )
    assert "groups" in error(client.get("devices", params={"select": "@web"}), 422)
    assert "more than the limit" in error(
        client.get("devices", params={"select": "n[1-200000]"}), 400
    )
    assert "no site" in error(client.get("devices", params={"site": "nowhere"}), 404)


def test_cursor_paging_is_stable_and_complete(client: TestClient) -> None:
    _fleet(client)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = ok(client.get("devices", params=params))
        seen += [d["name"] for d in page["items"]]
        if cursor is None:
            device(client, "aaa-late-arrival")  # sorts before the cursor: must not shift pages
        cursor = page["next_cursor"]
        if cursor is None:
            break
    everything = _names(client, limit=1000)
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))
    assert set(everything) - set(seen) == {"aaa-late-arrival"}
    assert _names(client, sort="-name", limit=2) == ["web12", "web11"]
    assert "cursor" in error(client.get("devices", params={"cursor": "garbage!"}), 400)


def test_rack_placement_rules(client: TestClient) -> None:
    site(client, "bj-dc1")
    site(client, "sh-dc2")
    rack(client, "A01", "bj-dc1", height_u=42)
    rack(client, "B01", "sh-dc2")
    device(client, "db01", rack="A01", position_u=10, height_u=2)
    assert "overlaps 'db01' (U10-U11)" in error(
        client.post(
            "devices",
            json={
                "name": "web01",
                "kind": "server",
                "site": "bj-dc1",
                "rack": "A01",
                "position_u": 11,
            },
        ),
        422,
    )
    assert "past the top" in error(
        client.post(
            "devices",
            json={
                "name": "web01",
                "kind": "server",
                "site": "bj-dc1",
                "rack": "A01",
                "position_u": 42,
                "height_u": 2,
            },
        ),
        422,
    )
    assert "rack: no rack 'B01' at site 'bj-dc1'" in error(
        client.post(
            "devices", json={"name": "web01", "kind": "server", "site": "bj-dc1", "rack": "B01"}
        ),
        422,
    )
    assert "needs a rack" in error(
        client.post(
            "devices", json={"name": "web01", "kind": "server", "site": "bj-dc1", "position_u": 3}
        ),
        422,
    )
    # moving a device within its rack never collides with itself
    assert ok(client.patch("devices/db01", json={"position_u": 11}))["position_u"] == 11
    # moving to another site must bring a rack of that site (or none)
    assert "rack" in error(client.patch("devices/db01", json={"site": "sh-dc2"}), 422)
    moved = ok(client.patch("devices/db01", json={"site": "sh-dc2", "rack": "B01"}))
    assert (moved["site"], moved["rack"], moved["position_u"]) == ("sh-dc2", "B01", 11)
    cleared = ok(client.patch("devices/db01", json={"rack": None, "position_u": None}))
    assert cleared["rack"] is None
    assert cleared["position_u"] is None


def test_vms_live_on_hypervisors(client: TestClient) -> None:
    site(client)
    rack(client)
    device(client, "hv01", kind="hypervisor")
    device(client, "web01")
    assert "needs its hypervisor" in error(
        client.post("devices", json={"name": "vm1", "kind": "vm", "site": "bj-dc1"}), 422
    )
    assert "not a hypervisor" in error(
        client.post(
            "devices", json={"name": "vm1", "kind": "vm", "site": "bj-dc1", "parent": "web01"}
        ),
        422,
    )
    assert "not in a rack" in error(
        client.post(
            "devices",
            json={"name": "vm1", "kind": "vm", "site": "bj-dc1", "parent": "hv01", "rack": "A01"},
        ),
        422,
    )
    assert "only a vm" in error(client.patch("devices/web01", json={"parent": "hv01"}), 422)
    device(client, "vm1", kind="vm", parent="hv01")
    assert [d["name"] for d in ok(client.get("devices", params={"parent": "hv01"}))["items"]] == [
        "vm1"
    ]
    assert "hosts 1 vms" in error(client.delete("devices/hv01"), 409)
    assert "stay a hypervisor" in error(client.patch("devices/hv01", json={"kind": "server"}), 409)


def test_unique_names_and_asset_tags(client: TestClient) -> None:
    site(client)
    first = device(client, "web01", asset_tag="A-1")
    assert f"already exists (id {first['id']})" in error(
        client.post("devices", json={"name": "web01", "kind": "server", "site": "bj-dc1"}), 409
    )
    assert "already on 'web01'" in error(
        client.post(
            "devices",
            json={"name": "web02", "kind": "server", "site": "bj-dc1", "asset_tag": "A-1"},
        ),
        409,
    )
    device(client, "web02")
    assert "already exists" in error(client.patch("devices/web02", json={"name": "web01"}), 409)
    assert ok(client.patch("devices/web02", json={"name": "web03"}))["name"] == "web03"
    assert "digits" in error(
        client.post("devices", json={"name": "1234", "kind": "server", "site": "bj-dc1"}), 422
    )


def test_update_keeps_what_is_not_given(client: TestClient) -> None:
    site(client)
    device(client, "web01", vendor="Lenovo", tags=["a"], attributes={"x": 1})
    updated = ok(client.patch("devices/web01", json={"status": "maintenance"}))
    assert (updated["vendor"], updated["tags"], updated["attributes"], updated["status"]) == (
        "Lenovo",
        ["a"],
        {"x": 1},
        "maintenance",
    )
    assert ok(client.patch("devices/web01", json={"tags": []}))["tags"] == []
    assert "kind" in error(client.patch("devices/web01", json={"kind": None}), 422)
    ok(client.delete("devices/web01"), 204)
    error(client.get("devices/web01"), 404)
