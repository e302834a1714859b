"""Evidence integrity at the CLI, and the signing key's secrecy.

Existing tests this complements: tests/test_evidence_package.py checks ``verify_package``/``verify_tree`` on a
one-byte change in each artefact, the manifest, every byte of the signature and chain links, replaced
manifests, extra/missing files, untrusted keys, key file mode 0600 and key rotation. Here the same faults go
through ``roadwatch evidence verify`` (exit code 1 + the altered item named; 0 when intact), and the private
key is searched for in a real worker run's output, in the evidence it signed and in the repository.
"""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from kafka import KafkaProducer

from roadwatch.models.config import load_config
from roadwatch.models.evidence import EvidenceError, load_signing_key
from roadwatch.models.records import Enterprise, Station, Vehicle
from roadwatch.models.registry import Registry
from roadwatch.simulators.fleet import full_approval
from roadwatch.streams import topics as T
from roadwatch.streams.archive import open_archive
from roadwatch.streams.broker import free_port
from roadwatch.streams.cli import main as cli_main
from roadwatch.streams.broker import kafka_bootstrap
from roadwatch.streams.runtime import Stack, WorkerProcess
from test_evidence_package import IMG, env, make_case  # noqa: F401 - env is a fixture
from test_overload_helpers import T0

ROOT = Path(__file__).resolve().parent.parent


# the `env` fixture (signing key, evidence dir, one image) is the evidence tests' own


