"""Request matching: devices in an area with clips in a window, over a large index.

Ours: the relay's query (Redis GEOSEARCH for the devices within the radius, then
each device's clips by time).  Baseline in the same run: the same answer
without the geo index, checking every device's clips in the window and
filtering by distance (pipelined).  Both over the same data in a real Redis.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import redis

from bench.report import Report, pct
from relay import keyspace as ks
from relay.index import DEVICES, GEO, Near, RelayIndex
from testing.localstack import LocalRedis

CENTRE = (51.50, -0.12)
SPAN_DEG = 0.18  # about 20 km


def _load(r: redis.Redis, devices: int, clips: int, days: float, now: float) -> list[tuple]:
    rng = random.Random(7)
    positions = []
    pipe = r.pipeline(transaction=False)
    for i in range(devices):
        lat = CENTRE[0] + rng.uniform(-SPAN_DEG / 2, SPAN_DEG / 2)
        lon = CENTRE[1] + rng.uniform(-SPAN_DEG / 2, SPAN_DEG / 2)
        d = f"bell-{i:06d}"
        positions.append((d, lat, lon))
        pipe.sadd(DEVICES, d)
        pipe.geoadd(GEO, (lon, lat, d))
        pipe.hset(ks.device_info(d), mapping={"owner": f"o{i}", "lat": lat, "lon": lon})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    for j in range(clips):
        d = positions[rng.randrange(devices)][0]
        start = now - rng.uniform(0, days * 86400)
        cid = f"c{j:07d}"
        rec = {"device": d, "clip_id": cid, "start": start, "duration_s": 20.0, "size": 1}
        pipe.set(ks.device_clip(d, cid), json.dumps(rec))
        pipe.zadd(ks.device_clips(d), {cid: start})
        if j % 10000 == 9999:
            pipe.execute()
    pipe.execute()
    return positions


def _baseline(r: redis.Redis, positions: list[tuple], near: Near, lo: float, hi: float) -> int:
    pipe = r.pipeline(transaction=False)
    for d, _, _ in positions:
        pipe.zrangebyscore(ks.device_clips(d), lo, hi)
    found = 0
    for (_d, lat, lon), ids in zip(positions, pipe.execute(), strict=True):
        if ids and _metres(lat, lon, near.lat, near.lon) <= near.radius_m:
            found += len(ids)
    return found


def _metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6_371_000 * 2 * math.asin(math.sqrt(a))


def run(quick: bool = False) -> Report:
    devices, clips, queries, base_queries = (
        (1000, 10_000, 100, 10) if quick else (100_000, 1_000_000, 500, 20)
    )
    report = Report(
        "request_matching", f"Request matching ({clips:,} clips on {devices:,} devices)"
    )
    with LocalRedis(Path(tempfile.mkdtemp(prefix="bench-match-"))) as server:
        r = redis.Redis.from_url(server.url)
        now = time.time()
        positions = _load(r, devices, clips, days=30, now=now)
        index = RelayIndex(r)
        rng = random.Random(1)
        ours, theirs, found = [], [], 0
        for q in range(queries):
            lat = CENTRE[0] + rng.uniform(-SPAN_DEG / 3, SPAN_DEG / 3)
            lon = CENTRE[1] + rng.uniform(-SPAN_DEG / 3, SPAN_DEG / 3)
            hi = now - rng.uniform(0, 29 * 86400)
            lo = hi - 6 * 3600
            near = Near(lat, lon, 250)
            t0 = time.perf_counter()
            result = index.clips(since=lo, until=hi, near=near)
            ours.append((time.perf_counter() - t0) * 1000)
            found += len(result)
            if q < base_queries:
                t0 = time.perf_counter()
                expected = _baseline(r, positions, near, lo, hi)
                theirs.append((time.perf_counter() - t0) * 1000)
                assert expected == len(result), "the geo index and the full scan disagree"
    report.add(
        "p50 match",
        statistics.median(ours),
        statistics.median(theirs),
        "every device's clips, no geo index",
        "ms",
    )
    report.add(
        "p99 match",
        pct(ours, 99),
        pct(theirs, 99),
        "every device's clips, no geo index",
        "ms",
        note="target < 50 ms",
    )
    report.extra = {"queries": queries, "clips_found": found}
    return report


if __name__ == "__main__":
    rep = run()
    rep.show()
    rep.save()
