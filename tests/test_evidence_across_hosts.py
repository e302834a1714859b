"""Evidence across hosts (both backends): a case's signed package is stored in the archive with the case
(content-addressed, append-only) and its hash chain; a worker on another host that meets the same reading
again writes no second package; a console on another host shows the same bytes; ``roadwatch evidence export``
writes what the archive holds as folders that ``evidence verify`` checks like the writer's own."""
import shutil

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.evidence import verify_package, verify_tree
from roadwatch.models.overload import assess
from roadwatch.streams.archive import close_all, open_archive
from roadwatch.streams.archive import evidence as evidence_db
from roadwatch.streams.cases import ArchiveCounters, ArchiveDrivers, ArchiveTracks, CaseStore
from roadwatch.streams.cli import main
from test_overload_helpers import reading, registry


@pytest.fixture
def hosts(tmp_path, archive_target, monkeypatch):
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    yield tmp_path / "host-a", tmp_path / "host-b", archive_target
    close_all()


def record_on(host, conn, r) -> tuple[dict, bool]:
    """What the WIM worker on ``host`` does with reading ``r`` (streams/wim.py), on chain p0."""
    store = CaseStore(conn, Config(), evidence_dir=host / "evidence", data_dir=host)
    v = assess(r, registry(), Config(), counters=ArchiveCounters(conn), track=ArchiveTracks(conn),
               driver=ArchiveDrivers(conn), passages=store)
    return v, store.record(v, reading=r, chain_id="p0")


def test_second_host_writes_no_second_package_and_shows_the_first(hosts, tmp_path, capsys):
    host_a, host_b, target = hosts
    conn = open_archive(target)
    v, created = record_on(host_a, conn, reading(60000))
    case_id = v["case_id"]
    assert created and (host_a / "evidence" / case_id / "manifest.json").is_file()
    original = {p.relative_to(host_a / "evidence" / case_id).as_posix(): p.read_bytes()
                for p in (host_a / "evidence" / case_id).rglob("*") if p.is_file()}
    CaseStore(conn, Config(), data_dir=host_a).act(case_id, "review", "officer-a")        # a chain entry on A

    # A was killed after archiving the case, before its Kafka offset was committed: B meets the reading again
    _, created_b = record_on(host_b, conn, reading(60000))
    assert not created_b
    assert not (host_b / "evidence" / case_id).exists(), "a second package for a case the archive holds"
    assert CaseStore(conn, Config()).get(case_id)["evidence_path"] == str(host_a / "evidence" / case_id)

    # host A is gone (its disk with it); its public key was published to the deployment's trusted keys
    trusted = tmp_path / "trusted"
    shutil.copytree(host_a / "keys" / "trusted", trusted)
    shutil.move(host_a, tmp_path / "host-a-gone")
    shown = CaseStore(conn, Config(), data_dir=host_b).show(case_id)
    copy = host_b / "evidence-archive" / case_id
    assert [h["act"] for h in shown["history"]] == ["detect", "review"]
    for rel, data in original.items():
        assert (copy / rel).read_bytes() == data, rel                    # the very bytes A signed
    assert orjson.loads((copy / "manifest.json").read_bytes())["case_id"] == case_id
    assert (copy / "entries").is_dir() and len(list((copy / "entries").glob("*.json"))) == 1

    # the whole chain as A wrote it, from the archive: verifies like A's own folder did
    out = tmp_path / "export"
    assert main(["evidence", "export", str(out), "--archive", str(target)]) == 0
    (folder,) = [d for d in out.iterdir() if d.is_dir()]
    assert folder.name.startswith("p0-") and (folder / case_id / "manifest.json").is_file()
    assert verify_tree(folder, trusted) == {}
    assert verify_package(folder / case_id, trusted) == []
    # and an altered stored byte is found, not exported as evidence
    (folder / case_id / "reading.json").write_bytes(b"{}")
    assert any("reading.json" in p for p in verify_package(folder / case_id, trusted))
    with capsys.disabled():
        print(f"\n[evidence across hosts, {conn.backend}] case {case_id}: 1 package (A's), none written by B; "
              f"{len(original)} files + 1 entry shown on B from the archive; export verifies")


def test_archived_files_are_append_only_and_content_addressed(hosts):
    host_a, _, target = hosts
    conn = open_archive(target)
    files = [("manifest.json", b"{}"), ("images/0.jpg", b"same"), ("images/1.jpg", b"same")]
    assert evidence_db.store_package_files(conn, "C1", files, "t1") == 3
    assert evidence_db.store_package_files(conn, "C1", [("manifest.json", b"other")], "t2") == 0   # never rewritten
    assert evidence_db.blob(conn, dict(evidence_db.package_files(conn, "C1"))["manifest.json"]) == b"{}"
    assert conn.execute("SELECT COUNT(*) FROM evidence_blobs").fetchone()[0] == 2                 # one copy of "same"
    assert evidence_db.materialise(conn, "C1", host_a / "copy" / "C1")
    assert (host_a / "copy" / "C1" / "images" / "1.jpg").read_bytes() == b"same"
    assert not evidence_db.materialise(conn, "C2", host_a / "copy" / "C2")


def test_archive_copy_carries_the_evidence_onto_postgresql(tmp_path, pg_url):
    """A pilot's SQLite archive moved onto the production server (``archive copy``) keeps its evidence bytes."""
    src = tmp_path / "pilot.sqlite"
    conn = open_archive(src)
    data = bytes(range(256)) * 40
    evidence_db.store_package_files(conn, "C1", [("images/0.jpg", data), ("manifest.json", b"{}")], "t")
    evidence_db.store_chain(conn, "p0", [orjson.dumps({"seq": 1, "case_id": "C1", "link_sha256": "ab" * 32})],
                            None, None)
    close_all()
    assert main(["archive", "copy", "--from", f"sqlite:{src}", "--to", pg_url]) == 0
    dst = open_archive(pg_url)
    assert evidence_db.package_files(dst, "C1") == evidence_db.package_files(open_archive(src), "C1")
    assert evidence_db.materialise(dst, "C1", tmp_path / "copy" / "C1")
    assert (tmp_path / "copy" / "C1" / "images" / "0.jpg").read_bytes() == data
    assert evidence_db.chains(dst) == [("p0", "ab" * 32)]
    close_all()
