"""What the WIM path writes per reading, and how cheaply: one archive transaction per reading, the chain's tail
kept in memory (read again when another writer appended), links archived without re-reading the chain file,
and when a chain link reaches the disk (``evidence.chain_sync``)."""
import multiprocessing
import os
from datetime import timedelta

import orjson
import pytest

from roadwatch.models import evidence
from roadwatch.models.config import Config
from roadwatch.models.evidence import load_signing_key, verify_tree, write_package
from roadwatch.models.overload import MemoryCounters, assess
from roadwatch.streams.archive import close_all, open_archive
from roadwatch.streams.archive import evidence as evidence_db
from roadwatch.streams.cases import ArchiveCounters, ArchiveDrivers, ArchiveTracks, CaseStore
from test_overload_helpers import T0, reading, registry


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    data = tmp_path / "var"
    conn = open_archive(tmp_path / "archive.sqlite")
    yield {"data": data, "ev": data / "evidence", "conn": conn, "key": load_signing_key(data, env={})}
    close_all()


@pytest.fixture(params=["native", "python"])
def writer(request, monkeypatch):
    """The package writer: C (models/_evidence_io.c) where it is built, and the Python fallback."""
    if request.param == "native" and evidence._NATIVE is None:
        pytest.skip("the native writer is not built (no C compiler at install time)")
    if request.param == "python":
        monkeypatch.setattr(evidence, "_NATIVE", None)
    return request.param


def _reading(k: int):
    """A distinct overloaded reading (its own case) ``k`` minutes after T0."""
    return reading(60000, ts=T0 + timedelta(minutes=10 * k))


def _step(env, r, chain="p0", cfg=None):
    """The worker's step (streams/wim.py ``WimHandler.handle``): assess against the archive, then record."""
    cfg = cfg or Config()
    store = CaseStore(env["conn"], cfg, evidence_dir=env["ev"], data_dir=env["data"])
    v = assess(r, registry(), cfg, counters=ArchiveCounters(env["conn"]), track=ArchiveTracks(env["conn"]),
               driver=ArchiveDrivers(env["conn"]), passages=store)
    store.record(v, reading=r, chain_id=chain)
    return v


def _file_lines(env, chain="p0"):
    return [ln.decode() for ln in (env["ev"] / f"chain-{chain}.jsonl").read_bytes().split(b"\n") if ln.strip()]


def _archived_lines(env, chain="p0"):
    roots = [root for cid, root in evidence_db.chains(env["conn"]) if cid == chain]
    assert len(roots) == 1
    return evidence_db.chain_lines(env["conn"], chain, roots[0])


def test_a_reading_is_one_write_transaction(env):
    """Passage, reading, verdict and case: one transaction (each one waits for the archive's write lock, and a
    failure in between left a passage without its verdict)."""
    statements, outside = [], []
    raw = env["conn"].raw

    def trace(sql):
        statements.append(sql)
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")) and not raw.in_transaction:
            outside.append(sql)                  # a write committed on its own

    raw.set_trace_callback(trace)
    for k in range(3):
        _step(env, _reading(k))
    _step(env, reading(30000, ts=T0 + timedelta(hours=2)))      # within the limit: a verdict, no case
    env["conn"].raw.set_trace_callback(None)
    begins = [s for s in statements if s.strip().upper().startswith("BEGIN")]
    assert len(begins) == 4, begins
    assert outside == []
    assert env["conn"].execute("SELECT COUNT(*) FROM wim_passages").fetchone()[0] == 4
    assert env["conn"].execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 3


