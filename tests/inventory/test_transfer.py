from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
from fastapi.testclient import TestClient

from app.csv_cells import TRIGGERS
from tests.factories import device, error, ok, path, rack, site

CSV = """name,kind,site,rack,position_u,height_u,vendor,model,serial,tags,attributes
web01,server,bj-dc1,A01,1,1,Lenovo,SR630,J1,"web,prod","{""owner"": ""a""}"
web02,server,bj-dc1,A01,2,1,Lenovo,SR630,J2,web;prod,
hv01,hypervisor,bj-dc1,A01,3,2,Dell,R750,J3,virt,
"""


def _import(client: TestClient, body: str | bytes, fmt: str, **params: object) -> httpx.Response:
    content_type = "text/csv" if fmt == "csv" else "application/json"
    headers = {"Content-Type": content_type}
    response: httpx.Response = client.post(
        "devices/import", content=body, headers=headers, params=params
    )
    return response


def _setup(client: TestClient) -> None:
    site(client, "bj-dc1")
    rack(client, "A01")


def test_csv_import_dry_run_then_real_then_idempotent(client: TestClient) -> None:
    _setup(client)
    dry = ok(_import(client, CSV, "csv", dry_run=True))
    assert (dry["dry_run"], dry["created"], dry["updated"], dry["unchanged"]) == (True, 3, 0, 0)
    assert ok(client.get("devices"))["items"] == []
    real = ok(_import(client, CSV, "csv"))
    assert (real["created"], real["updated"]) == (3, 0)
    web01 = ok(client.get("devices/web01"))
    assert (web01["tags"], web01["attributes"], web01["rack"]) == (
        ["prod", "web"],
        {"owner": "a"},
        "A01",
    )
    again = ok(_import(client, CSV, "csv"))
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 3)


def test_update_reports_before_and_after(client: TestClient) -> None:
    _setup(client)
    ok(_import(client, CSV, "csv"))
    changed = CSV.replace("J2,web;prod", "J2-NEW,web")
    result = ok(_import(client, changed, "csv", dry_run=True))
    (row,) = [r for r in result["rows"] if r["action"] == "update"]
    assert row["name"] == "web02"
    assert row["row"] == 3
    assert row["changes"] == {
        "serial": {"before": "J2", "after": "J2-NEW"},
        "tags": {"before": ["prod", "web"], "after": ["web"]},
    }
    assert ok(client.get("devices/web02"))["serial"] == "J2"
    ok(_import(client, changed, "csv"))
    assert ok(client.get("devices/web02"))["tags"] == ["web"]


def test_missing_columns_keep_stored_values(client: TestClient) -> None:
    _setup(client)
    ok(_import(client, CSV, "csv"))
    result = ok(_import(client, "name,status\nweb01,maintenance\n", "csv"))
    assert result["updated"] == 1
    web01 = ok(client.get("devices/web01"))
    assert (web01["status"], web01["serial"], web01["rack"]) == ("maintenance", "J1", "A01")


def test_any_bad_row_rejects_the_whole_file(client: TestClient) -> None:
    _setup(client)
    device(client, "db01", rack="A01", position_u=10)
    bad = CSV + (
        "web03,server,bj-dc1,A01,10,1,,,,,\n"  # U10 is db01's
        "web04,toaster,bj-dc1,,,,,,,,\n"
        "web05,server,nowhere,,,,,,,,\n"
        "web01,server,bj-dc1,,,,,,,,\n"  # twice in the file
    )
    response = _import(client, bad, "csv")
    detail = error(response, 422)
    assert "nothing was imported" in detail
    problems = [(e["row"], e["field"]) for e in response.json()["errors"]]  # in row order
    assert problems == [(5, "position_u"), (6, "kind"), (7, "site"), (8, "name")]
    assert [d["name"] for d in ok(client.get("devices"))["items"]] == ["db01"]


def test_rows_may_swap_rack_units(client: TestClient) -> None:
    _setup(client)
    ok(_import(client, CSV, "csv"))
    swapped = "name,position_u\nweb01,2\nweb02,1\n"
    assert ok(_import(client, swapped, "csv"))["updated"] == 2
    assert ok(client.get("devices/web01"))["position_u"] == 2


def test_malformed_files(client: TestClient) -> None:
    _setup(client)
    assert "unknown: colour" in error(_import(client, "name,colour\nweb01,red\n", "csv"), 422)
    assert "include 'name'" in error(_import(client, "kind\nserver\n", "csv"), 422)
    assert "more cells" in error(_import(client, "name,kind\nweb01,server,extra\n", "csv"), 422)
    assert "UTF-8" in error(_import(client, b"name\n\xff\xfe\n", "csv"), 422)
    assert "not valid JSON" in error(_import(client, "[{", "json"), 422)
    assert "JSON list" in error(_import(client, '{"name": "web01"}', "json"), 422)
    response = _import(
        client, '[{"name": "web01", "kind": "server", "site": "bj-dc1", "attributes": 5}]', "json"
    )
    assert response.json()["errors"][0]["field"] == "attributes"
    response = _import(client, "name,attributes\nweb01,{oops\n", "csv")
    assert response.json()["errors"] == [
        {"row": 2, "field": "attributes", "message": response.json()["errors"][0]["message"]}
    ]


