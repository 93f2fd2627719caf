"""Catalogue at 100,000 devices: import rate, filtered list latency, server memory.

Reference measured in the same run: the database alone (the same rows bulk-inserted, the same
filtered page queried with raw SQL), so the ratios show what the API layer costs.
"""

from __future__ import annotations

import json
import random
import sqlite3
import statistics
import time
from typing import Any

import httpx

from bench.server import Server, running

SITES = 50
RACKS_PER_SITE = 20
DEVICES = 100_000
BATCH = 10_000
PAGES = 300


def fleet_rows() -> list[dict[str, Any]]:
    per_site = DEVICES // SITES
    rows = []
    for s in range(SITES):
        for n in range(per_site):
            rack, slot = divmod(n, 40)
            rows.append(
                {
                    "name": f"s{s:02d}-node{n:05d}",
                    "kind": "server",
                    "site": f"site-{s:02d}",
                    "rack": f"R{rack % RACKS_PER_SITE:02d}" if rack < RACKS_PER_SITE else None,
                    "position_u": slot + 1 if rack < RACKS_PER_SITE else None,
                    "vendor": "Lenovo",
                    "model": "SR650",
                    "serial": f"J{s:02d}{n:06d}",
                    "tags": ["web" if n % 3 else "db", f"team-{n % 7}"],
                    "attributes": {"n": n},
                }
            )
    return rows


def make_sites(client: httpx.Client) -> None:
    for s in range(SITES):
        client.post(
            "/sites", json={"slug": f"site-{s:02d}", "name": f"Site {s}"}
        ).raise_for_status()
        for r in range(RACKS_PER_SITE):
            body = {"site": f"site-{s:02d}", "name": f"R{r:02d}", "height_u": 42}
            client.post("/racks", json=body).raise_for_status()


def import_rows(client: httpx.Client, rows: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        body = json.dumps(rows[start : start + BATCH])
        client.post("/devices/import", content=body).raise_for_status()
    return len(rows) / (time.perf_counter() - started)


def _list_latencies(client: httpx.Client) -> list[float]:
    rng = random.Random(7)
    latencies = []
    for _ in range(PAGES):
        site = rng.randrange(SITES)
        first = rng.randrange(0, 1800)
        params: dict[str, str | int] = {
            "site": f"site-{site:02d}",
            "tag": "web",
            "select": f"s{site:02d}-node[{first:05d}-{first + 199:05d}]",
            "limit": 100,
        }
        started = time.perf_counter()
        response = client.get("/devices", params=params)
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        assert len(response.json()["items"]) == 100
    return latencies


def _reference_sqlite(rows: list[dict[str, Any]]) -> tuple[float, list[float]]:
    """Raw sqlite3: one executemany of the device rows, and the same page in plain SQL."""
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE TABLE device (id INTEGER PRIMARY KEY, name TEXT UNIQUE, site TEXT, "
        "serial TEXT, attributes TEXT)"
    )
    db.execute(
        "CREATE TABLE device_tag (device_id INTEGER, tag TEXT, PRIMARY KEY (device_id, tag))"
    )
    db.execute("CREATE INDEX ix_site_name ON device (site, name)")
    db.execute("CREATE INDEX ix_tag ON device_tag (tag, device_id)")
    started = time.perf_counter()
    db.executemany(
        "INSERT INTO device (name, site, serial, attributes) VALUES (?, ?, ?, ?)",
        [(r["name"], r["site"], r["serial"], json.dumps(r["attributes"])) for r in rows],
    )
    ids = dict(db.execute("SELECT name, id FROM device"))
    db.executemany(
        "INSERT INTO device_tag VALUES (?, ?)",
        [(ids[r["name"]], tag) for r in rows for tag in r["tags"]],
    )
    db.commit()
    rate = len(rows) / (time.perf_counter() - started)
    rng = random.Random(7)
    latencies = []
    for _ in range(PAGES):
        site = rng.randrange(SITES)
        first = rng.randrange(0, 1800)
        names = [f"s{site:02d}-node{n:05d}" for n in range(first, first + 200)]
        started = time.perf_counter()
        found = db.execute(
            f"SELECT * FROM device WHERE site = ? AND name IN ({','.join('?' * len(names))}) "
            "AND EXISTS (SELECT 1 FROM device_tag WHERE device_id = device.id AND tag = 'web') "
            "ORDER BY name LIMIT 101",
            [f"site-{site:02d}", *names],
        ).fetchall()
        db.execute(
            f"SELECT * FROM device_tag WHERE device_id IN ({','.join('?' * 100)})",
            [row[0] for row in found[:100]],
        ).fetchall()
        latencies.append((time.perf_counter() - started) * 1000)
    return rate, latencies


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _measure(server: Server, rows: list[dict[str, Any]]) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=auth, timeout=600) as client:
        make_sites(client)
        rate = import_rows(client, rows)
        reimport = import_rows(client, rows[:BATCH])  # idempotent: every row unchanged
        latencies = _list_latencies(client)
    return {
        "import_per_s": rate,
        "reimport_per_s": reimport,
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "peak_rss_mib": server.peak_rss_mib(),
    }


def run() -> None:
    rows = fleet_rows()
    ref_rate, ref_latencies = _reference_sqlite(rows)
    ref_p50, ref_p99 = _pct(ref_latencies, 50), _pct(ref_latencies, 99)
    print(f"\n== catalogue: {DEVICES:,} devices, {SITES} sites, {SITES * RACKS_PER_SITE} racks ==")
    print(
        f"reference (raw sqlite3 in memory): insert {ref_rate:,.0f} devices/s, "
        f"page p50 {ref_p50:.2f} ms p99 {ref_p99:.2f} ms"
    )
    for backend in ("sqlite", "postgresql"):
        with running(backend) as server:
            figures = _measure(server, rows)
        print(
            f"{backend:>10}: import {figures['import_per_s']:,.0f} devices/s "
            f"(aim >= 5,000; {ref_rate / figures['import_per_s']:.1f}x raw insert), "
            f"re-import unchanged {figures['reimport_per_s']:,.0f}/s; "
            f"list page (site+tag+range, 100 rows) p50 {figures['p50_ms']:.1f} ms, "
            f"p99 {figures['p99_ms']:.1f} ms "
            f"(aim <= 50; {figures['p99_ms'] / ref_p99:.0f}x raw SQL); "
            f"server peak RSS {figures['peak_rss_mib']:.0f} MiB"
        )
