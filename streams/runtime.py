"""Run the stack (broker + worker process) for the demo, ``simulate``, the benchmark and integration tests.

The worker runs as a child process (``roadwatch worker``): it owns one core, the feed producer owns the
other, and a crash or SIGKILL of the worker can be injected and recovered from exactly as in production.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from roadwatch.models.config import Config

from .broker import kafka_bootstrap
from .topics import INPUT_TOPICS

READY_LINE = "roadwatch worker ready"


class WorkerProcess:
    """One ``roadwatch worker`` child; its output lines are forwarded to ``on_line``."""

    def __init__(self, bootstrap: str, *, registry_path: str | None = None, config_path: str | None = None,
                 env: dict | None = None, on_line: Callable[[str], None] | None = None, loglevel: str = "warning"):
        self.bootstrap = bootstrap
        cmd = [sys.executable, "-m", "roadwatch.streams.cli"]
        if config_path:
            cmd += ["--config", str(config_path)]
        cmd += ["worker", "--loglevel", loglevel]
        if registry_path:
            cmd += ["--registry", str(registry_path)]
        full_env = dict(os.environ, **(env or {}), ROADWATCH_KAFKA=bootstrap, PYTHONUNBUFFERED="1")
        self.ready = threading.Event()
        self.lines: list[str] = []
        self.on_line = on_line
        self.started = time.monotonic()
        self.ready_after: float | None = None
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env,
                                     text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if len(self.lines) > 2000:
                del self.lines[:1000]
            if READY_LINE in line and not self.ready.is_set():
                self.ready_after = time.monotonic() - self.started
                self.ready.set()
            if self.on_line:
                self.on_line(line)

    def wait_ready(self, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None:
                raise RuntimeError("worker exited before it was ready:\n" + "\n".join(self.lines[-30:]))
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready within {timeout:.0f} s:\n" + "\n".join(self.lines[-30:]))
        return self.ready_after or 0.0

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the fault-injection tests' crash."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def ready_worker(make: Callable[[int], WorkerProcess], timeout: float) -> tuple[WorkerProcess, int, float]:
    """Start ``make(port)`` on a free port and wait until it is ready; a port another process took between
    choosing and binding it (a shared machine, parallel test runs) is retried on another one, up to three
    times. Returns (worker, port, seconds until ready)."""
    from .broker import free_port
    for attempt in range(3):
        port = free_port()
        wp = make(port)
        try:
            return wp, port, wp.wait_ready(timeout)
        except RuntimeError as e:
            wp.stop()
            busy = "already in use" in str(e) or any("already in use" in ln for ln in wp.lines)
            if not busy or attempt == 2:
                raise
    raise AssertionError("unreachable")


def committed_offsets(bootstrap: str, group: str, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {(t, p): (c.committed(TopicPartition(t, p)) or 0) for t, p in tps}
    finally:
        c.close()


def wait_consumed(bootstrap: str, expected_end: dict[tuple[str, int], int], timeout: float = 120.0,
                  group: str = "roadwatch", progress: Callable[[int, int], None] | None = None) -> bool:
    """Until the worker's committed offsets reach ``expected_end`` (next offset per topic-partition, as
    the producer's send results told). Committed offsets of the ping topic only advance after the state
    snapshot is in the archive, so "consumed" here means "durably processed"."""
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    total = sum(expected_end.values())
    deadline = time.monotonic() + timeout
    try:
        while True:
            done = 0
            for (t, p), end in expected_end.items():
                done += min(end, c.committed(TopicPartition(t, p)) or 0)
            if progress:
                progress(done, total)
            if done >= total:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)
    finally:
        c.close()


@dataclass
class Stack:
    bootstrap: str
    worker: WorkerProcess | None
    produced: dict = field(default_factory=dict)   # (topic, partition) → next offset

    def note_sent(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if offset + 1 > self.produced.get(key, 0):
            self.produced[key] = offset + 1

    def wait_idle(self, timeout: float = 300.0, progress=None) -> bool:
        inputs = {k: v for k, v in self.produced.items() if k[0] in INPUT_TOPICS}
        return wait_consumed(self.bootstrap, inputs, timeout, progress=progress) if inputs else True


@contextmanager
def stack(cfg: Config, *, registry_path: str | None = None, config_path: str | None = None,
          worker: bool = True, env: dict | None = None, on_line=None) -> Iterator[Stack]:
    """Broker (embedded unless ``$ROADWATCH_KAFKA``) + a ready worker child, torn down on exit."""
    with kafka_bootstrap(cfg) as bootstrap:
        wp = None
        try:
            if worker:
                wp = WorkerProcess(bootstrap, registry_path=registry_path, config_path=config_path, env=env,
                                   on_line=on_line)
                wp.wait_ready()
            yield Stack(bootstrap, wp)
        finally:
            if wp is not None:
                wp.stop()
