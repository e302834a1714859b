"""Console authentication, sessions, CSRF, roles and login rate limiting (aiohttp test server, real archive)."""
from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from roadwatch.models.config import Config
from roadwatch.streams.archive import open_archive
from roadwatch.streams.web import auth
from web_support import PASSWORD, make_app, make_cfg, seed_case, seed_user


def run(coro):
    return asyncio.run(coro)


async def _client(app) -> TestClient:
    c = TestClient(TestServer(app, host="127.0.0.1"))
    await c.start_server()
    return c


async def login(c: TestClient, user: str, password: str = PASSWORD):
    return await c.post("/api/login", json={"username": user, "password": password})


async def signed_in(c: TestClient, user: str) -> str:
    r = await login(c, user)
    assert r.status == 200, await r.text()
    return (await r.json())["csrf"]


@pytest.fixture()
def cfg(tmp_path):
    cfg = make_cfg(tmp_path)
    seed_user(cfg, "ops", "operator")
    seed_user(cfg, "view", "viewer")
    seed_user(cfg, "boss", "admin")
    seed_case(cfg)
    return cfg


def test_no_session_api_401_and_page_redirects(cfg):
    async def main():
        app, *_ = make_app(cfg)
        c = await _client(app)
        try:
            for path in ("/api/alerts", "/api/me", "/api/cases", "/api/stream", "/api/fleet/status", "/api/users"):
                r = await c.get(path)
                assert r.status == 401, path
                assert (await r.json())["error"] == "not_signed_in"
            r = await c.get("/", allow_redirects=False)
            assert r.status == 302 and r.headers["Location"] == "login"
            r = await c.post("/api/cases/x/actions", json={"action": "review"})
            assert r.status == 401
            # the login page and the static files are public
            assert (await c.get("/login")).status == 200
            assert (await c.get("/static/app.js")).status == 200
            assert (await c.get("/static/..%2Fconsole.py")).status == 404
        finally:
            await c.close()
    run(main())


def test_login_sets_strict_httponly_cookie_and_wrong_password_is_refused(cfg):
    async def main():
        app, *_ = make_app(cfg)
        c = await _client(app)
        try:
            r = await login(c, "ops", PASSWORD + "x")
            assert r.status == 401 and (await r.json())["error"] == "bad_credentials"
            r = await login(c, "nobody", PASSWORD)
            assert r.status == 401 and (await r.json())["error"] == "bad_credentials"
            assert (await c.get("/api/me")).status == 401
            r = await login(c, "ops")
            assert r.status == 200
            body = await r.json()
            assert body["role"] == "operator" and len(body["csrf"]) >= 32
            cookie = r.headers["Set-Cookie"]
            assert cookie.startswith(auth.COOKIE + "=")
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
            assert f"Max-Age={cfg['web.session_ttl_s']}" in cookie
            me = await (await c.get("/api/me")).json()
            assert me["username"] == "ops" and me["csrf"] == body["csrf"]
            # the archive holds a hash of the token, never the token
            token = r.cookies[auth.COOKIE].value
            rows = open_archive(cfg.archive_path).execute("SELECT token_hash FROM sessions").fetchall()
            assert hashlib.sha256(token.encode()).hexdigest() in {x[0] for x in rows}
            assert token not in {x[0] for x in rows}
            # non-JSON login bodies are refused (a cross-site form cannot send JSON without CORS)
            r = await c.post("/api/login", data={"username": "ops", "password": PASSWORD})
            assert r.status == 415
        finally:
            await c.close()
    run(main())


def test_passwords_are_argon2id_hashes(cfg):
    row = open_archive(cfg.archive_path).execute("SELECT pw_hash FROM users WHERE username='ops'").fetchone()
    assert row[0].startswith("$argon2id$") and PASSWORD not in row[0]
    assert auth.verify_password(row[0], PASSWORD, cfg)
    assert not auth.verify_password(row[0], PASSWORD[:-1], cfg)
    assert not auth.verify_password(None, PASSWORD, cfg)
    # production defaults: RFC 9106 low-memory profile (t=3, m=64 MiB); verification reads the stored cost
    h = auth.hash_password(PASSWORD, Config())
    assert h.startswith("$argon2id$v=19$m=65536,t=3,")
    assert auth.verify_password(h, PASSWORD, cfg)


