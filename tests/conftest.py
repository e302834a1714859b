import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARTIFACTS = ROOT / "test-artifacts"
os.environ.setdefault("PYTHONHASHSEED", "0")

# PostgreSQL for the archive tests (tests/pg_support.py): pg_server, pg_url, archive_target (sqlite | postgresql)
from pg_support import archive_target, pg_server, pg_url, stop_server  # noqa: E402,F401


def pytest_sessionfinish(session, exitstatus):
    stop_server()
