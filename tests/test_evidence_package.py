"""Evidence packages: contents, idempotence, keys, and tamper detection (flip one byte anywhere)."""
import hashlib
import os
import stat
from datetime import timedelta

import orjson
import pytest

from roadwatch.models.config import Config
from roadwatch.models.evidence import (EvidenceError, NotAPackage, load_signing_key, verify_package, verify_tree,
                             write_package)
from roadwatch.models.overload import MemoryCounters, MemoryTracks, assess
from roadwatch.streams.cli import main as cli_main
from test_overload_helpers import PLATE, T0, ms, reading, registry

IMG = b"\xff\xd8\xff\xe0 fake jpeg bytes for the front camera \xff\xd9"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    data = tmp_path / "var"
    key = load_signing_key(data, env={})
    img = tmp_path / "front.jpg"
    img.write_bytes(IMG)
    return {"data": data, "key": key, "ev": data / "evidence", "trusted": data / "keys" / "trusted", "img": img}


def make_case(env, gross=60000, ts=T0, chain="p0", images=None):
    reg = registry()
    if images is None:
        images = [{"kind": "front", "uri": str(env["img"]), "sha256": hashlib.sha256(IMG).hexdigest()},
                  {"kind": "side", "uri": "https://cam.example/s1/side.jpg", "sha256": "ab" * 32}]
    r = reading(gross, ts=ts, images=images)
    tr = MemoryTracks()
    for i in range(20):
        tr.add(PLATE, ms(ts - timedelta(hours=2) + timedelta(minutes=i)), 34.61, 113.51, 0.0)
    tr.add_stop(PLATE, ms(ts - timedelta(hours=2)), ms(ts - timedelta(hours=2) + timedelta(minutes=19)), 34.61, 113.51)
    v = assess(r, reg, Config(), counters=MemoryCounters(), track=tr)
    return write_package(env["ev"], v, r, chain_id=chain, key=env["key"], sync="each"), v


def test_package_contents(env):
    pkg, v = make_case(env)
    m = orjson.loads((pkg / "manifest.json").read_bytes())
    assert m["case_id"] == v["case_id"] == pkg.name
    assert m["site"]["certificate_no"] == "JD-2024-001" and m["site"]["accuracy_class"] == "5"
    assert m["limit"]["limit_kg"] == 49000 and "第三条" in m["limit"]["basis"]
    assert m["excess"] == {"kg": 11000.0, "pct": round(11000 / 49000 * 100, 2), "over_limit": True}
    assert m["penalties"]["road_administration"]["fine_yuan"] == 5500
    assert m["targets"]["vehicle"]["owner"] == "王五"
    assert m["targets"]["enterprise"]["vehicle_transport_cert_no"] == "豫410100123456"
    assert m["targets"]["source_site"]["site_id"] == "Q1"
    held = {a["kind"]: a for a in m["artefacts"]}
    assert held["front"]["held"] and (pkg / held["front"]["path"]).read_bytes() == IMG
    assert held["front"]["sha256"] == hashlib.sha256(IMG).hexdigest()
    assert held["side"]["held"] is False and held["side"]["sha256"] == "ab" * 32
    assert held["track"]["path"] == "track.geojson" and held["reading"]["path"] == "reading.json"
    for a in m["artefacts"]:
        if a["held"]:
            assert hashlib.sha256((pkg / a["path"]).read_bytes()).hexdigest() == a["sha256"]
    assert m["chain"] == {"chain_id": "p0", "seq": 1, "prev_manifest_sha256": None}
    assert m["signing"]["key_id"] == env["key"].key_id
    assert verify_package(pkg, env["trusted"]) == []


def test_file_uri_and_hash_mismatch(env):
    uri = "file://" + str(env["img"])
    wrong = [{"kind": "front", "uri": str(env["img"]), "sha256": "00" * 32}]
    pkg, _ = make_case(env, images=[{"kind": "front", "uri": uri, "sha256": hashlib.sha256(IMG).hexdigest()}])
    assert orjson.loads((pkg / "manifest.json").read_bytes())["artefacts"][1]["held"] is True
    pkg2, _ = make_case(env, ts=T0 + timedelta(hours=1), images=wrong)
    a = orjson.loads((pkg2 / "manifest.json").read_bytes())["artefacts"][1]
    assert a["held"] is False and a["actual_sha256"] == hashlib.sha256(IMG).hexdigest()
    assert not (pkg2 / "images").exists()


def test_idempotent_and_chained(env):
    pkg, v = make_case(env)
    before = (pkg / "manifest.json").read_bytes()
    pkg_again, _ = make_case(env)
    assert pkg_again == pkg and (pkg / "manifest.json").read_bytes() == before
    chain = env["ev"] / "chain-p0.jsonl"
    assert len(chain.read_bytes().splitlines()) == 1
    pkg2, _ = make_case(env, ts=T0 + timedelta(hours=1))
    m2 = orjson.loads((pkg2 / "manifest.json").read_bytes())
    assert m2["chain"]["seq"] == 2 and m2["chain"]["prev_manifest_sha256"] == hashlib.sha256(before).hexdigest()
    pkg3, _ = make_case(env, ts=T0 + timedelta(hours=2), chain="p1")   # another chain starts at 1
    assert orjson.loads((pkg3 / "manifest.json").read_bytes())["chain"]["seq"] == 1
    assert verify_tree(env["ev"], env["trusted"]) == {}