def test_viewer_reads_but_cannot_act(cfg):
    async def main():
        app, *_ = make_app(cfg)
        c = await _client(app)
        try:
            csrf = await signed_in(c, "view")
            assert (await c.get("/api/cases")).status == 200
            r = await c.post("/api/cases/C-ST1-冀A30001-1/actions", json={"action": "review"},
                             headers={auth.CSRF_HEADER: csrf})
            assert r.status == 403 and (await r.json())["error"] == "forbidden"
            r = await c.post("/api/alerts/a1/ack", json={}, headers={auth.CSRF_HEADER: csrf})
            assert r.status == 403
            assert (await c.get("/api/users")).status == 403
            status = open_archive(cfg.archive_path).execute("SELECT status FROM cases").fetchone()[0]
            assert status == "detected"
            # but a viewer may sign out (state-changing, CSRF-protected, any role)
            r = await c.post("/api/logout", json={}, headers={auth.CSRF_HEADER: csrf})
            assert r.status == 200
        finally:
            await c.close()
    run(main())


def test_missing_or_forged_csrf_is_refused(cfg):
    async def main():
        app, *_ = make_app(cfg)
        c = await _client(app)
        try:
            csrf = await signed_in(c, "ops")
            url = "/api/cases/C-ST1-冀A30001-1/actions"
            r = await c.post(url, json={"action": "review"})
            assert r.status == 403 and (await r.json())["error"] == "csrf"
            r = await c.post(url, json={"action": "review"}, headers={auth.CSRF_HEADER: csrf[:-1] + "A"
                                                                    if csrf[-1] != "A" else csrf[:-1] + "B"})
            assert r.status == 403 and (await r.json())["error"] == "csrf"
            r = await c.post(url, json={"action": "review"}, headers={auth.CSRF_HEADER: ""})
            assert r.status == 403
            r = await c.post(url, json={"action": "review"},
                             headers={auth.CSRF_HEADER: csrf, "Origin": "http://evil.example"})
            assert r.status == 403 and (await r.json())["error"] == "bad_origin"
            assert open_archive(cfg.archive_path).execute("SELECT status FROM cases").fetchone()[0] == "detected"
            r = await c.post(url, json={"action": "review"}, headers={auth.CSRF_HEADER: csrf})
            assert r.status == 200 and (await r.json())["status"] == "reviewed"
            # logout itself needs the token
            assert (await c.post("/api/logout", json={})).status == 403
        finally:
            await c.close()
    run(main())


def test_csrf_token_of_another_session_is_refused(cfg):
    async def main():
        app, *_ = make_app(cfg)
        a, b = await _client(app), None
        try:
            csrf_a = await signed_in(a, "ops")
            b = TestClient(a.server)          # second browser, same server
            await b.start_server()
            await signed_in(b, "boss")
            r = await b.post("/api/cases/C-ST1-冀A30001-1/actions", json={"action": "review"},
                             headers={auth.CSRF_HEADER: csrf_a})
            assert r.status == 403 and (await r.json())["error"] == "csrf"
        finally:
            if b is not None:
                await b.session.close()
            await a.close()
    run(main())


def test_expired_session_is_refused_and_deleted(cfg):
    async def main():
        app, *_ = make_app(cfg)
        c = await _client(app)
        try:
            await signed_in(c, "ops")
            assert (await c.get("/api/me")).status == 200
            conn = open_archive(cfg.archive_path)
            conn.execute("UPDATE sessions SET expires_at = ?", (time.time() - 1,))
            assert (await c.get("/api/me")).status == 401
            assert (await c.get("/", allow_redirects=False)).status == 302
            assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
        finally:
            await c.close()
    run(main())


def test_session_expiry_boundary(cfg):
    conn = open_archive(cfg.archive_path)
    t0 = 1_700_000_000.0
    token, sess = auth.create_session(conn, "ops", 3600, now=t0)
    assert sess.expires_at == t0 + 3600
    assert auth.lookup_session(conn, token, now=t0 + 3600 - 0.001) is not None
    assert auth.lookup_session(conn, token, now=t0 + 3600) is None       # expired exactly at expires_at
    assert auth.lookup_session(conn, token, now=t0) is None              # and deleted
    assert auth.lookup_session(conn, "x" * 129) is None