def _offsets(data: bytes, json_like: bool) -> list[int]:
    """First, middle and last meaningful byte (JSON whitespace carries no meaning in a signature file)."""
    idx = [i for i in range(len(data)) if not (json_like and data[i:i + 1] in (b" ", b"\n"))]
    return sorted({idx[0], idx[len(idx) // 2], idx[-1]})


def _verify(path: Path, keys: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = cli_main(["evidence", "verify", str(path), "--keys", str(keys)])
    return rc, capsys.readouterr().out


def test_cli_verify_names_a_one_byte_change_in_any_item(env, capsys):
    pkg, _ = make_case(env)
    make_case(env, ts=T0 + timedelta(hours=1))                            # a second link in chain p0
    assert _verify(env["ev"], env["trusted"], capsys)[0] == 0
    targets = [p for p in sorted(pkg.rglob("*")) if p.is_file()] + [env["ev"] / "chain-p0.jsonl"]
    names = {p.relative_to(pkg).as_posix() if pkg in p.parents else p.name for p in targets}
    assert {"reading.json", "manifest.json", "manifest.sig", "track.geojson", "chain-p0.jsonl"} <= names
    assert any(n.startswith("images/") for n in names)
    tried = 0
    for f in targets:
        original = f.read_bytes()
        rel = f.relative_to(pkg).as_posix() if pkg in f.parents else f.name
        for off in _offsets(original, f.suffix in (".sig", ".jsonl")):
            b = bytearray(original)
            b[off] ^= 0x01
            f.write_bytes(bytes(b))
            rc, out = _verify(env["ev"], env["trusted"], capsys)
            assert rc == 1, (rel, off)
            assert rel.split("/")[-1] in out or (rel == "manifest.json" and "manifest" in out), (rel, off, out)
            tried += 1
        f.write_bytes(original)
    assert _verify(env["ev"], env["trusted"], capsys)[0] == 0         # restored: intact again
    assert tried >= 15
    print(f"\n[evidence cli] {tried} one-byte flips over {len(targets)} items, all detected")


def test_installed_entry_point_exit_codes(env, tmp_path):
    pkg, _ = make_case(env)
    exe = ROOT / ".venv" / "bin" / "roadwatch"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "roadwatch.streams.cli"]
    ok = subprocess.run(cmd + ["evidence", "verify", str(pkg), "--keys", str(env["trusted"])],
                        capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    (pkg / "reading.json").write_bytes((pkg / "reading.json").read_bytes().replace(b"6", b"7", 1))
    bad = subprocess.run(cmd + ["evidence", "verify", str(pkg), "--keys", str(env["trusted"])],
                         capture_output=True, timeout=60)
    assert bad.returncode == 1 and b"reading.json: altered" in bad.stdout
    none = subprocess.run(cmd + ["evidence", "verify", str(tmp_path / "nothing"), "--keys", str(env["trusted"])],
                          capture_output=True, timeout=60)
    assert none.returncode == 2


# --- the private key stays secret ---------------------------------------------------------------------------

def _secret_forms(pem_path: Path) -> list[bytes]:
    """The private key as it could leak: PEM body lines, raw bytes in hex and base64."""
    pem = pem_path.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    raw = key.private_bytes_raw()
    body = [ln for ln in pem.splitlines() if ln and not ln.startswith(b"-----")]
    return [raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw), base64.b64encode(raw)[:-1],
            base64.urlsafe_b64encode(raw).rstrip(b"=")] + [ln[:40] for ln in body if len(ln) >= 40] + \
        [b"".join(body)]


def test_unreadable_key_error_does_not_echo_the_key(tmp_path):
    bogus = tmp_path / "k.pem"
    marker = b"-----BEGIN " + b"PRIVATE KEY-----"       # split so this file holds no key marker itself
    secret = marker + b"\nTUlJU0VDUkVUX0tFWV9NQVRFUklBTF9ET19OT1RfTEVBSw==\n-----END PRIVATE KEY-----\n"
    bogus.write_bytes(secret)
    with pytest.raises(EvidenceError) as e:
        load_signing_key(tmp_path / "d", env={"ROADWATCH_SIGNING_KEY_FILE": str(bogus)})
    assert "TUlJU0VDUkVU" not in str(e.value)


def _feed_cases(st, cfg) -> None:
    p = KafkaProducer(bootstrap_servers=st.bootstrap)
    for i in range(3):
        r = {"station_id": "S1", "lane": 1, "ts": f"2026-11-10T10:0{i}:00+08:00", "plate": "苏A10001",
             "plate_color": 2, "plate_confidence": 0.98, "vehicle_kind": "truck", "axle_count": 2,
             "axle_loads_kg": [8000, 14000], "axle_spacings_m": [4.5], "gross_kg": 22000, "speed_kmh": 55,
             "device_id": "D1"}
        md = p.send(T.WIM_READINGS, key=b"x", value=orjson.dumps(r)).get(10)
        st.note_sent(md.topic, md.partition, md.offset)
    p.send(T.WIM_READINGS, key=b"x", value=b"garbage").get(10)
    p.close()
    assert st.wait_idle(60)
    conn = open_archive(cfg.archive_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0] < 1:
        time.sleep(0.2)
    assert conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0] >= 1   # the key was loaded and used


@pytest.mark.integration
def test_signing_key_never_appears_in_worker_output_or_evidence(tmp_path, monkeypatch):
    reg = Registry()
    reg.enterprises["E1"] = Enterprise(enterprise_id="E1", name="甲", goods_vehicles=2)
    reg.vehicles["苏A10001"] = Vehicle(plate="苏A10001", plate_color=2, category="普通货车", enterprise_id="E1",
                                      axle_count=2, registered_total_kg=18000.0)
    reg.stations["S1"] = Station(station_id="S1", name="站", lat=32.1, lon=118.8,
                                 devices=[{"device_id": "D1", "cert_no": "C1", "valid_from": "2020-01-01T00:00:00+08:00",
                                           "valid_to": "2099-01-01T00:00:00+08:00",
                                           "approval": full_approval("2020-01-01T00:00:00+08:00")}])
    reg_path = tmp_path / "registry.json"
    reg.dump(reg_path)
    data = tmp_path / "data"
    monkeypatch.delenv("ROADWATCH_SIGNING_KEY_FILE", raising=False)
    monkeypatch.setenv("ROADWATCH_SET", f'paths.data_dir="{data}";web.port={free_port()}')
    cfg = load_config(None)
    # the worker at INFO level: the most talkative setting an operator would use
    with kafka_bootstrap(cfg) as bootstrap:
        lines: list[str] = []                # every line of stdout + stderr (merged), not just the tail
        w = WorkerProcess(bootstrap, registry_path=str(reg_path), loglevel="info", on_line=lines.append)
        try:
            w.wait_ready(60)
            _feed_cases(Stack(bootstrap, w), cfg)
        finally:
            w.stop()
    conn = open_archive(cfg.archive_path)
    key_file = data / "keys" / "evidence-ed25519.pem"
    assert key_file.exists() and (os.stat(key_file).st_mode & 0o077) == 0
    forms = _secret_forms(key_file)
    output = "\n".join(lines).encode()
    assert lines, "no worker output captured"
    for f in forms:
        assert f not in output
    for path in (data / "evidence").rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not any(f in blob for f in forms), path
            assert b"PRIVATE KEY" not in blob, path
    for row in conn.execute("SELECT manifest FROM cases"):
        assert not any(f in row[0].encode() for f in forms)


def test_no_private_key_in_the_repository():
    """Tracked files, and untracked files that ``git add -A`` would pick up (not ignored)."""
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"not a git checkout: {r.stderr.decode()[:200]}")
    files = [f for f in r.stdout.decode().split("\0") if f]
    assert len(files) > 50
    pattern = [b"-----BEGIN " + kind + b"PRIVATE KEY-----"         # assembled: this file holds no marker
               for kind in (b"", b"RSA ", b"EC ", b"OPENSSH ", b"ENCRYPTED ", b"DSA ")]
    leaks = []
    for f in files:
        p = ROOT / f
        if f.endswith((".pem", ".key")) or "/keys/" in f or f.startswith("keys/"):
            leaks.append(f)
            continue
        try:
            if p.is_file() and p.stat().st_size < 5_000_000:
                blob = p.read_bytes()
                if any(x in blob for x in pattern):
                    leaks.append(f)
        except OSError:
            continue
    assert leaks == []
    # the default data directory, where the worker creates the key, is ignored by git
    ign = subprocess.run(["git", "check-ignore", "-q", "var/keys/evidence-ed25519.pem"], cwd=ROOT, timeout=30)
    assert ign.returncode == 0
