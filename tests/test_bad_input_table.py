"""docs/BAD_INPUTS.md names a test for every kind of bad input; each named test must exist, so the table cannot
drift from the suite (issue 13, point 8)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "BAD_INPUTS.md"
TEST_REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def table_rows() -> list[str]:
    return [line for line in TABLE.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| input |")]


def defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_the_table_has_at_least_60_kinds_each_naming_a_test():
    rows = table_rows()
    assert len(rows) >= 60, len(rows)
    missing = [row[:80] for row in rows if not TEST_REFERENCE.search(row)]
    assert not missing, missing


def test_every_test_the_table_names_exists():
    cache: dict[str, set[str]] = {}
    absent = []
    for row in table_rows():
        for file, name in TEST_REFERENCE.findall(row):
            path = ROOT / file
            if file not in cache:
                cache[file] = defined_functions(path) if path.is_file() else set()
            if name not in cache[file]:
                absent.append(f"{file}::{name}")
    assert not absent, sorted(set(absent))
