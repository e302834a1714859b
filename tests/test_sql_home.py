"""SQL lives only in ``streams/archive/`` (named query functions): no other module of the package — agents,
the console, reports, the CLI, the simulators — holds an SQL statement or declares a table. Tests may."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "streams", "geo", "simulators")
ARCHIVE = ROOT / "streams" / "archive"

# a statement's opening words, as they start a query (a string that merely mentions "select" or "update" in
# prose does not match: the keywords must be upper case and followed by what the statement needs)
SQL = re.compile(r"\b(SELECT\s+(DISTINCT\s+)?[\w*(]|INSERT\s+(OR\s+\w+\s+)?INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|"
                 r"CREATE\s+(UNIQUE\s+)?(TABLE|INDEX)\b|ALTER\s+TABLE\b|DROP\s+(TABLE|INDEX)\b|PRAGMA\s+\w+|"
                 r"BEGIN\s+(IMMEDIATE|EXCLUSIVE|TRANSACTION)\b)")
BARE = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK)\s*;?\s*$")


def sql_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant (f-string parts too) that reads like an SQL statement;
    docstrings are prose and skipped."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if SQL.search(node.value) or BARE.match(node.value):
                out.append((node.lineno, node.value.strip().splitlines()[0][:80]))
    return out


def package_files() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_no_sql_outside_the_archive_package():
    found = {str(p.relative_to(ROOT)): hits for p in package_files()
             if ARCHIVE not in p.parents and (hits := sql_strings(p))}
    assert found == {}, "SQL outside streams/archive/ — move it into a named function there:\n" + "\n".join(
        f"  {f}:{line}: {text}" for f, hits in found.items() for line, text in hits)


def test_the_guard_sees_sql(tmp_path):
    """The guard can fail: it finds the archive package's own statements, in every form they are written."""
    found = {p.name: sql_strings(p) for p in ARCHIVE.glob("*.py")}
    assert found["cases.py"] and found["users.py"] and found["terminals.py"] and found["schema.py"]
    texts = " | ".join(t for hits in found.values() for _, t in hits)
    for kind in ("SELECT", "INSERT INTO", "UPDATE", "DELETE FROM", "CREATE TABLE"):
        assert kind in texts, kind
    probe = tmp_path / "probe.py"
    probe.write_text('"""Prose: we SELECT * FROM nothing here."""\nQ = f"UPDATE t SET a = {1}"\nE = "ROLLBACK"\n')
    assert sorted(line for line, _ in sql_strings(probe)) == [2, 3]       # the docstring is prose, the rest is SQL
