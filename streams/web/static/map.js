// The console's map: Leaflet (vendored, static/vendor/leaflet) with
//  - a base layer: a configured tile source (web.tile_url) and/or the bundled administrative boundaries
//    (province / city / county, static/vendor/boundaries) so a machine without internet still shows where it is;
//  - zones and loading sites as polygons, WIM stations, and their labels placed without overlap;
//  - mobile weighing units (流动治超) as orange triangles, only while one of their deployments is active;
//  - every vehicle drawn on one canvas (20 000 stay smooth), clustered below CLUSTER_MAX_ZOOM with supercluster
//    (vendored), heading arrows and plate labels when zoomed in;
//  - a speed-coloured track with a playback marker, and a rectangle tool for the area search.
// Positions arrive in WGS-84. With a GCJ-02 tile source (web.tile_crs = "gcj02") everything we draw is shifted
// by the published WGS-84 → GCJ-02 offset, for display only (geo/coords.py holds the same formula, tested).

const L = window.L;
const CLUSTER_MAX_ZOOM = 12;      // clusters up to this zoom, single vehicles above
const ARROW_ZOOM = 11;            // heading arrows from here
const PLATE_ZOOM = 14;            // plate labels from here
export const STATE_COLORS = {moving: "#2a9d55", stopped: "#3d7bbf", offline: "#9aa3ad", alerting: "#e63946", no_data: "#c5ccd4"};
export const SPEED_BINS = [[0, "#3d7bbf", "< 20"], [20, "#2a9d55", "20–40"], [40, "#b5a000", "40–60"], [60, "#f08c00", "60–80"], [80, "#d62828", "≥ 80"]];
const SEV_COLORS = {high: "#d62828", medium: "#f08c00", low: "#5c7cfa"};

// --- WGS-84 → GCJ-02 (display only) ---------------------------------------------------------------------------
const A = 6378245.0, EE = 0.00669342162296594323;
function outsideChina(lat, lon) { return !(lon >= 72.004 && lon <= 137.8347 && lat >= 0.8293 && lat <= 55.8271); }
export function wgsToGcj(lat, lon) {
  if (outsideChina(lat, lon)) return [lat, lon];
  const x = lon - 105.0, y = lat - 35.0, PI = Math.PI;
  const common = (20.0 * Math.sin(6.0 * x * PI) + 20.0 * Math.sin(2.0 * x * PI)) * 2.0 / 3.0;
  let dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x)) + common
    + (20.0 * Math.sin(y * PI) + 40.0 * Math.sin(y / 3.0 * PI)) * 2.0 / 3.0
    + (160.0 * Math.sin(y / 12.0 * PI) + 320.0 * Math.sin(y * PI / 30.0)) * 2.0 / 3.0;
  let dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x)) + common
    + (20.0 * Math.sin(x * PI) + 40.0 * Math.sin(x / 3.0 * PI)) * 2.0 / 3.0
    + (150.0 * Math.sin(x / 12.0 * PI) + 300.0 * Math.sin(x / 30.0 * PI)) * 2.0 / 3.0;
  const rad = lat / 180.0 * PI, magic = 1 - EE * Math.sin(rad) ** 2, sq = Math.sqrt(magic);
  dlat = dlat * 180.0 / ((A * (1 - EE)) / (magic * sq) * PI);
  dlon = dlon * 180.0 / (A / sq * Math.cos(rad) * PI);
  return [lat + dlat, lon + dlon];
}
export function gcjToWgs(lat, lon) {
  let wl = lat, wo = lon;
  for (let i = 0; i < 30; i++) {
    const [gl, go] = wgsToGcj(wl, wo), el = gl - lat, eo = go - lon;
    wl -= el; wo -= eo;
    if (Math.max(Math.abs(el), Math.abs(eo)) < 1e-8) break;
  }
  return [wl, wo];
}
export const speedColor = (v) => { let c = SPEED_BINS[0][1]; for (const [lo, col] of SPEED_BINS) if ((v || 0) >= lo) c = col; return c; };

