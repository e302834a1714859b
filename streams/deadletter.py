"""Dead-letter records: the original bytes, a stable reason code, a detail line, and the source."""
from __future__ import annotations

import base64
from datetime import datetime, timezone

import orjson
from prometheus_client import Counter

from roadwatch.models.records import format_ts

DEAD_LETTERS = Counter("roadwatch_dead_letters_total", "Inputs rejected to the dead-letter topic",
                       ["source", "reason"])


def dead_letter_bytes(source: str, reason: str, detail: str, original: bytes | None) -> bytes:
    """JSON for the ``dead-letter`` topic; also counts it (``roadwatch_dead_letters_total``)."""
    DEAD_LETTERS.labels(source=source, reason=reason).inc()
    return orjson.dumps({
        "source": source, "reason": reason, "detail": detail[:500],
        "original_b64": base64.b64encode(original or b"").decode("ascii"),
        "ts": format_ts(datetime.now(timezone.utc)),
    })


async def send_dead_letter(topic, source: str, reason: str, detail: str, original: bytes | None) -> None:
    """Publish on the ``dead-letter`` topic (key = source) — the one way every agent rejects input."""
    from .metrics import MESSAGES
    await topic.send(key=source.encode(), value=dead_letter_bytes(source, reason, detail, original))
    MESSAGES.labels(topic="dead-letter", direction="out").inc()
