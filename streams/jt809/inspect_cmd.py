"""``roadwatch platform inspect``: queue a platform inspection (查岗) for one or all lower platforms.

The running ``roadwatch platform-link`` picks the queued inspections up from the archive (within
``jt809.queue_poll_s``) and sends them as 0x9301; the console's 平台 page does the same.
"""
from __future__ import annotations

import argparse
import time

from roadwatch.models.config import Config, ConfigError
from roadwatch.streams.archive import open_archive

from roadwatch.streams.archive import platforms as store
from .platforms import load_platforms


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platform", required=True, metavar="CENTER_ID|all",
                   help="GNSS centre id of the lower platform, or 'all' (every configured platform)")
    p.add_argument("--question", required=True, help="the question (INFO_CONTENT)")
    p.add_argument("--minutes", type=int, help="answer deadline in minutes (default: jt809.inspection_answer_minutes)")
    p.add_argument("--operator", default="cli", help="who asked (archived)")


def queue(cfg: Config, target: str, question: str, minutes: int | None, operator: str,
          conn=None) -> list[tuple[int, str]]:
    """→ [(centre id, inspection id)]. Raises ValueError for an unknown platform or a bad question."""
    platforms = load_platforms(cfg)
    if target == "all":
        centers = sorted(platforms)
        if not centers:
            raise ValueError("no platform configured (jt809.platforms_file)")
    else:
        try:
            center = int(target)
        except ValueError:
            raise ValueError(f"--platform must be a centre id or 'all', got {target!r}") from None
        if center not in platforms:
            raise ValueError(f"platform {center} is not configured (jt809.platforms_file)")
        centers = [center]
    question = (question or "").strip()
    if not question or len(question.encode("gbk", errors="replace")) > 1024:
        raise ValueError("question must be 1–1024 bytes")
    mins = cfg["jt809.inspection_answer_minutes"] if minutes is None else minutes
    if not 1 <= mins <= 255:
        raise ValueError("answer deadline must be 1–255 minutes")
    conn = conn if conn is not None else open_archive(cfg)
    now = time.time()
    return [(c, store.queue_inspection(conn, c, question, now, operator, mins)) for c in centers]


def run(args: argparse.Namespace, cfg: Config) -> int:
    from roadwatch.streams.cli import UsageError
    try:
        done = queue(cfg, args.platform, args.question, args.minutes, args.operator)
    except (ValueError, ConfigError) as e:
        raise UsageError(str(e)) from None
    for center, iid in done:
        print(f"queued inspection {iid} for platform {center}")
    return 0