function ringCentroid(ring) {      // [lon, lat] ring → [lat, lon] of its area centroid (vertex mean if degenerate)
  let a = 0, cx = 0, cy = 0;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const f = ring[j][0] * ring[i][1] - ring[i][0] * ring[j][1];
    a += f; cx += (ring[j][0] + ring[i][0]) * f; cy += (ring[j][1] + ring[i][1]) * f;
  }
  if (Math.abs(a) < 1e-12) {
    const n = ring.length; return [ring.reduce((t, p) => t + p[1], 0) / n, ring.reduce((t, p) => t + p[0], 0) / n];
  }
  return [cy / (3 * a), cx / (3 * a)];
}

export class ConsoleMap {
  constructor(el, cfg, handlers) {
    this.cfg = cfg || {};
    this.handlers = handlers;        // {vehicle(plate), alert(id)}
    this.gcj = this.cfg.tile_crs === "gcj02" && !!this.cfg.tile_url;
    this.map = L.map(el, {zoomSnap: 0.5, minZoom: 4, maxZoom: 18, worldCopyJump: false, preferCanvas: true});
    this.map.attributionControl.setPrefix(false);
    L.control.scale({imperial: false, position: "bottomright"}).addTo(this.map);
    this.map.createPane("rwVehicles").style.zIndex = 450;
    this.map.createPane("rwBase").style.zIndex = 250;        // boundaries: above tiles, under zones and tracks
    this.map.getPane("rwBase").style.pointerEvents = "none";
    this.vehicles = [];             // rows of api/vehicles that pass the filter
    this.alerts = [];
    this.selected = null;
    this.staticLabels = [];         // [lat, lon, text, priority]
    this.adminLabels = [];          // [lat, lon, text, level]
    this.stations = [];
    this.mobileUnits = [];          // api/map mobile_units: each with its deployments (start_ms … end_ms)
    this.hits = [];
    if (this.cfg.tile_url) {
      L.tileLayer(this.cfg.tile_url, {attribution: this.cfg.attribution || "", subdomains: "01234567", maxZoom: 18})
        .addTo(this.map);
      el.dataset.base = "tiles";
    } else {
      el.dataset.base = "offline";
    }
    this.zoneLayer = L.layerGroup().addTo(this.map);
    this.trackLayer = L.layerGroup().addTo(this.map);
    this.canvasLayer = new (L.Layer.extend({
      onAdd: (m) => { this._attachCanvas(m); },
      onRemove: () => {},
    }))();
    this.canvasLayer.addTo(this.map);
    this.index = null;
    this.map.on("click", (ev) => this._click(ev));
    this.map.on("mousemove", (ev) => this._hover(ev));
    this.tip = L.DomUtil.create("div", "map-tip", el);
    this.tip.hidden = true;
    this.el = el;
  }

  ll(lat, lon) { return this.gcj ? wgsToGcj(lat, lon) : [lat, lon]; }
  toWgs(lat, lon) { return this.gcj ? gcjToWgs(lat, lon) : [lat, lon]; }