def test_json_import_with_paths_and_vms(client: TestClient) -> None:
    _setup(client)
    rows = [
        {
            "name": "vm1",
            "kind": "vm",
            "site": "bj-dc1",
            "parent": "hv01",
        },
        {"name": "hv01", "kind": "hypervisor", "site": "bj-dc1"},
        {"name": "cs-01", "kind": "console_server", "site": "bj-dc1"},
        {
            "name": "web01",
            "kind": "server",
            "site": "bj-dc1",
            "paths": [
                {"kind": "ipmi", "address": "10.1.0.11", "username": "admin", "secret": "pw-1"},
                {"kind": "console_port", "via": "cs-01", "port": 1},
            ],
        },
    ]
    result = ok(_import(client, json.dumps({"devices": rows}), "json"))
    assert result["created"] == 4
    assert ok(client.get("devices/vm1"))["parent"] == "hv01"
    web01 = ok(client.get("devices/web01"))
    assert [(p["kind"], p["secret"]) for p in web01["paths"]] == [
        ("ipmi", "set"),
        ("console_port", None),
    ]
    # re-importing the export (which has no secrets) changes nothing and keeps the secret
    exported = client.get("devices/export", params={"format": "json"})
    assert "pw-1" not in exported.text
    again = ok(_import(client, exported.content, "json"))
    assert (again["updated"], again["unchanged"]) == (0, 4)
    # the same console port on two devices is refused, whole file
    clash = [
        {
            "name": "web02",
            "kind": "server",
            "site": "bj-dc1",
            "paths": [{"kind": "console_port", "via": "cs-01", "port": 1}],
        }
    ]
    response = _import(client, json.dumps(clash), "json")
    assert response.json()["errors"][0]["row"] == 1
    error(client.get("devices/web02"), 404)
    bad_path = [
        {"name": "web01", "paths": [{"kind": "pdu_outlet", "via": "cs-01", "outlets": [1]}]}
    ]
    response = _import(client, json.dumps(bad_path), "json")
    assert response.json()["errors"][0]["field"] == "paths.0.via"
    assert len(ok(client.get("devices/web01"))["paths"]) == 2


def test_export_csv_round_trip(client: TestClient) -> None:
    _setup(client)
    ok(_import(client, CSV, "csv"))
    exported = client.get("devices/export", params={"format": "csv", "tag": "web"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert lines[0].startswith("name,kind,site,rack")
    assert len(lines) == 3
    assert ok(_import(client, exported.text, "csv"))["unchanged"] == 2
    assert "no site" in error(client.get("devices/export", params={"site": "nowhere"}), 404)


def test_csv_export_neutralises_formulas_and_imports_back_unchanged(client: TestClient) -> None:
    """The attack: a field `=HYPERLINK(...)` ran as a formula when the export was opened in a
    spreadsheet. Cells are prefixed with `'`, and the import takes the prefix off again."""
    _setup(client)
    tricky: dict[str, Any] = {
        "description": '=HYPERLINK("http://evil","x")',
        "vendor": "@SUM(1+1)",
        "model": "+1",
        "serial": "-1",
        "asset_tag": "'=quoted already",
        "os_version": "x\r=1+1",  # a CR inside a cell must not start a row (and a formula)
        "arch": "'plain",
        "attributes": {"@owner": "=ops"},
    }
    device(client, "web09", **tricky)
    exported = client.get("devices/export", params={"format": "csv"})
    rows = list(csv.reader(io.StringIO(exported.text, newline="")))
    assert len(rows) == 2
    record = dict(zip(rows[0], rows[1], strict=True))
    assert [cell for cell in rows[1] if cell[:1] in TRIGGERS] == []
    assert record["description"] == """'=HYPERLINK("http://evil","x")"""
    assert (record["vendor"], record["asset_tag"], record["arch"]) == (
        "'@SUM(1+1)",
        "''=quoted already",
        "'plain",
    )
    again = ok(_import(client, exported.text, "csv"))
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 1)
    after = ok(client.get("devices/web09"))
    assert {key: after[key] for key in tricky} == tricky


def test_ipmi_path_in_json_export(client: TestClient) -> None:
    _setup(client)
    device(client, "web01")
    path(client, "web01", kind="ipmi", address="10.1.0.11", username="admin", secret="pw-1")
    (record,) = json.loads(client.get("devices/export").text)
    assert record["paths"] == [
        {
            "kind": "ipmi",
            "priority": 10,
            "address": "10.1.0.11",
            "port": 623,
            "username": "admin",
            "options": {"cipher_suite": None, "privilege": "administrator"},
        }
    ]


def test_deeply_nested_imports_are_refused_naming_the_limit(client: TestClient) -> None:
    """JSON, including JSON sent as text/plain with `format=json`, and a CSV attributes cell."""
    _setup(client)
    deep = "[" * 50_000 + "]" * 50_000
    body = '[{"name": "web01", "kind": "server", "site": "bj-dc1", "attributes": {"a": ' + deep
    body += "}}]"
    assert "nests deeper than 32 levels" in error(_import(client, body, "json"), 422)
    plain = client.post(
        "devices/import", content=deep, headers={"Content-Type": "text/plain"},
        params={"format": "json"},
    )  # fmt: skip
    assert "nests deeper than 32 levels" in error(plain, 422)
    cell = '"' + deep.replace('"', '""') + '"'
    response = _import(client, f"name,kind,site,attributes\nweb01,server,bj-dc1,{cell}\n", "csv")
    assert "nests deeper than 32 levels" in error(response, 422)
    assert response.json()["errors"][0]["field"] == "attributes"
    assert ok(client.get("devices"))["items"] == []
