"""The evidence package's native writer (``models/_evidence_io.c``) against the Python one (``_write_plan``):
the same files, bytes, chain line and signed head from the same plan, the same errors leaving the same
disk behind — and the point of it, that it lets go of the interpreter lock while it works."""
import dataclasses
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from roadwatch.models import evidence
from roadwatch.models.config import Config
from roadwatch.models.evidence import load_signing_key, verify_tree
from roadwatch.models.overload import MemoryCounters, assess
from test_overload_helpers import T0, reading, registry

native = pytest.importorskip("roadwatch.models._evidence_io",
                             reason="the native writer is not built (no C compiler at install time)")

WRITERS = ["python", "native"]


@pytest.fixture
def key(tmp_path, monkeypatch):
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    return load_signing_key(tmp_path / "keys-home", env={})


def _use(monkeypatch, writer: str) -> None:
    monkeypatch.setattr(evidence, "_NATIVE", native if writer == "native" else None)


def _plan(ev: Path, key, k: int = 0, sync: str = "behind"):
    """The plan of an overloaded reading's package, as the next link of chain p0 in ``ev``; and the chain
    file, open and locked as ``PackageBatch`` holds it."""
    r = reading(60000, ts=T0 + timedelta(minutes=10 * k))
    v = assess(r, registry(), Config(), counters=MemoryCounters())
    ev.mkdir(parents=True, exist_ok=True)
    chain_path = ev / "chain-p0.jsonl"
    chain = open(chain_path, "ab+")
    evidence.fcntl.flock(chain.fileno(), evidence.fcntl.LOCK_EX)
    plan = evidence._plan_package(ev, ev / v["case_id"], v, r, "p0", key, sync,
                                  evidence._chain_tail(chain, chain_path))
    return plan, chain, chain_path


def _moved(plan, ev: Path):
    """The same plan (same bytes) written into another evidence folder."""
    return dataclasses.replace(plan, tmp=ev / plan.tmp.name, head_path=ev / plan.head_path.name,
                               written=dataclasses.replace(plan.written, path=ev / plan.written.path.name))


