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

# A component built with the default config inside a test writes its working data (archive, evidence, the
# replay window's files) under a temporary folder of this test process, never under the checkout's ./var,
# where a demo started from the same checkout keeps its own.
import shutil  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import replace as _replace  # noqa: E402

from roadwatch.models import config as _config  # noqa: E402

_DEFAULT_DATA_DIR = tempfile.mkdtemp(prefix="roadwatch-test-data-")
_config.KEYS["paths.data_dir"] = _replace(_config.KEYS["paths.data_dir"], default=_DEFAULT_DATA_DIR)

# PostgreSQL for the archive tests (tests/pg_support.py): pg_server, pg_url, archive_target (sqlite | postgresql)
from pg_support import archive_target, pg_server, pg_url, stop_server  # noqa: E402,F401


def pytest_sessionfinish(session, exitstatus):
    stop_server()
    shutil.rmtree(_DEFAULT_DATA_DIR, ignore_errors=True)


# --- parallel runs (pytest-xdist: `make test` runs `pytest -n 2 --dist loadgroup`) ----------------------------
# Each worker is a session of its own (its own PostgreSQL server, its own tmp_path base). The controller hands
# out one test at a time, in collection order; two things keep every worker busy to the end:
# - the tests of a module that defines a module-scoped fixture (a simulated scenario, a running stack) stay
#   together on one worker, so the fixture is built once, not once per worker (ModuleFixtureScheduling);
# - the slow kinds go first (``slow``, then ``integration`` and ``browser``, then the rest, each in file order):
#   a minute-long test picked up last would set the wall time, while the many short unit tests at the end fill
#   whatever gap is left.
# A serial run (`-n 0`, `-p no:xdist`, one file) keeps plain file order.
FIRST = ("slow", "integration", "browser")
# ahead of even those: the tests that took 45 s or more in a serial run (`--durations`), longest first. Only an
# order: a test missing here, or renamed, still runs, just not first.
LONGEST = (
    "tests/test_sim_live.py::test_province_week_passes_strictly_and_the_feed_reports_like_the_archive",
    "tests/test_replay_speeds.py::test_batch_and_replays_at_two_speeds_agree",
    "tests/test_reliability_failover_pg.py::test_failover_across_hosts_with_the_wim_path",
    "tests/test_e2e_platform_link.py::test_platform_feed_gives_the_same_alerts_and_day_rows_as_the_terminal_feed",
    "tests/test_reliability_restart.py::test_two_workers_share_partitions_and_survivor_takes_over",
    "tests/test_sim_live.py::test_simulate_then_check_gps_curfew",
)
_MODULE_FIXTURE = re.compile(r"""@pytest\.fixture\([^)]*scope=["']module["']""")


def _rank(item) -> tuple[int, int]:
    if item.nodeid in LONGEST:
        return 0, LONGEST.index(item.nodeid)
    for i, mark in enumerate(FIRST, start=1):
        if item.get_closest_marker(mark) is not None:
            return i, 0
    return len(FIRST) + 1, 0


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

    config.option.loadscopereorder = False   # hand out in the order above, not the biggest group first
    return ModuleFixtureScheduling(config, log)
