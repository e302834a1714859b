"""The console's FALLBACK case workflow (case_fallback.py): every status × action pair against the rules
written out by hand from the brief: review → confirm | dismiss (reason) → notify (only after confirm)."""
from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest

from roadwatch.streams.archive import open_archive
from roadwatch.streams.web.case_fallback import CaseActionError, apply_case_action
from web_support import make_cfg, seed_case

STATUSES = ["detected", "reviewed", "confirmed", "dismissed", "notified"]
ACTIONS = ["review", "confirm", "dismiss", "notify"]
# (status, action) → new status; every pair not listed must be refused
EXPECTED = {("detected", "review"): "reviewed", ("reviewed", "confirm"): "confirmed",
            ("reviewed", "dismiss"): "dismissed", ("confirmed", "notify"): "notified"}


@pytest.mark.parametrize("status,action", list(itertools.product(STATUSES, ACTIONS)))
def test_transition_table(tmp_path, status, action):
    cfg = make_cfg(tmp_path)
    seed_case(cfg, "C1", status=status, with_image=False)
    conn = open_archive(cfg.archive_path)
    when = datetime(2024, 5, 6, 1, 2, 3, tzinfo=timezone.utc)
    if (status, action) in EXPECTED:
        row = apply_case_action(conn, "C1", action, "ops", "有理由 reason", now=when)
        assert row["status"] == EXPECTED[(status, action)]
        audit = conn.execute("SELECT action, operator, reason, ts FROM case_actions").fetchall()
        assert [tuple(a) for a in audit] == [(action, "ops", "有理由 reason", "2024-05-06T09:02:03+08:00")]
    else:
        with pytest.raises(CaseActionError) as e:
            apply_case_action(conn, "C1", action, "ops", "有理由 reason")
        assert e.value.code == "bad_transition"
        assert conn.execute("SELECT status FROM cases").fetchone()[0] == status
        assert conn.execute("SELECT COUNT(*) FROM case_actions").fetchone()[0] == 0


def test_dismiss_needs_a_reason_and_input_is_checked(tmp_path):
    cfg = make_cfg(tmp_path)
    seed_case(cfg, "C1", status="reviewed", with_image=False)
    conn = open_archive(cfg.archive_path)
    for reason in (None, "", "   "):
        with pytest.raises(CaseActionError) as e:
            apply_case_action(conn, "C1", "dismiss", "ops", reason)
        assert e.value.code == "reason_required"
    with pytest.raises(CaseActionError) as e:
        apply_case_action(conn, "C1", "dismiss", "ops", "x" * 501)
    assert e.value.code == "bad_input"
    with pytest.raises(CaseActionError) as e:
        apply_case_action(conn, "C1", "dismiss", " ", "ok")
    assert e.value.code == "bad_input"
    with pytest.raises(CaseActionError) as e:
        apply_case_action(conn, "C1", "erase", "ops", "ok")
    assert e.value.code == "bad_action"
    with pytest.raises(CaseActionError) as e:
        apply_case_action(conn, "nope", "review", "ops", None)
    assert e.value.code == "not_found"
    assert conn.execute("SELECT status FROM cases").fetchone()[0] == "reviewed"
    row = apply_case_action(conn, "C1", "dismiss", "ops", "x" * 500)      # 500 is the limit
    assert row["status"] == "dismissed"
    # confirm is refused now: a dismissed case never reaches notify
    with pytest.raises(CaseActionError):
        apply_case_action(conn, "C1", "confirm", "ops", None)


def test_second_operator_loses_the_race(tmp_path):
    cfg = make_cfg(tmp_path)
    seed_case(cfg, "C1", status="reviewed", with_image=False)
    a = open_archive(cfg.archive_path)
    import sqlite3
    b = sqlite3.connect(str(cfg.archive_path), isolation_level=None)     # a second process's connection
    apply_case_action(a, "C1", "confirm", "ops1", None)
    with pytest.raises(CaseActionError) as e:
        apply_case_action(b, "C1", "dismiss", "ops2", "late")
    assert e.value.code == "bad_transition"
    assert [r[0] for r in a.execute("SELECT operator FROM case_actions")] == ["ops1"]
