"""The wheel installs everything under one `roadwatch` namespace and nothing generic at the top level."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("geo", "models", "simulators", "streams")


def _declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return cfg, set(cfg["packages"])


def _folder(package: str) -> Path:
    return ROOT.joinpath(*package.split(".")[1:])


def test_every_package_folder_is_declared_under_roadwatch():
    # A new sub-package that is not listed would be missing from the wheel (editable installs hide that).
    cfg, declared = _declared()
    on_disk = {"roadwatch." + ".".join(p.parent.relative_to(ROOT).parts)
               for f in FOLDERS for p in (ROOT / f).rglob("__init__.py") if "__pycache__" not in p.parts}
    data = declared - on_disk
    assert on_disk <= declared
    assert data == set(cfg["package-data"])      # the rest are data folders, each with its files' globs


def test_every_data_folder_and_its_subfolders_are_declared():
    # A data folder's files reach the wheel only as a package of their own (setuptools warns otherwise);
    # a new sub-folder (say another vendored web library) must be listed too, or it is silently left out.
    cfg, _ = _declared()
    data = set(cfg["package-data"])
    for package, globs in cfg["package-data"].items():
        folder = _folder(package)
        assert folder.is_dir() and not (folder / "__init__.py").exists(), package
        assert any(p.is_file() for g in globs for p in folder.glob(g)), f"{package}: its globs match no file"
        for sub in folder.rglob("*"):
            if sub.is_dir() and any(f.is_file() for f in sub.iterdir()):
                name = ".".join((package, *sub.relative_to(folder).parts))
                assert name in data, f"{sub.relative_to(ROOT)} holds files but is not declared"


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
