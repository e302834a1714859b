"""A running stack (embedded broker + real worker) for integration tests, with its own data dir and port."""
from __future__ import annotations

import os
from contextlib import contextmanager

from roadwatch.models.config import load_config
from roadwatch.streams.broker import free_port
from roadwatch.streams.runtime import stack


@contextmanager
def worker_stack(tmp, reg_path):
    """Yields ``(stack, cfg)``; ``ROADWATCH_SET`` points the worker and this process at ``tmp/data``."""
    old = os.environ.get("ROADWATCH_SET")
    os.environ["ROADWATCH_SET"] = f'paths.data_dir="{tmp / "data"}";web.port={free_port()}'
    cfg = load_config(None)
    try:
        with stack(cfg, registry_path=str(reg_path)) as st:
            yield st, cfg
    finally:
        if old is None:
            os.environ.pop("ROADWATCH_SET", None)
        else:
            os.environ["ROADWATCH_SET"] = old
