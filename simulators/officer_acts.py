"""Scripted officer acts: a scenario takes chosen WIM cases along the case lifecycle (models/lifecycle.py) on
scripted legal dates, so Art. 66 escalations — which only decided cases give (models/art66.py) — arise
in a simulated run as they would in an enforcement centre.

A ``[[case_acts]]`` block names a vehicle (alias), which of its case-opening passages (1-based, in time
order; default all) and the acts, each dated in days after the passage's day or by an absolute date::

    [[case_acts]]
    vehicle = "repeat"
    passages = [1, 2, 3, 4]
    acts = [{act = "confirm", day = 1, driver = true}, {act = "file", day = 1},
            {act = "notify", day = 2}, {act = "decide", day = 6}]

``driver = true`` records the vehicle's registry driver as identified by the officer (a driver id text
names another one). ``script(ctx, distinct)`` checks every case's acts against the lifecycle's own
transition rules at build time (an unlawful script is a ScenarioError, exit 2, not a failed run).

``apply(...)`` performs the script the way an officer does: the simulator creates a scenario officer
account (role ``operator``, a fresh random password each run, nothing stored in the repo), signs in to
the worker's console and posts each act to ``/api/cases/{id}/actions`` with the session's CSRF token — the
same authenticated workflow (``CaseStore.act``) the console and ``roadwatch case act`` use.
"""
from __future__ import annotations

import http.client
import secrets
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from urllib.parse import quote, urlsplit

import orjson

from roadwatch.models import lifecycle
from roadwatch.models.records import BEIJING, format_ts

from .behaviours import ScenarioError

OFFICER = "scenario_officer"


@dataclass
class ScriptedCase:
    """One case the script acts on: the passage that opened it and its acts (legal dates, in order)."""
    plate: str
    station_id: str
    ts: str                                   # the reading's time (ISO-8601) = the case's ts
    enterprise_id: str | None
    driver_id: str | None                     # the vehicle's registry driver
    acts: list[dict] = field(default_factory=list)   # {act, at (YYYY-MM-DD), reason?, driver_id?}


def _act_date(spec: dict, passage_day: date, where: str) -> date:
    if "date" in spec:
        try:
            return date.fromisoformat(str(spec["date"]))
        except ValueError:
            raise ScenarioError(f"{where}: date {spec['date']!r} is not YYYY-MM-DD") from None
    day = spec.get("day")
    if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 400:
        raise ScenarioError(f"{where}: each act needs day (0–400 days after the passage) or date")
    return passage_day + timedelta(days=day)


def script(ctx, distinct: list[dict]) -> list[ScriptedCase]:
    """The ``[[case_acts]]`` blocks → the cases they act on, validated against the lifecycle rules.
    ``distinct``: the scenario's distinct passages in time order (duplicates within the dedup window
    removed — they open no case of their own)."""
    blocks = ctx.scn.raw.get("case_acts", [])
    if not isinstance(blocks, list):
        raise ScenarioError("case_acts must be an array of tables ([[case_acts]])")
    out: list[ScriptedCase] = []
    seen: set[tuple] = set()
    statement_days = int(ctx.cfg["case.statement_days"])
    for i, b in enumerate(blocks):
        where = f"case_acts[{i}]"
        alias = b.get("vehicle")
        if alias not in ctx.aliases:
            raise ScenarioError(f"{where}: unknown vehicle alias {alias!r}")
        plate = ctx.aliases[alias]
        veh = ctx.reg.vehicles[plate]
        opened = [p for p in distinct if p["plate"] == plate and p["verdict"]["action"] != "none"]
        picks = b.get("passages", list(range(1, len(opened) + 1)))
        if not isinstance(picks, list) or not all(isinstance(k, int) and 1 <= k <= len(opened) for k in picks):
            raise ScenarioError(f"{where}: passages must list numbers 1…{len(opened)} (the vehicle's "
                                f"case-opening passages in time order)")
        acts = b.get("acts")
        if not isinstance(acts, list) or not acts or not all(isinstance(a, dict) for a in acts):
            raise ScenarioError(f"{where}: acts must list tables like {{act = \"decide\", day = 6}}")
        for k in picks:
            p = opened[k - 1]
            key = (p["station"], plate, p["reading"]["ts"])
            if key in seen:
                raise ScenarioError(f"{where}: passage {k} of {alias} is already scripted")
            seen.add(key)
            pday = datetime.fromisoformat(p["reading"]["ts"]).astimezone(BEIJING).date()
            case = ScriptedCase(plate, p["station"], p["reading"]["ts"], veh.enterprise_id, veh.driver_id)
            history: list[lifecycle.Act] = []
            status = "detected"
            for a in acts:
                d = _act_date(a, pday, where)
                drv = a.get("driver")
                driver_id = veh.driver_id if drv is True else (str(drv) if drv else None)
                act = lifecycle.Act(case_id="scripted", action=str(a.get("act")), by=OFFICER,
                                    at=format_ts(datetime.combine(d, datetime.min.time(), BEIJING)),
                                    entered_at=format_ts(datetime.now(BEIJING)), reason=a.get("reason"),
                                    driver_id=driver_id)
                try:
                    status = lifecycle.check(status, history, act, statement_days=statement_days)
                except lifecycle.TransitionError as e:
                    raise ScenarioError(f"{where}: passage {k} of {alias}: {e.detail}") from None
                history.append(act)
                case.acts.append({"act": act.action, "at": d.isoformat(), "reason": act.reason,
                                  "driver_id": driver_id})
            out.append(case)
    return out


