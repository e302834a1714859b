"""Every topic, declared once: name, key, value, partitions, retention policy.

Inputs carry raw bytes (``value_serializer="raw"``) so that a malformed record reaches our own parser and
goes to the dead-letter topic with its original bytes, instead of crashing Faust's deserializer.
Keys are raw plate bytes so that Kafka's default partitioner (murmur2) used by the batching producers
(streams/batcher.py) and Faust agree on partitions.
"""
from __future__ import annotations

from dataclasses import dataclass

WIM_READINGS = "wim-readings"
GPS_PINGS = "gps-pings"
DRIVER_EVENTS = "driver-events"
ALERTS = "alerts"
OVERLOAD_CASES = "overload-cases"
VEHICLE_DAY_STATS = "vehicle-day-stats"
DEAD_LETTER = "dead-letter"
REPORTS = "reports"
PLATFORM_EVENTS = "platform-events"
INTERCEPT_TASKS = "intercept-tasks"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value: str
    input: bool              # consumed by the worker's agents (partition count = stream.partitions)
    compacted: bool = False


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(WIM_READINGS, "plate (raw bytes)", "one WIM reading, JSON (models.records.WimReading)", True),
    TopicSpec(GPS_PINGS, "plate of the first ping (raw); all pings of one partition",
              "columnar ping batch, JSON (models.pingbatch)", True),
    TopicSpec(DRIVER_EVENTS, "plate (raw bytes)", "IC card login/logout, JSON (models.records.DriverEvent)", True),
    TopicSpec(ALERTS, "plate", "live alert, JSON (models.records.Alert)", False),
    TopicSpec(OVERLOAD_CASES, "case id", "verdict + evidence manifest, JSON", False),
    TopicSpec(VEHICLE_DAY_STATS, "plate|day", "per-vehicle-day counters (absolute values), JSON", False, True),
    TopicSpec(DEAD_LETTER, "source", "original bytes (base64) + reason, JSON (models.records.DeadLetter)", False),
    TopicSpec(REPORTS, "month", "monthly report JSON", False, True),
    TopicSpec(PLATFORM_EVENTS, "GNSS centre id", "JT/T 809 link events, inspections and 0x1402 alarms, JSON "
              "(streams/jt809/link.py)", False),
    TopicSpec(INTERCEPT_TASKS, "task id", "intercept task (布控) after each passage that opened or updated it, "
              "JSON (models/intercept.py; the newest revision per task id wins)", False),
)

INPUT_TOPICS = tuple(t.name for t in TOPICS if t.input)


def partitions_for(spec: TopicSpec, input_partitions: int) -> int:
    return input_partitions if spec.input or spec.name in (ALERTS, OVERLOAD_CASES, VEHICLE_DAY_STATS) else 1
