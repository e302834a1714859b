import os
import subprocess
import sys

import pytest

from roadwatch.models.config import KEYS, Config, ConfigError, load_config, render_toml


def test_every_key_has_source_and_doc():
    for k in KEYS.values():
        assert k.source and k.doc, k.name
        assert "." in k.name


def test_non_verified_values_are_keys_with_documented_defaults():
    # suggested defaults (docs/legal-basis.md: project decisions)
    assert KEYS["overlimit.tonne_rounding"].default == "floor"
    assert KEYS["overlimit.filing_tolerance"].default == 0.05
    assert KEYS["drift.v_max_kmh"].default == 160.0
    assert KEYS["track.gap_s"].default == 300 and KEYS["track.gap_km"].default == 1.0
    assert KEYS["quality.lon_range"].default == [73.55, 135.0833]


def test_toml_file_overrides_and_origin(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[overlimit]\nfiling_tolerance = 0.04\ntonne_rounding = "ceil"\n[stream]\npartitions = 8\n')
    cfg = load_config(f, env={})
    assert cfg["overlimit.filing_tolerance"] == 0.04
    assert cfg["overlimit.tonne_rounding"] == "ceil"
    assert cfg["stream.partitions"] == 8
    assert cfg.origin("stream.partitions").startswith("file:")
    assert cfg.origin("track.gap_s") == "default"


@pytest.mark.parametrize("text,msg", [
    ('[overlimit]\ntonne_rounding = "round"\n', "must be one of"),
    ('[overlimit]\nfiling_tolerance = "x"\n', "expected a number"),
    ('[nosuch]\nkey = 1\n', "unknown config key"),
    ('[stream]\npartitions = true\n', "expected an integer"),
    ('not toml [', "not valid TOML"),
])
def test_bad_config_is_rejected_with_reason(tmp_path, text, msg):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=msg):
        load_config(f, env={})


def test_env_overrides():
    cfg = load_config(None, env={"ROADWATCH_SET": 'web.port=7000;paths.data_dir="/tmp/x"'})
    assert cfg["web.port"] == 7000 and cfg["paths.data_dir"] == "/tmp/x"


def test_render_round_trips_through_toml(tmp_path):
    cfg = Config({"fatigue.min_rest_min": 25.0})
    text = render_toml(cfg)
    f = tmp_path / "out.toml"
    f.write_text(text)
    again = load_config(f, env={})
    assert again.as_dict() == cfg.as_dict()


def test_cli_config_show_and_exit_codes(tmp_path):
    r = subprocess.run([sys.executable, "-m", "roadwatch.streams.cli", "config", "show"], capture_output=True, text=True)
    assert r.returncode == 0 and "filing_tolerance = 0.05" in r.stdout and "docs/legal-basis.md §2" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[stream]\npartitions = 'x'\n")
    r = subprocess.run([sys.executable, "-m", "roadwatch.streams.cli", "--config", str(bad), "config", "show"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "config error" in r.stderr
    r = subprocess.run([sys.executable, "-m", "roadwatch.streams.cli", "no-such-command"], capture_output=True, text=True)
    assert r.returncode == 2


def test_every_sub_command_imports_and_has_help():
    from roadwatch.streams.cli import COMMANDS, build_parser
    parser = build_parser(strict=True)          # a command whose module is missing fails here
    for path, _module, _help in COMMANDS:
        with pytest.raises(SystemExit) as e:
            parser.parse_args(path.split() + ["--help"])
        assert e.value.code == 0, path


@pytest.mark.parametrize("argv,path", [
    (["report", "monthly", "--month", "2026-11"], "report monthly"),
    (["--config", "c.toml", "case", "show", "C1"], "case show"),
    (["--config=c.toml", "config", "show"], "config show"),
    (["simulate", "scenario.toml", "--speed", "60"], "simulate"),
    (["platform-link", "--help"], "platform-link"),
    (["report"], None), (["--help"], None), (["no-such-command"], None), ([], None),
])
def test_the_command_a_run_names(argv, path):
    from roadwatch.streams.cli import command_of
    assert command_of(argv) == path


def test_a_run_imports_its_own_command_only(tmp_path):
    """Every command's module imported on every call took a second of each start (Arrow, the simulators,
    the report renderers, Faust's models); a run builds its own command's parser only."""
    code = ("import sys; from roadwatch.streams.cli import main; rc = main(['config', 'show']); "
            "print(rc, sorted(m for m in sys.modules if m.startswith(('roadwatch.simulators', 'pyarrow', "
            "'faust', 'roadwatch.streams.reports'))))")
    env = dict(os.environ, ROADWATCH_SET=f'paths.data_dir="{tmp_path}"')
    env.pop("ROADWATCH_CONFIG", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "0 []"


# --- every value typed, finite and in range; every source in docs/legal-basis.md (issue 13.6, 12.8) ------

def _numeric(default) -> bool:
    items = default if isinstance(default, list) else [default]
    return bool(items) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)


def test_every_numeric_key_has_finite_bounds_that_hold_its_default():
    import math
    for k in KEYS.values():
        if _numeric(k.default):
            assert k.lo is not None and k.hi is not None, f"{k.name} has no range"
            assert math.isfinite(k.lo) and math.isfinite(k.hi) and k.lo <= k.hi, k.name
        k.check(k.default)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_for_every_numeric_key(bad):
    for k in KEYS.values():
        if _numeric(k.default):
            value = [bad] * len(k.default) if isinstance(k.default, list) else bad
            if isinstance(k.default, int) and not isinstance(k.default, bool):
                continue                     # an int key refuses floats already (type check)
            with pytest.raises(ConfigError):
                Config({k.name: value})


def test_out_of_range_values_are_refused_at_load(tmp_path):
    for k in KEYS.values():
        if not _numeric(k.default):
            continue
        over = k.hi + (1 if isinstance(k.default, int) or isinstance(k.default, list) else 1.0)
        if isinstance(k.default, float):
            over = float(over)
        value = [over] * len(k.default) if isinstance(k.default, list) else over
        with pytest.raises(ConfigError, match="must lie in"):
            Config({k.name: value})
    f = tmp_path / "c.toml"
    f.write_text("[overlimit]\nfiling_tolerance = nan\n")
    with pytest.raises(ConfigError, match="finite"):
        load_config(f, env={})


def test_the_nan_tolerance_of_the_report_is_refused():
    """`overlimit.filing_tolerance = nan` used to be accepted (a 36 t truck on an 18 t limit gave `none`)."""
    with pytest.raises(ConfigError):
        load_config(None, env={"ROADWATCH_SET": "overlimit.filing_tolerance=nan"})


def test_every_source_points_to_an_existing_section_of_the_legal_basis():
    import re
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[1] / "docs" / "legal-basis.md").read_text(encoding="utf-8")
    sections = {int(m.group(1)) for m in re.finditer(r"^## (\d+)\. ", doc, re.M)}
    for k in KEYS.values():
        assert "domain-rules" not in k.source, k.name
        if k.source.startswith("ops"):
            continue                          # operational settings: §10
        m = re.match(r"docs/legal-basis\.md §(\d+)(?:\.\d+)* \(.+\)$", k.source)
        assert m, f"{k.name}: source {k.source!r} does not point to a section of docs/legal-basis.md"
        assert int(m.group(1)) in sections, k.name
