"""``simulate --gateway``: the terminal side of JT/T 808 against a minimal fake platform.

The fake platform answers registration (0x8100 with an auth code) and everything else (0x8001) and decodes
what it receives with the codec, so the test checks the message sequence and the fixes independently of
the real gateway.
"""
import asyncio
import threading

import pytest

from roadwatch.models.config import Config
from roadwatch.simulators.gateway_feed import send_to_gateway
from roadwatch.simulators.scenario import build, load_scenario
from roadwatch.streams.jt808 import codec as c


class FakePlatform:
    def __init__(self):
        self.msgs = []          # (terminal, msg_id, decoded body)
        self.port = None
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()

    async def handle(self, reader, writer):
        buf = bytearray()
        serial = 0
        while data := await reader.read(65536):
            buf.extend(data)
            for f in c.split_frames(buf):
                m = c.parse_frame(f)
                serial += 1
                self.msgs.append((m.terminal_id, m.msg_id, c.decode_body(m.msg_id, m.body)))
                if m.msg_id == c.REGISTRATION:
                    body = c.encode_registration_response(m.serial, 0, "AUTH" + m.terminal_id[-4:])
                    writer.write(c.build_frame(c.REGISTRATION_RESPONSE, m.terminal_id, serial, body))
                else:
                    body = c.encode_general_response(m.serial, m.msg_id, 0)
                    writer.write(c.build_frame(c.PLATFORM_RESPONSE, m.terminal_id, serial, body))
                await writer.drain()
        writer.close()

    def run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self.handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()


@pytest.fixture
def platform():
    p = FakePlatform()
    t = threading.Thread(target=p.run, daemon=True)
    t.start()
    p.ready.wait(5)
    yield p
    p.loop.call_soon_threadsafe(p.loop.stop)


def test_terminals_register_authenticate_login_and_report(platform):
    raw = load_scenario("gps_track").raw
    raw = dict(raw, fleet=dict(raw["fleet"], background_gps=False))
    from roadwatch.simulators.scenario import parse_scenario
    built = build(parse_scenario(raw), Config())
    assert send_to_gateway(built, f"127.0.0.1:{platform.port}", None, max_fps=2000.0) == 0
    by_term = {}
    for tid, mid, body in platform.msgs:
        by_term.setdefault(tid, []).append((mid, body))
    assert len(by_term) == 4
    for tid, seq in by_term.items():
        ids = [m for m, _ in seq]
        assert ids[:2] == [c.REGISTRATION, c.AUTHENTICATION]                   # handshake first
        assert ids[-1] == c.DEREGISTRATION                                       # leaves no binding behind
        ids = ids[:-1]
        assert ids.count(c.DRIVER_CARD) == 1 and set(ids[2:]) <= {c.LOCATION, c.BATCH_LOCATION, c.DRIVER_CARD}
        card = ids.index(c.DRIVER_CARD)
        first_moving = next(i for i, (m, b) in enumerate(seq) if m == c.LOCATION and b["speed_kmh"] > 0)
        assert card < first_moving                                               # IC card login before driving
    total = sum(1 for _, mid, _ in platform.msgs if mid == c.LOCATION)
    total += sum(len(b.get("items") or b.get("locations") or []) for _, mid, b in platform.msgs if mid == c.BATCH_LOCATION)
    assert total == built.stats["pings"]
    batches = [b for _, mid, b in platform.msgs if mid == c.BATCH_LOCATION]
    assert batches and all(b.get("type", b.get("reupload")) in (1, True) for b in batches)    # blind-area re-upload
