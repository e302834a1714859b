import subprocess
import sys

import pytest

from roadwatch.models.config import KEYS, Config, ConfigError, load_config, render_toml


def test_every_key_has_source_and_doc():
    for k in KEYS.values():
        assert k.source and k.doc, k.name
        assert "." in k.name


def test_non_verified_values_are_keys_with_documented_defaults():
    # §7 suggested defaults of domain-rules.md
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
    assert r.returncode == 0 and "filing_tolerance = 0.05" in r.stdout and "§4.4" in r.stdout
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