  // --- base: administrative boundaries ------------------------------------------------------------------------
  async loadBoundaries(url) {
    let fc;
    try { const r = await fetch(url, {credentials: "same-origin"}); if (!r.ok) return; fc = await r.json(); } catch (e) { return; }
    const offline = !this.cfg.tile_url;
    const style = (f) => {
      const lv = f.properties.level;
      // offline, the province is the land (filled once: no slivers between simplified county borders)
      if (lv === "province") return {color: "#4a5a6c", weight: 2.4, fill: offline, fillColor: "#f3f0e8", fillOpacity: 1};
      if (lv === "city") return {color: "#6f8094", weight: 1.4, dashArray: "6 4", fill: false};
      return {color: "#b9c3cf", weight: 0.7, fill: false};
    };
    // the province first (its fill underneath), then counties and cities on top
    const order = {province: 0, county: 1, city: 2};
    fc.features.sort((a, b) => order[a.properties.level] - order[b.properties.level]);
    this.boundaries = L.geoJSON(fc, {style, interactive: false, pane: "rwBase",
                                     renderer: L.canvas({pane: "rwBase"})}).addTo(this.map);
    this.adminLabels = [];
    for (const f of fc.features) {
      const g = f.geometry, lv = f.properties.level;
      if (lv === "province") continue;
      const rings = g.type === "Polygon" ? [g.coordinates[0]] : g.coordinates.map((p) => p[0]);
      const ring = rings.reduce((best, r) => (r.length > best.length ? r : best), rings[0]);
      const [lat, lon] = ringCentroid(ring);
      this.adminLabels.push([lat, lon, f.properties.name, lv]);
    }
    this.el.dataset.boundaries = String(fc.features.length);
    this.redraw();
    return fc;
  }

  // --- registry geography: zones, loading sites, stations --------------------------------------------------------
  setPlaces(d) {
    this.zoneLayer.clearLayers();
    this.staticLabels = [];
    const poly = (ring) => ring.map(([lon, lat]) => this.ll(lat, lon));
    for (const z of d.zones || []) {
      const exp = z.kind === "expressway";
      L.polygon(poly(z.polygon), {color: exp ? "#888" : "#e63946", weight: 1.5, dashArray: exp ? null : "6 4",
        fillColor: exp ? "#555" : "#e63946", fillOpacity: exp ? 0.05 : 0.12})
        .bindTooltip(`${z.name} · ${exp ? "高速路段 expressway" : "禁行区 restricted zone"}` +
                     (z.categories && z.categories.length ? ` · 适用 applies to: ${z.categories.join("、")}` : ""), {sticky: true})
        .addTo(this.zoneLayer);
      const [lat, lon] = ringCentroid(z.polygon);
      this.staticLabels.push([lat, lon, z.name, 2, "#b3261e"]);
    }
    for (const s of d.sites || []) {
      L.polygon(poly(s.polygon), {color: "#996633", weight: 1.5, fillColor: "#996633", fillOpacity: 0.18})
        .bindTooltip(`货源单位 loading site · ${s.name}`, {sticky: true}).addTo(this.zoneLayer);
      const [lat, lon] = ringCentroid(s.polygon);
      this.staticLabels.push([lat, lon, s.name, 3, "#7a4f24"]);
    }
    this.stations = (d.stations || []).map((s) => ({...s, _ll: this.ll(s.lat, s.lon)}));
    for (const s of this.stations) this.staticLabels.push([s.lat, s.lon, s.name, 1, "#12355b"]);
    this.mobileUnits = d.mobile_units || [];
    this.redraw();
  }

  /** mobile units deployed at ``nowMs`` (default: now), each with the deployment that places it */
  deployedUnits(nowMs) {
    const t = nowMs === undefined ? Date.now() : nowMs, out = [];
    for (const u of this.mobileUnits) {
      const dep = u.deployments.find((x) => x.start_ms <= t && t < x.end_ms);
      if (dep) out.push({...u, dep, _ll: this.ll(dep.lat, dep.lon)});
    }
    return out;
  }

  fit(bbox, points) {
    let b = null;
    const add = (lat, lon) => { const p = L.latLng(this.ll(lat, lon)); b = b ? b.extend(p) : L.latLngBounds(p, p); };
    if (bbox) { add(bbox[1], bbox[0]); add(bbox[3], bbox[2]); }
    for (const v of points || []) if (v.lat !== null && v.lon !== null && v.lat !== undefined) add(v.lat, v.lon);
    if (b) this.map.fitBounds(b.pad(0.08), {maxZoom: 13, animate: false});
    else this.map.setView([28.2, 112.9], 7);
  }

