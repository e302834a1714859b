"""Console authn/authz over EVERY route the console registers (enumerated from the router, so a route added
later is covered without editing this file), plus file-serving path traversal.

Existing tests this complements (not repeated here):
- tests/test_web_auth.py: no session → 401 on a list of routes, viewer cannot act, missing/forged CSRF and a
  CSRF token of another session are refused, session expiry boundary, login rate limit, argon2id hashes.
- tests/test_web_console.py::test_evidence_path_checks and ::test_reports_list_and_download: evidence and
  report downloads refuse ``..`` (raw and percent-encoded), NUL, hidden files, symlinks out of the case.
- tests/test_gateway_tcp.py: per-connection frame size, rate and idle limits, connection cap.
"""
from __future__ import annotations

import asyncio
import re

from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from web_support import PASSWORD, make_app, make_cfg, seed_case, seed_user

PUBLIC = {("GET", "/"), ("GET", "/login"), ("GET", "/static/{name}"), ("POST", "/api/login")}
ANY_SIGNED_IN_MAY_POST = {("POST", "/api/logout")}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _routes(app) -> list[tuple[str, str]]:
    out = set()
    for r in app.router.routes():
        info = r.resource.get_info() if r.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and r.method != "HEAD":
            out.add((r.method, path))
    return sorted(out)


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: {"month": "2024-05", "name": "x.json"}.get(m.group(1), "X1"), path)


def _run(cfg, body):
    async def main():
        app, *_ = make_app(cfg)
        c = TestClient(TestServer(app, host="127.0.0.1"))
        await c.start_server()
        try:
            await body(app, c)
        finally:
            await c.close()
    asyncio.run(main())


def _cfg(tmp_path):
    cfg = make_cfg(tmp_path)
    seed_user(cfg, "view", "viewer")
    seed_user(cfg, "ops", "operator")
    seed_case(cfg)
    return cfg


def test_every_non_public_route_needs_a_session(tmp_path):
    cfg = _cfg(tmp_path)

    async def body(app, c):
        routes = _routes(app)
        assert len(routes) >= 20                        # the router really was enumerated
        checked = 0
        for method, path in routes:
            if (method, path) in PUBLIC:
                continue
            r = await c.request(method, _concrete(path), json={}, allow_redirects=False)
            if path.startswith("/api/"):
                assert r.status == 401, (method, path, r.status)
            else:
                assert r.status in (302, 401), (method, path, r.status)
            checked += 1
        assert checked >= 15
    _run(cfg, body)


def test_viewer_cannot_use_any_state_changing_route(tmp_path):
    cfg = _cfg(tmp_path)

    async def body(app, c):
        r = await c.post("/api/login", json={"username": "view", "password": PASSWORD})
        assert r.status == 200
        csrf = (await r.json())["csrf"]
        for method, path in _routes(app):
            if method not in STATE_CHANGING or (method, path) in PUBLIC | ANY_SIGNED_IN_MAY_POST:
                continue
            r = await c.request(method, _concrete(path), json={"action": "review", "username": "x", "role": "admin",
                                                              "password": "p" * 12}, headers={"X-CSRF-Token": csrf})
            assert r.status == 403, (method, path, r.status)
    _run(cfg, body)


def test_static_files_do_not_leave_the_static_directory(tmp_path):
    cfg = _cfg(tmp_path)

    async def body(app, c):
        assert (await c.get("/static/app.js")).status == 200
        for name in ("..%2Fconsole.py", "%2e%2e%2fconsole.py", "..%2F..%2F..%2Fmodels%2Fconfig.py", "..",
                     "%2e%2e", ".%2Fapp.js%00", "app.js%2F..%2F..%2Fauth.py", "%2Fetc%2Fpasswd"):
            r = await c.get(URL("/static/" + name, encoded=True), allow_redirects=False)
            # 302: "/static/.." normalises to "/" (the console page → login); never a file from elsewhere
            assert r.status in (302, 400, 404), name
            data = await r.read()
            assert b"import " not in data and b"root:" not in data, name
    _run(cfg, body)
