"""The paced feed of the reliability tests (restart, failover on one host and across hosts) and the waits
and comparisons they share: the feed's producer records the offsets it was given, so a test can wait until a
worker consumed everything, then compare the archive with the batch oracle (tests/test_reliability_feed.py)."""
from __future__ import annotations

import re
import threading
import time
import urllib.request

import orjson
from kafka import KafkaProducer

from roadwatch.streams import topics as T

from test_reliability_feed import (archive_state, build_gps_feed, build_registry, build_wim_feed, gps_records,
                                   oracle_config, oracle_gps, oracle_wim, rows_equal)

N_VEHICLES = 300


class Feed:
    """The feed, its oracle, and a paced producer thread that records the offsets it was given: GPS ping
    batches of ``n_vehicles`` vehicles, with WIM readings interleaved evenly unless ``wim=False``."""

    def __init__(self, tmp, n_vehicles: int = N_VEHICLES, wim: bool = True):
        self.registry = build_registry(n_vehicles)
        self.reg_path = tmp / "registry.json"
        self.registry.dump(self.reg_path)
        self.pings = build_gps_feed(n_vehicles)
        self.records = gps_records(self.pings)
        self.readings = build_wim_feed(self.registry) if wim else []
        cfg = oracle_config()
        self.alerts, self.rows = oracle_gps(self.pings, self.registry, cfg)
        self.verdicts, self.cases, self.duplicates = (oracle_wim(self.readings, self.registry, cfg) if wim
                                                      else ({}, {}, 0))
        self.end: dict[tuple[str, int], int] = {}
        self.sent = 0
        self.total = len(self.records) + len(self.readings)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def start(self, bootstrap: str, pace_s: float) -> None:
        self.thread = threading.Thread(target=self._produce, args=(bootstrap, pace_s), daemon=True)
        self.thread.start()

    def _produce(self, bootstrap: str, pace_s: float) -> None:
        try:
            p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, max_request_size=4_000_000)
            r, w = len(self.records), len(self.readings)      # WIM interleaved evenly with the GPS batches
            order = sorted([(i / r, "gps", i) for i in range(r)] + [((j + 0.5) / w, "wim", j) for j in range(w)])
            for _, kind, i in order:
                if kind == "gps":
                    part, key, value = self.records[i]
                    md = p.send(T.GPS_PINGS, key=key, value=value, partition=part).get(10)
                else:
                    r = self.readings[i]
                    md = p.send(T.WIM_READINGS, key=r["plate"].encode(), value=orjson.dumps(r)).get(10)
                k = (md.topic, md.partition)
                self.end[k] = max(self.end.get(k, 0), md.offset + 1)
                self.sent += 1
                time.sleep(pace_s)
            p.close()
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self.error = e

    def join(self, timeout: float = 90) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "producer did not finish"
        assert self.error is None, self.error


def _wait(pred, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", body, re.M))


def _compare(feed: Feed, conn, timeout: float = 45.0) -> dict:
    """Poll until the archive equals the oracle (the last snapshot/timer may still be in flight); then
    assert equality with a readable difference."""
    deadline = time.monotonic() + timeout
    while True:
        alerts, rows, verdicts, cases, overload = archive_state(conn)
        same = (alerts == feed.alerts and verdicts == feed.verdicts and cases == feed.cases
                and not rows_equal(feed.rows, rows) and overload == {f"overload-{c}" for c in feed.cases})
        if same or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    missing = feed.alerts.keys() - alerts.keys()
    extra = alerts.keys() - feed.alerts.keys()
    ended = {k for k in feed.alerts.keys() & alerts.keys() if feed.alerts[k] != alerts[k]}
    assert not missing and not extra and not ended, (len(missing), len(extra), sorted(ended)[:5])
    assert verdicts == feed.verdicts
    assert cases == feed.cases
    assert overload == {f"overload-{c}" for c in feed.cases}
    assert rows_equal(feed.rows, rows) == []
    return {"alerts": len(alerts), "day_rows": len(rows), "verdicts": len(verdicts), "cases": len(cases)}
