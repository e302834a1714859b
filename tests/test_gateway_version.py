"""The terminal's JT/T 808 protocol version travels with its positions (issue 14): a 2019 terminal's alarm
bits get the 2019 names in the live alerts, a 2013 terminal's the 2013 ones — over real TCP, through both the
gateway's 0x0200 fast path and the codec path (0x0704), the published ``gps-pings`` records and the real GPS
engine the worker runs on them.

Alarm bit 15 is reserved in JT/T 808-2013 and means 违规行驶报警 in 2019 (``streams/jt808/alarms.py``)."""
from __future__ import annotations

import time

from roadwatch.models.config import Config
from roadwatch.models.ping_state import PingProcessor
from roadwatch.models.pingbatch import decode_batch
from roadwatch.models.registry import parse_registry
from roadwatch.streams.jt808 import codec as c
from roadwatch.streams.jt808.alarms import ALARM_BITS_2013, ALARM_BITS_2019

from test_gateway_tcp import REGISTRY, Terminal, _loc, pings_of, run_gateway, until
from test_gateway_tcp import front_end  # noqa: F401  (both front ends)

BIT = 15
assert ALARM_BITS_2019[BIT] == "违规行驶报警" and BIT not in ALARM_BITS_2013


def _alarm_fix(i: int, alarm: int) -> dict:
    """A fix of a minute ago (the engine trusts the time of a ping only near its receipt)."""
    return {**_loc(i), "ts": int(time.time() * 1000) - 60_000 + i * 1000, "alarm_flags": alarm}


def _alarm_names(pub) -> dict[str, list[str]]:
    """The records the gateway published, through the engine: plate → names of its terminal_alarm alerts."""
    reg = parse_registry({"enterprises": [{"enterprise_id": "E1", "name": "E"}],
                          "vehicles": [{**v, "enterprise_id": "E1"} for v in REGISTRY["vehicles"]]})
    proc = PingProcessor(Config({"quality.require_positioned": False}), reg)
    names: dict[str, list[str]] = {}
    for _, value, _ in pub.topic("gps-pings"):
        for a in proc.process(decode_batch(value)).alerts:
            if a["type"] == "terminal_alarm":
                names.setdefault(a["plate"], []).append(a["details"]["name"])
    return names


def test_2019_terminal_gets_2019_alarm_names_through_the_fast_path():
    async def t(port, pub, gw):
        new = await Terminal("13800000001", version=2019).open(port)
        await new.login("粤B12345")
        old = await Terminal("13800000002").open(port)
        await old.login("苏E12F34")
        for term in (new, old):
            await term.send(0x0200, c.encode_location(_alarm_fix(1, 0)))
            assert (await term.recv()).fields["result"] == 0
            await term.send(0x0200, c.encode_location(_alarm_fix(2, 1 << BIT)))
            assert (await term.recv()).fields["result"] == 0
        await until(lambda: len(pings_of(pub)) == 4)
        versions = {p["plate"]: p.get("jt808_version") for _, p in pings_of(pub)}
        assert versions == {"粤B12345": 2019, "苏E12F34": 2013}
        assert _alarm_names(pub) == {"粤B12345": ["违规行驶报警"], "苏E12F34": [f"保留位{BIT}"]}
        new.close()
        old.close()
    run_gateway(t)


def test_2019_terminal_gets_2019_alarm_names_through_a_batch_upload():
    async def t(port, pub, gw):
        new = await Terminal("13800000001", version=2019).open(port)
        await new.login("粤B12345")
        await new.send(0x0704, c.encode_batch_upload([_alarm_fix(1, 0), _alarm_fix(2, 1 << BIT)], True))
        assert (await new.recv()).fields["result"] == 0
        await until(lambda: len(pings_of(pub)) == 2)
        assert {p.get("jt808_version") for _, p in pings_of(pub)} == {2019}
        assert _alarm_names(pub) == {"粤B12345": ["违规行驶报警"]}
        new.close()
    run_gateway(t)