def test_logout_and_password_change_end_sessions(cfg):
    async def main():
        app, *_ = make_app(cfg)
        c = await _client(app)
        try:
            csrf = await signed_in(c, "ops")
            token = c.session.cookie_jar.filter_cookies(c.make_url("/"))[auth.COOKIE].value
            r = await c.post("/api/logout", json={}, headers={auth.CSRF_HEADER: csrf})
            assert r.status == 200
            c.session.cookie_jar.update_cookies({auth.COOKIE: token})   # replaying the old cookie
            assert (await c.get("/api/me")).status == 401
            await signed_in(c, "ops")
            auth.upsert_user(open_archive(cfg.archive_path), "ops", "operator", "another password 1", cfg)
            assert (await c.get("/api/me")).status == 401
        finally:
            await c.close()
    run(main())


def test_login_rate_limit_per_user_and_address(cfg):
    cfg2 = Config({k: cfg[k] for k in ("paths.data_dir", "web.argon2_time_cost", "web.argon2_memory_kib")}
                  | {"web.login_max_failures": 3, "web.login_window_s": 60})

    async def main():
        app, *_ = make_app(cfg2)
        c = await _client(app)
        try:
            for _ in range(3):
                assert (await login(c, "ops", "wrong password!")).status == 401
            r = await login(c, "ops")                     # right password, but locked out
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            # the address is locked too (3 failures from it), whatever user it tries
            assert (await login(c, "view")).status == 429
        finally:
            await c.close()
    run(main())


def test_login_limiter_window_boundaries():
    now = [1000.0]
    lim = auth.LoginLimiter(3, 60, clock=lambda: now[0])
    keys = ["user:a"]
    lim.fail(keys)
    lim.fail(keys)
    assert lim.retry_after(keys) == 0                    # 2 < 3 failures
    now[0] = 1010.0
    lim.fail(keys)
    assert lim.retry_after(keys) == pytest.approx(50.0)  # first failure at 1000 leaves the window at 1060
    now[0] = 1059.999
    assert lim.retry_after(keys) > 0
    now[0] = 1060.0
    assert lim.retry_after(keys) == 0                    # the 1000 failure has left the window
    lim.fail(keys)
    assert lim.retry_after(keys) == 0                    # 1010, 1060 → 2
    lim.fail(keys)
    assert lim.retry_after(keys) > 0                     # 1010, 1060, 1060 → 3 again
    lim.succeed("user:a")
    assert lim.retry_after(keys) == 0


def test_admin_manages_users_and_last_admin_is_kept(cfg):
    async def main():
        app, *_ = make_app(cfg)
        c = await _client(app)
        try:
            csrf = await signed_in(c, "boss")
            h = {auth.CSRF_HEADER: csrf}
            users = await (await c.get("/api/users")).json()
            assert {u["username"] for u in users["users"]} == {"ops", "view", "boss"}
            assert all("pw_hash" not in u for u in users["users"])
            r = await c.post("/api/users", json={"username": "new1", "role": "viewer", "password": "short"}, headers=h)
            assert r.status == 400 and (await r.json())["error"] == "weak_password"
            r = await c.post("/api/users", json={"username": "new1", "role": "root", "password": "long enough pw"},
                             headers=h)
            assert r.status == 400 and (await r.json())["error"] == "bad_role"
            r = await c.post("/api/users", json={"username": "new1", "role": "viewer", "password": "long enough pw"},
                             headers=h)
            assert r.status == 200 and (await r.json())["result"] == "created"
            r = await c.post("/api/users", json={"username": "boss", "role": "operator"}, headers=h)
            assert r.status == 409 and (await r.json())["error"] == "last_admin"
            r = await c.delete("/api/users/boss", headers=h)
            assert r.status == 409
            r = await c.delete("/api/users/new1", headers=h)
            assert r.status == 200
            assert (await c.delete("/api/users/new1", headers=h)).status == 404
            c.session.cookie_jar.clear()
            csrf = await signed_in(c, "ops")
            r = await c.post("/api/users", json={"username": "x", "role": "admin", "password": "long enough pw"},
                             headers={auth.CSRF_HEADER: csrf})
            assert r.status == 403
        finally:
            await c.close()
    run(main())