def test_chain_links_are_archived_as_written_and_a_gap_is_filled_from_the_file(env):
    """A package written outside the worker (``assess wim`` without archive) is on the chain file but not in
    the archive: the next case's link cannot be stored alone, the chain file is read and stored whole."""
    r0 = _reading(0)
    v0 = assess(r0, registry(), Config(), counters=MemoryCounters())
    write_package(env["ev"], v0, r0, chain_id="p0", key=env["key"], sync="each")
    for k in range(1, 4):
        _step(env, _reading(k))
    assert _archived_lines(env) == _file_lines(env) and len(_file_lines(env)) == 4
    for k in range(4, 7):                                    # the next ones one link at a time
        _step(env, _reading(k))
    assert _archived_lines(env) == _file_lines(env) and len(_file_lines(env)) == 7
    head = orjson.loads(evidence_db.chain_head(env["conn"], "p0", orjson.loads(_file_lines(env)[0])["link_sha256"]))
    assert head["head"]["count"] == 7
    assert (env["ev"] / "chain-p0.head.json").read_bytes().decode() == evidence_db.chain_head(
        env["conn"], "p0", orjson.loads(_file_lines(env)[0])["link_sha256"])
    assert verify_tree(env["ev"], env["data"] / "keys" / "trusted") == {}


def _write_in_child(ev, data, k):
    r = _reading(k)
    write_package(ev, assess(r, registry(), Config(), counters=MemoryCounters()), r, chain_id="p0", key=load_signing_key(data, env={}),
                  sync="each")


def test_a_chain_another_process_appended_to_is_read_again(env):
    """The chain's tail is kept in memory between packages; a link another process appended meanwhile (same
    chain file, under its lock) is seen, so the next package links to it."""
    for k in range(2):
        _step(env, _reading(k))
    child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(env["ev"], env["data"], 2))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    _step(env, _reading(3))
    links = [orjson.loads(ln) for ln in _file_lines(env)]
    assert [ln["seq"] for ln in links] == [1, 2, 3, 4]
    assert all(b["prev_link_sha256"] == a["link_sha256"] for a, b in zip(links, links[1:]))
    assert verify_tree(env["ev"], env["data"] / "keys" / "trusted") == {}


