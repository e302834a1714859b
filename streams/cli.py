"""``roadwatch`` — the one console script.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and ``run(args, cfg) -> int``;
this file only wires them. Exit codes: 0 ok, 1 failure, 2 bad usage or bad input. Messages go to stderr.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from roadwatch.models.config import ConfigError, load_config
from roadwatch.models.registry_error import RegistryError
from roadwatch.streams.errors import UsageError  # noqa: F401 - re-exported for the command modules

# (command path, module, one-line help). Nested commands use a space: "config show".
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "roadwatch.streams.demo", "embedded broker + worker + simulators + console + live alert ticker"),
    ("worker", "roadwatch.streams.worker_cmd", "run the Faust worker (WIM, GPS, cases, stats, console)"),
    ("broker", "roadwatch.streams.broker", "run the embedded Kafka-compatible broker (Tansu) in the foreground"),
    ("config show", "roadwatch.streams.config_cmd", "print the effective configuration with defaults and sources"),
    ("decode jt808", "roadwatch.streams.jt808.decode_cmd", "decode hex JT/T 808 frames (stdin, one per line) to JSON lines"),
    ("gateway", "roadwatch.streams.jt808.gateway", "JT/T 808 TCP gateway for terminals, publishing pings to Kafka"),
    ("terminals", "roadwatch.streams.jt808.terminals_cmd", "list JT/T 808 terminal bindings or revoke a terminal's auth code"),
    ("decode jt809", "roadwatch.streams.jt809.decode_cmd", "decode hex JT/T 809 frames (stdin, one per line) to JSON lines"),
    ("platform-link", "roadwatch.streams.jt809.link", "JT/T 809 link server for lower platforms, publishing pings to Kafka"),
    ("platform inspect", "roadwatch.streams.jt809.inspect_cmd", "queue a platform inspection (查岗) for one or all platforms"),
    ("assess wim", "roadwatch.streams.assess_wim", "batch: WIM readings (JSON lines, stdin) → verdicts (JSON lines)"),
    ("assess gps", "roadwatch.streams.assess_gps", "batch: GPS pings (JSON lines, stdin) → alerts (JSON lines)"),
    ("case show", "roadwatch.streams.case_cmd", "a case (or escalation proposal) and its history as JSON"),
    ("case act", "roadwatch.streams.case_cmd", "apply one act of the case workflow (or a proposal's workflow)"),
    ("case document", "roadwatch.streams.case_cmd", "issue a case's notice, 告知书 or 决定书 (HTML, PDF) onto its evidence chain"),
    ("intercept list", "roadwatch.streams.intercept_cmd", "intercept tasks (布控) with their status, newest first (JSON lines)"),
    ("intercept record", "roadwatch.streams.intercept_cmd", "record a task's field outcome: intercepted, not_found or released"),
    ("publish decisions", "roadwatch.streams.publish_cmd", "the public list of decided cases (masked), HTML and JSON"),
    ("notices list", "roadwatch.streams.notices_cmd", "抄告 (62号令 Art. 44): notices to home agencies (due, sent, overdue) or received"),
    ("notices export", "roadwatch.streams.notices_cmd", "a closed case's 抄告 as signed JSON and the printable 抄告单"),
    ("notices import", "roadwatch.streams.notices_cmd", "accept 抄告 from other agencies (known agency, valid signature)"),
    ("case-review", "roadwatch.streams.case_review_cmd", "案卷评查: a month's sample of closed case files, scored"),
    ("escalations", "roadwatch.streams.case_cmd", "Art. 66 subjects over their threshold in the window ending --at"),
    ("devices publish", "roadwatch.streams.devices_cmd", "the public list of enforcement devices (HTML, CSV, JSON)"),
    ("evidence verify", "roadwatch.streams.evidence_cmd", "verify an evidence package or a directory of them"),
    ("evidence export", "roadwatch.streams.evidence_export_cmd", "write the archive's evidence packages and chains to a folder, any host's"),
    ("report monthly", "roadwatch.streams.report_cmd", "monthly regulator report (json, html, xlsx, csv)"),
    ("fleet generate", "roadwatch.simulators.fleet_cmd", "generate a registry (fleet, sites, zones, stations)"),
    ("simulate", "roadwatch.simulators.simulate_cmd", "run a scenario's feeds against the broker"),
    ("scenario check", "roadwatch.simulators.check_cmd", "compare what the system produced with a scenario's expectations"),
    ("record", "roadwatch.simulators.record_cmd", "capture topics to a file"),
    ("replay", "roadwatch.simulators.replay_cmd", "re-publish a recording with its relative timing"),
    ("users add", "roadwatch.streams.web.users_cmd", "create or update a console user"),
    ("archive migrate", "roadwatch.streams.archive.migrate_cmd", "bring the archive to the current schema (versioned migrations)"),
    ("archive copy", "roadwatch.streams.archive.copy_cmd", "copy a whole archive onto another backend (e.g. SQLite → PostgreSQL)"),
    ("bench", "roadwatch.streams.bench", "benchmark the ping path, WIM latency and batch assessment"),
]



def build_parser(strict: bool = False, only: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser. ``only``: None imports every command's module and adds its arguments; a
    command path only that command's; "" none (the names and help lines stay). A run imports one command's
    module, not all of them (Arrow, the simulators, the report renderers: a second of every call)."""
    parser = argparse.ArgumentParser(prog="roadwatch", description=__doc__.splitlines()[0])
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: $ROADWATCH_CONFIG)")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module, help_ in COMMANDS:
        mod = None
        if only is None or path == only:
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as e:
                if strict or not e.name or not e.name.startswith(module.split(".")[0]):
                    raise
                continue  # a command whose module is not there yet
        words = path.split()
        sub = top
        for w in words[:-1]:
            if w not in groups:
                gp = top.add_parser(w, help=f"{w} commands")
                groups[w] = gp.add_subparsers(dest=f"{w}_command", metavar="COMMAND", required=True)
            sub = groups[w]
        p = sub.add_parser(words[-1], help=help_, description=help_, conflict_handler="resolve")
        if mod is None:
            continue
        # --config is accepted after the command too (`roadwatch config show --config F`)
        p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="TOML config file (default: $ROADWATCH_CONFIG)")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def command_of(argv: list[str]) -> str | None:
    """The command path ``argv`` names (``report monthly``), after the global ``--config FILE``; None when
    it names none (no command, ``--help``, a misspelt one)."""
    words = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--config":
            i += 2
            continue
        if a.startswith("-"):
            if words:
                break
            i += 1
            continue
        words.append(a)
        i += 1
    paths = {path for path, _m, _h in COMMANDS}
    for k in range(len(words), 0, -1):
        if " ".join(words[:k]) in paths:
            return " ".join(words[:k])
    return None


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=command_of(argv) or "")
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so `with` blocks and atexit handlers stop the embedded broker and workers.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"roadwatch: config error: {e}", file=sys.stderr)
        return 2
    try:
        return int(args._run(args, cfg) or 0)
    except (UsageError, ConfigError, RegistryError) as e:
        print(f"roadwatch: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as e:
        # expected environment failures (missing file, busy port, no permission): one line, exit 2;
        # ROADWATCH_DEBUG=1 shows the traceback
        if os.environ.get("ROADWATCH_DEBUG"):
            raise
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"roadwatch: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