def test_first_admin_from_environment(tmp_path):
    cfg = make_cfg(tmp_path)
    env = {"ROADWATCH_ADMIN_USER": "chief", "ROADWATCH_ADMIN_PASSWORD": "from the env 123"}
    make_app(cfg, env=env)
    conn = open_archive(cfg.archive_path)
    u = auth.get_user(conn, "chief")
    assert u["role"] == "admin" and auth.verify_password(u["pw_hash"], "from the env 123", cfg)
    # an existing user's password is never reset from the environment
    make_app(cfg, env={**env, "ROADWATCH_ADMIN_PASSWORD": "a different one 456"})
    assert auth.verify_password(auth.get_user(conn, "chief")["pw_hash"], "from the env 123", cfg)
    # nothing without both variables
    assert auth.ensure_admin_from_env(conn, cfg, {"ROADWATCH_ADMIN_USER": "x"}) is None


def test_username_and_password_rules(cfg):
    c = Config({"web.min_password_len": 10})
    with pytest.raises(auth.AuthError):
        auth.check_password("x" * 9, c)
    assert auth.check_password("x" * 10, c)
    with pytest.raises(auth.AuthError):
        auth.check_password("x" * (auth.MAX_PASSWORD_LEN + 1), c)
    for bad in ("", "a b", "a/b", "x" * 65, "a;drop"):
        with pytest.raises(auth.AuthError):
            auth.check_username(bad)
    assert auth.check_username("值班员_1") == "值班员_1"


# --- issue 13.5: atomic login limiting ------------------------------------------------------------------------

def test_forty_parallel_guesses_get_at_most_the_limit_of_argon2_checks(cfg, capsys):
    """The limit used to be checked before the argon2 check and failures recorded after it: 40 parallel
    guesses gave 39 × 401 + 1 × 200. Now each attempt is reserved before argon2 runs."""
    limit = 5
    cfg2 = Config({k: cfg[k] for k in ("paths.data_dir", "web.argon2_time_cost", "web.argon2_memory_kib")}
                  | {"web.login_max_failures": limit, "web.login_window_s": 300})
    failures = auth.LOGINS.labels(result="failure")

    async def main():
        app, *_ = make_app(cfg2)
        c = await _client(app)
        try:
            before = failures._value.get()
            guesses = [login(c, "ops", f"guess number {i:02d}") for i in range(39)] + [login(c, "ops")]
            statuses = [r.status for r in await asyncio.gather(*guesses)]
            checked = failures._value.get() - before          # one argon2 verification per 401
            assert statuses.count(401) <= limit and checked <= limit, statuses
            assert statuses.count(401) + statuses.count(200) <= limit
            assert statuses.count(429) >= 40 - limit
            assert (await login(c, "ops")).status == 429        # locked, even with the right password
            with capsys.disabled():
                print(f"\n[login race] 40 parallel logins (39 wrong, 1 right), limit {limit}: "
                      f"{statuses.count(401)} × 401, {statuses.count(200)} × 200, {statuses.count(429)} × 429, "
                      f"{checked:.0f} failed argon2 checks")
        finally:
            await c.close()
    run(main())


def test_limiter_reservation_counts_before_the_check_and_success_returns_it():
    now = [0.0]
    lim = auth.LoginLimiter(2, 60, clock=lambda: now[0])
    keys = ["user:a", "addr:1"]
    w1, s1 = lim.reserve(keys)
    w2, s2 = lim.reserve(keys)
    w3, s3 = lim.reserve(keys)                 # two attempts in flight already fill the limit
    assert (w1, w2) == (0.0, 0.0) and w3 > 0 and s3 is None
    lim.succeed(keys, s2)                      # the second one succeeded: its reservation is returned
    assert lim.retry_after(["user:a"]) == 0    # the user's failures are forgotten
    assert lim.retry_after(["addr:1"]) == 0    # the address keeps only the failed attempt (1 < 2)
    now[0] = 1.0
    assert lim.reserve(["user:b", "addr:1"])[0] == 0
    assert lim.reserve(["user:c", "addr:1"])[0] > 0   # per address: 2 failures from it, whatever the user
