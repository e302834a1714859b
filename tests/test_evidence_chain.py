"""Evidence bound to its case and its place in the chain (issue 13 item 2) and later facts as signed chain
entries (issue 12 item 2): each attack of issue 13's "Evidence can be swapped…" list is reproduced and must be
reported by ``roadwatch evidence verify``; an amended chain verifies and an altered entry is named."""
import io
import os
import shutil
import sys

import orjson
import pytest

from roadwatch.models.evidence import _link_hash
from roadwatch.streams.archive import close_all
from roadwatch.streams.cli import main

from test_case_escalations import day, wim
import officers
from test_overload_helpers import registry_dict, vehicle

PLATE = "豫A11111"


@pytest.fixture
def tree(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{tmp_path / "var"}"')
    monkeypatch.delenv("ROADWATCH_CONFIG", raising=False)
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    (tmp_path / "registry.json").write_bytes(orjson.dumps(registry_dict(vehicles=[vehicle(PLATE)])))
    stdin = b"".join(orjson.dumps(wim(PLATE, day(3, d))) + b"\n" for d in (1, 2, 3))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    arch = tmp_path / "archive.sqlite"
    ev = tmp_path / "var" / "evidence"
    assert main(["assess", "wim", "--registry", str(tmp_path / "registry.json"), "--archive", str(arch),
                 "--evidence-dir", str(ev)]) == 0
    officers.enrol(monkeypatch, arch, "op")
    cases = [orjson.loads(x)["case_id"] for x in capsys.readouterr().out.splitlines()]
    # later facts on the first case: each act becomes a signed entry on the same chain
    for action, at in (("confirm", "2025-03-05"), ("file", "2025-03-06")):
        assert main(["case", "act", cases[0], action, "--archive", str(arch), "--by", "op", "--at", at]) == 0
    capsys.readouterr()
    yield {"ev": ev, "cases": cases, "arch": arch, "keys": tmp_path / "var" / "keys" / "trusted"}
    close_all()


def verify(capsys, path, *extra) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["evidence", "verify", str(path), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_amended_chain_verifies_and_entries_are_linked(tree, capsys):
    ev, c = tree["ev"], tree["cases"]
    code, out = verify(capsys, ev)
    assert code == 0, out
    entries = sorted(p.name for p in (ev / c[0] / "entries").iterdir())
    assert entries == ["0001-act.json", "0001-act.sig", "0002-act.json", "0002-act.sig"]
    links = [orjson.loads(x) for x in (ev / "chain-cli.jsonl").read_bytes().splitlines()]
    assert [(ln["kind"], ln["case_id"]) for ln in links] == [("package", c[0]), ("package", c[1]),
                                                             ("package", c[2]), ("entry", c[0]), ("entry", c[0])]
    head = orjson.loads((ev / "chain-cli.head.json").read_bytes())["head"]
    assert head["count"] == 5 and head["last_link_sha256"] == links[-1]["link_sha256"]
    fact = orjson.loads((ev / c[0] / "entries" / "0002-act.json").read_bytes())["fact"]
    assert (fact["act"], fact["at"][:10], fact["by"]) == ("file", "2025-03-06", "op")
    # replaying an act writes no second entry
    assert main(["case", "act", c[0], "file", "--archive", str(tree["arch"]), "--by", "op"]) == 0
    assert len(list((ev / c[0] / "entries").glob("*.json"))) == 2


def test_altered_entry_is_named(tree, capsys):
    f = tree["ev"] / tree["cases"][0] / "entries" / "0002-act.json"
    f.write_bytes(f.read_bytes().replace(b'"op"', b'"xx"'))
    code, out = verify(capsys, tree["ev"])
    assert code == 1 and "entries/0002-act.json: altered" in out and "signature does not verify" in out


def test_package_copied_over_another_case(tree, capsys):
    ev, c = tree["ev"], tree["cases"]
    shutil.rmtree(ev / c[1])
    shutil.copytree(ev / c[0], ev / c[1])
    code, out = verify(capsys, ev)
    assert code == 1 and f"{c[1]}: manifest.json: belongs to case {c[0]}, not to directory {c[1]}" in out


def test_two_packages_swapped(tree, capsys):
    ev, c = tree["ev"], tree["cases"]
    os.rename(ev / c[1], ev / "tmp")
    os.rename(ev / c[2], ev / c[1])
    os.rename(ev / "tmp", ev / c[2])
    code, out = verify(capsys, ev)
    assert code == 1
    assert f"belongs to case {c[2]}, not to directory {c[1]}" in out
    assert f"belongs to case {c[1]}, not to directory {c[2]}" in out


def test_package_copied_under_a_new_id(tree, capsys):
    ev, c = tree["ev"], tree["cases"]
    shutil.copytree(ev / c[2], ev / "C0000000000000000000FAKE")
    code, out = verify(capsys, ev)
    assert code == 1 and f"belongs to case {c[2]}, not to directory C0000000000000000000FAKE" in out


def test_last_package_and_last_chain_line_deleted(tree, capsys):
    ev, c = tree["ev"], tree["cases"]
    # drop the first case's entries (the chain's tail) and the last package with their links: a chain that
    # is consistent in itself, but shorter than the signed head says
    chain = ev / "chain-cli.jsonl"
    lines = chain.read_bytes().splitlines()
    chain.write_bytes(b"\n".join(lines[:2]) + b"\n")
    shutil.rmtree(ev / c[2])
    shutil.rmtree(ev / c[0] / "entries")
    code, out = verify(capsys, ev)
    assert code == 1 and "2 link(s) but the signed head counts 5" in out


def test_replayed_package_link(tree, capsys):
    ev, c = tree["ev"], tree["cases"]
    chain = ev / "chain-cli.jsonl"
    links = [orjson.loads(x) for x in chain.read_bytes().splitlines()]
    replay = dict(links[1], seq=len(links) + 1, prev_manifest_sha256=links[-1]["manifest_sha256"],
                  prev_link_sha256=links[-1]["link_sha256"])
    replay["link_sha256"] = _link_hash(replay)          # the attacker can recompute an unkeyed hash
    chain.write_bytes(chain.read_bytes() + orjson.dumps(replay, option=orjson.OPT_SORT_KEYS) + b"\n")
    code, out = verify(capsys, ev)
    assert code == 1 and f"package {c[1]} already linked at line 2 (replayed)" in out
    assert "6 link(s) but the signed head counts 5" in out


def test_signed_head_missing_or_forged(tree, capsys):
    ev = tree["ev"]
    head = ev / "chain-cli.head.json"
    doc = orjson.loads(head.read_bytes())
    doc["head"]["count"] = 99
    head.write_bytes(orjson.dumps(doc))
    code, out = verify(capsys, ev)
    assert code == 1 and "head: signature does not verify" in out
    head.unlink()
    code, out = verify(capsys, ev)
    assert code == 1 and "signed head chain-cli.head.json missing" in out


def test_group_or_world_writable_key_folder_is_refused(tree, capsys, tmp_path):
    keys = tree["keys"]
    assert verify(capsys, tree["ev"])[0] == 0
    os.chmod(keys, 0o777)
    code, out = verify(capsys, tree["ev"])
    assert code == 2 and "group- or world-writable" in out
    os.chmod(keys, 0o755)
    # an explicit --keys folder is checked the same way
    other = tmp_path / "copied-keys"
    shutil.copytree(keys, other)
    os.chmod(other, 0o775)
    assert verify(capsys, tree["ev"], "--keys", str(other))[0] == 2
    os.chmod(other, 0o755)
    assert verify(capsys, tree["ev"], "--keys", str(other))[0] == 0
    # a key file others could replace is not trusted
    for f in other.iterdir():
        os.chmod(f, 0o666)
    code, out = verify(capsys, tree["ev"], "--keys", str(other))
    assert code == 1 and "is not in the trusted keys" in out