@pytest.mark.parametrize("sync", ["each", "behind"])
def test_when_a_chain_link_reaches_the_disk(env, monkeypatch, sync, writer):
    """'each': the chain file is fsync-ed before the package call returns; 'behind': not then, but by the
    background thread right after."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(evidence.os, "fsync", fsync)
    gate = evidence.threading.Event()
    real_sync = evidence.SYNC_BEHIND._sync
    monkeypatch.setattr(evidence.SYNC_BEHIND, "_sync", lambda key: (gate.wait(30), real_sync(key)))
    chain = str((env["ev"] / "chain-p0.jsonl").resolve())
    r = _reading(0)
    write_package(env["ev"], assess(r, registry(), Config(), counters=MemoryCounters()), r, chain_id="p0", key=env["key"], sync=sync)
    assert (chain in synced) == (sync == "each")
    gate.set()
    evidence.SYNC_BEHIND.wait()
    assert chain in synced
    with pytest.raises(evidence.EvidenceError):
        write_package(env["ev"], assess(_reading(1), registry(), Config(), counters=MemoryCounters()), _reading(1), chain_id="p0",
                      key=env["key"], sync="sometimes")


def test_a_batch_of_readings_is_stored_all_or_none(tmp_path, monkeypatch):
    """The worker's WIM handler stores a batch in one transaction, with the operators' alerts of its cases:
    when a reading of it fails (here: the evidence folder cannot be written), nothing of the batch is stored —
    also not the reading before it — and the repeated batch stores each reading once, as one reading at a time
    would."""
    import json
    import shutil
    from roadwatch.streams import worker
    from roadwatch.streams.wim import WimHandler
    from test_overload_helpers import registry_dict
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    reg_path = tmp_path / "registry.json"
    reg_path.write_text(json.dumps(registry_dict()))
    cfg = Config({"paths.data_dir": str(tmp_path / "data"), "paths.archive": str(tmp_path / "archive.sqlite")})
    _, ctx = worker.build_worker(cfg, "127.0.0.1:9", str(reg_path))
    h = WimHandler(ctx)
    batch = [(reading(30000, ts=T0 + timedelta(minutes=1)), "p0"), (_reading(1), "p0"), (_reading(2), "p0")]
    ev = tmp_path / "data" / "evidence"
    shutil.rmtree(ev, ignore_errors=True)
    ev.write_bytes(b"not a folder")                        # the second reading's package cannot be written
    with pytest.raises(OSError):
        h.handle_batch(batch)
    h.reset()
    conn = h.store.conn
    assert [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("wim_passages", "wim_readings", "wim_verdicts", "cases", "alerts")] == [0, 0, 0, 0, 0]
    ev.unlink()
    done = h.handle_batch(batch)                           # the retry: the same readings again
    assert [v["action"] != "none" for v, _ in done] == [False, True, True]
    assert [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("wim_passages", "wim_readings", "wim_verdicts", "cases", "alerts")] == [3, 3, 3, 2, 2]
    # the operators' alerts are the cases' and are archived in their transaction
    assert {r[0] for r in conn.execute("SELECT alert_id FROM alerts")} == {f"overload-{v['case_id']}"
                                                                          for v, _ in done if v["case_id"]}
    again = h.handle_batch(batch)                          # re-delivered after a crash: nothing new
    assert [v["case_id"] for v, _ in again] == [v["case_id"] for v, _ in done]
    assert conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 2
    assert verify_tree(ev, tmp_path / "data" / "keys" / "trusted") == {}
    close_all()


def test_storing_a_link_does_not_read_the_whole_chain(env):
    """A chain grows all year (one link per case of its partition): storing the next link looks up how many
    are stored in the primary key instead of counting them. Counted in SQLite's virtual-machine steps (not
    time): the same for a chain of 5 000 links as for one of 10, where ``COUNT(*)`` took thousands more."""
    conn = env["conn"]

    def chain(chain_id: str, n: int) -> str:
        lines = [orjson.dumps({"seq": i + 1, "link_sha256": f"{chain_id}-{i + 1}"}) for i in range(n)]
        evidence_db.store_chain(conn, chain_id, lines, None, None)
        return f"{chain_id}-1"

    def steps_to_store_next(chain_id: str, root: str, n: int) -> int:
        steps = [0]

        def count():
            steps[0] += 1
            return 0
        conn.raw.set_progress_handler(count, 1)
        try:
            assert evidence_db.store_chain_link(conn, chain_id, root, n + 1,
                                                orjson.dumps({"seq": n + 1, "link_sha256": "next"}), None, None)
        finally:
            conn.raw.set_progress_handler(None, 1)
        return steps[0]

    short = steps_to_store_next("short", chain("short", 10), 10)
    long = steps_to_store_next("long", chain("long", 5000), 5000)
    assert long < short + 100, (short, long)
    assert evidence_db.chain_lines(conn, "long", "long-1")[-1] == '{"seq":5001,"link_sha256":"next"}'


# --- a batch's packages, written on a thread (models/evidence.py ``PackageBatch``) --------------------------

def _assessed(k: int, gross=60000):
    r = reading(gross, ts=T0 + timedelta(minutes=10 * k))
    return assess(r, registry(), Config(), counters=MemoryCounters()), r


def _locked_elsewhere(path) -> bool:
    import fcntl
    with open(path, "ab") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


def test_a_batch_of_packages_is_on_disk_as_planned_when_flushed(env, writer):
    """``write`` returns at once what the archive rows need; the files, the chain lines and the signed heads
    are on disk as returned once ``flush`` has returned; the chains stay locked (no other writer can slip a
    link in between) until then; a package written the ordinary way afterwards links on."""
    batch = evidence.PackageBatch()
    written = []
    for k, chain in enumerate(["p0", "p0", "p1", "p0"]):
        v, r = _assessed(k)
        written.append((chain, evidence.write_package_files(env["ev"], v, r, chain_id=chain, key=env["key"],
                                                            sync="behind", batch=batch)))
    assert _locked_elsewhere(env["ev"] / "chain-p0.jsonl") and _locked_elsewhere(env["ev"] / "chain-p1.jsonl")
    batch.flush()
    assert not _locked_elsewhere(env["ev"] / "chain-p0.jsonl")
    for chain, w in written:
        assert [(p, (w.path / p).read_bytes()) for p, _ in w.files] == w.files
        assert _file_lines(env, chain)[w.line_no - 1].encode() == w.chain_line
    for chain in ("p0", "p1"):
        last = [w for c, w in written if c == chain][-1]
        assert (env["ev"] / f"chain-{chain}.head.json").read_bytes() == last.head
        assert last.head_count == last.line_no == len(_file_lines(env, chain))
    assert [orjson.loads(ln)["seq"] for ln in _file_lines(env, "p0")] == [1, 2, 3]
    v, r = _assessed(9)
    write_package(env["ev"], v, r, chain_id="p0", key=env["key"], sync="behind")
    assert [orjson.loads(ln)["seq"] for ln in _file_lines(env, "p0")] == [1, 2, 3, 4]
    assert verify_tree(env["ev"], env["data"] / "keys" / "trusted") == {}


def test_a_failed_package_write_ends_the_batch_and_the_retry_completes_the_chain(env, writer):
    """When a package of the batch cannot be written, none after it is (a link must never follow a missing
    one), ``flush`` raises, the chain is released and its remembered tail dropped: the repeated batch finds
    the packages written before, writes the rest, and the chain verifies."""
    items = [_assessed(k) for k in range(3)]
    blocker = env["ev"] / f".{items[1][0]['case_id']}.tmp-{os.getpid()}"
    env["ev"].mkdir(parents=True)
    blocker.write_bytes(b"")                 # the second package's temporary folder cannot be made
    batch = evidence.PackageBatch()
    for v, r in items:
        evidence.write_package_files(env["ev"], v, r, chain_id="p0", key=env["key"], sync="behind", batch=batch)
    with pytest.raises(OSError):
        batch.flush()
    assert [evidence.is_package(env["ev"] / v["case_id"]) for v, _ in items] == [True, False, False]
    assert len(_file_lines(env)) == 1 and not _locked_elsewhere(env["ev"] / "chain-p0.jsonl")
    blocker.unlink()
    again = [evidence.write_package_files(env["ev"], v, r, chain_id="p0", key=env["key"], sync="behind",
                                          batch=batch) for v, r in items]
    batch.flush()
    assert [w.files == [] for w in again] == [True, False, False]      # the first one existed
    assert [orjson.loads(ln)["case_id"] for ln in _file_lines(env)] == [v["case_id"] for v, _ in items]
    assert verify_tree(env["ev"], env["data"] / "keys" / "trusted") == {}


def test_a_conflict_within_a_batch_reaches_the_case_written_in_it(env):
    """The first reading opens a case (its package written on the batch's thread); the same reading re-sent
    with other values in the same batch is a conflict, whose fact goes on that case's chain at once: the
    batch's packages are flushed and its chains released first (else the entry would wait for a lock its own
    process holds)."""
    import threading
    cfg = Config()
    store = CaseStore(env["conn"], cfg, evidence_dir=env["ev"], data_dir=env["data"])
    first, again = reading(60000, ts=T0), reading(45000, ts=T0)
    out = []

    def run():
        with env["conn"].transaction(), store.package_batch():
            for r in (first, again):
                v = assess(r, registry(), cfg, counters=ArchiveCounters(env["conn"]), passages=store,
                           track=ArchiveTracks(env["conn"]), driver=ArchiveDrivers(env["conn"]))
                store.record(v, reading=r, chain_id="p0")
                out.append(v)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the batch waited for its own chain lock"
    assert out[1]["conflict"]["first"]["case_id"] == out[0]["case_id"]
    kinds = [orjson.loads(ln)["kind"] for ln in _file_lines(env)]
    assert kinds == ["package", "entry"]
    assert verify_tree(env["ev"], env["data"] / "keys" / "trusted") == {}


def _passage_verdicts(conn) -> list[tuple]:
    """(own text, reading_key, full text) of every stored passage by time: the join migration 14 documents."""
    return [tuple(r) for r in conn.execute(
        """SELECT v.verdict, v.reading_key, COALESCE(r.verdict, v.verdict) FROM wim_verdicts v
           LEFT JOIN wim_readings r ON r.reading_key = v.reading_key ORDER BY v.ts""")]


def test_a_passages_verdict_is_kept_once_with_the_reading_that_gave_it(env):
    """The verdict's JSON (3 KB, a log page of its own) is stored with the reading that gave it; the passage's
    row refers to that reading. A verdict recorded without a reading keeps its text in the passage's row."""
    cfg = Config()
    rs = [_reading(k) for k in range(3)] + [reading(30000, ts=T0 + timedelta(hours=2))]
    vs = [_step(env, r) for r in rs]
    texts = [orjson.dumps(v).decode() for v in vs]          # what ``record`` stored (before any later step)
    _step(env, rs[0])                                       # a replay: nothing new
    dup = _step(env, reading(60000, ts=T0 + timedelta(minutes=1)))      # same passage as rs[0]
    assert dup["duplicate_of"] == vs[0]["passage_id"]
    alone = assess(reading(61000, ts=T0 + timedelta(hours=5)), registry(), cfg, counters=MemoryCounters())
    CaseStore(env["conn"], cfg).record(alone)               # no reading: the text stays with the passage
    got = _passage_verdicts(env["conn"])
    assert [full for _, _, full in got] == texts + [orjson.dumps(alone).decode()]
    assert [own for own, _, _ in got] == [""] * 4 + [orjson.dumps(alone).decode()]
    keys = [k for _, k, _ in got]
    assert keys[-1] is None and len(set(keys[:4])) == 4
    # each text once: the readings hold the four passages' and the duplicate's, nothing else
    stored = [r[0] for r in env["conn"].execute("SELECT verdict FROM wim_readings")]
    assert sorted(stored) == sorted(texts + [orjson.dumps(dup).decode()])


