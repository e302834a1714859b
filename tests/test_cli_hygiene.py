"""Process hygiene: expected failures are one line on stderr with exit 2, nothing is touched when a demo
or worker already holds the data directory or the port, and the README's commands run as written."""
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from roadwatch.streams.broker import free_port

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "roadwatch.streams.cli"]


def _env(tmp_path: Path, extra: str = "") -> dict:
    env = dict(os.environ, ROADWATCH_SET=f'paths.data_dir="{tmp_path / "var"}"' + extra)
    for k in ("ROADWATCH_CONFIG", "ROADWATCH_KAFKA", "ROADWATCH_DEBUG", "ROADWATCH_SIGNING_KEY_FILE"):
        env.pop(k, None)
    return env


def run(tmp_path, *args, stdin: bytes = b"", extra: str = "", timeout: float = 60):
    p = subprocess.run([*CLI, *args], input=stdin, capture_output=True, cwd=ROOT, env=_env(tmp_path, extra),
                       timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_worker_with_a_missing_or_misspelt_registry(tmp_path):
    rc, _, err = run(tmp_path, "worker", "--registry", str(tmp_path / "nope.json"))
    assert rc == 2 and "nope.json" in one_line(err)
    bad = tmp_path / "reg.json"
    bad.write_text('{"vehicle": []}')
    rc, _, err = run(tmp_path, "worker", "--registry", str(bad))
    assert rc == 2 and "'vehicle'" in one_line(err)


def test_worker_on_a_busy_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc, _, err = run(tmp_path, "worker", extra=f";web.port={port}")
    assert rc == 2 and f"port {port}" in one_line(err)


def test_config_show_accepts_config_after_the_command(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[web]\nport = 7123\n")
    rc, out, _ = run(tmp_path, "config", "show", "--config", str(cfg), "--key", "web.port")
    assert rc == 0 and out.strip() == "7123"
    rc, _, err = run(tmp_path, "config", "show", "--config", str(tmp_path / "missing.toml"))
    assert rc == 2 and "missing.toml" in one_line(err)


def _holder(path: Path, what: str) -> subprocess.Popen:
    """Another process holding ``path`` the way a running demo / worker does."""
    code = ("import sys, time; from pathlib import Path; from roadwatch.streams.proclock import hold; "
            f"hold(Path({str(path)!r}), {what!r}, shared={what.startswith('roadwatch worker')}); "
            "print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_demo_refuses_while_another_demo_or_worker_holds_its_data(tmp_path):
    demo_dir = tmp_path / "var" / "demo"
    demo_dir.mkdir(parents=True)
    marker = demo_dir / "archive.sqlite"
    marker.write_bytes(b"the running demo's archive")
    for lock, what in [(tmp_path / "var" / "demo.lock", "roadwatch demo (console port 6066)"),
                       (demo_dir / ".roadwatch.lock", "roadwatch worker (console port 6066)")]:
        holder = _holder(lock, what)
        try:
            rc, _, err = run(tmp_path, "demo", "--port", str(free_port()), "--duration", "1")
        finally:
            holder.kill()
            holder.wait()
        line = one_line(err)
        assert rc == 2 and what in line and "in use" in line, line
        assert marker.read_bytes() == b"the running demo's archive"     # nothing touched


def _stopping_holder(path: Path, release: Path) -> subprocess.Popen:
    """A demo that was told to stop: it holds ``path`` and says it is stopping, and exits once ``release``
    exists (or when killed)."""
    code = ("import time; from pathlib import Path; from roadwatch.streams.proclock import hold, note_stopping; "
            f"p = Path({str(path)!r}); hold(p, 'roadwatch demo (console port 6066)'); note_stopping(p); "
            f"print('stopping', flush=True)\nwhile not Path({str(release)!r}).exists(): time.sleep(0.05)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "stopping"
    return p


def test_a_demo_restarted_while_the_last_one_stops_waits_for_it(tmp_path):
    lock, release = tmp_path / "var" / "demo.lock", tmp_path / "release"
    with socket.socket() as s:      # once the last demo is gone, this demo goes on to its port check: busy here
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        holder = _stopping_holder(lock, release)
        try:
            demo = subprocess.Popen([*CLI, "demo", "--port", str(port), "--duration", "1"], cwd=ROOT,
                                    env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            first = demo.stderr.readline()             # (the suite's timeout ends a demo that never says it)
            assert "waiting up to 60 s for the previous demo to stop" in first and "stopping" in first, first
            time.sleep(0.5)
            assert demo.poll() is None                 # still waiting: the last demo has not gone yet
            release.touch()                            # now it has
            holder.wait(timeout=30)
            _, rest = demo.communicate(timeout=120)
        finally:
            holder.kill()
            holder.wait()
        lines = [x for x in rest.splitlines() if x.strip()]
        assert demo.returncode == 2 and len(lines) == 1 and f"port {port}" in lines[0], rest
        # one that does not stop within demo.restart_wait_s: refused, naming it
        holder = _stopping_holder(lock, release.with_name("never"))
        try:
            rc, _, err = run(tmp_path, "demo", "--port", str(port), "--duration", "1",
                             extra=";demo.restart_wait_s=0.5")
        finally:
            holder.kill()
            holder.wait()
        assert rc == 2 and "in use by roadwatch demo" in err and "not stopped after 0.5 s" in err, err


def test_ctrl_c_reaches_the_demo_even_inside_its_stop_events_lock():
    """The demo's signal handler runs between two bytecodes of the main thread. Here that thread holds the stop
    event's lock (as inside ``Event.wait``) when the signal arrives: the handler must return and record the
    signal. A handler that set the event itself waited for that lock forever (a demo that ignored Ctrl-C)."""
    code = (
        "import os, signal\n"
        "from roadwatch.streams.demo import StopSignals\n"
        "s = StopSignals((signal.SIGUSR1,))\n"
        "with s.event._cond:\n"
        "    os.kill(os.getpid(), signal.SIGUSR1)\n"
        "    for _ in range(1000):\n"
        "        pass\n"
        "print(s.signals == [signal.SIGUSR1], s.requested, s.event.is_set())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=15)
    assert r.returncode == 0 and r.stdout.split() == ["True", "True", "False"], r.stderr[-2000:]


def test_demo_refuses_a_busy_port_without_touching_its_data(tmp_path):
    demo_dir = tmp_path / "var" / "demo"
    demo_dir.mkdir(parents=True)
    (demo_dir / "archive.sqlite").write_bytes(b"keep")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc, _, err = run(tmp_path, "demo", "--port", str(port), "--duration", "1")
        assert rc == 2 and f"port {port}" in one_line(err)
        assert (demo_dir / "archive.sqlite").read_bytes() == b"keep"
        assert sorted(p.name for p in (tmp_path / "var").iterdir()) == ["demo"]      # no lock file left either
        fresh = tmp_path / "fresh"
        p = subprocess.run([*CLI, "demo", "--port", str(port)], capture_output=True, cwd=ROOT, timeout=60,
                           env=_env(tmp_path) | {"ROADWATCH_SET": f'paths.data_dir="{fresh / "var"}"'})
        assert p.returncode == 2 and not fresh.exists()


def test_assess_wim_says_why_it_exits_2(tmp_path):
    rc, out, err = run(tmp_path, "assess", "wim", stdin=b"not json\n")
    assert rc == 2 and out.strip() and "1 of 1 WIM readings rejected" in one_line(err)


def test_evidence_verify_finds_the_deployments_keys_and_names_the_option(tmp_path):
    data = tmp_path / "deploy"
    ev = data / "evidence"
    readings = (ROOT / "examples" / "wim-readings.jsonl").read_bytes().splitlines()[:1]
    p = subprocess.run([*CLI, "assess", "wim", "--registry", str(ROOT / "examples" / "registry.json"),
                        "--evidence-dir", str(ev)], input=b"\n".join(readings) + b"\n", capture_output=True,
                       cwd=ROOT, env=_env(data.parent / "unused", "").copy() | {
                           "ROADWATCH_SET": f'paths.data_dir="{data}"'}, timeout=60)
    assert p.returncode == 0, p.stderr
    # verify from a shell whose configured data directory is elsewhere: the keys beside the evidence are used
    rc, out, err = run(tmp_path, "evidence", "verify", str(ev))
    assert rc == 0 and "intact" in out, err
    empty = tmp_path / "other-keys"
    empty.mkdir()
    rc, out, err = run(tmp_path, "evidence", "verify", str(ev), "--keys", str(empty))
    assert rc == 1 and "--keys DIR" in err


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_overload_example_runs_as_written(tmp_path):
    """The ``sh`` block of "An overload case end to end", with /tmp/ redirected to a temporary directory:
    each command's exit code is the one its comment states (``# exit 2`` or ``# ok``)."""
    section = _readme().split("## An overload case end to end", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    assert len(commands) == 2
    for cmd in commands:
        code, _, comment = cmd.partition("#")
        want = 2 if "exit 2" in comment else 0
        shell = code.replace("/tmp/", f"{tmp_path}/").replace(".venv/bin/roadwatch", shlex.join(CLI))
        p = subprocess.run(["bash", "-c", shell], capture_output=True, cwd=ROOT, env=_env(tmp_path), timeout=120)
        assert p.returncode == want, (cmd, p.stderr.decode())
        if "ok:" in comment:
            assert comment.split("ok:", 1)[1].strip() in p.stdout.decode()


def test_readme_fleet_generate_example_runs(tmp_path):
    found = [c for c in re.findall(r"`(roadwatch fleet generate [^`]*)`", _readme().replace("\n", " "))
             if "…" not in c]                                  # the command table's row is a synopsis
    assert found
    args = shlex.split(found[0])[1:]
    out = tmp_path / "registry.json"
    args[args.index("--out") + 1] = str(out)
    rc, _, err = run(tmp_path, *args)
    assert rc == 0, err
    assert orjson.loads(out.read_bytes())["vehicles"]


@pytest.mark.integration
def test_worker_output_is_plain_and_the_console_listens_on_loopback_only(tmp_path):
    """The ready line is plain stdout (not a WARNING record, no cursor escapes off a TTY), names the port the
    worker really got (web.port = 0), and the console is reachable on 127.0.0.1 but not on another address."""
    env = _env(tmp_path, ";web.port=0")
    p = subprocess.Popen([*CLI, "worker", "--registry", str(ROOT / "examples" / "registry.json")], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in p.stdout:
            lines.append(line)
            if "roadwatch worker ready" in line:
                break
        ready = lines[-1]
        assert ready.startswith("roadwatch worker ready: console http://127.0.0.1:"), lines
        port = int(re.search(r"127\.0\.0\.1:(\d+)/", ready).group(1))
        assert port > 0
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.1.1", port), timeout=2).close()     # loopback, another address
    finally:
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    text = "".join(lines) + (out or "")
    assert "\x1b" not in text and "\b" not in text
    assert "WARNING" not in ready


def test_make_demo_installs_only_the_runtime_dependencies():
    """``make demo`` (dry run, every target considered out of date) never installs the [test] extras;
    ``make test`` does."""
    demo = subprocess.run(["make", "-n", "-B", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert demo.returncode == 0, demo.stderr
    assert "pip install --quiet -e ." in demo.stdout and "[test]" not in demo.stdout
    test = subprocess.run(["make", "-n", "-B", "test"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert "-e '.[test]'" in test.stdout