def _tree(ev: Path) -> dict[str, bytes]:
    return {str(p.relative_to(ev)): p.read_bytes() for p in sorted(ev.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("sync", ["behind", "each"])
def test_both_writers_put_the_same_bytes_on_disk(tmp_path, key, monkeypatch, sync):
    a, b = tmp_path / "python" / "evidence", tmp_path / "native" / "evidence"
    plan, chain, chain_path = _plan(a, key, sync=sync)
    b.mkdir(parents=True)
    with chain, open(b / "chain-p0.jsonl", "ab+") as chain_b:
        _use(monkeypatch, "python")
        evidence._write_plan(plan, chain, chain_path)
        _use(monkeypatch, "native")
        evidence._write_plan(_moved(plan, b), chain_b, b / "chain-p0.jsonl")
    evidence.SYNC_BEHIND.wait()
    ta, tb = _tree(a), _tree(b)
    assert ta == tb
    names = set(ta)
    assert {f"{plan.written.path.name}/manifest.json", f"{plan.written.path.name}/manifest.sig",
            "chain-p0.jsonl", "chain-p0.head.json"} <= names
    assert not [n for n in names if ".tmp-" in n]                  # no temporary left behind
    assert ta["chain-p0.jsonl"] == plan.written.chain_line + b"\n"
    assert verify_tree(b, tmp_path / "keys-home" / "keys" / "trusted") == {}


@pytest.mark.parametrize("writer", WRITERS)
def test_leftovers_of_an_earlier_attempt_are_replaced(tmp_path, key, monkeypatch, writer):
    _use(monkeypatch, writer)
    ev = tmp_path / "evidence"
    plan, chain, chain_path = _plan(ev, key)
    plan.tmp.mkdir()
    (plan.tmp / "reading.json").write_bytes(b"half of an earlier attempt")
    with chain:
        evidence._write_plan(plan, chain, chain_path)
    assert not plan.tmp.exists()
    assert [(p, (plan.written.path / p).read_bytes()) for p, _ in plan.written.files] == plan.written.files


@pytest.mark.parametrize("writer", WRITERS)
def test_a_package_that_cannot_be_put_in_place_leaves_nothing(tmp_path, key, monkeypatch, writer):
    """Its folder taken (by something that is not an empty folder): the error is the system's, the
    temporary folder is gone, and no chain line or head was written (a link never names a missing package)."""
    _use(monkeypatch, writer)
    ev = tmp_path / "evidence"
    plan, chain, chain_path = _plan(ev, key)
    plan.written.path.mkdir()
    (plan.written.path / "someone-elses").write_bytes(b"x")
    with chain, pytest.raises(OSError) as err:
        evidence._write_plan(plan, chain, chain_path)
    assert err.value.errno is not None
    assert not plan.tmp.exists()
    assert chain_path.read_bytes() == b"" and not plan.head_path.exists()


@pytest.mark.parametrize("writer", WRITERS)
def test_a_file_in_the_way_of_the_temporary_folder_is_an_error_with_its_name(tmp_path, key, monkeypatch, writer):
    _use(monkeypatch, writer)
    ev = tmp_path / "evidence"
    plan, chain, chain_path = _plan(ev, key)
    plan.tmp.write_bytes(b"")
    with chain, pytest.raises(FileExistsError) as err:
        evidence._write_plan(plan, chain, chain_path)
    assert err.value.filename == str(plan.tmp)
    assert not plan.written.path.exists() and chain_path.read_bytes() == b""


@pytest.mark.parametrize("writer", WRITERS)
def test_a_head_that_cannot_be_replaced_is_an_error_after_the_link(tmp_path, key, monkeypatch, writer):
    """The head's temporary name taken by a folder: the package and its link are written, the head is not,
    and the error says so (``PackageBatch`` then writes nothing more and the batch is repeated)."""
    _use(monkeypatch, writer)
    ev = tmp_path / "evidence"
    plan, chain, chain_path = _plan(ev, key)
    (ev / f".{plan.head_path.name}.tmp-{os.getpid()}").mkdir()
    with chain, pytest.raises(IsADirectoryError):
        evidence._write_plan(plan, chain, chain_path)
    assert evidence.is_package(plan.written.path)
    assert chain_path.read_bytes() == plan.written.chain_line + b"\n" and not plan.head_path.exists()


def test_the_native_writer_lets_other_threads_run_while_it_waits(tmp_path):
    """The head's temporary file is a named pipe here: the writer's ``open`` blocks until someone reads it.
    Only another thread of the same process can — and only if the writer does not hold the interpreter lock
    while it waits. (In a child process: held, it would hang, and the parent stops it.) The reader opens the
    pipe only once the package is in place, so the writer is already waiting at the head."""
    script = textwrap.dedent(f"""
        import os, threading, time
        from roadwatch.models import _evidence_io as native
        d = {str(tmp_path)!r}
        fifo = os.path.join(d, ".head.tmp")
        os.mkfifo(fifo)
        chain = os.open(os.path.join(d, "chain.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        t = threading.Thread(target=native.write_package, args=(
            os.path.join(d, ".pkg.tmp"), os.path.join(d, "pkg"), [("a.json", b"{{}}")], chain, b"line\\n",
            fifo, os.path.join(d, "head.json"), b"head"))
        t.start()
        while not os.path.exists(os.path.join(d, "pkg")):   # the package is in place: the writer is at the head,
            time.sleep(0.001)                               # waiting for a reader — and this thread still runs
        with open(fifo, "rb") as f:
            got = f.read()
        t.join()
        print(got.decode(), open(os.path.join(d, "pkg", "a.json")).read())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["head", "{}"]
