"""Evidence packages in the archive: every file of a case's signed package (manifest, signature, reading,
images, track, later chain entries and documents), content-addressed by SHA-256.

``evidence_blobs`` holds each distinct content once; ``case_evidence_files`` names which file of which case
has which content. Both are insert-or-ignore and never updated: a package file is never rewritten
(models/evidence.py appends entries as new files), so a path once stored keeps its content. The case's
folder (``<data_dir>/evidence/<case_id>``) is where the worker writes and chains the package; the archive
copy lets a worker or console on another host show the same bytes (``streams/cases.py`` materialises it).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterable

import orjson

from .backend import ArchiveConnection


def store_package_files(conn: ArchiveConnection, case_id: str, files: Iterable[tuple[str, bytes]],
                        stored_at: str, *, new_case: bool = False) -> int:
    """Store the case's files ``(relative path, bytes)``; a path already stored is kept. Returns how many
    paths were new. ``new_case``: the case was created in the caller's transaction, so none of its files is
    stored yet (the look-up is spared: one statement less per case on the WIM path)."""
    files = list(files)
    known = set() if new_case else {p for p, _ in package_files(conn, case_id)}
    new = [(p, b, hashlib.sha256(b).hexdigest()) for p, b in files if p not in known]
    if not new:
        return 0
    with conn.transaction():
        conn.executemany("INSERT INTO evidence_blobs (sha256, size, data) VALUES (?,?,?) ON CONFLICT DO NOTHING",
                         [(sha, len(data), data) for _, data, sha in new])
        conn.executemany("INSERT INTO case_evidence_files (case_id, path, sha256, stored_at) VALUES (?,?,?,?) "
                         "ON CONFLICT DO NOTHING", [(case_id, path, sha, stored_at) for path, _, sha in new])
    return len(new)


def package_files(conn: ArchiveConnection, case_id: str) -> list[tuple[str, str]]:
    """(relative path, sha256) of every stored file of the case, by path."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT path, sha256 FROM case_evidence_files WHERE case_id = ? ORDER BY path", (case_id,))]


def blob(conn: ArchiveConnection, sha256: str) -> bytes | None:
    r = conn.execute("SELECT data FROM evidence_blobs WHERE sha256 = ?", (sha256,)).fetchone()
    return bytes(r[0]) if r else None


# --- the hash chains ------------------------------------------------------------------------------------------
# A chain is one writer's chain file (``chain-<chain_id>.jsonl`` in its evidence folder). Two hosts may both
# write a chain with the same id (a partition moves), so a chain is named by its id and its root: the
# ``link_sha256`` of its first link.


def store_chain(conn: ArchiveConnection, chain_id: str, lines: list[bytes], head: bytes | None,
                head_count: int | None) -> int:
    """Store a chain file's lines (in file order; seq = line number) not yet stored, and its signed head when
    it counts at least as many links as the stored one and no more than are stored. Returns how many lines
    were new."""
    if not lines:
        return 0
    try:
        root = orjson.loads(lines[0])["link_sha256"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return 0                                  # an unreadable first line: nothing to name the chain by
    with conn.transaction():
        have = _stored_count(conn, chain_id, root)
        new = [(chain_id, root, i + 1, ln.decode("utf-8", "replace")) for i, ln in enumerate(lines) if i >= have]
        if new:
            conn.executemany("INSERT INTO evidence_chain_links (chain_id, root, seq, link) VALUES (?,?,?,?) "
                             "ON CONFLICT DO NOTHING", new)
        if head is not None and head_count is not None and head_count <= max(have, len(lines)):
            _store_head(conn, chain_id, root, head_count, head)
    return len(new)


def _stored_count(conn: ArchiveConnection, chain_id: str, root: str) -> int:
    """How many of a chain's lines are stored. They are lines 1..n, each store appending the next ones in
    order, so n is the highest ``seq``: one look into the primary key. (``COUNT(*)`` read every stored link
    of the chain, once per package: a chain grows all year.)"""
    return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM evidence_chain_links WHERE chain_id = ? AND root = ?",
                        (chain_id, root)).fetchone()[0]


