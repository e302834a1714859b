"""The simulated road graph between WIM stations, and the reference distances scenarios derive from.

Stations sit near the seat of the county they are named after (simulators/fleet.py). Each is linked to its
``NEIGHBOURS`` nearest stations (and they back to it) when they are at most ``MAX_LINK_KM`` apart in a
straight line — to the nearest one whatever the distance, so no station is cut off. A link's road distance
is the straight-line distance times a winding factor drawn in ``WINDING`` (roads are never shorter than the
crow flies). A truck driving a link at ``v`` km/h takes road km / ``v`` hours, so passage times along a
route, ETAs and the graph agree.

``road_km`` and ``link_km`` are the simulator's own shortest-path reference (written apart from
models/intercept.py) used to derive a scenario's expected intercept targets.
"""
from __future__ import annotations

import heapq
import math

import numpy as np

from .gps_terminal import destination, haversine_km

NEIGHBOURS = 2
MAX_LINK_KM = 150.0
WINDING = (1.15, 1.35)


def link_stations(stations: list, seed: int) -> None:
    """Fill each station's ``downstream`` list (registry road graph, docs/registry-format.md). A separate
    generator keeps the rest of a seeded registry the same as before the graph existed."""
    rng = np.random.default_rng([seed, 1717])
    n = len(stations)
    if n < 2:
        return
    lon = np.array([s.lon for s in stations])
    lat = np.array([s.lat for s in stations])
    d = haversine_km(lon[:, None], lat[:, None], lon[None, :], lat[None, :])
    pairs = set()
    for i in range(n):
        order = [j for j in np.argsort(d[i]) if j != i][:NEIGHBOURS]
        for rank, j in enumerate(order):
            if rank == 0 or d[i, j] <= MAX_LINK_KM:     # the nearest always: no station is cut off
                pairs.add((min(i, int(j)), max(i, int(j))))
    edges: dict[int, list] = {i: [] for i in range(n)}
    for i, j in sorted(pairs):
        km = round(float(d[i, j]) * float(rng.uniform(*WINDING)), 1)
        edges[i].append({"station": stations[j].station_id, "km": km})
        edges[j].append({"station": stations[i].station_id, "km": km})
    for i, s in enumerate(stations):
        s.downstream = sorted(edges[i], key=lambda e: (e["km"], e["station"]))


def road_km(stations: dict, start: str) -> dict[str, float]:
    """Shortest road distance from ``start`` to every station reachable over ``downstream`` links."""
    dist = {start: 0.0}
    heap = [(0.0, start)]
    while heap:
        km, sid = heapq.heappop(heap)
        if km > dist[sid]:
            continue
        for e in stations[sid].downstream:
            nk = km + float(e["km"])
            if nk < dist.get(e["station"], math.inf):
                dist[e["station"]] = nk
                heapq.heappush(heap, (nk, e["station"]))
    return dist


def link_km(stations: dict, a: str, b: str) -> float | None:
    """Road km of the direct link a → b (None when they are not neighbours)."""
    for e in stations[a].downstream:
        if e["station"] == b:
            return float(e["km"])
    return None


def along(a, b, fraction: float) -> tuple[float, float]:
    """The point ``fraction`` of the way from station ``a`` to station ``b`` (straight line, lon/lat)."""
    return (float(a.lon + (b.lon - a.lon) * fraction), float(a.lat + (b.lat - a.lat) * fraction))


def behind(a, b, km: float) -> tuple[float, float]:
    """A point ``km`` before station ``a`` on the line from ``b`` through ``a`` (where a route starts)."""
    from .gps_terminal import bearing_deg
    lon, lat = destination(a.lon, a.lat, float(bearing_deg(b.lon, b.lat, a.lon, a.lat)), km)
    return float(lon), float(lat)
