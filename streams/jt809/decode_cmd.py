"""``roadwatch decode jt809``: hex JT/T 809 frames (stdin, one per line) → JSON lines (stdout)."""
from __future__ import annotations

import argparse
import re

from roadwatch.models.config import Config
from roadwatch.streams.decode_output import stdin_lines, write_results

from . import codec as c
from . import messages as m

HELP = """\
Reads hex frames from stdin, one per line (spaces allowed; blank lines and lines starting with # are
ignored; a leading "hex:" is skipped). Writes one JSON line per message:
{"line", "msg_id": "0x1200", "sn", "center_id", "version", "protocol", "encrypted", "encrypt_key",
["utc_time",] "rules": [...], <decrypted body fields>, "pings": [...]}. "rules" names the leniency a frame
needed (raw: the sender does not escape; length_ignored: MSG_LENGTH is wrong but the CRC holds;
position_2011_in_2019). Positions (0x1202/0x1203) also give "pings" with the fields of
`roadwatch decode jt808` (terminal_id = "809:<centre id>"). The header layout follows --version, else the
VERSION field (≥ 1.2 → 2019). Encrypted bodies need --cipher M1,IA1,IC1.
A line that cannot be decoded gives {"error": code, "detail", "line": n} and the command exits with
status 2 after processing all lines (0 when every line decoded)."""

_HEX_RE = re.compile(r"[0-9a-fA-F]*")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--version", dest="protocol", type=int, choices=(2011, 2019),
                   help="header layout (default: from the VERSION field)")
    p.add_argument("--cipher", metavar="M1,IA1,IC1", help="body cipher parameters of the link")


def message_json(fr: c.Frame, fields: dict) -> dict:
    h = fr.header
    out: dict = {"msg_id": h.msg_id_hex, "sn": h.sn, "center_id": h.center_id, "version": h.version,
                 "protocol": h.protocol, "encrypted": h.encrypted, "encrypt_key": h.encrypt_key}
    if h.utc_time is not None:
        out["utc_time"] = h.utc_time
    out["rules"] = fr.rules + list(fields.get("rules") or [])
    for k, v in fields.items():
        if k != "rules":
            out.setdefault(k, v)
    pings = m.message_pings(h.msg_id, fields, h.center_id)
    if pings:
        out["pings"] = pings
    return out


def decode_lines(lines, protocol: int | None, cipher: c.Cipher | None):
    """Yield (ok, json dict) per non-blank input line."""
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
        fr = None
        try:
            fr = c.parse_frame(bytes.fromhex(s), protocol, cipher)
            fields = m.decode_body(fr.header.msg_id, fr.body, fr.header.protocol)
        except c.Jt809Error as e:
            err = {"error": e.code, "detail": e.detail, "line": n}
            head = e.header or (fr.header if fr is not None else None)
            if head is not None:
                err.update(msg_id=head.msg_id_hex, sn=head.sn, center_id=head.center_id)
            yield False, err
            continue
        yield True, {"line": n, **message_json(fr, fields)}


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.cli import UsageError
    cipher = None
    if args.cipher:
        try:
            cipher = c.Cipher.parse(args.cipher)
        except c.Jt809Error as e:
            raise UsageError(f"--cipher: {e.detail}") from None
    return write_results(decode_lines(stdin_lines(), args.protocol, cipher), "decode jt809")