def _store_head(conn: ArchiveConnection, chain_id: str, root: str, count: int, head: bytes) -> None:
    """The chain's signed head, unless the stored one counts more links (heads only move forward)."""
    conn.execute("INSERT INTO evidence_chain_heads (chain_id, root, count, head) VALUES (?,?,?,?) "
                 "ON CONFLICT (chain_id, root) DO UPDATE SET count = excluded.count, head = excluded.head "
                 "WHERE excluded.count >= evidence_chain_heads.count", (chain_id, root, count, head.decode("utf-8")))


def store_chain_link(conn: ArchiveConnection, chain_id: str, root: str, line_no: int, line: bytes,
                     head: bytes | None, head_count: int | None) -> bool:
    """Store the chain line just appended (``line_no`` in its file) and the head signed with it, when the
    archive holds exactly the lines before it; False, storing nothing, otherwise (the caller stores the chain
    file then: ``store_chain``). Spares reading the whole chain file for every new package."""
    with conn.transaction():
        have = _stored_count(conn, chain_id, root)
        if have != line_no - 1:
            return False
        conn.execute("INSERT INTO evidence_chain_links (chain_id, root, seq, link) VALUES (?,?,?,?) "
                     "ON CONFLICT DO NOTHING", (chain_id, root, line_no, line.decode("utf-8", "replace")))
        if head is not None and head_count is not None and head_count <= line_no:
            _store_head(conn, chain_id, root, head_count, head)
    return True


def chains(conn: ArchiveConnection) -> list[tuple[str, str]]:
    """(chain_id, root) of every stored chain."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT DISTINCT chain_id, root FROM evidence_chain_links ORDER BY chain_id, root")]


def chain_lines(conn: ArchiveConnection, chain_id: str, root: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT link FROM evidence_chain_links WHERE chain_id = ? AND root = ? "
                                       "ORDER BY seq", (chain_id, root))]


def chain_head(conn: ArchiveConnection, chain_id: str, root: str) -> str | None:
    r = conn.execute("SELECT head FROM evidence_chain_heads WHERE chain_id = ? AND root = ?",
                     (chain_id, root)).fetchone()
    return r[0] if r else None


# --- copies out of the archive --------------------------------------------------------------------------------


def materialise(conn: ArchiveConnection, case_id: str, dest: Path) -> bool:
    """Write the case's stored package to ``dest`` (replaced as a whole, via a temporary sibling): False when
    the archive holds no file of it, or a stored content no longer matches its hash (nothing written)."""
    stored = package_files(conn, case_id)
    if not stored:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel, sha in stored:
            data = blob(conn, sha)
            if data is None or hashlib.sha256(data).hexdigest() != sha or ".." in Path(rel).parts:
                return False
            f = tmp / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def export_chains(conn: ArchiveConnection, out: Path) -> dict[str, int]:
    """Every stored chain as an evidence folder ``out/<chain_id>-<root[:12]>/`` — its chain file, signed head
    and the packages linked on it — which ``roadwatch evidence verify`` checks like the writer's own folder.
    Returns {folder: packages written}."""
    written = {}
    for chain_id, root in chains(conn):
        folder = out / f"{chain_id}-{root[:12]}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = chain_lines(conn, chain_id, root)
        (folder / f"chain-{chain_id}.jsonl").write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
        head = chain_head(conn, chain_id, root)
        if head is not None:
            (folder / f"chain-{chain_id}.head.json").write_text(head, encoding="utf-8")
        cases = []
        for ln in lines:
            try:
                cid = orjson.loads(ln).get("case_id")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(cid, str) and cid not in cases and "/" not in cid and cid not in (".", ".."):
                cases.append(cid)
        written[folder.name] = sum(materialise(conn, cid, folder / cid) for cid in cases)
    return written