def _with_id(r, reading_id: str):
    from roadwatch.models.records import parse_wim_reading
    return parse_wim_reading({**orjson.loads(orjson.dumps(r.asdict())), "reading_id": reading_id})


@pytest.mark.parametrize("fetched", ["all", "all but the first"])
def test_a_batch_stores_what_one_reading_at_a_time_stores(tmp_path, archive_target, monkeypatch, fetched):
    """A batch fetches the passages and readings its readings could meet in two statements at its start and
    inserts its own passages, readings and verdicts together at its end (streams/cases.py ``_BatchRows``).
    Its readings meet readings stored before it (the same passage again, a replay, other values: within the
    de-duplication window and just outside it) and each other (the same again, of a compliant passage and of
    a case, and one reading id with another plate): the verdicts and rows are those of one reading per
    transaction on SQLite, also when the batch runs on PostgreSQL, and when a reading was not among those the
    batch fetched for (its look-ups then ask the archive)."""
    from test_overload_helpers import PLATE
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    other = "豫A22222"
    reg = registry()
    reg.vehicles[other] = reg.vehicles[PLATE].__class__(**{**reg.vehicles[PLATE].asdict(), "plate": other})
    t1 = T0 + timedelta(hours=1)
    before = [reading(60000, ts=T0), reading(30000, plate=other, ts=T0),          # a case; compliant
              _with_id(reading(30000, ts=T0 + timedelta(minutes=5)), "R1"),
              reading(30000, plate="豫A44444", ts=T0 + timedelta(minutes=10)),        # two passages 200 s apart
              reading(30000, plate="豫A44444", ts=T0 + timedelta(minutes=10, seconds=200)),
              reading(45000, plate=other, ts=T0)]                                   # a conflict
    rs = [reading(30000, plate="豫A44444", ts=T0 + timedelta(minutes=10, seconds=110)),   # in both windows
          reading(45000, plate=other, ts=T0),                                     # the conflict re-sent
          reading(61000, ts=T0 + timedelta(seconds=90)),                          # T0's passage again
          reading(60000, ts=T0),                                                  # T0's case re-sent
          reading(44000, plate=other, ts=T0),                                     # other values
          _with_id(reading(30000, plate="豫A33333", ts=T0 + timedelta(minutes=5)), "R1"),   # its id, other plate
          reading(30000, plate=other, ts=T0 + timedelta(seconds=121)),            # just outside the window
          reading(60000, ts=t1),                                                  # a case
          reading(30000, plate=other, ts=t1 + timedelta(minutes=1)),              # compliant
          reading(61000, ts=t1 + timedelta(seconds=30)),                          # the same passage again
          reading(30000, plate=other, ts=t1 + timedelta(minutes=1)),              # re-sent as it was
          reading(31000, plate=other, ts=t1 + timedelta(minutes=1)),              # re-sent with other values
          reading(45000, ts=t1),                                                  # the case's, other values
          reading(62000, plate=other, ts=t1 + timedelta(minutes=20)),             # a second case
          _with_id(reading(30000, ts=t1 + timedelta(minutes=40)), "R9"),          # an id, then the same id
          _with_id(reading(30000, plate="豫A33333", ts=t1 + timedelta(minutes=40)), "R9")]  # another plate
    cfg = Config()

    def run(target, root, batched: bool):
        conn = open_archive(target)
        store = CaseStore(conn, cfg, evidence_dir=root / "evidence", data_dir=root)
        out = []

        def one(r):
            v = assess(r, reg, cfg, counters=ArchiveCounters(conn), track=ArchiveTracks(conn),
                       driver=ArchiveDrivers(conn), passages=store)
            store.record(v, reading=r, chain_id="p0")
            out.append(v)
        for r in before:
            one(r)
        if batched:
            with conn.transaction(), store.package_batch():
                store.fetch_batch(rs if fetched == "all" else rs[1:])
                for r in rs:
                    one(r)
        else:
            for r in rs:
                one(r)
        tables = {t: conn.execute(f"SELECT {cols} FROM {t} ORDER BY 1").fetchall() for t, cols in (
            ("wim_passages", "*"), ("wim_verdicts", "*"),
            ("wim_readings", "reading_key, identity, passage_id, reading, verdict, conflict_of"),
            ("cases", "case_id, plate, action, status"), ("case_acts", "case_id, seq, action"))}
        return out, {t: [tuple(r) for r in rows] for t, rows in tables.items()}

    one_by_one, rows = run(tmp_path / "one-by-one.sqlite", tmp_path / "a", False)
    in_batch, batch_rows = run(archive_target, tmp_path / "b", True)
    assert [i for i, v in enumerate(one_by_one) if v["action"] == "fine"] == [0, 9, 13, 19]  # 9: a replay
    assert [i for i, v in enumerate(one_by_one) if v.get("duplicate_of")] == [6, 8, 15]
    assert one_by_one[6]["duplicate_of"] == one_by_one[4]["passage_id"]        # the nearer of the two passages
    assert [i for i, v in enumerate(one_by_one) if v.get("conflict")] == [5, 7, 10, 11, 17, 18, 21]
    assert [len(rows[t]) for t in ("wim_passages", "wim_verdicts", "wim_readings", "cases")] == [12, 10, 19, 3]
    assert in_batch == one_by_one
    assert batch_rows == rows
    # every passage's row refers to the reading whose verdict it is, kept in the same batch
    readings = {r[0]: r for r in rows["wim_readings"]}
    assert all(v[-2] == "" and readings[v[-1]][2] == v[0] for v in rows["wim_verdicts"])
    close_all()
