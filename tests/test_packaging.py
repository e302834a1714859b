"""The wheel installs everything under one `roadwatch` namespace and nothing generic at the top level."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("geo", "models", "simulators", "streams")


def _declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return cfg, set(cfg["packages"])


def test_every_package_folder_is_declared_under_roadwatch():
    # A new sub-package that is not listed would be missing from the wheel (editable installs hide that).
    _, declared = _declared()
    on_disk = {"roadwatch." + ".".join(p.parent.relative_to(ROOT).parts)
               for f in FOLDERS for p in (ROOT / f).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert on_disk == declared


def test_nothing_generic_at_top_level():
    cfg, declared = _declared()
    assert all(p.startswith("roadwatch.") for p in declared)
    assert cfg["package-dir"] == {"roadwatch": "."}


def test_code_imports_only_the_namespace():
    import re
    bad = re.compile(r"^\s*(from|import) (models|streams|geo|simulators)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for f in FOLDERS + ("tests", "scripts")
                 for p in (ROOT / f).rglob("*.py") if bad.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