def flip(path, offset=None):
    b = bytearray(path.read_bytes())
    i = len(b) // 2 if offset is None else offset
    b[i] ^= 0x01
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("target,expect", [
    ("reading.json", "artefact reading.json: altered"),
    ("images/00-front.jpg", "artefact images/00-front.jpg: altered"),
    ("track.geojson", "artefact track.geojson: altered"),
    ("manifest.json", "manifest.json: altered"),
    ("manifest.sig", "manifest.sig:"),
])
def test_flipping_one_byte_is_named(env, target, expect):
    pkg, _ = make_case(env)
    assert (pkg / target).exists()
    flip(pkg / target)
    problems = verify_package(pkg, env["trusted"])
    assert any(p.startswith(expect) for p in problems), problems
    if target not in ("manifest.json", "manifest.sig"):
        assert not any(p.startswith("manifest") for p in problems), problems


def test_every_single_byte_of_the_signature_file_matters(env):
    pkg, _ = make_case(env)
    sig = pkg / "manifest.sig"
    original = sig.read_bytes()
    for i in range(len(original)):
        if original[i:i + 1] in (b" ", b"\n"):
            continue                          # JSON whitespace carries no meaning
        flip(sig, i)
        assert verify_package(pkg, env["trusted"]), f"byte {i} of manifest.sig flipped undetected"
        sig.write_bytes(original)


def test_chain_link_tamper_is_named(env):
    make_case(env)
    pkg2, _ = make_case(env, ts=T0 + timedelta(hours=1))
    chain = env["ev"] / "chain-p0.jsonl"
    lines = chain.read_bytes().splitlines(keepends=True)
    for i, line in enumerate(lines):
        for off in (5, len(line) // 2, len(line) - 3):
            tampered = bytearray(line)
            tampered[off] ^= 0x01
            chain.write_bytes(b"".join(lines[:i] + [bytes(tampered)] + lines[i + 1:]))
            probs = verify_tree(env["ev"], env["trusted"])
            assert any("chain-p0.jsonl" in p for ps in probs.values() for p in ps), (i, off, probs)
    chain.write_bytes(lines[1])                      # first link removed
    probs = verify_tree(env["ev"], env["trusted"])
    assert any("seq 2 where 1 was expected" in p for p in probs["chain-p0.jsonl"])


def test_replaced_manifest_with_valid_json_is_caught(env):
    pkg, _ = make_case(env)
    m = orjson.loads((pkg / "manifest.json").read_bytes())
    m["decision"]["fine_yuan"] = 1
    (pkg / "manifest.json").write_bytes(orjson.dumps(m, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    probs = verify_package(pkg, env["trusted"])
    assert any(p.startswith("manifest.json: altered (sha256") for p in probs)
    assert any(p.startswith("manifest.sig: signature does not verify") for p in probs)


def test_extra_or_missing_files_and_untrusted_key(env, tmp_path):
    pkg, _ = make_case(env)
    (pkg / "note.txt").write_text("x")
    assert "file note.txt: not listed in the manifest" in verify_package(pkg, env["trusted"])
    (pkg / "note.txt").unlink()
    (pkg / "track.geojson").unlink()
    assert "artefact track.geojson: missing" in verify_package(pkg, env["trusted"])
    other = tmp_path / "other-trusted"
    other.mkdir()
    assert any("not in the trusted keys" in p for p in verify_package(pkg, other))


def test_not_a_package(env, tmp_path):
    with pytest.raises(NotAPackage):
        verify_package(tmp_path, env["trusted"])
    with pytest.raises(NotAPackage):
        verify_tree(tmp_path, env["trusted"])


def test_key_file_mode_reuse_and_env(env, tmp_path):
    keyfile = env["data"] / "keys" / "evidence-ed25519.pem"
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    assert load_signing_key(env["data"], env={}).key_id == env["key"].key_id
    raw = env["key"].private.public_key().public_bytes_raw()
    assert env["key"].key_id == hashlib.sha256(raw).hexdigest()
    assert (env["trusted"] / f"{env['key'].key_id}.pub").exists()
    with pytest.raises(EvidenceError):
        load_signing_key(tmp_path / "d2", env={"ROADWATCH_SIGNING_KEY_FILE": str(tmp_path / "nope.pem")})
    k2 = load_signing_key(tmp_path / "d2", env={"ROADWATCH_SIGNING_KEY_FILE": str(keyfile)})
    assert k2.key_id == env["key"].key_id


def test_rotated_key_keeps_old_packages_verifiable(env, tmp_path):
    old_pkg, _ = make_case(env)
    (env["data"] / "keys" / "evidence-ed25519.pem").rename(tmp_path / "retired.pem")
    env["key"] = load_signing_key(env["data"], env={})
    new_pkg, _ = make_case(env, ts=T0 + timedelta(hours=1))
    assert verify_tree(env["ev"], env["trusted"]) == {}
    ids = {orjson.loads((p / "manifest.sig").read_bytes())["key_id"] for p in (old_pkg, new_pkg)}
    assert len(ids) == 2


def test_cli_exit_codes(env, tmp_path, capsys):
    pkg, _ = make_case(env)
    keys = ["--keys", str(env["trusted"])]
    assert cli_main(["evidence", "verify", str(pkg), *keys]) == 0
    assert cli_main(["evidence", "verify", str(env["ev"]), *keys]) == 0
    assert cli_main(["evidence", "verify", str(tmp_path / "nothing"), *keys]) == 2
    flip(pkg / "reading.json")
    capsys.readouterr()
    assert cli_main(["evidence", "verify", str(pkg), *keys]) == 1
    assert "artefact reading.json: altered" in capsys.readouterr().out
