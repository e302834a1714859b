"""Registry geography for the console: the offline map's layers and a readable place for an alert.

The map is drawn in the browser from ``map_data()`` (no tiles). ``describe`` names where an alert
happened: the zone or loading site containing it, else the nearest WIM station within ``NEAR_KM``, else
plain coordinates. Polygons go into a shapely STRtree once per registry.
"""
from __future__ import annotations

import math

import numpy as np
import shapely
from shapely import STRtree

from roadwatch.models.records import iso_to_epoch_ms
from roadwatch.models.registry import Registry

NEAR_KM = 2.0         # "near <station>" only when really near; further away, coordinates say more
_R_KM = 6371.0088


class Places:
    def __init__(self, registry: Registry):
        self.registry = registry
        names: list[str] = []
        polys = []
        for z in registry.zones.values():
            names.append(z.name)
            polys.append(shapely.Polygon(z.polygon))
        for s in registry.source_sites.values():
            names.append(s.name)
            polys.append(shapely.Polygon(s.polygon))
        self._names = names
        self._polys = polys
        self._tree = STRtree(polys) if polys else None
        st = list(registry.stations.values())
        self._stations = st
        self._st_lat = np.radians([s.lat for s in st]) if st else np.zeros(0)
        self._st_lon = np.radians([s.lon for s in st]) if st else np.zeros(0)

    def describe(self, lat: float | None, lon: float | None, station_id: str | None = None) -> str:
        if station_id and (station_id in self.registry.stations or station_id in self.registry.mobile_units):
            return self.registry.point_name(station_id)
        if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
            return ""
        if self._tree is not None:
            hits = self._tree.query(shapely.Point(lon, lat), predicate="intersects")
            if len(hits):
                return "、".join(sorted({self._names[i] for i in hits}))
        if len(self._stations):
            la, lo = math.radians(lat), math.radians(lon)
            a = (np.sin((self._st_lat - la) / 2) ** 2
                 + np.cos(la) * np.cos(self._st_lat) * np.sin((self._st_lon - lo) / 2) ** 2)
            d = 2 * _R_KM * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
            i = int(np.argmin(d))
            if d[i] <= NEAR_KM:
                return f"{self._stations[i].name}附近"
        return f"{lat:.5f}, {lon:.5f}"

    def map_data(self) -> dict:
        reg = self.registry
        lons: list[float] = []
        lats: list[float] = []
        for z in list(reg.zones.values()) + list(reg.source_sites.values()):
            for lo, la in z.polygon:
                lons.append(lo)
                lats.append(la)
        for s in reg.stations.values():
            lons.append(s.lon)
            lats.append(s.lat)
        bbox = [min(lons), min(lats), max(lons), max(lats)] if lons else None
        return {
            "bbox": bbox,
            "stations": [{"id": s.station_id, "name": s.name, "lat": s.lat, "lon": s.lon, "county": s.county}
                         for s in reg.stations.values()],
            "zones": [{"id": z.zone_id, "name": z.name, "kind": z.kind, "polygon": z.polygon,
                       "categories": z.categories} for z in reg.zones.values()],
            "sites": [{"id": s.site_id, "name": s.name, "kind": s.kind, "polygon": s.polygon}
                      for s in reg.source_sites.values()],
            # 流动治超 (models/mobile.py): every deployment with its span; the map draws a unit while one is active
            "mobile_units": [{"id": u.unit_id, "name": u.name, "county": u.county, "deployments": [
                {"id": d["deployment_id"], "lat": d["lat"], "lon": d["lon"], "road": d["road"],
                 "direction": d["direction"], "start": d["start"], "end": d["end"],
                 "start_ms": iso_to_epoch_ms(d["start"]), "end_ms": iso_to_epoch_ms(d["end"])}
                for d in sorted(u.deployments, key=lambda d: iso_to_epoch_ms(d["start"]))]}
                for u in reg.mobile_units.values()],
        }
