"""Output of the `roadwatch decode …` commands: one JSON line per input line, a summary on stderr."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator

import orjson


def stdin_lines() -> Iterator[str]:
    return (ln.decode("utf-8", errors="replace") for ln in sys.stdin.buffer)


def write_results(results: Iterable[tuple[bool, dict]], command: str) -> int:
    """Write each (ok, object) as a JSON line; exit status 2 when any line could not be decoded."""
    total = failed = 0
    out = sys.stdout.buffer
    for ok, obj in results:
        total += 1
        failed += not ok
        out.write(orjson.dumps(obj) + b"\n")
    out.flush()
    if failed:
        print(f"roadwatch {command}: {failed} of {total} line(s) could not be decoded", file=sys.stderr)
        return 2
    return 0