  // --- vehicles -----------------------------------------------------------------------------------------------------
  setVehicles(rows) {
    this.vehicles = rows.filter((v) => v.lat !== null && v.lat !== undefined && v.lon !== null && v.lon !== undefined);
    const feats = this.vehicles.map((v, i) => {
      const [lat, lon] = this.ll(v.lat, v.lon);
      return {type: "Feature", properties: {i, s: v.state}, geometry: {type: "Point", coordinates: [lon, lat]}};
    });
    this.index = new window.Supercluster({radius: 56, maxZoom: CLUSTER_MAX_ZOOM, minPoints: 3,
      map: (p) => ({alerting: p.s === "alerting" ? 1 : 0, moving: p.s === "moving" ? 1 : 0}),
      reduce: (a, p) => { a.alerting += p.alerting; a.moving += p.moving; }});
    this.index.load(feats);
    this.el.dataset.vehicles = String(this.vehicles.length);
    this.redraw();
  }
  setSelected(plate) { this.selected = plate; this.redraw(); }
  setAlerts(alerts) { this.alerts = alerts.filter((a) => a.lat !== null && a.lat !== undefined && a.lon !== null && a.lon !== undefined).slice(0, 500); this.redraw(); }
  panTo(lat, lon, zoom) { this.map.setView(this.ll(lat, lon), Math.max(this.map.getZoom(), zoom || 0), {animate: false}); }

  // --- the canvas -----------------------------------------------------------------------------------------------------
  _attachCanvas(m) {
    this.canvas = L.DomUtil.create("canvas", "rw-canvas leaflet-zoom-hide", m.getPane("rwVehicles"));
    const redraw = () => this.redraw();
    m.on("moveend zoomend resize viewreset", redraw);
    m.on("zoomstart", () => { this.canvas.style.visibility = "hidden"; });
    m.on("zoomend", () => { this.canvas.style.visibility = ""; });
  }

