import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARTIFACTS = ROOT / "test-artifacts"
os.environ.setdefault("PYTHONHASHSEED", "0")

# PostgreSQL for the archive tests (tests/pg_support.py): pg_server, pg_url, archive_target (sqlite | postgresql)
from pg_support import archive_target, pg_server, pg_url, stop_server  # noqa: E402,F401


def pytest_sessionfinish(session, exitstatus):
    stop_server()


# --- parallel runs (pytest-xdist: `make test` runs `pytest -n 2 --dist loadgroup`) ----------------------------
# Each worker is a session of its own (its own PostgreSQL server, its own tmp_path base). The controller hands
# out one test at a time, in collection order; two things keep both workers busy to the end:
# - the tests of a module that defines a module-scoped fixture (a simulated scenario, a running stack) stay
#   together on one worker, so the fixture is built once, not once per worker (ModuleFixtureScheduling);
# - the slow kinds go first (``slow``, then ``integration`` and ``browser``, then the rest, each in file order):
#   a minute-long test picked up last would set the wall time, while the many short unit tests at the end fill
#   whatever gap is left.
# A serial run (`-n 0`, `-p no:xdist`, one file) keeps plain file order.
FIRST = ("slow", "integration", "browser")
_MODULE_FIXTURE = re.compile(r"""@pytest\.fixture\([^)]*scope=["']module["']""")


def _rank(item) -> int:
    for i, mark in enumerate(FIRST):
        if item.get_closest_marker(mark) is not None:
            return i
    return len(FIRST)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):
        items.sort(key=_rank)         # stable, and every worker sorts alike (xdist requires the same order)


@pytest.hookimpl(optionalhook=True)       # a serial run may have no xdist (`-p no:xdist`)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` keeps its meaning (tests marked ``xdist_group`` together) and adds the module groups.

    xdist's own loadgroup learns the groups from a suffix it appends to node ids, which pytest ≥ 9.2 no longer
    lets it do (pytest-xdist#1386): the groups are derived here, on the controller, from the node ids alone."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ModuleFixtureScheduling(LoadGroupScheduling):
        together: dict[str, bool] = {}

        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            path = nodeid.split("::", 1)[0]
            if scope == nodeid and self._has_module_fixture(path):
                return path
            return scope

        def _has_module_fixture(self, path: str) -> bool:
            if path not in self.together:
                try:
                    self.together[path] = bool(_MODULE_FIXTURE.search((config.rootpath / path).read_text("utf-8")))
                except OSError:
                    self.together[path] = False
            return self.together[path]

    return ModuleFixtureScheduling(config, log)
