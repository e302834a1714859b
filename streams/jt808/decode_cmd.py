"""``roadwatch decode jt808``: hex JT/T 808 frames (stdin, one per line) → JSON lines (stdout)."""
from __future__ import annotations

import argparse
import re

from roadwatch.models.config import Config
from roadwatch.models.registry import RegistryError, load_registry
from roadwatch.streams.decode_output import stdin_lines, write_results

from . import codec as c
from .alarms import alarm_names, status_names

HELP = """\
Reads hex frames from stdin, one per line (spaces allowed; blank lines and lines starting with # are
ignored; a leading "hex:" is skipped). Writes one JSON line per message:
{"line", "msg_id": "0x0200", "terminal_id", "serial", "version", <decoded body fields>, "pings": [...]}.
Pings use the interchange field names (models.records.GpsPing); plate/plate_color come from --registry
(vehicles' terminal_id) or an earlier 0x0100 registration in the input, else null.
A line that cannot be decoded gives {"error": code, "detail", "line": n} and the command then exits
with status 2 after processing all lines (0 when every line decoded)."""

_HEX_RE = re.compile(r"[0-9a-fA-F]*")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--unescaped", action="store_true",
                   help="frames were captured after un-escaping (7D01/7D02 already removed)")
    p.add_argument("--registry", metavar="FILE", help="registry JSON mapping terminal_id → plate")


def _location_view(loc: dict, version: int) -> dict:
    out = dict(loc)
    out["alarm_names"] = alarm_names(loc["alarm_flags"], version)
    out["status_names"] = status_names(loc["status_flags"], version)
    return out


def message_json(msg: c.Message, plate: str | None, color: int | None) -> dict:
    """One decoded message as the command prints it (without the line number)."""
    out: dict = {"msg_id": msg.msg_id_hex, "terminal_id": msg.terminal_id, "serial": msg.serial,
                 "version": msg.version}
    if msg.protocol_version is not None:
        out["protocol_version"] = msg.protocol_version
    f = dict(msg.fields or {})
    if msg.msg_id == c.LOCATION:
        f = _location_view(f, msg.version)
    elif msg.msg_id == c.BATCH_LOCATION:
        f["items"] = [_location_view(x, msg.version) for x in f["items"]]
    for k, v in f.items():
        out.setdefault(k, v)
    if msg.msg_id in (c.LOCATION, c.BATCH_LOCATION):
        out["pings"] = c.message_pings(msg, plate, color)
    return out


def decode_lines(lines, unescaped: bool, terminals: dict[str, tuple[str, int]]):
    """Yield (ok, json dict) per non-blank input line."""
    reasm = c.Reassembler()
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s[:4].lower() == "hex:":
            s = s[4:]
        s = "".join(s.split())
        if not _HEX_RE.fullmatch(s) or len(s) % 2:
            yield False, {"error": "bad_hex", "detail": "line is not an even number of hex digits", "line": n}
            continue
        try:
            msg = c.parse_frame(bytes.fromhex(s), unescaped=unescaped)
            if msg.is_fragment:
                full = reasm.add(msg)
                if full is None:
                    yield True, {"line": n, "msg_id": msg.msg_id_hex, "terminal_id": msg.terminal_id,
                                 "serial": msg.serial, "version": msg.version,
                                 "fragment": [msg.packet_index, msg.packet_count]}
                    continue
                msg = full
        except c.Jt808Error as e:
            err = {"error": e.code, "detail": e.detail, "line": n}
            if e.message is not None:
                err.update(msg_id=e.message.msg_id_hex, terminal_id=e.message.terminal_id, serial=e.message.serial)
            yield False, err
            continue
        if msg.msg_id == c.REGISTRATION and msg.fields and msg.fields.get("plate"):
            terminals.setdefault(c.terminal_key(msg.terminal_id), (msg.fields["plate"], msg.fields["plate_color"]))
        plate, color = terminals.get(c.terminal_key(msg.terminal_id), (None, None))
        yield True, {"line": n, **message_json(msg, plate, color)}


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.cli import UsageError
    try:
        reg = load_registry(args.registry)
    except RegistryError as e:
        raise UsageError(str(e)) from None
    terminals = {c.terminal_key(v.terminal_id): (v.plate, v.plate_color) for v in reg.vehicles.values() if v.terminal_id}
    return write_results(decode_lines(stdin_lines(), args.unescaped, terminals), "decode jt808")