# --- performing the script through the console ---------------------------------------------------------

class ActError(RuntimeError):
    pass


class _Console:
    """A signed-in console session over plain HTTP (loopback: the worker the simulator started)."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30.0):
        u = urlsplit(base_url)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.cookie = ""
        got = self.call("POST", "/api/login", {"username": username, "password": password})
        self.csrf = got["csrf"]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if method != "GET" and getattr(self, "csrf", None):
            headers["X-CSRF-Token"] = self.csrf
        try:
            conn.request(method, path, body=orjson.dumps(body) if body is not None else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            for k, v in resp.getheaders():
                if k.lower() == "set-cookie" and v.startswith("rw_session="):
                    self.cookie = v.split(";", 1)[0]
        finally:
            conn.close()
        try:
            out = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            out = {"error": "not_json", "detail": data[:200].decode("utf-8", "replace")}
        if resp.status >= 400:
            raise ActError(f"{method} {path}: HTTP {resp.status} {out.get('error')}: {out.get('detail')}")
        return out


def create_officer(archive_path, cfg) -> str:
    """The scenario officer's console account (role operator) with a fresh random password."""
    from roadwatch.streams.archive import open_archive
    from roadwatch.streams.web import auth
    password = secrets.token_urlsafe(24)
    auth.upsert_user(open_archive(archive_path), OFFICER, "operator", password, cfg)
    return password


def apply(cases: list[ScriptedCase], console_url: str, archive_path, cfg) -> int:
    """Sign in as the scenario officer and enter every scripted act; returns how many acts were entered.
    An act the workflow refuses, or a scripted case the worker never opened, is an ActError."""
    if not cases:
        return 0
    con = _Console(console_url, OFFICER, create_officer(archive_path, cfg))
    n = 0
    for c in cases:
        want = datetime.fromisoformat(c.ts)
        found = con.call("GET", f"/api/cases?plate={quote(c.plate)}&limit=1000")["cases"]
        match = [x for x in found if x["station_id"] == c.station_id and datetime.fromisoformat(x["ts"]) == want]
        if len(match) != 1:
            raise ActError(f"scripted case of {c.plate} at {c.ts} ({c.station_id}): the worker opened "
                           f"{len(match)} matching case(s)")
        cid = match[0]["case_id"]
        for a in c.acts:
            body = {"action": a["act"], "at": a["at"]}
            if a.get("reason"):
                body["reason"] = a["reason"]
            if a.get("driver_id"):
                body["driver_id"] = a["driver_id"]
            con.call("POST", f"/api/cases/{quote(cid)}/actions", body)
            n += 1
    print(f"officer {OFFICER}: {n} scripted act(s) on {len(cases)} case(s)", file=sys.stderr)
    return n