  redraw() {
    if (!this.canvas) return 0;
    const t0 = performance.now();
    const m = this.map, size = m.getSize(), dpr = window.devicePixelRatio || 1;
    const cv = this.canvas;
    if (cv.width !== size.x * dpr || cv.height !== size.y * dpr) {
      cv.width = size.x * dpr; cv.height = size.y * dpr;
      cv.style.width = size.x + "px"; cv.style.height = size.y + "px";
    }
    L.DomUtil.setPosition(cv, m.containerPointToLayerPoint([0, 0]));
    const ctx = cv.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, size.x, size.y);
    const z = m.getZoom(), b = m.getBounds().pad(0.05);
    const P = (lat, lon) => m.latLngToContainerPoint([lat, lon]);
    this.hits = [];
    const labels = [];
    // stations: dark squares
    for (const s of this.stations) {
      const p = P(s._ll[0], s._ll[1]);
      if (p.x < -10 || p.y < -10 || p.x > size.x + 10 || p.y > size.y + 10) continue;
      ctx.fillStyle = "#12355b"; ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5;
      ctx.fillRect(p.x - 5, p.y - 5, 10, 10); ctx.strokeRect(p.x - 5, p.y - 5, 10, 10);
      this.hits.push({x: p.x, y: p.y, r: 8, kind: "station", ref: s});
    }
    // mobile units while deployed: orange triangles, labelled like stations
    const deployed = this.deployedUnits();
    for (const u of deployed) {
      const p = P(u._ll[0], u._ll[1]);
      if (p.x < -10 || p.y < -10 || p.x > size.x + 10 || p.y > size.y + 10) continue;
      ctx.beginPath(); ctx.moveTo(p.x, p.y - 8); ctx.lineTo(p.x + 7, p.y + 5); ctx.lineTo(p.x - 7, p.y + 5); ctx.closePath();
      ctx.fillStyle = "#f08c00"; ctx.fill(); ctx.lineWidth = 1.5; ctx.strokeStyle = "#fff"; ctx.stroke();
      this.hits.push({x: p.x, y: p.y, r: 8, kind: "mobile", ref: u});
    }
    this.el.dataset.mobile = String(deployed.length);
    // place names under the vehicles: stations, mobile units, zones and sites first, then cities / counties
    const names = [], placed = [];
    for (const u of deployed) {
      const p = P(u._ll[0], u._ll[1]);
      names.push([p.x + 9, p.y, u.name, 1, "#a35200", false]);
    }
    for (const [lat, lon, text, prio, color] of this.staticLabels) {
      if (prio === 1 || z >= 9) {
        const [la, lo] = this.ll(lat, lon), p = P(la, lo);
        names.push([p.x + (prio === 1 ? 9 : 0), p.y + (prio === 1 ? 0 : -12), text, prio, color, prio !== 1]);
      }
    }
    for (const [lat, lon, text, lv] of this.adminLabels) {
      if ((lv === "city" && z >= 6.5 && z < 10) || (lv === "county" && z >= 9)) {
        const p = P(lat, lon);
        names.push([p.x, p.y, text, lv === "city" ? 5 : 6, lv === "city" ? "#4a5a6c" : "#8a96a3", true]);
      }
    }
    let nLabels = this._placeLabels(ctx, names, placed, size);
    // vehicles and clusters
    let nClusters = 0, nDrawn = 0;
    if (this.index) {
      const items = this.index.getClusters([b.getWest(), b.getSouth(), b.getEast(), b.getNorth()], Math.floor(z));
      for (const it of items) {
        const [lon, lat] = it.geometry.coordinates;
        const p = P(lat, lon);
        if (it.properties.cluster) {
          nClusters++;
          const n = it.properties.point_count, r = Math.min(24, 11 + Math.log2(n) * 2);
          const alerting = it.properties.alerting > 0;
          ctx.beginPath(); ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
          ctx.fillStyle = alerting ? "rgba(230,57,70,.85)" : "rgba(31,111,235,.82)"; ctx.fill();
          ctx.lineWidth = 3; ctx.strokeStyle = "rgba(255,255,255,.9)"; ctx.stroke();
          ctx.fillStyle = "#fff"; ctx.font = "bold 11px system-ui, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
          ctx.fillText(n >= 1000 ? (n / 1000).toFixed(1) + "k" : String(n), p.x, p.y);
          this.hits.push({x: p.x, y: p.y, r, kind: "cluster", ref: it});
        } else {
          const v = this.vehicles[it.properties.i];
          nDrawn++;
          this._drawVehicle(ctx, v, p, z);
          this.hits.push({x: p.x, y: p.y, r: 7, kind: "vehicle", ref: v});
          if (z >= PLATE_ZOOM || v.plate === this.selected) labels.push([p.x + 8, p.y, v.plate, v.plate === this.selected ? 0 : 4, "#1d2733"]);
        }
      }
    }
    // alert rings
    for (const a of this.alerts) {
      const [lat, lon] = this.ll(a.lat, a.lon), p = P(lat, lon);
      if (p.x < -10 || p.y < -10 || p.x > size.x + 10 || p.y > size.y + 10) continue;
      ctx.beginPath(); ctx.arc(p.x, p.y, 9, 0, 2 * Math.PI);
      ctx.lineWidth = 2.5; ctx.strokeStyle = SEV_COLORS[a.severity] || SEV_COLORS.medium; ctx.stroke();
      this.hits.push({x: p.x, y: p.y, r: 11, kind: "alert", ref: a});
    }
    nLabels += this._placeLabels(ctx, labels, placed, size);       // plates, over the vehicles
    this.placedLabels = placed;
    this.el.dataset.clusters = String(nClusters);
    this.el.dataset.drawn = String(nDrawn);
    this.el.dataset.labels = String(nLabels);
    this.el.dataset.zoom = String(z);
    return performance.now() - t0;
  }

  _placeLabels(ctx, labels, placed, size) {
    // a label that would overlap one already placed is left out (never "禁行区:禁行区:…")
    labels.sort((a, b) => a[3] - b[3]);
    ctx.textBaseline = "middle"; ctx.lineJoin = "round"; ctx.textAlign = "left";
    let n = 0;
    for (const [x, y, text, prio, color, centred] of labels) {
      if (x < -50 || y < -20 || x > size.x + 50 || y > size.y + 20) continue;
      ctx.font = (prio >= 5 ? "12px" : "bold 12px") + " system-ui, 'Noto Sans CJK SC', sans-serif";
      const w = ctx.measureText(text).width, h = 14;
      const x0 = centred ? x - w / 2 : x, box = [x0 - 2, y - h / 2 - 1, x0 + w + 2, y + h / 2 + 1];
      if (placed.some((q) => box[0] < q[2] && box[2] > q[0] && box[1] < q[3] && box[3] > q[1])) continue;
      placed.push(box);
      box.text = text;
      ctx.strokeStyle = "rgba(255,255,255,.95)"; ctx.lineWidth = 3; ctx.strokeText(text, x0, y);
      ctx.fillStyle = color || "#33414f"; ctx.fillText(text, x0, y);
      n++;
    }
    return n;
  }

  _drawVehicle(ctx, v, p, z) {
    const col = STATE_COLORS[v.state] || STATE_COLORS.no_data;
    const sel = v.plate === this.selected;
    if (z >= ARROW_ZOOM && v.heading !== null && v.heading !== undefined && v.state !== "offline") {
      const a = (v.heading || 0) * Math.PI / 180;
      ctx.save(); ctx.translate(p.x, p.y); ctx.rotate(a);
      ctx.beginPath(); ctx.moveTo(0, -9); ctx.lineTo(6, 6); ctx.lineTo(0, 3); ctx.lineTo(-6, 6); ctx.closePath();
      ctx.fillStyle = col; ctx.fill(); ctx.lineWidth = sel ? 2.5 : 1.2; ctx.strokeStyle = sel ? "#111" : "#fff"; ctx.stroke();
      ctx.restore();
    } else {
      ctx.beginPath(); ctx.arc(p.x, p.y, sel ? 7 : 5, 0, 2 * Math.PI);
      ctx.fillStyle = col; ctx.fill(); ctx.lineWidth = sel ? 2.5 : 1; ctx.strokeStyle = sel ? "#111" : "#fff"; ctx.stroke();
    }
  }

  _hit(ev) {
    const p = ev.containerPoint;
    let best = null, bd = Infinity;
    for (const h of this.hits) {
      const d = Math.hypot(h.x - p.x, h.y - p.y);
      if (d <= h.r + 3 && d < bd) { best = h; bd = d; }
    }
    return best;
  }
  _click(ev) {
    if (this.drawing) return;
    const h = this._hit(ev);
    if (!h) return;
    if (h.kind === "cluster") {
      const zoom = Math.min(this.index.getClusterExpansionZoom(h.ref.properties.cluster_id), 18);
      this.map.setView([h.ref.geometry.coordinates[1], h.ref.geometry.coordinates[0]], zoom);
    } else if (h.kind === "vehicle") this.handlers.vehicle(h.ref.plate);
    else if (h.kind === "alert") this.handlers.alert(h.ref.alert_id);
  }
  _hover(ev) {
    if (this.drawing) return;
    const h = this._hit(ev);
    this.el.style.cursor = h ? "pointer" : "";
    if (!h) { this.tip.hidden = true; return; }
    const t = h.kind === "cluster" ? `${h.ref.properties.point_count} 辆车 vehicles · 点击放大 click to zoom in`
      : h.kind === "vehicle" ? this.handlers.describe(h.ref)
      : h.kind === "station" ? `治超站 WIM station · ${h.ref.name}`
      : h.kind === "mobile" ? `流动治超 mobile unit · ${h.ref.name} · ${h.ref.dep.road} ${h.ref.dep.direction}` +
        ` · 部署至 deployed until ${h.ref.dep.end.slice(0, 16).replace("T", " ")}`
      : this.handlers.describeAlert(h.ref);
    this.tip.textContent = t; this.tip.hidden = false;
    this.tip.style.left = (ev.containerPoint.x + 14) + "px"; this.tip.style.top = (ev.containerPoint.y + 10) + "px";
  }
  /** where a vehicle is drawn now (container pixels), for tests and the "locate" button */
  screenPoint(plate) {
    const h = this.hits.find((x) => x.kind === "vehicle" && x.ref.plate === plate);
    return h ? {x: h.x, y: h.y} : null;
  }

  // --- tracks and playback -------------------------------------------------------------------------------------------
  showTrack(points) {
    this.trackLayer.clearLayers();
    this.playMarker = null;
    if (!points.length) return;
    // one polyline per run of points in the same speed band (cheap even for thousands of points)
    let run = [this.ll(points[0].lat, points[0].lon)], col = speedColor(points[0].speed_kmh);
    for (let i = 1; i < points.length; i++) {
      const ll = this.ll(points[i].lat, points[i].lon), c = speedColor(points[i].speed_kmh);
      run.push(ll);
      if (c !== col || i === points.length - 1) {
        L.polyline(run, {color: col, weight: 4, opacity: 0.9, className: "rw-track"}).addTo(this.trackLayer);
        run = [ll]; col = c;
      }
    }
    const first = this.ll(points[0].lat, points[0].lon), last = this.ll(points.at(-1).lat, points.at(-1).lon);
    L.circleMarker(first, {radius: 5, color: "#fff", weight: 2, fillColor: "#2a9d55", fillOpacity: 1}).bindTooltip("起点 start").addTo(this.trackLayer);
    L.circleMarker(last, {radius: 5, color: "#fff", weight: 2, fillColor: "#12355b", fillOpacity: 1}).bindTooltip("终点 end").addTo(this.trackLayer);
    this.playMarker = L.circleMarker(first, {radius: 8, color: "#111", weight: 2.5, fillColor: "#ffd43b", fillOpacity: 1, className: "rw-play"}).addTo(this.trackLayer);
    this.el.dataset.trackSegments = String(this.trackLayer.getLayers().length - 3);
  }
  fitTrack(points) {
    if (!points.length) return;
    this.map.fitBounds(L.latLngBounds(points.map((p) => this.ll(p.lat, p.lon))).pad(0.15), {maxZoom: 15, animate: false});
  }
  movePlayMarker(p) { if (this.playMarker) this.playMarker.setLatLng(this.ll(p.lat, p.lon)); }
  clearTrack() { this.trackLayer.clearLayers(); this.playMarker = null; delete this.el.dataset.trackSegments; }

  // --- rectangle for the area search ----------------------------------------------------------------------------------
  drawRectangle(done) {
    const m = this.map;
    if (this.drawing) return;
    this.drawing = true;
    m.dragging.disable();
    this.el.classList.add("drawing");
    let start = null, rect = null;
    const down = (ev) => { start = ev.latlng; rect = L.rectangle([start, start], {color: "#1f6feb", weight: 2, fillOpacity: 0.08}).addTo(this.trackLayer); };
    const move = (ev) => { if (start) rect.setBounds([start, ev.latlng]); };
    const up = (ev) => {
      if (!start) return;
      m.off("mousedown", down); m.off("mousemove", move); m.off("mouseup", up);
      m.dragging.enable(); this.el.classList.remove("drawing");
      setTimeout(() => { this.drawing = false; }, 0);
      const bb = L.latLngBounds(start, ev.latlng);
      const [s, w] = this.toWgs(bb.getSouth(), bb.getWest()), [n, e] = this.toWgs(bb.getNorth(), bb.getEast());
      done({west: w, south: s, east: e, north: n}, rect);
    };
    m.on("mousedown", down); m.on("mousemove", move); m.on("mouseup", up);
  }
}
