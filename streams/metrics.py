"""Prometheus metrics of the worker (served at /metrics). Names are the Grafana dashboard's contract."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# bucket bounds shared by the histograms of one kind: a latency from a record's timestamp, a piece of work
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)
WORK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)

MESSAGES = Counter("roadwatch_messages_total", "Kafka records in/out per topic", ["topic", "direction"])
PINGS = Counter("roadwatch_pings_total", "GPS pings processed", ["qualified"])
ALERTS = Counter("roadwatch_alerts_total", "Alerts raised", ["type"])
PUBLISH_FAILURES = Counter("roadwatch_publish_failures_total",
                           "Record batches the worker could not deliver (streams/keyed_sender.py)", ["topic"])
CASES = Counter("roadwatch_cases_total", "Overload verdicts and case actions", ["action"])
LATENCY = Histogram("roadwatch_processing_latency_seconds",
                    "Reading/ping receipt time to verdict/alert time",
                    ["path"], buckets=LATENCY_BUCKETS)
LAG = Gauge("roadwatch_consumer_lag", "Records behind the high watermark", ["topic", "partition"])
VEHICLES_ONLINE = Gauge("roadwatch_vehicles_online", "Vehicles with a ping within the offline timeout")
REPLAY_SKIPPED = Counter("roadwatch_replayed_records_skipped_total",
                         "Records skipped because a snapshot already covers their offset", ["topic"])
SNAPSHOTS = Counter("roadwatch_state_snapshots_total", "Per-partition state snapshots committed")
SNAPSHOT_SECONDS = Histogram("roadwatch_snapshot_commit_seconds",
                             "A partition's snapshot commit: taking the state on the event loop (loop), encoding, "
                             "compressing and the archive transaction in the commit thread (thread)", ["part"],
                             buckets=WORK_BUCKETS)
LOOP_LAG = Histogram("roadwatch_event_loop_lag_seconds",
                     "How late a 50 ms timer of the worker wakes up: the longest the event loop was busy (WIM latency)",
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
# the WIM path's batches (streams/wim.py): what a reading's latency is made of — its wait before its batch
# starts (the broker, the consumer, the batch before it, the linger), the batch's transaction with its evidence
# packages, and the publication of its verdicts
WIM_BATCH_READINGS = Histogram("roadwatch_wim_batch_readings", "Readings stored per WIM batch (one transaction)",
                               buckets=(1, 2, 5, 10, 20, 30, 40, 50, 100, 200, 500))
WIM_BATCH_SECONDS = Histogram("roadwatch_wim_batch_seconds",
                              "A WIM batch's transaction with its evidence packages (store) and the publication "
                              "of its verdicts, alerts and intercept tasks (publish)", ["part"], buckets=WORK_BUCKETS)
WIM_WAIT = Histogram("roadwatch_wim_wait_seconds",
                     "A reading's time from its timestamp to the start of its batch's transaction",
                     buckets=LATENCY_BUCKETS)
# the ping agent applies the batches already waiting for a partition in one engine call (streams/gps.py)
GPS_CALL_BATCHES = Histogram("roadwatch_gps_engine_call_batches",
                             "Ping batches (records) of one partition applied in one engine call",
                             buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
# SQLite's write-ahead log after the worker's last checkpoint (streams/gps.py): frames it could not copy into the
# database — above 0 while a reader in another process (a long report) still needs older ones; 0 on PostgreSQL
ARCHIVE_LOG_UNCOPIED = Gauge("roadwatch_archive_log_uncopied_frames",
                             "SQLite write-ahead log frames the last checkpoint could not copy into the database "
                             "(-1: it could not run)")
# … and every frame the log held then: about one checkpoint interval's writes while the log starts over; growing
# from one checkpoint to the next while it does not (several processes writing the file steadily, a reader)
ARCHIVE_LOG_FRAMES = Gauge("roadwatch_archive_log_frames",
                           "SQLite write-ahead log frames at the last checkpoint: the writes since the log last "
                           "started over (-1: it could not run)")
STATE_BYTES = Gauge("roadwatch_state_bytes_per_vehicle", "Snapshot bytes of the live ping state per tracked vehicle")
AGENCY_NOTICES = Counter("roadwatch_agency_notices_total", "抄告 (62号令 Art. 44) sent and received",
                         ["direction", "outcome"])
AGENCY_NOTICES_OVERDUE = Gauge("roadwatch_agency_notices_overdue", "抄告 not sent by their due day")
# 布控 (models/intercept.py): publications by the WIM path; this Beijing month's rates, refreshed from the
# archive by the WIM worker's timer (streams/wim.py) — numerator and denominator beside each rate
INTERCEPT_TASKS = Counter("roadwatch_intercept_tasks_published_total",
                          "Intercept tasks published on intercept-tasks (first: opened; update: a repeated passage)",
                          ["revision"])
INTERCEPT_MONTH = Gauge("roadwatch_intercept_month_tasks",
                        "This month's intercept tasks by detecting station (total: all) and status (created = all)",
                        ["station", "status"])
INTERCEPT_RATE = Gauge("roadwatch_intercept_rate_ratio", "拦截率 this month: intercepted / tasks created (0-1)",
                       ["station"])
INTERCEPT_UNLOADED = Gauge("roadwatch_intercept_unloaded_kg", "Mass unloaded (卸载) from intercepted trucks this month",
                           ["station"])
INTERCEPT_MEDIAN = Gauge("roadwatch_intercept_median_minutes",
                         "Median detection-to-interception time of this month's intercepted trucks", ["station"])
ENFORCEMENT_RATE = Gauge("roadwatch_enforcement_rate_ratio",
                         "查处率 this month: decided cases / detected cases (0-1), as the monthly report counts it",
                         ["station"])
ENFORCEMENT_COUNTS = Gauge("roadwatch_enforcement_month_cases",
                           "This month's cases by station: detected and decided (the 查处率's denominator and numerator)",
                           ["station", "stage"])
